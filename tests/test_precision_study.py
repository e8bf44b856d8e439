"""The precision study and the quantization-error lab: exact measures, and the expected directions over seeds."""
import math

import numpy as np
import pytest
import torch

import workbench as wb
from workbench.errors import ConfigError
from workbench.probes import qerror

SEEDS = [0, 1, 2]


def test_sqnr_is_the_formula():
    x = torch.tensor([3.0, -4.0])
    q = torch.tensor([3.0, -3.0])
    assert qerror.sqnr(x, q) == pytest.approx(10 * math.log10(25 / 1))
    assert qerror.sqnr(x, x) == math.inf


@pytest.mark.parametrize("seed", SEEDS)
def test_fp8_beats_int8_on_heavy_tails_and_int8_wins_on_uniform(seed):
    ds = qerror.lab(("int8", "fp8_e4m3"), ("student_t", "uniform", "gaussian"), n=32_768, seed=seed).sel(dither=0.0)
    s = ds.sqnr.sel
    assert s(format="fp8_e4m3", tensor="student_t") > s(format="int8", tensor="student_t") + 3
    assert s(format="int8", tensor="uniform") > s(format="fp8_e4m3", tensor="uniform") + 3
    # fewer bits, less signal: about 6 dB a bit for the integers
    small = qerror.lab(("int8", "int6", "int4"), ("uniform",), n=32_768, seed=seed).sqnr.sel(dither=0.0).values[:, 0]
    assert np.all(np.diff(small) < -9)


def test_the_lab_measures_a_trained_models_tensors():
    tensors = qerror.model_tensors(seed=0, epochs=1, width=64)
    ds = qerror.lab(("int8", "fp8_e4m3", "mxfp4_e2m1"), ("gaussian",), n=4096, tensors=tensors)
    assert set(tensors) <= set(ds.tensor.values.tolist())
    plain = ds.sqnr.sel(dither=0.0).values
    assert np.isfinite(plain).all() and (plain > 5).all()
    # dither is defined for the integer formats only
    with_dither = ds.sqnr.sel(dither=0.5)
    assert np.isnan(with_dither.sel(format="fp8_e4m3")).all() and np.isfinite(with_dither.sel(format="int8")).all()


def test_dither_lowers_the_layer_error_on_gelu_activations_at_6_bits():
    """NoisyQuant (Liu et al. 2023) in its linear-layer form: a fixed noisy bias before rounding, removed after the
    matmul, lowers the output error for skewed post-GELU activations. On Student-t (2 dof) tensors it does not: the
    gain is not a property of every heavy-tailed tensor."""
    gains, t_gains = [], []
    for seed in SEEDS:
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(64, 256, generator=g) / 16
        x = qerror.sample("gelu", (4096, 256), g)
        gains.append(qerror.layer_error(x, w, "int6", 0.5, g) / qerror.layer_error(x, w, "int6", 0.0))
        t = torch.distributions.StudentT(2.0).sample((4096, 256))
        t_gains.append(qerror.layer_error(t, w, "int6", 0.5, g) / qerror.layer_error(t, w, "int6", 0.0))
    assert max(gains) < 0.97, gains
    assert min(t_gains) > 1.0, t_gains


def _sweep(grid, **dials):
    dials = {"width": 64, "n_train": 600, "epochs": 6, "eval_every": 3, **dials}
    return wb.sweep("precision", grid=grid, seeds=SEEDS, **dials).ds


def test_scaled_fp8_trains_like_fp32_and_unscaled_fp4_starves():
    ds = _sweep({"precision": ["fp32", "fp8_e4m3", "fp4_e2m1"], "scale": ["tensor", "none"]})
    acc = ds.test_acc.isel(epoch=-1)
    fp32, fp8 = acc.sel(precision="fp32", scale="none"), acc.sel(precision="fp8_e4m3", scale="tensor")
    assert float(abs(fp32 - fp8).max()) < 0.05, (fp32.values, fp8.values)
    # unscaled fp4 (smallest subnormal 0.5) rounds every gradient to zero: nothing is learnt
    under = ds.underflow_gradients.isel(epoch=-1)
    assert (under.sel(precision="fp4_e2m1", scale="none") > 0.99).all()
    assert (acc.sel(precision="fp4_e2m1", scale="none") < 0.3).all()
    # per-tensor scaling brings its range to the gradients: it learns, if less than fp8 in these few epochs
    fp4 = acc.sel(precision="fp4_e2m1")
    assert (fp4.sel(scale="tensor") > fp4.sel(scale="none") + 0.1).all()


def test_gradient_underflow_falls_with_exponent_range():
    ds = _sweep({"precision": ["fp8_e5m2", "fp8_e4m3", "fp6_e2m3"]}, scale="none")
    u = ds.underflow_gradients.isel(epoch=-1).mean("seed")
    assert float(u.sel(precision="fp8_e5m2")) < float(u.sel(precision="fp8_e4m3")) < float(u.sel(precision="fp6_e2m3"))


def test_custom_formats_from_exponent_and_mantissa_bits():
    run = wb.run("precision", precision="custom", exp_bits=3, man_bits=2, epochs=1, width=32, n_train=300)
    assert run.status == "done" and run.config["exp_bits"] == 3
    with pytest.raises(ConfigError) as e:
        wb.run("precision", precision="custom", exp_bits=1)
    assert e.value.field == "exp_bits"
    with pytest.raises(ConfigError) as e:
        wb.run("precision", precision="mxfp4_e2m1", width=48)
    assert e.value.field == "block"
    with pytest.raises(ConfigError) as e:
        wb.run("precision", precision="fp9")
    assert e.value.field == "precision" and "fp8_e4m3" in str(e.value)


def test_divergence_map_narrow_formats_fail_where_wide_ones_train(shared_data):
    # the fp8_stability claim's sweep (workbench/reproduce.py), shared with the quick reproduction profile
    ds = _sweep({"precision": ["fp32", "bf16", "fp8_e4m3", "fp8_e5m2"], "lr": [0.001, 0.003, 0.01, 0.03]},
                scale="none", epochs=10, eval_every=1)
    frac = ds.diverged.mean("seed").sel(lr=0.01)
    assert float(frac.sel(precision="fp32")) == 0 and float(frac.sel(precision="bf16")) == 0
    assert float(frac.sel(precision="fp8_e4m3")) == 1  # unscaled e4m3: the loss spikes above 2 × ln 10
    steps = ds.diverged_step.sel(precision="fp8_e4m3", lr=0.01).values
    assert (steps > 0).all() and set(ds.diverged_tensor.sel(precision="fp8_e4m3", lr=0.01).values) == {"loss spike"}
