"""Edge of stability (Cohen et al. 2021), reproduced over seeds: sharpness rises to 2/η and hovers there."""
import numpy as np

import workbench as wb

SEEDS = [0, 1]
SMALL = dict(steps=1000, sharpness_every=50, n_train=500)


def _sharpness(lr):
    ds = wb.sweep("edge_of_stability", grid={"lr": [lr]}, seeds=SEEDS, **SMALL).ds.squeeze("lr")
    return ds.sharpness.values, ds  # (seed, measurement)


def test_sharpness_rises_to_two_over_eta_and_hovers_there(shared_data):  # the claim's sweep: shared with its check
    sharp, ds = _sharpness(0.2)  # 2/η = 10
    late = sharp[:, sharp.shape[1] // 2:]
    assert (sharp[:, 0] < 0.9 * 10).all(), sharp[:, 0]  # it starts below the edge ...
    assert (np.abs(late.mean(1) - 10) < 0.2 * 10).all(), late.mean(1)  # ... and hovers around 2/η
    assert (ds.train_loss.isel(step=-1) < ds.train_loss.isel(step=1)).all()  # while the loss still falls


def test_with_a_small_step_sharpness_stays_below_two_over_eta():
    sharp, _ = _sharpness(0.05)  # 2/η = 40
    assert (sharp.max(1) < 0.8 * 40).all(), sharp.max(1)
    assert (sharp[:, -1] > sharp[:, 0]).all()  # progressive sharpening
