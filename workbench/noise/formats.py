"""Number formats and rounding to them, exactly as the standards define them, on any machine.

Floating formats follow IEEE 754 (fp32, bf16, fp16 and any custom `eXmY`: the top exponent holds inf and NaN) and
the OCP 8-bit FP specification (fp8_e4m3 is the "fn" variant: no infinities, max 448, saturating on cast;
fp8_e5m2 has infinities, max 57344) and OCP Microscaling (fp6_e2m3, fp6_e3m2, fp4_e2m1: no inf or NaN, saturating;
MX blocks of 32 elements sharing a power-of-two E8M0 scale). Integer formats are symmetric, scaled from the
absolute maximum. `quantize` returns the same dtype and shape; its gradient is straight-through.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

from ..errors import ConfigError

ROUNDINGS = ("nearest", "stochastic")
SCALINGS = (None, "tensor", "channel")


@dataclass(frozen=True)
class Format:
    """Facts of one number format. Floating: exp_bits, man_bits, bias, max, min_normal, min_subnormal;
    integer: bits, qmax; MX: block size and element format."""

    name: str
    kind: str  # "float" | "int" | "mx"
    exp_bits: int = 0
    man_bits: int = 0
    ieee: bool = True  # top exponent reserved for inf/NaN (IEEE 754); False: all codes finite (OCP fn/MX)
    bits: int = 0
    block: int = 0
    element: "Format | None" = None

    @property
    def bias(self) -> int:
        return 2 ** (self.exp_bits - 1) - 1

    @property
    def emax(self) -> int:
        """The largest exponent of a finite value."""
        top = 2**self.exp_bits - 1 - (1 if self.ieee else 0)
        return top - self.bias

    @property
    def emin(self) -> int:
        return 1 - self.bias

    @property
    def max(self) -> float:
        if self.kind == "int":
            return float(self.qmax)
        if self.kind == "mx":
            return self.element.max * 2.0**127
        if self.name == "fp8_e4m3":  # OCP E4M3 "fn": S.1111.111 is NaN, so the top mantissa is 110
            return (2 - 2 ** -(self.man_bits - 1)) * 2.0**self.emax
        return (2 - 2.0**-self.man_bits) * 2.0**self.emax

    @property
    def min_normal(self) -> float:
        return 2.0**self.emin if self.kind == "float" else float("nan")

    @property
    def min_subnormal(self) -> float:
        return 2.0 ** (self.emin - self.man_bits) if self.kind == "float" else float("nan")

    @property
    def has_inf(self) -> bool:
        return self.kind == "float" and self.ieee

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1


def _float(name, e, m, ieee=True):
    return Format(name, "float", exp_bits=e, man_bits=m, ieee=ieee, bits=1 + e + m)


_FORMATS = {
    "fp32": _float("fp32", 8, 23),
    "bf16": _float("bf16", 8, 7),
    "fp16": _float("fp16", 5, 10),
    "fp8_e4m3": _float("fp8_e4m3", 4, 3, ieee=False),
    "fp8_e5m2": _float("fp8_e5m2", 5, 2),
    "fp6_e2m3": _float("fp6_e2m3", 2, 3, ieee=False),
    "fp6_e3m2": _float("fp6_e3m2", 3, 2, ieee=False),
    "fp4_e2m1": _float("fp4_e2m1", 2, 1, ieee=False),
    "int8": Format("int8", "int", bits=8),
    "int4": Format("int4", "int", bits=4),
}
_FORMATS.update({
    "mxfp8_e4m3": Format("mxfp8_e4m3", "mx", block=32, element=_FORMATS["fp8_e4m3"]),
    "mxfp8_e5m2": Format("mxfp8_e5m2", "mx", block=32, element=_FORMATS["fp8_e5m2"]),
    "mxfp6_e2m3": Format("mxfp6_e2m3", "mx", block=32, element=_FORMATS["fp6_e2m3"]),
    "mxfp6_e3m2": Format("mxfp6_e3m2", "mx", block=32, element=_FORMATS["fp6_e3m2"]),
    "mxfp4_e2m1": Format("mxfp4_e2m1", "mx", block=32, element=_FORMATS["fp4_e2m1"]),
    # MXINT8: 8-bit two's complement elements with an implicit scale of 2^-6 (values in [-2, 2 - 2^-6])
    "mxint8": Format("mxint8", "mx", block=32, element=Format("int8_mx", "int", bits=8)),
})
NAMES = tuple(_FORMATS)


def get(name: str) -> Format:
    """A format by name: one of NAMES, or a custom IEEE-style float "eXmY" (e.g. "e3m4")."""
    if isinstance(name, Format):
        return name
    if name in _FORMATS:
        return _FORMATS[name]
    match = re.fullmatch(r"e(\d+)m(\d+)", str(name))
    if match and 2 <= int(match[1]) <= 11 and 0 <= int(match[2]) <= 52:
        return _float(name, int(match[1]), int(match[2]))
    match = re.fullmatch(r"int(\d+)", str(name))
    if match and 2 <= int(match[1]) <= 16:
        return Format(name, "int", bits=int(match[1]))
    raise ConfigError("format", name, f"one of {', '.join(NAMES)}, eXmY (2 <= X <= 11, Y <= 52) or intN "
                                      "(2 <= N <= 16)")


#: formats PyTorch can cast to natively: round-to-nearest-even by a cast gives the same bits (tested)
_NATIVE = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp8_e4m3": torch.float8_e4m3fn,
           "fp8_e5m2": torch.float8_e5m2}


class PerModel:
    """Generators for the stochastic rounding of K stacked models, one per model: a tensor whose leading dim holds
    the models in order (K rows, or any multiple of K, model-major) draws each model's rows from that model's
    generator, exactly what the model rounded alone would draw. Pass it where a torch.Generator goes."""

    def __init__(self, generators):
        self.generators = list(generators)

    def rand(self, shape, dtype) -> torch.Tensor:
        k = len(self.generators)
        if not shape or shape[0] % k:
            raise ValueError(f"a leading dim that holds the {k} models (got shape {tuple(shape)})")
        part = (shape[0] // k, *shape[1:])
        return torch.cat([torch.rand(part, generator=g, dtype=dtype) for g in self.generators])


def _round(v: torch.Tensor, rounding: str, generator) -> torch.Tensor:
    """Round to an integer: half to even, or stochastically (up with probability frac(v): E = v)."""
    if rounding == "nearest":
        return torch.round(v)  # round half to even
    return _stochastic_floor_(v.clone(), generator)


def _stochastic_floor_(v: torch.Tensor, generator) -> torch.Tensor:
    """In place: floor(v) + [u < v - floor(v)], u ~ U[0, 1). Not floor(v + u): that sum is rounded in v's dtype
    and moves an integer v up by one when u is within an ulp of 1. Here an integer never moves, and the result is
    always one of v's two integer neighbours; v - floor(v) is exact in binary floating point."""
    fl = torch.floor(v)
    if isinstance(generator, PerModel):
        u = generator.rand(v.shape, v.dtype).to(v.device)
    else:
        u = torch.rand(v.shape, generator=generator, dtype=v.dtype, device="cpu").to(v.device)
    up = u < v.sub_(fl)  # v now holds its fractional part
    return fl.add_(up.to(fl.dtype))


