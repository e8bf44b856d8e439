"""Low-precision training on stacked models: which tensors are rounded to which format, and what it did to them.

A quantization-aware step keeps fp32 master weights and accumulates every matmul in fp32; what it rounds (each
selectable) is the weights as the forward pass reads them, the activations entering each layer, and the gradients
flowing back out of each layer (straight-through, as in Micikevicius et al. 2018, "Mixed precision training", and
the FP8 recipes after it). Formats with a narrow range get a dynamic scale per model (from the tensor's absolute
maximum), fp16 gradients get a dynamic loss scale per model (x2 every 2000 good steps, /2 and the step skipped on
overflow, as torch's GradScaler). Scales are per model: the K stacked models never share one.
"""
from __future__ import annotations

import torch

from ..errors import ConfigError
from ..noise import formats

TENSORS = ("weights", "activations", "gradients")
SCALES = ("auto", "none", "tensor", "channel")


class Precision:
    """Rounds stacked tensors (K, ...) of K models. `measure = True` makes the next calls count, per model, the
    values beyond the format's range (overflow) and the non-zero values rounded to zero (underflow)."""

    def __init__(self, fmt="fp32", tensors=TENSORS, rounding: str = "nearest", scale: str = "auto",
                 block: int | None = None, num_models: int = 1, device="cpu",
                 generators: list[torch.Generator] | None = None, growth_interval: int = 2000):
        self.format = formats.get(fmt)
        bad = [t for t in tensors if t not in TENSORS]
        if bad:
            raise ConfigError("tensors", bad, f"a subset of {', '.join(TENSORS)}")
        if rounding not in formats.ROUNDINGS:
            raise ConfigError("rounding", rounding, f"one of {', '.join(formats.ROUNDINGS)}")
        if scale not in SCALES:
            raise ConfigError("scale", scale, f"one of {', '.join(SCALES)}")
        f = self.format
        if scale == "auto":  # narrow formats need a scale to use their range; int and MX carry their own
            scale = "tensor" if f.kind == "float" and f.bits <= 8 else "none"
        self.tensors, self.rounding, self.block = tuple(tensors), rounding, block
        self.scale = None if scale == "none" else scale
        self.active = f.name != "fp32" and bool(self.tensors)
        self.k, self.device = num_models, device
        # stochastic rounding draws from each model's own stream: a model's rounding never depends on its company
        if rounding == "stochastic":
            generators = list(generators) if generators is not None else \
                [torch.Generator().manual_seed(m) for m in range(num_models)]
            if len(generators) != num_models:
                raise ConfigError("generators", len(generators), f"one generator per model ({num_models})")
        self.generators = generators if rounding == "stochastic" else None
        # fp16 gradients underflow without a loss scale (Micikevicius et al. 2018); others keep 1
        self.dynamic = f.name == "fp16" and "gradients" in self.tensors and self.scale is None
        self.loss_scale = torch.full((num_models,), 2.0**16 if self.dynamic else 1.0, device=device)
        self.good_steps = torch.zeros(num_models, dtype=torch.long, device=device)
        self.growth_interval = growth_interval
        self.measure = False
        self.grad_finite = None  # (K,) after each training step: whose gradients were finite (or skipped)
        self.reset_stats()

    def __repr__(self):
        return (f"Precision({self.format.name}, tensors={'+'.join(self.tensors) or 'none'}, {self.rounding}, "
                f"scale={self.scale})")

    def check_dims(self, dims: dict[str, int]) -> None:
        """Before any work: an MX block size must divide every dimension it blocks (named in `dims`)."""
        if self.format.kind != "mx" or not self.active:
            return
        block = self.block or self.format.block
        for name, d in dims.items():
            if d % block:
                raise ConfigError("block", block, f"a block size dividing {name} = {d} "
                                                  f"(e.g. {', '.join(str(b) for b in (4, 8, 16, 32) if d % b == 0)})")

    # -- rounding -----------------------------------------------------------------------------------------------
    def weight(self, w: torch.Tensor) -> torch.Tensor:
        """w: (K, in, out) as the matmul reads it; scaled per model (or per output channel), MX blocks along in."""
        return self._round("weights", w, transpose=True)  # (K, out, in): channels are rows, blocks run along in

    def act(self, h: torch.Tensor) -> torch.Tensor:
        """h: (K, B, features) entering a layer; scaled per model (or per example), MX blocks along features."""
        return self._round("activations", h)

    def grad(self, g: torch.Tensor) -> torch.Tensor:
        """g: (K, B, features), a gradient flowing back out of a layer (already multiplied by the loss scale)."""
        return self._round("gradients", g)

    def _round(self, kind: str, x: torch.Tensor, transpose: bool = False) -> torch.Tensor:
        if not self.active or kind not in self.tensors:
            return x
        if transpose and (self.scale == "channel" or self.format.kind == "mx"):  # layout matters to these only
            q = self._q(x.transpose(1, 2)).transpose(1, 2)
        else:
            q = self._q(x)
        self._count(kind, x, q)
        return q

    def _q(self, x: torch.Tensor) -> torch.Tensor:
        """Round x (models, ...): scales never cross models; stochastic rounding draws each model's uniforms from its
        own stream, as that model trained alone would draw them."""
        generator = formats.PerModel(self.generators) if self.generators is not None else None
        k = x.shape[0]
        if self.format.kind == "mx":  # a row narrower than a block (the 16-wide logits) is one block
            block = min(self.block or self.format.block, x.shape[-1])
            return formats.quantize(x, self.format, self.rounding, generator, block=block)
        if self.scale == "channel":  # one scale per row of the last two dims: (K·rows, cols)
            return formats.quantize(x.reshape(-1, x.shape[-1]), self.format, self.rounding, generator,
                                    scale="channel").reshape(x.shape)
        if self.scale == "tensor" or self.format.kind == "int":  # one scale per model
            return formats.quantize(x.reshape(k, -1), self.format, self.rounding, generator,
                                    scale="channel").reshape(x.shape)
        return formats.quantize(x, self.format, self.rounding, generator)

    # -- what rounding did ----------------------------------------------------------------------------------------
    def reset_stats(self) -> None:
        z = lambda: torch.zeros(self.k, device=self.device)  # noqa: E731
        self._stats = {t: {"n": z(), "nonzero": z(), "overflow": z(), "underflow": z()} for t in TENSORS}

    def _count(self, kind: str, x: torch.Tensor, q: torch.Tensor) -> None:
        if not self.measure:
            return
        dims = tuple(range(1, x.ndim))
        s = self._stats[kind]
        nonzero = x != 0
        s["n"] += x[0].numel()
        s["nonzero"] += nonzero.sum(dims)
        s["underflow"] += (nonzero & (q == 0)).sum(dims)
        if self.format.kind == "float" and self.scale is None:  # scaled and block formats cannot overflow
            s["overflow"] += (x.abs() > self.format.max).sum(dims)

    def stats(self) -> dict[str, torch.Tensor]:
        """Per-model fractions since the last reset: overflow_<tensor> of all values, underflow_<tensor> of the
        non-zero ones (nan for a tensor kind not rounded), and the loss scale."""
        nan = torch.full((self.k,), float("nan"), device=self.device)
        out = {}
        for t in TENSORS:
            s = self._stats[t]
            rounded = self.active and t in self.tensors and bool((s["n"] > 0).all())
            out[f"overflow_{t}"] = s["overflow"] / s["n"] if rounded else nan
            out[f"underflow_{t}"] = s["underflow"] / s["nonzero"].clamp_min(1) if rounded else nan
        out["loss_scale"] = self.loss_scale.clone()
        return out

    def update_scale(self, finite: torch.Tensor) -> torch.Tensor:
        """After the backward pass: finite (K,) says whose gradients were finite. With a dynamic loss scale, the
        others skip this step and halve their scale; returns the models whose step must be skipped."""
        if not self.dynamic:
            return torch.zeros_like(finite)
        skip = ~finite
        self.loss_scale[skip] /= 2
        self.good_steps = torch.where(skip, 0, self.good_steps + 1)
        grow = self.good_steps >= self.growth_interval
        self.loss_scale[grow] *= 2
        self.good_steps[grow] = 0
        return skip
