"""Emulated low-precision training steps against the fp32 step of the same model, in one run.

The same stacked MLP (64-W-W-10 on digits, batch 128, Adam) trains with no rounding (fp32) and with weights,
activations and gradients rounded to each format (fp32 master weights and accumulation). Reports seconds per step
and the overhead ratio to fp32 for one model and for an ensemble of K, plus the rounding throughput of
`formats.quantize` against a plain copy of the same tensor. A format written FORMAT:stochastic rounds
stochastically, each model from its own stream (a model's rounding never depends on its company), to measure what
that costs against round-to-nearest.

    python bench/bench_precision.py [--device cuda] [--steps 100] [--models 64] [--width 512]
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from workbench.engine import ensemble, losses
from workbench.engine.precision import Precision
from workbench.noise import formats

from bench_ensemble import setup, sync

FORMATS = ("fp32", "bf16", "fp8_e4m3", "fp8_e4m3:stochastic", "fp8_e5m2", "mxfp8_e4m3", "fp4_e2m1", "int8")


def step_time(fmt, k, steps, batch, width, device) -> float:
    data, gens, mods = setup(k, width, device)
    name, _, rounding = fmt.partition(":")
    streams = [torch.Generator().manual_seed(m) for m in range(k)]
    prec = None if name == "fp32" else Precision(name, rounding=rounding or "nearest", num_models=k, device=device,
                                                 generators=streams if rounding else None)
    net = ensemble.stack(mods, device, prec)
    opt = ensemble.Optimizer(net.tensors(), "adam", lr=1e-3)
    loss_fn = losses.make("ce", num_models=k, num_examples=1200, num_classes=10, device=device)
    x = data.x_train.to(device).expand(k, -1, -1)
    y = data.y_train.to(device).expand(k, -1)
    idx = torch.stack([torch.randint(0, 1200, (steps, batch), generator=g) for g in gens], 1).to(device)
    for s in range(3):  # warm-up
        ensemble.train_step(net, opt, loss_fn, x, y, idx[s])
    sync(device)
    t = time.perf_counter()
    for s in range(steps):
        ensemble.train_step(net, opt, loss_fn, x, y, idx[s])
    sync(device)
    return (time.perf_counter() - t) / steps


def throughput(fmt, n, device, reps=20) -> float:
    x = torch.randn(n, device=device)
    f = formats.get(fmt)
    kw = {"scale": "tensor"} if f.kind == "float" and f.bits <= 8 else {}
    formats.quantize(x, fmt, **kw)
    sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        formats.quantize(x, fmt, **kw)
    sync(device)
    return n * reps / (time.perf_counter() - t) / 1e9


def copy_rate(n, device, reps=20) -> float:
    x = torch.randn(n, device=device)
    sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        x.clone()
    sync(device)
    return n * reps / (time.perf_counter() - t) / 1e9


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--models", type=int, default=64)
    ap.add_argument("--width", type=int, default=512, help="width of the single model (the ensemble uses 128)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--formats", default=",".join(FORMATS))
    args = ap.parse_args()
    dev, fmts = args.device, args.formats.split(",")
    out = {"device": torch.cuda.get_device_name(dev) if dev.startswith("cuda") else platform.processor() or "cpu",
           "threads": torch.get_num_threads(), "torch": torch.__version__, "steps": args.steps}
    for label, k, width in (("one_model", 1, args.width), (f"ensemble_{args.models}", args.models, 128)):
        times = {f: min(step_time(f, k, args.steps, 128, width, dev) for _ in range(args.repeats)) for f in fmts}
        out[label] = {"width": width, "step_ms": {f: round(t * 1e3, 3) for f, t in times.items()},
                      "overhead_vs_fp32": {f: round(t / times["fp32"], 2) for f, t in times.items()}}
    n = 1 << 22
    out["quantize_gelem_per_s"] = {f: round(throughput(f, n, dev), 3) for f in fmts if f != "fp32" and ":" not in f}
    out["copy_gelem_per_s"] = round(copy_rate(n, dev), 3)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