def _float_round(a: torch.Tensor, fmt: Format, rounding: str, generator) -> torch.Tensor:
    """Round |x| (finite, ≥ 0) to `fmt`: ulp = 2^(max(e, emin) - man_bits), e = floor(log2 |x|)."""
    _, exp = torch.frexp(a)  # a = m·2^exp, m in [0.5, 1): floor(log2 a) = exp - 1
    e = torch.clamp(exp - 1, min=fmt.emin)  # subnormals share the smallest exponent
    ulp = torch.ldexp(torch.ones_like(a), e - fmt.man_bits)
    q = _round(a / ulp, rounding, generator) * ulp  # exact: a / ulp is a power-of-two scaling
    if fmt.has_inf:
        return torch.where(q > fmt.max, torch.full_like(q, math.inf), q)
    return torch.clamp(q, max=fmt.max)  # saturating


def _float_quantize(x: torch.Tensor, fmt: Format, rounding: str, generator, inplace: bool = False) -> torch.Tensor:
    """Round to a floating format; `inplace` lets the float32 path reuse x (a temporary of the caller's)."""
    native = _NATIVE.get(fmt.name)
    if native is not None and fmt.name != "fp8_e4m3" and rounding == "nearest" and \
            x.dtype in (torch.float32, torch.bfloat16, torch.float16):
        return x.to(native).to(x.dtype)  # one correctly rounded cast (e4m3fn's cast back is slow on CPUs)
    if x.dtype != torch.float64 and fmt.exp_bits <= 7 and fmt.man_bits <= 22:
        if x.dtype == torch.float32:
            return _float32_quantize(x, fmt, rounding, generator, inplace)
        return _float32_quantize(x.float(), fmt, rounding, generator, True).to(x.dtype)
    a = x.double().abs()
    finite = torch.isfinite(a)
    q = _float_round(torch.where(finite, a, torch.zeros_like(a)), fmt, rounding, generator)
    q = torch.where(finite, q, a if fmt.has_inf else torch.full_like(a, fmt.max))  # ±inf: kept or saturated
    q = torch.where(torch.isnan(a), a, q)
    return torch.copysign(q, x.double()).to(x.dtype)  # keeps the sign of zero


