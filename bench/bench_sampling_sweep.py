"""A sweep over sampling dials: one training per seed, shared by the cells that only sample differently, against
one training per cell (what the sweep did before, and what separate runs of each cell cost).

The grid is the stochastic-interpolants claim's quick one (DDIM η × sampling steps on eight Gaussians, 1,000
training steps, three seeds). Both sweeps must give the same numbers: the shared one is only faster.

    python bench/bench_sampling_sweep.py [--device cuda] [--steps 1000]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import platform
import tempfile
import time

import numpy as np
import torch

import workbench as wb
from workbench.studies import get


@contextlib.contextmanager
def unshared(cls):
    """The study without sampling dials: every cell its own group, its own training (the old behaviour)."""
    kept = cls.sampling
    cls.sampling = frozenset()
    try:
        yield
    finally:
        cls.sampling = kept


def timed_sweep(grid, seeds, dials, device) -> tuple[float, "wb.Sweep"]:
    with tempfile.TemporaryDirectory() as root:
        t0 = time.perf_counter()
        sweep = wb.sweep("diffusion", grid=grid, seeds=seeds, store=wb.Store(root), progress=False, device=device,
                         **dials)
        wall = time.perf_counter() - t0
        sweep.ds.load()
    return wall, sweep


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=1000, help="training steps of each denoiser")
    args = ap.parse_args()
    grid = {"eta": [0.0, 0.5, 1.0], "sample_steps": [10, 50, 200]}
    seeds = [0, 1, 2]
    dials = dict(dataset="eight_gaussians", sampler="ddim", steps=args.steps, eval_every=args.steps, n_samples=2000)
    shared_s, shared = timed_sweep(grid, seeds, dials, args.device)
    with unshared(get("diffusion")):
        alone_s, alone = timed_sweep(grid, seeds, dials, args.device)
    same = all(np.allclose(shared.ds[v].values, alone.ds[v].values, rtol=1e-5, atol=1e-6, equal_nan=True)
               for v in ("sw", "train_loss", "samples"))
    cells = len(seeds) * int(np.prod([len(v) for v in grid.values()]))
    out = {"device": torch.cuda.get_device_name(args.device) if args.device.startswith("cuda")
           else platform.processor() or "cpu", "threads": torch.get_num_threads(), "torch": torch.__version__,
           "cells": cells, "trainings shared / alone": f"{len(seeds)} / {cells}",
           "one training per cell (s)": round(alone_s, 1), "one training per seed (s)": round(shared_s, 1),
           "speed-up": round(alone_s / shared_s, 2), "same numbers": same}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
