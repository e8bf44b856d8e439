"""The ensemble engine: the hand-written MLP backward equals autograd; the batched optimizers equal torch.optim."""
import pytest
import torch

from workbench import models
from workbench.engine import ensemble, losses


def modules(k, act="relu", depth=2, width=24, classes=10):
    gens = [torch.Generator().manual_seed(i) for i in range(k)]
    mods = [models.build("mlp", input_dim=12, width=width, depth=depth, num_classes=classes, generator=g)
            for g in gens]
    if act == "tanh":
        for m in mods:
            for i, layer in enumerate(m.features):
                if isinstance(layer, torch.nn.ReLU):
                    m.features[i] = torch.nn.Tanh()
    return mods


@pytest.mark.parametrize("act", ["relu", "tanh"])
@pytest.mark.parametrize("depth", [1, 3])
@pytest.mark.parametrize("loss", ["ce", "gce", "elr"])
def test_manual_backward_equals_autograd(act, depth, loss):
    k, b = 3, 7
    net = ensemble.stack(modules(k, act, depth), "cpu")
    assert isinstance(net, ensemble.StackedMLP)
    x = torch.randn(k, b, 12)
    y = torch.randint(0, 10, (k, b))
    idx = torch.randint(0, 20, (k, b))
    make = lambda: losses.make(loss, num_models=k, num_examples=20, num_classes=10)  # noqa: E731
    fn1, fn2 = make(), make()
    got_loss, got = net.gradients(x, lambda z: fn1(z, y, idx))
    want_loss, want = ensemble.Stack.gradients(net, x, lambda z: fn2(z, y, idx))  # plain autograd
    torch.testing.assert_close(got_loss, want_loss)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_dropout_backward_equals_autograd_through_the_same_masks(act):
    k, b, widths = 3, 64, [24, 24, 24]  # depth 3: the inputs of layers 1-3
    rates = torch.tensor([0.0, 0.3, 0.6])
    draw = lambda: ensemble.Dropout(rates, [torch.Generator().manual_seed(i) for i in range(k)])  # noqa: E731
    net = ensemble.stack(modules(k, act, depth=3), "cpu")
    net.dropout = draw()
    x, y = torch.randn(k, b, 12), torch.randint(0, 10, (k, b))
    loss = lambda z: losses.cross_entropy(z, y).mean(1)  # noqa: E731
    got_loss, got = net.gradients(x, loss)
    masks = draw().masks(b, widths)  # what the step drew, drawn again from the same streams
    per_model = loss(net._layers(net.params, x, masks=masks)[-1][..., :10])
    want = torch.autograd.grad(per_model.sum(), net.tensors())
    torch.testing.assert_close(got_loss, per_model.detach())
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)
    # each model drops its own share and scales the rest; a rate of 0 keeps every unit as it is
    for m, rate in enumerate(rates.tolist()):
        dropped = float((masks[0][m] == 0).float().mean())
        assert abs(dropped - rate) < 0.05 and torch.allclose(masks[0][m][masks[0][m] > 0], torch.tensor(1 / (1 - rate)))
    plain = ensemble.stack(modules(k, act, depth=3), "cpu")
    _, plain_grads = plain.gradients(x, loss)
    for g, w in zip(got, plain_grads):
        torch.testing.assert_close(g[0], w[0].clone(), rtol=1e-5, atol=1e-6)


def test_stacked_models_match_each_module():
    mods = modules(4)
    net = ensemble.stack(mods, "cpu")
    x = torch.randn(4, 5, 12)
    out = net(x)
    assert out.shape == (4, 5, 10)
    for i, m in enumerate(mods):
        torch.testing.assert_close(out[i], m(x[i]))
        back = ensemble.unstack_mlp(net, i, modules(1)[0])
        torch.testing.assert_close(back(x[i]), m(x[i]))