def _float32_quantize(x: torch.Tensor, fmt: Format, rounding: str, generator, inplace: bool = False) -> torch.Tensor:
    """The same rounding on float32 bits (a training step calls this on every tensor, so it works in place): the
    ulp of |x| is its exponent field less man_bits, floored at the format's subnormal ulp; every step is exact in
    float32 for formats whose values and ulps are float32 normals (exp_bits ≤ 7, man_bits ≤ 22)."""
    v = x if inplace else x.clone()
    ulp = v.view(torch.int32) & 0x7F800000  # the sign bit is dropped: a positive power of two
    # floored at the subnormal ulp; capped below inf's exponent field, so that ±inf / ulp stays ±inf (not NaN)
    ulp.sub_(fmt.man_bits << 23).clamp_(min=(fmt.emin - fmt.man_bits + 127) << 23, max=254 << 23)
    ulp = ulp.view(torch.float32)
    v.div_(ulp)
    if rounding == "nearest":
        v.round_()  # half to even, symmetric in the sign (and -0 stays -0)
    else:  # |v| rounded up with probability frac(|v|), with the sign put back (-0 stays -0)
        sign = torch.signbit(v)
        v = _stochastic_floor_(v.abs_(), generator)
        v.mul_(torch.where(sign, -1.0, 1.0))
    v.mul_(ulp)
    if fmt.has_inf:
        v.masked_fill_(v > fmt.max, math.inf).masked_fill_(v < -fmt.max, -math.inf)  # inf / ulp stays inf
    else:
        v.clamp_(-fmt.max, fmt.max)  # saturating, inf included; NaN stays NaN
    return v


def _int_quantize(v: torch.Tensor, fmt: Format, rounding: str, generator) -> torch.Tensor:
    return torch.clamp(_round(v, rounding, generator), -fmt.qmax, fmt.qmax)


def _absmax(x: torch.Tensor, scaling: str | None) -> torch.Tensor:
    """max |x| per tensor, or per row of dim 0 ("channel"). Per tensor from one min/max pass, no |x| temporary
    (2-3x faster on a CPU; aminmax along a dim is the slow one there, so rows keep |x|.amax)."""
    if scaling == "channel" and x.ndim >= 2 and x.shape[0] > 1:
        return x.abs().amax(dim=tuple(range(1, x.ndim)), keepdim=True)  # one scale per row (output channel)
    lo, hi = torch.aminmax(x)
    amax = torch.maximum(-lo, hi)  # nan where x has a nan, as |x|.amax() gives
    return amax.view([1] * x.ndim) if scaling == "channel" else amax


