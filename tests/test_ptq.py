"""Post-training quantization with calibrated activation ranges (probes.ptq)."""
import pytest
import torch
from torch import nn

from workbench.errors import ConfigError
from workbench.noise import formats, schedules
from workbench.probes import ptq


def net():
    g = torch.Generator().manual_seed(0)
    m = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return m


def test_calibrate_keeps_each_layers_largest_input():
    m = net()
    xs = [torch.randn(32, 8) * s for s in (1.0, 3.0)]
    ranges = ptq.calibrate(m, [(x,) for x in xs])
    assert ranges["0"] == pytest.approx(float(xs[1].abs().max()))
    with torch.no_grad():
        hidden = torch.relu(m[0](torch.cat(xs)))
    assert ranges["2"] == pytest.approx(float(hidden.abs().max()))
    assert not m[0]._forward_pre_hooks  # the hooks are gone


def test_static_rounding_matches_the_formula_and_saturates():
    f = formats.get("int8")
    x = torch.linspace(-3, 3, 101)
    q = ptq.round_static(x, f, amax=2.0)
    s = 2.0 / 127
    assert torch.allclose(q, torch.clamp(torch.round(x / s), -127, 127) * s)
    assert float(q.max()) == pytest.approx(2.0)  # beyond the calibrated range: saturated
    e4m3 = formats.get("fp8_e4m3")
    q8 = ptq.round_static(x, e4m3, amax=1.5)
    want = formats.quantize((x / (1.5 / 448)).clamp(-448, 448), e4m3) * (1.5 / 448)
    assert torch.equal(q8, want)


def test_quantized_copy_rounds_weights_per_channel_and_leaves_the_original():
    m = net()
    before = [p.clone() for p in m.parameters()]
    q = ptq.quantized(m, "int4", ptq.calibrate(m, [(torch.randn(64, 8),)]))
    assert all(torch.equal(a, b) for a, b in zip(before, m.parameters()))
    w = q[0].weight
    s = m[0].weight.abs().amax(1, keepdim=True) / 7
    assert torch.allclose(w, torch.round(m[0].weight / s) * s)  # 15 levels per row
    x = torch.randn(16, 8)
    err4 = (q(x) - m(x)).pow(2).mean()
    q8 = ptq.quantized(m, "int8", ptq.calibrate(m, [(x,)]))
    assert (q8(x) - m(x)).pow(2).mean() < err4 / 20  # 8 bits: far closer than 4
    with pytest.raises(ConfigError):
        ptq.quantized(m, "int8", {"0": 1.0})  # a layer without a range


def test_weights_and_activations_take_separate_formats():
    m = net()
    x = torch.randn(16, 8)
    ranges = ptq.calibrate(m, [(x,)])
    w4a8 = ptq.quantized(m, "int4", ranges, act_fmt="int8")
    assert torch.equal(w4a8[0].weight, ptq.quantized(m, "int4", None)[0].weight)  # weights in int4
    seen = []
    w4a8[0].register_forward_pre_hook(lambda _, inputs: seen.append(inputs[0].clone()))  # after the rounding hook
    w4a8(x)
    amax = ranges["0"]
    assert torch.equal(seen[0], ptq.round_static(x, formats.get("int8"), amax))  # its input in int8, not int4
    a_only = ptq.quantized(m, None, ranges, act_fmt="fp8_e4m3")
    assert all(torch.equal(a, b) for a, b in zip(a_only.parameters(), m.parameters()))  # weights left in fp32
    with pytest.raises(ConfigError, match="act_fmt"):
        ptq.quantized(m, None, ranges)


def test_timestep_calibration_covers_the_ranges_of_every_time():
    """A denoiser's input range moves with t: the range at t = 0.5 is narrower than over all times."""
    sch = schedules.get("linear")
    x0 = torch.randn(256, 2) * 3
    g = torch.Generator().manual_seed(0)
    ts = torch.tensor([0.01, 0.5, 0.99], dtype=torch.float64)
    amax = {float(t): float(next(iter(ptq.timestep_batches(x0, sch, torch.tensor([t]), g)()))[0].abs().max())
            for t in ts.tolist()}
    assert amax[0.01] > amax[0.5]  # near-clean data (std 3) is wider than the mix at t = 0.5
    batches = list(ptq.timestep_batches(x0, sch, ts, g)())
    assert len(batches) == 3 and batches[0][1].shape == (256,) and float(batches[2][1][0]) == pytest.approx(0.99)
