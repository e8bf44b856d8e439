"""Diffusion: training steps per second and sampling throughput of the 2-D denoiser and of the 8×8 image
denoisers (MLP and conv), and the 2-D model's time to a good fit.

    python bench/bench_diffusion.py [--device cuda]
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time

import torch

import workbench as wb
from workbench.engine import diffusion as dif
from workbench.models import ConvDenoiser, Denoiser, init_
from workbench.noise import schedules


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def rates(name, net, sch, dev, dim, n=200, samples=2000, samplers=("ddim",)) -> dict:
    """Training steps/s (batch 256, ε-prediction) and samples/s (50 steps) of a denoiser of `dim` values."""
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x0 = torch.randn(256, dim, device=dev)
    for i in range(n + 5):
        if i == 5:  # after warm-up
            sync(dev)
            t0 = time.perf_counter()
        t = torch.rand(256, device=dev)
        a = sch.alpha_bar(t.double().cpu()).float().to(dev)
        eps = torch.randn_like(x0)
        loss = (net(dif.noised(x0, eps, a), t) - eps).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    sync(dev)
    out = {f"{name}: train steps/s (batch 256)": round(n / (time.perf_counter() - t0), 1)}
    for sampler in samplers:
        t0 = time.perf_counter()
        dif.sample(net, sch, (samples, dim), 50, torch.Generator().manual_seed(1), sampler=sampler, device=dev)
        sync(dev)
        out[f"{name}: {sampler} samples/s (50 steps)"] = round(samples / (time.perf_counter() - t0))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    dev = args.device
    out = {"device": torch.cuda.get_device_name(dev) if dev.startswith("cuda") else platform.processor() or "cpu",
           "threads": torch.get_num_threads(), "torch": torch.__version__}
    g = torch.Generator().manual_seed(0)
    sch = schedules.get("linear")
    out.update(rates("2-D mlp (width 256)", init_(Denoiser(2, 256, 3), g).to(dev), sch, dev, 2, n=500,
                     samples=10_000, samplers=("ddim", "heun")))
    for name, make in (("8x8 mlp (width 256)", lambda: Denoiser(64, 256, 3)),
                       ("8x8 conv (32 channels)", lambda: ConvDenoiser(8, 32, 3))):
        out.update(rates(name, init_(make(), g).to(dev), sch, dev, 64))
    store = wb.Store(tempfile.mkdtemp(prefix="bench-diffusion-"))
    t0 = time.perf_counter()
    run = wb.run("diffusion", steps=3000, eval_every=3000, device=dev, store=store, progress=False)
    out["study_run_3000_steps_s"] = round(time.perf_counter() - t0, 1)
    out["sw_final"], out["sw_data_vs_data"] = round(float(run.ds.sw[-1]), 3), round(float(run.ds.sw_baseline[-1]), 3)
    # immiscible pairing: its cost per step and its effect on the loss per step (same seeds, same steps)
    for on in (False, True):
        t0 = time.perf_counter()
        sw = wb.sweep("diffusion", grid={"immiscible": [on]}, seeds=[0, 1], steps=2000, eval_every=500, device=dev,
                      store=store, progress=False).ds
        label = "immiscible" if on else "independent noise"
        out[f"{label}: s per step (2 models)"] = round((time.perf_counter() - t0) / 2000, 5)
        out[f"{label}: train loss at steps 500/1000/1500/2000 (mean of 2 seeds)"] = \
            [round(float(v), 4) for v in sw.train_loss.mean("seed").squeeze().values[1:]]
        out[f"{label}: final sliced Wasserstein"] = [round(float(v), 3) for v in sw.sw.isel(step=-1).values.ravel()]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
