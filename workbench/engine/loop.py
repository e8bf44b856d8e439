"""The training loop every study runs. Read it top to bottom: it is the whole of training, for every study.

A study supplies small hooks (Study.setup, batches, step, measure, judge, converged, finish); the loop owns what
must be the same everywhere: cancellation, the measurement cadence, the divergence log, the low-precision
statistics, spectra snapshots, and the records that drive progress bars and live curves. Measurements fall on the
study's axis (an epoch or a step) at 0, every `every` units, and at the end; a unit is one or more optimisation
steps (an epoch's minibatches).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .context import Context, DivergenceLog
from .group import Group
from .measure import SpectraLog, precision_metrics


@dataclass
class Plan:
    """What a study's `setup` returns: how long to train and what the loop watches; `state` is the study's own.
    The loop adds `ctx` and `diverged` (the run's DivergenceLog) before the first measurement."""

    total: int  # units of the axis (epochs or steps)
    every: int = 1  # units between measurements (the last unit is always measured)
    net: Any = None  # the stacked models (engine.ensemble.Stack): their precision is watched, their spectra taken
    spectra_every: int = 0  # units between spectra snapshots (0: none; stacked MLPs only)
    spectra_x: Any = None  # the inputs the features' spectrum is taken on
    spectra_y: Any = None  # their class labels (K, n), for the features' DSMI (None: no DSMI)
    state: Any = None
    ctx: Context | None = None
    diverged: DivergenceLog | None = None


def train(cls, ctx: Context, group: Group) -> None:
    """Train the group's models with the study's hooks; records and kept arrays go out through ctx."""
    plan = cls.setup(ctx, group)
    plan.ctx, k, axis = ctx, group.k, cls.axis
    plan.diverged = DivergenceLog(ctx, k)  # which model went non-finite, and when: a result, the others go on
    declared = {m.name for m in cls.metrics if m.per == "record"}
    prec = getattr(plan.net, "precision", None)
    watch_precision = "loss_scale" in declared  # the study records the rounding statistics (nan in fp32)
    spectra = SpectraLog(ctx, plan.spectra_every) if "weight_alpha" in declared else None
    step = 0

    def measure(i: int) -> None:
        rec = {axis: i, "step": step, **cls.measure(plan, i, step)}
        if watch_precision:
            rec.update(precision_metrics(prec, k))
        if spectra is not None:
            rec.update(spectra.record(plan.net, plan.spectra_x, i, last=i == plan.total, k=k, labels=plan.spectra_y))
        ctx.emit(rec)
        cls.judge(plan, rec, step)  # a study's own signs of divergence (a loss spike, non-finite outputs)

    measure(0)
    for i in range(1, plan.total + 1):
        measuring = i % plan.every == 0 or i == plan.total
        for j, batch in enumerate(cls.batches(plan, i)):
            ctx.check()  # a cancelled run stops here, at its next step
            if prec is not None:
                prec.measure = measuring and j == 0  # rounding statistics from one step per measurement
            losses = cls.step(plan, batch, step)  # (K,): each model's loss on its own batch
            step += 1
            plan.diverged.check_step(step, losses, plan.net)  # a non-finite loss, or non-finite gradients
        if measuring:
            measure(i)
            if cls.converged(plan):
                break
    cls.finish(plan)
