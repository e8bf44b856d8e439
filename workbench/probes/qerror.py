"""The quantization-error lab: how much signal each format keeps, on synthetic and real tensors (exact, seconds).

SQNR = 10·log10(Σ x² / Σ (x − Q(x))²) in dB, every tensor scaled per tensor from its absolute maximum (the
integer and narrow float formats) or per block (MX). Dither after NoisyQuant (Liu et al. 2023, "NoisyQuant: noisy
bias-enhanced post-training activation quantization for vision transformers"): a fixed uniform noise N ~ U(±Δ/2)
per input channel is added to the activation before rounding and its effect removed after the linear layer,
y = W·Q(x + N) − W·N, so the error is measured at the layer's output.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import xarray as xr

from ..errors import ConfigError
from ..noise import formats

DISTRIBUTIONS = ("gaussian", "laplace", "student_t", "uniform", "gelu")
LAB_FORMATS = ("int8", "fp8_e4m3", "fp8_e5m2", "mxfp8_e4m3", "int6", "fp6_e2m3", "fp6_e3m2", "mxfp6_e2m3", "int4",
               "fp4_e2m1", "mxfp4_e2m1")


def sample(dist: str, shape, generator: torch.Generator, dof: float = 3.0) -> torch.Tensor:
    """Unit-scale draws: gaussian N(0, 1), laplace (scale 1/√2: variance 1), student_t with `dof` degrees of
    freedom (heavy tails), uniform U(±√3) (variance 1), gelu: GELU of N(0, 2²) (a skewed post-activation tensor)."""
    n = int(np.prod(shape))
    if dist == "gaussian":
        x = torch.randn(n, generator=generator)
    elif dist == "laplace":
        u = torch.rand(n, generator=generator) - 0.5
        x = -torch.sign(u) * torch.log1p(-2 * u.abs()) / math.sqrt(2)
    elif dist == "student_t":
        z = torch.randn(n, generator=generator)
        chi2 = torch.randn(n, int(dof), generator=generator).pow(2).sum(1) if float(dof).is_integer() else None
        if chi2 is None:
            raise ConfigError("dof", dof, "an integer number of degrees of freedom")
        x = z / torch.sqrt(chi2 / dof)
    elif dist == "uniform":
        x = (torch.rand(n, generator=generator) * 2 - 1) * math.sqrt(3)
    elif dist == "gelu":
        x = torch.nn.functional.gelu(2 * torch.randn(n, generator=generator))
    else:
        raise ConfigError("distribution", dist, f"one of {', '.join(DISTRIBUTIONS)}")
    return x.reshape(shape)


def sqnr(x: torch.Tensor, q: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB (inf when exact)."""
    x, q = x.double(), q.double()
    noise = (x - q).pow(2).sum().item()
    return math.inf if noise == 0 else 10 * math.log10(x.pow(2).sum().item() / noise)


def quantize_scaled(x: torch.Tensor, fmt: str, generator=None, rounding: str = "nearest") -> torch.Tensor:
    """Round with the scaling each kind of format uses: per tensor from the absolute maximum (int and float), per
    block along the last dim (MX)."""
    f = formats.get(fmt)
    scale = "tensor" if f.kind == "float" else None
    return formats.quantize(x, f, rounding, generator, scale=scale)


def step_size(x: torch.Tensor, fmt: str) -> torch.Tensor:
    """Δ, the rounding step of an integer format scaled from x's absolute maximum."""
    f = formats.get(fmt)
    if f.kind != "int":
        raise ConfigError("format", fmt, "an integer format (int8, int6, int4, ...) for dithering")
    return x.abs().amax() / f.qmax


def layer_error(x: torch.Tensor, w: torch.Tensor, fmt: str, dither: float = 0.0,
                generator: torch.Generator | None = None) -> float:
    """Mean squared error of a linear layer's output y = x Wᵀ when x (n, d_in) is rounded to `fmt` (integer,
    scaled per tensor), with a fixed noisy bias N ~ U(±dither·Δ) per input channel added before rounding and
    N Wᵀ removed after (NoisyQuant). dither = 0 is plain rounding; 0.5 spans one rounding step."""
    exact = x @ w.T
    n_bias = torch.zeros(x.shape[1])
    if dither:
        delta = step_size(x, fmt)
        n_bias = (torch.rand(x.shape[1], generator=generator) * 2 - 1) * dither * delta
    s = x.abs().amax() / formats.get(fmt).qmax  # the scale of the un-dithered tensor: the noise stays in range
    q = torch.clamp(torch.round((x + n_bias) / s), -formats.get(fmt).qmax, formats.get(fmt).qmax) * s
    return float(((q @ w.T - n_bias @ w.T) - exact).pow(2).mean())