def _step_both(net, opt, mods, refs, x, y):
    """One step of the stacked models and one of each module with its torch.optim reference; the stacked grads."""
    _, grads = net.gradients(x, lambda z: losses.cross_entropy(z, y).mean(1))
    opt.step(grads)
    for i, (m, ref) in enumerate(zip(mods, refs)):
        ref.zero_grad()
        torch.nn.functional.cross_entropy(m(x[i]), y[i]).backward()
        ref.step()
    return grads


@pytest.mark.parametrize("lrs", [[1e-3, 3e-2, 1e-1], [1e-2] * 3])  # a group per model / one group (fused Adam)
@pytest.mark.parametrize("kind, extra", [("adam", {}), ("adam", {"weight_decay": 0.01}),
                                         ("adamw", {"weight_decay": 0.1}),
                                         ("sgd", {"momentum": 0.9}), ("sgd", {"momentum": 0.0, "weight_decay": 0.1})])
def test_batched_optimizer_equals_torch_optim_per_model(kind, extra, lrs):
    k = 3
    mods = modules(k)
    net = ensemble.stack(mods, "cpu")
    opt = ensemble.Optimizer(net.tensors(), kind.replace("adamw", "adam"), lr=lrs, decoupled=kind == "adamw",
                             **{n: [v] * k for n, v in extra.items()})
    ref_class = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[kind]
    refs = [ref_class(m.parameters(), lr=lr, **extra) for m, lr in zip(mods, lrs)]
    for step in range(5):
        x = torch.randn(k, 8, 12)
        y = torch.randint(0, 10, (k, 8))
        _step_both(net, opt, mods, refs, x, y)
    for i, m in enumerate(mods):
        torch.testing.assert_close(ensemble.unstack_mlp(net, i, modules(1)[0])(x[i]), m(x[i]), rtol=1e-4, atol=1e-5)
    assert torch.all(net.params["w2"][:, :, 10:] == 0)  # the padded logits stay exactly zero


def test_other_modules_go_through_vmap():
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    cnns = [models.build("cnn", input_dim=64, width=4, depth=2, num_classes=10, generator=g, image_shape=(8, 8))
            for g in gens]
    net = ensemble.stack(cnns, "cpu")
    x = torch.randn(2, 3, 64)
    for i, m in enumerate(cnns):
        torch.testing.assert_close(net(x)[i], m(x[i]))


@pytest.mark.parametrize("lrs", [[1e-2, 1e-2], [1e-2, 3e-2]])
def test_modules_through_vmap_train_as_torch_optim_trains_each(lrs):
    """The torch.func path's Linear weight gradients are transposed views: the fused Adam kernel must read them in
    their own layout (it once read them scrambled, and a CNN's head or a user's model barely learned)."""
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    cnns = [models.build("cnn", input_dim=64, width=4, depth=2, num_classes=10, generator=g, image_shape=(8, 8))
            for g in gens]
    net = ensemble.stack(cnns, "cpu")
    opt = ensemble.Optimizer(net.tensors(), "adam", lr=lrs)
    refs = [torch.optim.Adam(m.parameters(), lr=lr) for m, lr in zip(cnns, lrs)]
    for step in range(4):
        x, y = torch.randn(2, 6, 64), torch.randint(0, 10, (2, 6))
        grads = _step_both(net, opt, cnns, refs, x, y)
        assert any(not g.is_contiguous() for g in grads)  # what the optimizer has had to cope with
    for i, m in enumerate(cnns):
        for name, p in m.named_parameters():
            torch.testing.assert_close(net.params[name][i], p, rtol=1e-4, atol=1e-5)


