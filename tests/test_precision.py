"""Quantization-aware training on the stacked engine: against an autograd reference, loss scaling, statistics,
divergence records and bad input."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import workbench as wb
from workbench import models
from workbench.engine import ensemble
from workbench.engine.context import Context, DivergenceLog
from workbench.engine.precision import Precision
from workbench.errors import ConfigError, Diverged
from workbench.noise import formats


def mlps(k=3, d=16, width=32, depth=2, classes=10):
    return [models.build("mlp", input_dim=d, width=width, depth=depth, num_classes=classes,
                         generator=torch.Generator().manual_seed(s)) for s in range(k)]


class _RoundGrad(torch.autograd.Function):
    """Identity forward; the gradient rounded on its way back."""

    @staticmethod
    def forward(ctx, x, fmt):
        ctx.fmt = fmt
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        return formats.quantize(g, ctx.fmt, scale="tensor"), None


def reference_grads(model, x, y, fmt):
    """One model, plain autograd: each Linear reads Q(input) and Q(W) (straight-through), its output's gradient
    is rounded."""
    h = x
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    for j, lin in enumerate(linears):
        h = F.linear(formats.quantize(h, fmt, scale="tensor"), formats.quantize(lin.weight, fmt, scale="tensor"),
                     lin.bias)
        h = _RoundGrad.apply(h, fmt)
        if j < len(linears) - 1:
            h = torch.relu(h)
    loss = F.cross_entropy(h, y)
    return torch.autograd.grad(loss, [p for lin in linears for p in (lin.weight, lin.bias)])


@pytest.mark.parametrize("fmt", ["fp8_e4m3", "fp6_e3m2", "int8"])
def test_quantization_aware_gradients_equal_an_autograd_reference(fmt):
    mods = mlps()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(3, 20, 16, generator=g), torch.randint(0, 10, (3, 20), generator=g)
    prec = Precision(fmt, scale="tensor" if formats.get(fmt).kind == "float" else "auto", num_models=3)
    net = ensemble.stack(mods, "cpu", prec)
    _, grads = net.gradients(x, lambda z: F.cross_entropy(z.transpose(1, 2), y, reduction="none").mean(1))
    for k, m in enumerate(mods):
        want = reference_grads(m, x[k], y[k], fmt)
        for j in range(3):
            got_w, got_b = grads[2 * j][k], grads[2 * j + 1][k, 0]
            out = want[2 * j].shape[0]
            torch.testing.assert_close(got_w[:, :out], want[2 * j].T, rtol=1e-4, atol=1e-6)
            torch.testing.assert_close(got_b[:out], want[2 * j + 1], rtol=1e-4, atol=1e-6)
    # and the forward pass rounds too: the logits differ from fp32's
    assert not torch.allclose(net(x), ensemble.stack(mods, "cpu")(x))


def test_fp32_precision_is_the_plain_engine():
    mods = mlps(2)
    x = torch.randn(2, 8, 16)
    assert ensemble.stack(mods, "cpu", Precision("fp32", num_models=2)).precision is None
    torch.testing.assert_close(ensemble.stack(mods, "cpu", Precision("fp32"))(x), ensemble.stack(mods, "cpu")(x))


def _tiny_loss_step(prec, scale=1e-9):
    mods = mlps(2)
    net = ensemble.stack(mods, "cpu", prec)
    opt = ensemble.Optimizer(net.tensors(), "sgd", lr=0.1)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(2, 32, 16, generator=g), torch.randint(0, 10, (2, 32), generator=g)
    loss = lambda z, yb, idx: scale * F.cross_entropy(z.transpose(1, 2), yb, reduction="none").mean(1)  # noqa
    before = [p.detach().clone() for p in net.tensors()]
    idx = torch.arange(32).expand(2, 32)
    ensemble.train_step(net, opt, loss, x, y, idx)
    _, grads = net.gradients(x, lambda z: loss(z, y, idx))
    return net, before, grads


def test_fp16_loss_scaling_keeps_gradients_that_would_underflow():
    def nonzero(grads):  # of the weight gradients that fp32 has non-zero
        return sum(int((g != 0).sum()) for g in grads[::2]) / sum(int((g != 0).sum()) for g in fp32[::2])

    _, _, fp32 = _tiny_loss_step(None)
    scaled = _tiny_loss_step(Precision("fp16", tensors=("gradients",), num_models=2))[2]
    unscaled = Precision("fp16", tensors=("gradients",), num_models=2)
    unscaled.dynamic, unscaled.loss_scale[:] = False, 1.0
    flushed = _tiny_loss_step(unscaled)[2]
    # gradients of ~1e-11 are below fp16's smallest subnormal (6e-8): without a loss scale they all vanish
    assert nonzero(flushed) == 0
    assert nonzero(scaled) > 0.9


def test_an_overflowing_loss_scale_skips_that_models_step_and_halves():
    prec = Precision("fp16", tensors=("gradients",), num_models=2)
    prec.loss_scale[:] = torch.tensor([2.0**60, 2.0**10])  # model 0's scaled gradients overflow fp16
    net, before, _ = _tiny_loss_step(prec, scale=1.0)
    assert prec.loss_scale.tolist() == [2.0**59, 2.0**10]
    assert all(torch.equal(p[0], q[0]) for p, q in zip(net.tensors(), before))  # model 0 kept its weights
    assert any(not torch.equal(p[1], q[1]) for p, q in zip(net.tensors(), before))  # model 1 stepped
    assert bool(prec.grad_finite.all())  # a skipped step is not a divergence


def test_skipped_steps_and_adamw_match_torch_optim():
    torch.manual_seed(0)
    w = torch.randn(2, 5, 3)
    grads = [torch.randn(2, 5, 3) for _ in range(4)]
    p = w.clone()
    opt = ensemble.Optimizer([p], "adam", lr=0.01, weight_decay=0.1, decoupled=True)
    for i, g in enumerate(grads):
        opt.step([g], skip=torch.tensor([i == 1, False]))
    for k, used in ((0, [0, 2, 3]), (1, [0, 1, 2, 3])):
        ref = w[k].clone().requires_grad_()
        topt = torch.optim.AdamW([ref], lr=0.01, weight_decay=0.1)
        for i in used:
            ref.grad = grads[i][k].clone()
            topt.step()
        torch.testing.assert_close(p[k], ref.detach())


def test_statistics_count_overflow_and_underflow():
    prec = Precision("fp8_e4m3", scale="none", num_models=2)
    prec.measure = True
    w = torch.ones(2, 4, 8)
    w[0, 0, :4] = 1000.0  # beyond 448: 4 of model 0's 32 weights
    w[1, 1, :2] = 1e-5  # below e4m3's smallest subnormal (2^-9): 2 of model 1's weights flush to zero
    prec.weight(w)
    s = prec.stats()
    assert s["overflow_weights"].tolist() == [4 / 32, 0.0]
    assert s["underflow_weights"].tolist() == [0.0, 2 / 32]
    assert torch.isnan(s["underflow_gradients"]).all()  # nothing measured there
    prec.reset_stats()
    assert torch.isnan(prec.stats()["overflow_weights"]).all()


def test_divergence_is_recorded_with_its_step_and_tensor():
    ctx = Context(torch.device("cpu"), squeeze=False)
    log = DivergenceLog(ctx, 3)
    log.update(5, torch.tensor([False, True, False]), "gradients")
    log.update(7, torch.tensor([False, True, True]), "loss")
    assert ctx.arrays["diverged_step"][1].tolist() == [-1, 5, 7]
    assert ctx.arrays["diverged_tensor"][1].tolist() == ["", "gradients", "loss"]
    with pytest.raises(Diverged) as e:
        log.update(9, torch.tensor([True, False, False]), "loss")
    assert e.value.step == 9


def test_a_low_precision_run_records_its_rounding_and_survives():
    run = wb.run("label_noise", precision="fp8_e5m2", epochs=2, width=32, n_train=300, loss_snapshots=0)
    assert run.status == "done"
    ds = run.ds
    for name in ("overflow_weights", "underflow_gradients", "loss_scale"):
        assert name in ds
    assert float(ds.underflow_gradients[-1]) >= 0 and str(ds.diverged_tensor.values) == ""
    # the divergence of a low-precision run is a result: step and tensor kept
    bad = wb.run("sgd_noise", precision="fp16", alpha=1e-3, temperature=1.0, steps=50, eval_every=10, n_train=64,
                 n_test=100, width=32)  # gradients ~ 1/α²: the outputs overflow fp16
    # found at the training step whose loss went non-finite, before the measurement at step 10 would see it
    assert bad.status == "diverged" and 1 <= bad.step <= 10
    assert str(bad.ds.diverged_tensor.values) == "loss"


@pytest.mark.parametrize("kwargs, field", [
    (dict(fmt="fp7"), "format"), (dict(tensors=("bias",)), "tensors"), (dict(rounding="up"), "rounding"),
    (dict(scale="row"), "scale"),
])
def test_bad_precision_arguments(kwargs, field):
    with pytest.raises(ConfigError) as e:
        Precision(**kwargs)
    assert e.value.field == field


def test_bad_precision_dials_are_refused_before_work():
    with pytest.raises(ConfigError) as e:
        wb.run("label_noise", precision="mxfp8_e4m3", width=100)
    assert e.value.field == "block" and "100" in str(e.value)
    with pytest.raises(ConfigError) as e:
        wb.run("label_noise", precision="fp8_e4m3", model="cnn")
    assert e.value.field == "precision"
    with pytest.raises(ConfigError) as e:
        wb.run("sgd_noise", precision="e9m9")
    assert e.value.field == "precision"
    with pytest.raises(ConfigError):
        ensemble.stack([models.SmallCNN((8, 8), 4, 1, 10)], "cpu", Precision("bf16"))


def test_sgd_noise_in_fp16_updates_its_dynamic_loss_scale():
    """Regression: sgd_noise bypassed the shared step, so its fp16 loss scale never moved (nor skipped a step)."""
    run = wb.run("sgd_noise", precision="fp16", alpha=0.1, temperature=0.01, steps=60, eval_every=20, n_train=64,
                 n_test=100, width=32, progress=False)
    scale = run.ds.loss_scale.values
    assert scale[0] == 2.0**16 and np.isfinite(scale).all() and (scale[1:] < 2.0**16).any(), scale
