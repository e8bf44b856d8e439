"""The GPU path (skipped without CUDA): the same bits and the same training as on the CPU."""
import pytest
import torch
import torch.nn.functional as F

import workbench as wb
from workbench import models
from workbench.engine import ensemble
from workbench.engine.precision import Precision
from workbench.noise import formats

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]

NATIVE = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp8_e4m3": torch.float8_e4m3fn,
          "fp8_e5m2": torch.float8_e5m2}


def wide(n=1_000_000, seed=0):
    g = torch.Generator().manual_seed(seed)
    mag = torch.exp2(torch.rand(n, generator=g, dtype=torch.float64) * 50 - 30)
    x = (mag * torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0).double()).float()
    x[:6] = torch.tensor([0.0, -0.0, float("inf"), float("-inf"), float("nan"), 1e38])
    return x


@pytest.mark.parametrize("name", [*NATIVE, "fp6_e2m3", "fp4_e2m1", "e3m4", "int8", "mxfp8_e4m3", "mxfp4_e2m1"])
def test_quantize_on_cuda_is_bit_identical_to_the_cpu(name):
    x = wide(1 << 20)
    for kw in ({}, {"scale": "tensor"}) if formats.get(name).kind == "float" else ({},):
        cpu = formats.quantize(x, name, **kw)
        gpu = formats.quantize(x.cuda(), name, **kw).cpu()
        assert torch.equal(torch.nan_to_num(cpu, nan=7.0), torch.nan_to_num(gpu, nan=7.0)), (name, kw)
    if name in NATIVE:  # and to CUDA's own cast
        cast = x.cuda().to(NATIVE[name]).float().cpu()
        ours = formats.quantize(x.cuda(), name).cpu()
        same = (ours == cast) | (torch.isnan(ours) & torch.isnan(cast))
        if name == "fp8_e4m3":  # casts differ in overflow; compare in range
            same |= x.abs() > formats.get(name).max
        assert bool(same.all()), name


@pytest.mark.parametrize("fmt", ["fp32", "fp8_e4m3", "bf16"])
def test_a_training_step_on_cuda_matches_the_cpu(fmt):
    def run(device):
        mods = [models.build("mlp", input_dim=16, width=64, depth=2, num_classes=10,
                             generator=torch.Generator().manual_seed(s)) for s in range(4)]
        prec = Precision(fmt, num_models=4, device=device) if fmt != "fp32" else None
        net = ensemble.stack(mods, device, prec)
        opt = ensemble.Optimizer(net.tensors(), "adam", lr=1e-3)
        g = torch.Generator().manual_seed(0)
        x, y = torch.randn(4, 64, 16, generator=g).to(device), torch.randint(0, 10, (4, 64), generator=g).to(device)
        loss = lambda z, yb, idx: F.cross_entropy(z.transpose(1, 2), yb, reduction="none").mean(1)  # noqa: E731
        idx = torch.arange(64, device=device).expand(4, 64)
        for _ in range(3):
            ensemble.train_step(net, opt, loss, x, y, idx)
        return [p.detach().cpu() for p in net.tensors()]

    for a, b in zip(run("cpu"), run("cuda")):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)


def test_studies_run_on_cuda(data_root):
    for study, dials in (("label_noise", dict(epochs=2, width=32, n_train=300, precision="fp8_e4m3")),
                         ("grokking", dict(p=11, epochs=20, eval_every=10, width=32)),
                         ("sgd_noise", dict(steps=50, eval_every=25, n_train=64, width=16)),
                         ("diffusion", dict(steps=50, eval_every=25, n_samples=200)),
                         ("masked_diffusion", dict(steps=50, eval_every=25, n_train=200, n_samples=64, width=32,
                                                   sample_steps=64, uniforms="float32"))):
        run = wb.run(study, device="cuda", **dials)
        assert run.status == "done", (study, run.error)


def test_hessian_probes_on_cuda_match_the_cpu():
    from torch.func import functional_call

    from workbench.probes import hessian

    def problem(device):
        g = torch.Generator().manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.Tanh(), torch.nn.Linear(12, 3)).double()
        with torch.no_grad():
            for p in net.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
        net = net.to(device)
        x = torch.randn(40, 6, generator=g, dtype=torch.float64).to(device)
        y = torch.randint(0, 3, (40,), generator=g).to(device)
        params = {n: p.detach() for n, p in net.named_parameters()}
        return (lambda p: F.cross_entropy(functional_call(net, p, (x,)), y)), params

    cpu = hessian.top_eigenvalues(*problem("cpu"), k=3, generator=torch.Generator().manual_seed(0))
    gpu = hessian.top_eigenvalues(*problem("cuda"), k=3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(cpu, gpu.cpu(), rtol=1e-6, atol=1e-9)


def test_edge_of_stability_on_cuda(data_root):
    run = wb.run("edge_of_stability", device="cuda", steps=200, sharpness_every=50, n_train=300)
    assert run.status == "done" and float(run.ds.sharpness[-1]) > 0
