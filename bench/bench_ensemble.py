"""Training K small MLPs: the workbench's ensemble engine against what a researcher would write instead.

Every route trains K = 64 MLPs 64-128-128-10 on digits (batch 128, Adam) for the same number of steps, each model
from its own initialisation and batch order:
- the per-model loop (torch.optim.Adam; and with fused=True, which a researcher must ask for);
- the skilled user's route: torch.func.stack_module_state + vmap(functional_call) over the stacked parameters with
  torch.optim.Adam(fused=True) on the stacked tensors, eager and under torch.compile;
- the engine (workbench.engine.ensemble).
Reports seconds, the engine's speed-up over each, its achieved GFLOP/s and the machine's fp32 matmul rate measured
in the same run.

    python bench/bench_ensemble.py [--device cuda] [--models 64] [--steps 100]
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import torch
import torch.nn.functional as F

from workbench import datasets, models
from workbench.engine import ensemble, losses


def matmul_rate(device, n=512, reps=50) -> float:
    a = torch.randn(n, n, device=device)
    for _ in range(5):
        a @ a
    sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        a @ a
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e9


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def setup(k, width, device):
    data = datasets.digits(1200, 0)
    gens = [torch.Generator().manual_seed(i) for i in range(k)]
    mods = [models.build("mlp", input_dim=64, width=width, depth=2, num_classes=10, generator=g) for g in gens]
    return data, gens, mods


def loop(k, steps, batch, width, device, fused=None) -> float:
    data, gens, mods = setup(k, width, device)
    x, y = data.x_train.to(device), data.y_train.to(device)
    idx = [torch.randint(0, len(y), (steps, batch), generator=g).to(device) for g in gens]
    sync(device)
    t = time.perf_counter()
    for m, ix in zip(mods, idx):
        m.to(device)
        opt = torch.optim.Adam(m.parameters(), lr=1e-3, fused=fused)
        for s in range(steps):
            loss = F.cross_entropy(m(x[ix[s]]), y[ix[s]])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    sync(device)
    return time.perf_counter() - t


def vmapped(k, steps, batch, width, device, compiled=False) -> float:
    """torch.func: the K models' parameters stacked, one vmapped functional_call per step, autograd through it, and
    torch's fused Adam on the stacked tensors (elementwise: the same update as per model)."""
    import copy

    from torch.func import functional_call, stack_module_state, vmap

    data, gens, mods = setup(k, width, device)
    mods = [m.to(device) for m in mods]
    params, buffers = stack_module_state(mods)  # name -> (K, ...), leaves that require grad
    base = copy.deepcopy(mods[0]).to("meta")

    def one(p, b, x, y):
        return F.cross_entropy(functional_call(base, (p, b), (x,)), y)

    losses_of = vmap(one)  # (params, buffers, x (K, B, 64), y (K, B)) -> (K,)
    if compiled:
        losses_of = torch.compile(losses_of)
    opt = torch.optim.Adam(params.values(), lr=1e-3, fused=True)
    x, y = data.x_train.to(device), data.y_train.to(device)
    idx = torch.stack([torch.randint(0, len(y), (steps, batch), generator=g) for g in gens], 1).to(device)

    def step(ix):
        loss = losses_of(params, buffers, x[ix], y[ix]).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3 if compiled else 1):  # warm-up (not timed): compiling happens here
        step(idx[0])
    sync(device)
    t = time.perf_counter()
    for s in range(steps):
        step(idx[s])
    sync(device)
    return time.perf_counter() - t


def engine(k, steps, batch, width, device) -> float:
    data, gens, mods = setup(k, width, device)
    net = ensemble.stack(mods, device)
    opt = ensemble.Optimizer(net.tensors(), "adam", lr=1e-3)
    loss_fn = losses.make("ce", num_models=k, num_examples=1200, num_classes=10, device=device)
    x = data.x_train.to(device).expand(k, -1, -1)  # (K, n, 64): one data set, a view per model
    y = data.y_train.to(device).expand(k, -1)
    idx = torch.stack([torch.randint(0, 1200, (steps, batch), generator=g) for g in gens], 1).to(device)
    ensemble.train_step(net, opt, loss_fn, x, y, idx[0])  # warm-up (not timed)
    sync(device)
    t = time.perf_counter()
    for s in range(steps):
        ensemble.train_step(net, opt, loss_fn, x, y, idx[s])
    sync(device)
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--models", type=int, default=64)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-compile", dest="compile", action="store_false",
                    help="skip the torch.compile'd vmap route (its compilation takes a minute or more)")
    args = ap.parse_args()
    k, s, b, w, dev = args.models, args.steps, args.batch, args.width, args.device
    flops = k * s * 6 * b * (64 * w + w * w + w * 10)  # forward 2, backward 4 per multiply-add
    rate = max(matmul_rate(dev) for _ in range(args.repeats))
    t_loop = min(loop(k, s, b, w, dev) for _ in range(args.repeats))
    t_eng = min(engine(k, s, b, w, dev) for _ in range(args.repeats))
    t_fused = min(loop(k, s, b, w, dev, fused=True) for _ in range(args.repeats))
    t_vmap = min(vmapped(k, s, b, w, dev) for _ in range(args.repeats))
    t_compiled = min(vmapped(k, s, b, w, dev, compiled=True) for _ in range(args.repeats)) if args.compile else None
    out = {
        "device": torch.cuda.get_device_name(dev) if dev.startswith("cuda") else platform.processor() or "cpu",
        "threads": torch.get_num_threads(), "torch": torch.__version__, "models": k, "steps": s, "batch": b,
        "loop_s": round(t_loop, 3), "engine_s": round(t_eng, 3), "speedup": round(t_loop / t_eng, 2),
        "loop_fused_adam_s": round(t_fused, 3), "speedup_vs_fused_loop": round(t_fused / t_eng, 2),
        "vmap_s": round(t_vmap, 3), "speedup_vs_vmap": round(t_vmap / t_eng, 2),
        "vmap_compiled_s": None if t_compiled is None else round(t_compiled, 3),
        "speedup_vs_vmap_compiled": None if t_compiled is None else round(t_compiled / t_eng, 2),
        "engine_gflops": round(flops / t_eng / 1e9, 1), "matmul_gflops": round(rate, 1),
        "fraction_of_matmul": round(flops / t_eng / 1e9 / rate, 2),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