def test_gradient_noise_scale_equals_the_definition():
    k, m = 2, 9
    net = ensemble.stack(modules(k, classes=3), "cpu")
    x = torch.randn(k, m, 12)
    y = torch.randint(0, 3, (k, m))
    got = net.gradient_noise_scale(x, lambda z: losses.cross_entropy(z, y).sum(1))
    for i, mod in enumerate(modules(k, classes=3)):
        per = []
        for n in range(m):
            mod.zero_grad()
            torch.nn.functional.cross_entropy(mod(x[i, n:n + 1]), y[i, n:n + 1]).backward()
            per.append(torch.cat([p.grad.flatten() for p in mod.parameters()]))
        per = torch.stack(per)  # (m, params)
        G = per.mean(0)
        trace = ((per - G) ** 2).sum(1).mean()  # tr of the (population) covariance
        torch.testing.assert_close(got[i], trace / (G @ G), rtol=1e-4, atol=1e-6)
    # the label-noise study's measurement: the whole set in chunks whose sums add up to the same value
    from types import SimpleNamespace

    from workbench.studies.label_noise import _noise_scale

    state = SimpleNamespace(k=k, n=m, x_tr=x, y_tr=y)
    for chunk in (2, 4, 9, 100):
        torch.testing.assert_close(_noise_scale(net, state, chunk=chunk), got, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_one_models_forward_equals_its_slice_of_the_stacked_forward(act):
    mods = [models.build("mlp", input_dim=7, width=12, depth=2, num_classes=5, generator=torch.Generator().manual_seed(s),
                         activation=act) for s in range(3)]
    net = ensemble.stack(mods, "cpu")
    x = torch.randn(3, 9, 7, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        stacked = net(x)
    for m in range(3):
        torch.testing.assert_close(net.forward_one(net.model(m), x[m]), stacked[m], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(net.forward_one(net.model(m), x[m]), mods[m](x[m]).detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("pad", [True, False])
def test_a_bias_free_stack_equals_its_modules_and_autograd(pad):
    """StackedMLP.of without biases (grokking's MLP): forward equals bias-free nn.Linear layers, the hand-written
    backward equals autograd, one model's forward equals its slice."""
    g = torch.Generator().manual_seed(0)
    k, sizes = 3, [12, 20, 20, 7]
    weights = [torch.randn(k, a, b, generator=g) / a ** 0.5 for a, b in zip(sizes[:-1], sizes[1:])]
    net = ensemble.StackedMLP.of(weights, None, "relu", pad=pad)
    assert not any(name.startswith("b") for name in net.params)
    x = torch.randn(k, 9, 12, generator=g)
    y = torch.randint(0, 7, (k, 9), generator=g)
    with torch.no_grad():
        out = net(x)
    assert out.shape == (k, 9, 7)
    for m in range(k):
        layers = [torch.nn.Linear(a, b, bias=False) for a, b in zip(sizes[:-1], sizes[1:])]
        with torch.no_grad():
            for layer, w in zip(layers, weights):
                layer.weight.copy_(w[m].T)
        ref = torch.nn.Sequential(layers[0], torch.nn.ReLU(), layers[1], torch.nn.ReLU(), layers[2])
        torch.testing.assert_close(out[m], ref(x[m]).detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(net.forward_one(net.model(m), x[m]), out[m], rtol=1e-5, atol=1e-6)
    got_loss, got = net.gradients(x, lambda z: losses.cross_entropy(z, y).mean(1))
    want_loss, want = ensemble.Stack.gradients(net, x, lambda z: losses.cross_entropy(z, y).mean(1))
    torch.testing.assert_close(got_loss, want_loss)
    assert len(got) == len(weights)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    gns = net.gradient_noise_scale(x, lambda z: losses.cross_entropy(z, y).sum(1))
    assert gns.shape == (k,) and torch.isfinite(gns).all()


def test_anti_correlated_gradient_noise_telescopes_and_is_each_models_own():
    """σ(ξ_t − βξ_(t−1)): with β = 1 the noise summed over steps is σ·ξ_T alone; with β = 0 it is a random walk.
    Model k's draws come from its own generator whatever the models beside it."""
    k, shape = 3, (k_shape := (4, 5))
    zeros = [torch.zeros(k, *shape)]
    noise = ensemble.GradientNoise(torch.full((k,), 0.5), torch.ones(k), [torch.Generator().manual_seed(s)
                                                                          for s in range(k)])
    total = sum(noise(zeros)[0] for _ in range(50))
    last = noise.previous[0]
    assert torch.allclose(total, 0.5 * last, atol=1e-5)  # everything but the last draw cancelled
    walk = ensemble.GradientNoise(torch.full((k,), 0.5), torch.zeros(k), [torch.Generator().manual_seed(s)
                                                                          for s in range(k)])
    assert float(sum(walk(zeros)[0] for _ in range(50)).std()) > 5 * float((0.5 * last).std()) / 2
    alone = ensemble.GradientNoise(torch.full((1,), 0.5), torch.ones(1), [torch.Generator().manual_seed(1)])
    first_alone = alone([torch.zeros(1, *k_shape)])[0][0]
    again = ensemble.GradientNoise(torch.full((k,), 0.5), torch.ones(k), [torch.Generator().manual_seed(s)
                                                                          for s in range(k)])
    assert torch.equal(again(zeros)[0][1], first_alone)


def test_iterative_magnitude_pruning_removes_the_smallest_weights_rewinds_and_keeps_them_zero():
    """Each model of the stack on its own: a round removes the given share of its remaining weights, the smallest
    in magnitude over all layers (never the output's zero padding), rewinds the rest to their initial values, and
    training keeps the removed ones at zero."""
    import workbench as wb
    from workbench.errors import ConfigError
    from workbench.studies.label_noise import _Pruning

    g = torch.Generator().manual_seed(0)
    net = ensemble.stack([models.build("mlp", input_dim=6, width=5, depth=2, num_classes=3, generator=g)
                          for _ in range(2)])
    first = {n: p.detach().clone() for n, p in net.params.items()}
    prune = _Pruning(net, 0.5)
    assert prune.total.tolist() == [6 * 5 + 5 * 5 + 5 * 3] * 2 and prune.density().tolist() == [1.0, 1.0]
    with torch.no_grad():
        for p in net.params.values():
            p.add_(torch.randn(p.shape, generator=g))  # "trained"
        net.params["w2"][..., 3:] = 0  # the padding stays zero
    trained = {n: p.detach().clone() for n, p in net.params.items()}
    prune.next_round()
    assert prune.density().tolist() == [0.5, 0.5]
    for m in range(2):
        mags = torch.cat([trained[n][m].abs().flatten() if n != "w2" else trained[n][m][:, :3].abs().flatten()
                          for n in ("w0", "w1", "w2")])
        kept = torch.cat([prune.masks[n][m].flatten() if n != "w2" else prune.masks[n][m][:, :3].flatten()
                          for n in ("w0", "w1", "w2")])
        assert mags[kept].min() > mags[~kept].max()  # the larger half kept
    for n, p in net.params.items():
        expect = first[n] * prune.masks[n] if n in prune.masks else first[n]
        assert torch.equal(p.detach(), expect), n  # rewound, pruned ones zero
    x, y = torch.randn(2, 8, 6, generator=g), torch.randint(0, 3, (2, 8), generator=g)
    opt = ensemble.Optimizer(net.tensors(), "adam", 0.1)
    ensemble.train_step(net, opt, lambda z, t, i: losses.cross_entropy(z, t).mean(1), x, y, torch.arange(8).repeat(2, 1))
    prune.apply()
    assert all((net.params[n][~prune.masks[n]] == 0).all() for n in prune.names)
    assert not torch.equal(net.params["w0"], first["w0"] * prune.masks["w0"])  # the kept ones trained

    run = wb.run("label_noise", epochs=2, prune_rounds=2, prune_fraction=0.5, n_train=200, width=16,
                 loss_snapshots=0, progress=False)
    assert run.ds.density.values.round(4).tolist() == [1, 1, 1, 0.5, 0.5, 0.25, 0.25]  # the axis spans the rounds
    for dials, field in (({"model": "cnn"}, "prune_rounds"), ({"epochs": 5, "eval_every": 2}, "eval_every")):
        with pytest.raises(ConfigError) as e:
            wb.run("label_noise", prune_rounds=2, **dials)
        assert e.value.field == field, e.value
