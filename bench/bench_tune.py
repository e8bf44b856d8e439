"""An Optuna search: trials trained together (wb.tune.optimize) against what an Optuna user writes instead.

The same 16 trials (RandomSampler(seed=0) over the learning rate and the flip rate of the label-noise study,
MLP 64-W-W-10 on digits, Adam) by three routes, each on an empty store:
- the Optuna user's loop: `study.optimize(objective, n_trials)` with the objective one `wb.run` of the trial's
  dials (the workbench's own single-run engine: this measures the batching, not a slower trainer);
- the same with `n_jobs=2` (Optuna's threads, one trial per core);
- `wb.tune.optimize(..., batch=16)`: the trials differ only in batchable dials and train as one stacked program.
Checks that the loop and wb.tune find the same values (with n_jobs=2 Optuna's threads interleave the
sampler's draws, so its trials differ), and reports seconds and the ratios.

    python bench/bench_tune.py [--trials 16] [--epochs 20] [--width 128]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import optuna
import torch

import workbench as wb


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--width", type=int, default=128)
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    fixed = dict(epochs=args.epochs, width=args.width, n_train=1200)
    space = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True),
             "flip_rate": optuna.distributions.FloatDistribution(0.0, 0.8)}
    out = {}

    def objective_in(store):
        def objective(trial):
            params = {name: trial._suggest(name, dist) for name, dist in space.items()}
            return float(wb.run("label_noise", **params, **fixed, store=store, progress=False).ds.test_acc.values[-1])
        return objective

    for name, n_jobs in (("optuna loop", 1), ("optuna n_jobs=2", 2)):
        with tempfile.TemporaryDirectory() as d:
            study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
            t = time.perf_counter()
            study.optimize(objective_in(wb.Store(d)), n_trials=args.trials, n_jobs=n_jobs)
            out[name] = (time.perf_counter() - t, sorted(tr.value for tr in study.trials))
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        study = wb.tune.optimize("label_noise", {"lr": (1e-4, 1e-1, "log"), "flip_rate": (0.0, 0.8)},
                                 n_trials=args.trials, batch=args.trials, store=wb.Store(d), progress=False,
                                 sampler=optuna.samplers.RandomSampler(seed=0), **fixed)
        out["wb.tune batch"] = (time.perf_counter() - t, sorted(tr.value for tr in study.trials))
    ref = out["optuna loop"][1]
    for name, (_, values) in out.items():
        if "n_jobs" in name:  # threads interleave the sampler's draws: other trials, timed only
            continue
        worst = max(abs(a - b) for a, b in zip(values, ref))
        assert worst < 1e-5, f"{name} found other values than the loop (differ by {worst})"
    t_tune = out["wb.tune batch"][0]
    print(json.dumps({
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
                   f"{torch.get_num_threads()} threads",
        "trials": args.trials, **fixed,
        "seconds": {k: round(v[0], 2) for k, v in out.items()},
        "speed-up of wb.tune": {k: round(v[0] / t_tune, 2) for k, v in out.items() if k != "wb.tune batch"},
        "best test_acc": max(ref),
    }, indent=2))


if __name__ == "__main__":
    main()