def _mx_quantize(x: torch.Tensor, fmt: Format, rounding: str, generator, block: int) -> torch.Tensor:
    """OCP MX: blocks along the last dim share X = 2^(floor(log2 amax) - emax_elem) (E8M0, 2^-127..2^127)."""
    shape = x.shape
    xw = x.to(torch.float64 if x.dtype == torch.float64 else torch.float32)
    flat = xw.reshape(-1, shape[-1]) if xw.ndim else xw.reshape(1, 1)
    blocks = flat.reshape(flat.shape[0], -1, block)
    amax = torch.nan_to_num(blocks.abs(), nan=0.0, posinf=0.0).amax(-1, keepdim=True)
    elem = fmt.element
    emax_elem = 0 if elem.kind == "int" else elem.emax
    _, exp = torch.frexp(amax)
    shared = torch.clamp(exp - 1 - emax_elem, -127, 127)
    shared = torch.where(amax > 0, shared, torch.full_like(shared, -127))
    # the scale as a power of two, in float64 (2^-127 is below float32's normals): dividing by it is exact
    v = (blocks.double() * torch.ldexp(torch.ones_like(amax, dtype=torch.float64), -shared))
    if elem.kind == "int":
        q = _int_quantize(v * 64, elem, rounding, generator).clamp(min=-128) / 64  # 2^-6 implicit scale
    else:
        # OCP MX v1.0: element values saturate to the element format's max normal (no inf for a finite input)
        q = _float_quantize(v, elem, rounding, generator)
        q = torch.where(torch.isfinite(v), q.clamp(-elem.max, elem.max), q)
    out = torch.ldexp(q, shared).reshape(flat.shape)
    return out.reshape(shape).to(x.dtype)


def quantize(x: torch.Tensor, fmt="fp8_e4m3", rounding: str = "nearest", generator: torch.Generator | None = None,
             scale: str | None = None, block: int | None = None) -> torch.Tensor:
    """Round x to the values `fmt` can hold (quantize-dequantize); same dtype and shape out.

    rounding: "nearest" (ties to even) or "stochastic" (unbiased; draws from `generator`).
    scale (floating formats): None (the raw values), "tensor" or "channel": x is divided by s = amax / fmt.max
    (amax per tensor, or per row of dim 0), rounded, and multiplied back, s and x / s computed in x's dtype.
    Integer formats always scale from the absolute maximum ("tensor" unless "channel"); MX formats carry their own
    per-block power-of-two scales along the last dim, in blocks of `block` (default the format's, 32), which must
    divide it. The gradient is straight-through (identity).
    """
    f = get(fmt)
    if rounding not in ROUNDINGS:
        raise ConfigError("rounding", rounding, f"one of {', '.join(ROUNDINGS)}")
    if scale not in SCALINGS:
        raise ConfigError("scale", scale, "None, tensor or channel")
    if not torch.is_floating_point(x):
        raise ConfigError("x", str(x.dtype), "a floating-point tensor")
    if f.kind == "mx":
        block = block or f.block
        last = x.shape[-1] if x.ndim else 1
        if block < 1 or last % block:
            raise ConfigError("block", block, f"a block size dividing the last dimension ({last}), e.g. "
                                              f"{', '.join(str(b) for b in (8, 16, 32) if last % b == 0) or 1}")
    with torch.no_grad():
        xd = x.detach()
        if f.kind == "mx":
            q = _mx_quantize(xd, f, rounding, generator, block)
        elif f.kind == "int":
            s = _absmax(xd, scale) / f.qmax
            s = torch.where(s > 0, s, torch.ones_like(s))
            q = _int_quantize(xd / s, f, rounding, generator) * s
        elif scale is None:
            q = _float_quantize(xd, f, rounding, generator)
        else:
            s = _absmax(xd, scale) / f.max
            s = torch.where((s > 0) & torch.isfinite(s), s, torch.ones_like(s))
            q = _float_quantize(xd / s, f, rounding, generator, inplace=True).mul_(s)
        q = q.to(x.dtype)
    if x.requires_grad:
        return x + (q - x).detach()  # straight-through estimator
    return q


def values(fmt) -> torch.Tensor:
    """Every finite value a floating format (≤ 16 bits) can hold, sorted, as float64 (both zeros once)."""
    f = get(fmt)
    if f.kind != "float" or f.bits > 16:
        raise ConfigError("format", f.name, "a floating format of at most 16 bits")
    exps = torch.arange(0, 2**f.exp_bits - (1 if f.ieee else 0), dtype=torch.float64)
    mans = torch.arange(0, 2**f.man_bits, dtype=torch.float64)
    e, m = torch.meshgrid(exps, mans, indexing="ij")
    mag = torch.where(e == 0, m / 2**f.man_bits * 2.0**f.emin, (1 + m / 2**f.man_bits) * 2.0 ** (e - f.bias))
    mag = mag.flatten()
    mag = mag[mag <= f.max]
    return torch.cat([-mag.flip(0), mag[1:]])
