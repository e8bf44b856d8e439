"""What the `resolution_shift` claim costs at its full-profile settings, measured rather than guessed.

Its full settings (3 resolutions × 5 input scales × 5 seeds = 75 convolutional denoisers of width 64 and depth 3,
3,000 steps of 256 images, then 1,000 samples in 50 DDIM steps each) take far longer than anything else in the
report. Every training runs on its own (the study steps each denoiser separately), so its cost is the sum of its
runs. This script times one training per resolution at the full settings, through the same sweep call the claim
makes, in a throw-away store: two short runs with few samples give the cost of a training step (their difference:
the fixed part, small there, cancels), and one short run with the full samples gives the run's fixed part
(building the data, sampling at every measurement's step counts, the probes). It prints both and the claim's total.

    python bench/estimate_resolution_shift.py [--device cuda] [--steps 20 100] [--sides 16 32]

On a CPU the larger sides take minutes each (the fixed part of a 32×32 run alone is several); `--sides` times
some of them, and the total then covers the sides timed.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

FEW = 16  # samples per measurement in the runs that time the training step (the study's least)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default=None, help="cpu or cuda (default: the study's own choice)")
    ap.add_argument("--steps", type=int, nargs=2, default=[20, 100], help="the two short step counts timed")
    ap.add_argument("--sides", type=int, nargs="+", default=None,
                    help="the image sides to time (default: all the claim's, 8 16 32)")
    args = ap.parse_args()
    short, long_ = sorted(args.steps)
    if short < 1 or long_ <= short:
        ap.error(f"--steps: two different step counts of at least 1, got {args.steps}")
    os.environ["WORKBENCH_DATA"] = tempfile.mkdtemp(prefix="workbench-estimate-")  # nothing cached, nothing kept
    import torch

    from workbench.engine.context import pick_device
    from workbench.errors import ConfigError
    from workbench.reproduce import CLAIMS
    from workbench.runs import sweep

    try:
        pick_device(args.device)  # a device this machine lacks: said before anything runs
    except ConfigError as e:
        ap.error(str(e))

    s = CLAIMS["resolution_shift"].full
    sides = args.sides or s["sides"]
    if not set(sides) <= set(s["sides"]):
        ap.error(f"--sides: the claim's sides are {s['sides']}, got {sides}")
    runs_per_side = len(s["scales"]) * len(s["seeds"])
    rows, total = [], 0.0
    def timed(side: int, steps: int, n_samples: int) -> float:  # one training at full settings but these
        started = time.perf_counter()
        sweep("diffusion", {"input_scale": [s["scales"][0]]}, seeds=[0], progress=False, force=True,
              device=args.device, dataset="digits_images", resolution=side, denoiser="conv", width=s["width"],
              depth=s["depth"], batch_size=s["batch_size"], schedule="sigmoid", steps=steps, eval_every=steps,
              n_train=s["n_train"], n_samples=n_samples, sample_steps=s["sample_steps"])
        return time.perf_counter() - started

    for side in sides:
        timed(side, 1, FEW)  # warms up (its time not used)
        per_step = max(0.0, (timed(side, long_, FEW) - timed(side, short, FEW)) / (long_ - short))
        fixed = max(0.0, timed(side, short, s["n_samples"]) - short * per_step)
        run = s["steps"] * per_step + fixed
        total += runs_per_side * run
        rows.append({"side": side, "seconds_per_step": per_step, "fixed_seconds": fixed, "seconds_per_run": run,
                     "runs": runs_per_side})
        print(f"{side}×{side}: {per_step * 1000:.0f} ms a training step, {fixed:.1f} s fixed; one run of "
              f"{s['steps']} steps {run / 60:.1f} min; {runs_per_side} runs {runs_per_side * run / 3600:.2f} h",
              flush=True)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    where = torch.cuda.get_device_name() if device.startswith("cuda") else \
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    print(f"resolution_shift at full settings (sides {', '.join(map(str, sides))}): about {total / 3600:.1f} h on "
          f"{where} (torch {torch.__version__})")
    print(json.dumps({"device": where, "total_hours": total / 3600, "per_side": rows}))


if __name__ == "__main__":
    main()
