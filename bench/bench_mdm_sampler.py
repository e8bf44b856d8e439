"""The masked diffusion study's ancestral sampler: logits computed again only for the sequences that changed, against
computing them at every step.

A masked diffusion model is time-agnostic: a sequence's logits change only when one of its tokens is unmasked, and
with many steps most steps unmask nothing in most sequences. Three samplers, the same draws (checked equal):
  every step     the net on every sequence at every step (the textbook ancestral sampler);
  batch cache    the net on every sequence, but only at steps where some sequence changed (a whole-batch cache, as
                 MDLM's reference code does);
  per sequence   the net only on the sequences that changed (workbench.studies.masked_diffusion.sample);
and, for scale, Zheng et al.'s first-hitting sampler (the study's sampler="first_hitting": the same law, one token
at a time in a random order, its own draws).
The study's default net (64 tokens of 16 levels, an MLP of width 256) at random weights (the cost does not depend on
them), 500 samples, float32 Gumbel-max.

    python bench/bench_mdm_sampler.py [--steps 64 256 1024] [--n 500] [--device cuda]
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import time

import torch

from workbench.models import MaskedTokenNet, init_
from workbench.probes.categorical import gumbel_argmax
from workbench.studies.masked_diffusion import alpha, sample, sample_first_hitting

L, V = 64, 16


def reference(net, n, steps, generator, device, whole_batch_cache: bool):
    """The ancestral sampler computing every sequence's logits at every step, or (whole_batch_cache) at every step
    after which some sequence changed."""
    x = torch.full((n, L), V, dtype=torch.long, device=device)
    ts = torch.linspace(1, 0, steps + 1, dtype=torch.float64)
    logp, dirty = None, True
    with torch.no_grad():
        for j in range(steps):
            a_t, a_s = alpha("linear", ts[j]), alpha("linear", ts[j + 1])
            if dirty or not whole_batch_cache:
                logp = torch.log_softmax(net(x).double(), -1)
            masked = x == V
            lq = logp[masked] + math.log((a_s - a_t) / (1 - a_t))
            stay = math.log((1 - a_s) / (1 - a_t)) if a_s < 1 else -math.inf
            lq = torch.cat([lq, torch.full((len(lq), 1), stay, dtype=lq.dtype, device=device)], 1)
            new = torch.full_like(x, V)
            new[masked] = gumbel_argmax(lq, "float32", generator)
            unmasked = masked & (new < V)
            x = torch.where(unmasked, new, x)
            dirty = bool(unmasked.any())
    return x


class Counting(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net, self.rows = net, 0

    def forward(self, tokens):
        self.rows += len(tokens)
        return self.net(tokens)


def timed(fn, device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    out = fn()
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t, out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, nargs="+", default=[64, 256, 1024])
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    net = init_(MaskedTokenNet(L, V, 256, 2), torch.Generator().manual_seed(0)).to(args.device)
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} "
          f"threads, device {args.device}; {args.n} samples of {L} tokens, {V} levels")
    rows = []
    for steps in args.steps:
        res = {}
        for name, run in (
                ("every step", lambda c, g: reference(c, args.n, steps, g, args.device, False)),
                ("batch cache", lambda c, g: reference(c, args.n, steps, g, args.device, True)),
                ("per sequence", lambda c, g: sample(c, args.n, L, V, steps, "linear", "float32", 1.0, g,
                                                     args.device))):
            counting = Counting(net)
            seconds, x = timed(lambda: run(counting, torch.Generator().manual_seed(1)), args.device)
            res[name] = (seconds, counting.rows, x)
        same = all(torch.equal(res[k][2], res["every step"][2]) for k in res)
        counting = Counting(net)  # Zheng et al.'s first-hitting sampler: the same law, other draws, any steps
        seconds, _ = timed(lambda: sample_first_hitting(counting, args.n, L, V, "float32", 1.0,
                                                        torch.Generator().manual_seed(1), args.device), args.device)
        res["first hitting"] = (seconds, counting.rows, None)
        base = res["every step"][0]
        for name, (seconds, calls, _) in res.items():
            drawn = same if name != "first hitting" else "other draws, the same law"
            row = {"steps": steps, "sampler": name, "seconds": round(seconds, 3), "net_rows": calls,
                   "speedup_vs_every_step": round(base / seconds, 2), "same_draws": drawn}
            rows.append(row)
            print(f"steps {steps:5d}  {name:13s}  {seconds:8.3f} s  net rows {calls:9,d}  "
                  f"×{base / seconds:5.2f} vs every step  same draws: {drawn}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
