"""The Hessian's top eigenvalue without forming it, against the dense Hessian, and what a live sharpness probe costs.

1. For tanh MLPs 64-W-W-10 on 500 digits (MSE) of growing width: seconds and Hessian-vector products for the top
   eigenvalue by Lanczos (20 steps) against forming the dense Hessian (torch.autograd.functional.hessian) and
   diagonalising it, while it fits (its float32 size is printed; beyond --dense-limit parameters it is skipped).
2. The edge-of-stability study's training time with the sharpness probe at its default interval against the same
   run without it.

    python bench/bench_hessian.py [--device cuda]
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time

import torch
from torch.func import functional_call

import workbench as wb
from workbench import datasets, models
from workbench.probes import hessian


def problem(width, device):
    d = datasets.digits(500, 0)
    net = models.build("mlp", input_dim=64, width=width, depth=2, num_classes=10, activation="tanh",
                       generator=torch.Generator().manual_seed(0)).to(device)
    x, y = d.x_train.to(device), torch.nn.functional.one_hot(d.y_train, 10).float().to(device)
    params = {n: p.detach() for n, p in net.named_parameters()}
    return (lambda p: 0.5 * (functional_call(net, p, (x,)) - y).pow(2).sum(-1).mean()), params


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def lanczos_cost(width, device, iters=20):
    loss, params = problem(width, device)
    calls = {"n": 0}
    inner = hessian.hvp

    def counting(lf, p):
        f = inner(lf, p)
        return lambda v: (calls.__setitem__("n", calls["n"] + 1), f(v))[1]

    hessian.hvp = counting
    try:
        sync(device)
        t = time.perf_counter()
        top = hessian.top_eigenvalues(loss, params, k=1, iters=iters, generator=torch.Generator().manual_seed(0))
        sync(device)
        return time.perf_counter() - t, calls["n"], float(top[0])
    finally:
        hessian.hvp = inner


def dense_cost(width, device):
    loss, params = problem(width, device)
    names = list(params)
    sizes = [params[n].numel() for n in names]
    flat = torch.cat([params[n].reshape(-1) for n in names])

    def f(v):
        return loss({n: part.reshape(params[n].shape) for n, part in zip(names, torch.split(v, sizes))})

    sync(device)
    t = time.perf_counter()
    h = torch.autograd.functional.hessian(f, flat)
    top = torch.linalg.eigvalsh(h)[-1]
    sync(device)
    return time.perf_counter() - t, float(top)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--widths", default="8,16,32,64,128,256,512")
    ap.add_argument("--dense-limit", type=int, default=12_000, help="largest parameter count for the dense path")
    args = ap.parse_args()
    dev = args.device
    out = {"device": torch.cuda.get_device_name(dev) if dev.startswith("cuda") else platform.processor() or "cpu",
           "threads": torch.get_num_threads(), "torch": torch.__version__, "sizes": []}
    lanczos_cost(8, dev)  # warm-up: the first call of torch.func's transforms pays for their setup
    for w in map(int, args.widths.split(",")):
        n = 64 * w + w + w * w + w + w * 10 + 10
        t_l, hvps, top_l = lanczos_cost(w, dev)
        row = {"width": w, "params": n, "lanczos_s": round(t_l, 4), "hvps": hvps, "top_lanczos": round(top_l, 5),
               "dense_bytes": 4 * n * n}
        if n <= args.dense_limit:
            t_d, top_d = dense_cost(w, dev)
            row.update(dense_s=round(t_d, 3), top_dense=round(top_d, 5), dense_over_lanczos=round(t_d / t_l, 1))
        else:
            row.update(dense_s=None, note=f"dense Hessian skipped: {4 * n * n / 2**30:.1f} GiB in float32")
        out["sizes"].append(row)
    store = wb.Store(tempfile.mkdtemp(prefix="bench-hessian-"))  # not the user's catalog
    common = dict(steps=1000, n_train=500, seed=0, device=dev, force=True, progress=False, store=store)
    runs = {}
    for label, every in (("without probe", 100_000), ("probe at default interval", None)):
        dials = dict(common) if every is None else {**common, "sharpness_every": every}
        t = time.perf_counter()
        wb.run("edge_of_stability", **dials)
        runs[label] = time.perf_counter() - t
    out["edge_of_stability_1000_steps_s"] = {k: round(v, 2) for k, v in runs.items()}
    out["probe_overhead"] = round(runs["probe at default interval"] / runs["without probe"] - 1, 3)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
