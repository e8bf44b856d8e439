"""Post-training quantization of a trained module, with activation ranges calibrated on chosen inputs.

Weights are rounded once, per output channel (scale = the row's max |w| over the format's largest value; MX formats
carry their own block scales). Activations are rounded at the input of every Linear/Conv2d layer with a *static*
per-tensor scale calibrated beforehand: run the fp32 model on calibration inputs and keep each layer's max |input|.
Values beyond the calibrated range saturate. For a diffusion denoiser the calibration inputs are noisy samples at
one timestep or at every sampling time: activation ranges move with t, so a range taken at one t clips others
(the point of timestep-aware calibration in PTQ4DM, Shang et al. 2023, and Q-Diffusion, Li et al. 2023).
"""
from __future__ import annotations

import copy
from typing import Callable, Iterable

import torch
from torch import nn

from ..errors import ConfigError
from ..noise import formats

LAYERS = (nn.Linear, nn.Conv2d)


def _layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LAYERS)]


@torch.no_grad()
def calibrate(model: nn.Module, batches: Iterable[tuple]) -> dict[str, float]:
    """Max |input| of every Linear/Conv2d layer of `model` over the calls model(*args) for args in `batches`."""
    ranges: dict[str, float] = {}
    hooks = []
    for name, layer in _layers(model):
        def keep(_, inputs, name=name):
            ranges[name] = max(ranges.get(name, 0.0), float(inputs[0].detach().abs().amax()))
        hooks.append(layer.register_forward_pre_hook(keep))
    try:
        for args in batches:
            model(*args)
    finally:
        for h in hooks:
            h.remove()
    if not ranges:
        raise ConfigError("model", type(model).__name__, "a module with Linear or Conv2d layers to calibrate")
    return ranges


def round_static(x: torch.Tensor, fmt: formats.Format, amax: float) -> torch.Tensor:
    """Round x with the fixed scale amax / (the format's largest value): beyond ±amax it saturates."""
    if fmt.kind == "mx":  # block scales of its own: no calibration
        return formats.quantize(x, fmt, block=_block(fmt, x))
    top = fmt.max  # qmax for an integer format
    s = amax / top if amax > 0 else 1.0
    z = (x / s).clamp(-top, top)
    q = z.round() if fmt.kind == "int" else formats.quantize(z, fmt)
    return q * s


def _block(fmt, x) -> int:
    """The format's block (32), or the largest power of two below it dividing the last dim (34 inputs: 2)."""
    return next(b for b in (fmt.block, 16, 8, 4, 2, 1) if x.shape[-1] % b == 0)


def quantized(model: nn.Module, fmt, ranges: dict[str, float] | None, act_fmt=None) -> nn.Module:
    """A copy of `model` with weights rounded per output channel to `fmt` (None: left in fp32) and, where `ranges`
    are given (from `calibrate`), every Linear/Conv2d input rounded with its static scale to `act_fmt` (default:
    `fmt`) — weights and activations in separate formats, W4A8 say. The original is left as it was."""
    f = None if fmt is None else formats.get(fmt)
    fa = formats.get(act_fmt) if act_fmt is not None else f
    if ranges is not None and fa is None:
        raise ConfigError("act_fmt", act_fmt, "a format for the activations when ranges are given")
    q = copy.deepcopy(model)
    with torch.no_grad():
        for name, layer in _layers(q):
            w = layer.weight
            rows = w.reshape(w.shape[0], -1)
            if f is not None and f.kind == "mx":
                w.copy_(formats.quantize(rows, f, block=_block(f, rows)).reshape(w.shape))
            elif f is not None:
                w.copy_(formats.quantize(rows, f, scale="channel").reshape(w.shape))
            if ranges is not None:
                if name not in ranges:
                    raise ConfigError("ranges", name, f"a calibrated range for every layer: {', '.join(ranges)}")
                layer.register_forward_pre_hook(
                    lambda _, inputs, amax=ranges[name]: (round_static(inputs[0], fa, amax), *inputs[1:]))
    return q


def timestep_batches(x0: torch.Tensor, schedule, ts: torch.Tensor, generator: torch.Generator
                     ) -> Callable[[], Iterable[tuple]]:
    """Calibration inputs for a denoiser model(x_t, t): held-out data noised to each time in `ts`."""
    def batches():
        for t in ts.tolist():
            a = schedule.alpha_bar(torch.tensor([t], dtype=torch.float64)).float()
            eps = torch.randn(x0.shape, generator=generator).to(x0.device)
            yield a.sqrt() * x0 + (1 - a).sqrt() * eps, torch.full((len(x0),), float(t), device=x0.device)
    return batches