def dithered(x: torch.Tensor, fmt: str, amount: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Round x + N and remove N again: N ~ U(±amount·Δ) fixed per channel (the last dim), Δ the rounding step of
    an integer format scaled from x's absolute maximum (NoisyQuant's noisy bias, on the tensor itself)."""
    f = formats.get(fmt)
    delta = step_size(x, fmt)
    noise = (torch.rand(x.shape[-1], generator=generator) * 2 - 1) * amount * delta
    q = torch.clamp(torch.round((x + noise) / delta), -f.qmax, f.qmax) * delta
    return q - noise


def lab(formats_: tuple = LAB_FORMATS, distributions: tuple = DISTRIBUTIONS[:4], n: int = 65_536, seed: int = 0,
        tensors: dict[str, torch.Tensor] | None = None, dither: tuple = (0.0, 0.5)) -> xr.Dataset:
    """SQNR (dB) of every format on every distribution (and on the given real `tensors`, e.g. a trained model's
    weights and activations), without dither and with a uniform dither of each amount (× the rounding step, integer
    formats only: nan for the others). Returns a Dataset with variable sqnr over (format, tensor, dither)."""
    g = torch.Generator().manual_seed(seed)
    named = {d: sample(d, (n // 32, 32), g) for d in distributions}
    for name, t in (tensors or {}).items():
        t = t.detach().float()
        named[name] = t.reshape(-1, t.shape[-1]) if t.shape[-1] % 32 == 0 else t.reshape(-1, 32)[: t.numel() // 32]

    def one(x, f, amount):
        if amount == 0:
            return sqnr(x, quantize_scaled(x, f))
        if formats.get(f).kind != "int":
            return float("nan")
        return sqnr(x, dithered(x, f, amount, torch.Generator().manual_seed(seed + 1)))

    values = np.array([[[one(x, f, a) for a in dither] for x in named.values()] for f in formats_])
    bits = [formats.get(f).bits or formats.get(f).element.bits for f in formats_]
    return xr.Dataset({"sqnr": (("format", "tensor", "dither"), values)},
                      coords={"format": list(formats_), "tensor": list(named), "dither": list(dither),
                              "bits": ("format", bits)},
                      attrs={"units": "dB", "n": n, "seed": seed})


def digits_mlp(seed: int = 0, epochs: int = 5, width: int = 128, weight_decay: float = 0.0,
               clip: float | None = None):
    """A small MLP (64-width-width-10) trained on digits in fp32, plain PyTorch (AdamW lr 1e-3, batches of 128):
    `weight_decay` AdamW's decoupled decay, `clip` the gradients' global norm (None: not clipped). Returns the net
    and the data (datasets.Data); the split and init follow `seed`."""
    from .. import datasets, models

    d = datasets.digits(1200, seed)
    g = torch.Generator().manual_seed(seed)
    net = models.build("mlp", input_dim=64, width=width, depth=2, num_classes=10, generator=g)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=weight_decay)
    for _ in range(epochs):
        for idx in torch.randperm(len(d.y_train), generator=g).split(128):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(d.x_train[idx]), d.y_train[idx]).backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
            opt.step()
    return net, d


def model_tensors(seed: int = 0, epochs: int = 5, width: int = 128) -> dict[str, torch.Tensor]:
    """Weights and hidden activations of a small MLP trained on digits for a few epochs (`digits_mlp`)."""
    net, d = digits_mlp(seed, epochs, width)
    with torch.no_grad():
        hidden = net.features[:3](d.x_test)  # after the first ReLU
        pre = net.features[:2](d.x_test)  # before it
    return {"model weights": net.features[3].weight.detach(), "model activations": hidden,
            "model pre-activations": pre}
