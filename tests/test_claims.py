"""Every claim's check on tiny settings (its own module: the longest part of the reproduction tests, so the two
test processes can take it apart from tests/test_reproduce.py)."""
import pytest

from workbench import reproduce


# every claim's check on tiny settings: it trains, measures one effect per seed and says what it saw (the verdicts
# at the claims' own settings are the quick profile's: tests/test_reproduce.py)
TINY = {
    "early_learning": {"seeds": [0, 1], "epochs": 3},
    "sgd_temperature": {"seeds": [0, 1], "steps": 250},
    "tc_power_law": {"seeds": [0, 1], "steps": 200, "sizes": [16, 32, 64], "temperatures": [0.03, 0.1, 1.0, 3.0],
                     "levels": [1.0]},
    "edge_of_stability": {"seeds": [0, 1], "steps": 100},
    "softmax_collapse": {"seeds": [0, 1], "epochs": 50},
    "fp8_training": {"seeds": [0, 1], "epochs": 3},
    "terminal_snr": {"seeds": [0, 1], "steps": 30, "n_samples": 200},
    "terminal_snr_fixes": {"seeds": [0, 1], "steps": 30, "n_samples": 200},
    "ambient": {"seeds": [0, 1], "steps": 30, "sizes": [160], "n_samples": 200, "sample_steps": 10},
    "immiscible": {"seeds": [0, 1], "steps": 32, "n_samples": 200, "sample_steps": 10},
    "noise_conditioning": {"seeds": [0, 1], "steps": 30, "n_samples": 200, "sample_steps": 8},
    "relay_snr": {"seeds": [0, 1], "images": 50, "sides": [8, 16], "sigma": 1.0},
    "gumbel_precision": {"seeds": [0, 1], "gap": 15.0, "n_tail": 4095, "draws": 200_000},
    "ptq_calibration": {"seeds": [0, 1], "steps": 30, "n_samples": 200, "sample_steps": 8, "format": "int8"},
    "fp_vs_int_diffusion": {"seeds": [0, 1], "steps": 30, "n_samples": 200, "sample_steps": 8,
                            "pairs": [["fp4_e2m1", "int4"]], "mixed": [["fp4_e2m1", "fp8_e4m3"], ["int4", "int8"]]},
    "elr": {"seeds": [0, 1], "epochs": 2},
    "perp_grad": {"seeds": [0, 1], "epochs": 25},
    "regret": {"seeds": [0, 1], "epochs": 2, "flip_rate": 0.2},
    "stablemax": {"seeds": [0, 1], "epochs": 50},
    "noisyquant": {"seeds": [0, 1], "rows": 256},
    "fp8_stability": {"seeds": [0, 1], "epochs": 2, "lrs": [0.01, 0.03]},
    "double_descent": {"seeds": [0, 1], "widths": [4, 8, 16], "epochs": 50},
    "small_loss": {"seeds": [0, 1], "epochs": 6, "keeps": [0.6]},
    "dropout": {"seeds": [0, 1], "epochs": 2, "rates": [0.0, 0.5], "rate": 0.5},
    "data_diet": {"seeds": [0, 1], "at": 1},
    "dsmi": {"seeds": [0, 1], "epochs": 2, "every": 1},
    "zeroquant_fp": {"seeds": [0, 1], "epochs": 1, "width": 32},
    "quant_outliers": {"seeds": [0, 1], "epochs": 1, "width": 32, "weight_decay": 0.1, "clip": 1.0},
    "long_tail": {"seeds": [0, 1], "at": 1, "ratio": 5.0, "flip_rate": 0.3},
    "xor_grokking": {"seeds": [0, 1], "dim": 100, "n": 50, "lr": 0.05, "epochs": 5, "separations": [5.0, 10.0]},
    "dp_noise": {"seeds": [0, 1], "epochs": 1, "sigmas": [0.3], "sigma": 0.3, "reg_sigma": 0.1, "reg_steps": 50},
    "fp_scaling": {"seeds": [0, 1], "epochs": 1, "formats": [(2, 3), (3, 2), (3, 4), (4, 3)]},
    "deep_linear": {"seeds": [0, 1], "depths": [1, 2], "steps": 20},
    "inference_scaling": {"seeds": [0, 1], "steps": 20, "n_samples": 64, "sample_steps": 4, "best_of": 16},
    "negative_transfer": {"seeds": [0, 1], "steps": 20, "n_samples": 64, "sample_steps": 4},
    "geometry_adaptive": {"seeds": [0, 1], "steps": 20, "n_samples": 32, "sample_steps": 4, "sizes": [16, 32]},
    "lottery_noise": {"seeds": [0, 1], "widths": [16, 64], "flip_rate": 0.2, "epochs": 2, "rounds": 2,
                      "fraction": 0.5},
    "pretrain_noise": {"seeds": [0, 1], "epochs": 1, "rates": [0.0, 0.05, 0.4], "shift": 2},
    "sampling_noise": {"seeds": [0, 1], "steps": 20, "n_samples": 32, "etas": [0.0, 1.0], "step_counts": [2, 4]},
    "resolution_shift": {"seeds": [0, 1], "sides": [8, 16], "scales": [1.0, 0.5], "steps": 4, "width": 8, "depth": 1,
                         "batch_size": 16, "n_train": 64, "n_samples": 16, "sample_steps": 2},
    "offset_noise": {"seeds": [0, 1], "steps": 20, "n_samples": 64, "offsets": [0.1]},
    "one_more_step": {"seeds": [0, 1], "steps": 20, "n_samples": 64},
    "label_noise_diffusion": {"seeds": [0, 1], "steps": 20, "n_samples": 64, "sample_steps": 4, "flips": [0.4]},
    "laplace_schedule": {"seeds": [0, 1], "steps": 8, "n_samples": 64, "sample_steps": 4, "scales": [0.5]},
    "mdm_sampling_precision": {"seeds": [0, 1], "steps": 20, "n_samples": 64, "sample_steps": 32, "width": 32},
    "critical_batch": {"seeds": [0, 1], "batch_sizes": [16, 128], "lrs": [0.4], "max_steps": 40,
                       "targets": [2.0, 1.5]},
}


def test_every_claim_has_tiny_settings():
    assert set(TINY) == set(reproduce.CLAIMS)
    for key, claim in reproduce.CLAIMS.items():
        assert set(TINY[key]) <= set(claim.full), key  # the same knobs as its profiles


@pytest.mark.parametrize("key", list(reproduce.CLAIMS))
def test_a_claims_check_on_tiny_settings_measures_an_effect_per_seed(key, store):
    import holoviews as hv
    import numpy as np

    out = reproduce.CLAIMS[key].check(TINY[key])
    assert isinstance(out["passed"], bool)
    values = np.asarray(out["values"], dtype=float).ravel()
    assert len(values) == len(TINY[key]["seeds"]) and np.isfinite(values).all(), (key, values)
    assert out["effect_label"] and out["detail"] and "n=2" in out["detail"]  # the spread over the seeds is said
    plot = hv.render(out["figure"], backend="bokeh")  # its figure draws
    assert plot is not None
