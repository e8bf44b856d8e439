"""K models trained as one program: parameters stacked along a leading model axis.

An MLP becomes one batched matmul per layer (torch.baddbmm); other modules go through torch.func
(functional_call under vmap). Models never mix: the loss is the sum of the per-model losses, so each model's
gradient is exactly its own. Per-model dials that keep shapes (learning rate, momentum, weight decay, ...) are
tensors of shape (K,).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn
from torch.func import functional_call, vmap

from ..errors import ConfigError
from ..models import MLP


class Stack:
    """Stacked parameters `params` (name -> (K, ...)) and `forward(params, x) -> logits`, x: (K, B, ...)."""

    precision = None  # a Precision rounds weights, activations and gradients (stacked MLPs only)
    grad_noise: "GradientNoise | None" = None  # Gaussian noise added to every gradient before the optimizer step

    def __init__(self, params: dict[str, torch.Tensor], forward: Callable):
        self.params, self._forward = params, forward
        self.ws: dict[str, torch.Tensor] = {}  # buffers reused from step to step (see _buffer)

    @property
    def k(self) -> int:
        return next(iter(self.params.values())).shape[0]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(self.params, x)

    def tensors(self) -> list[torch.Tensor]:
        return list(self.params.values())

    def gradients(self, x: torch.Tensor, loss_fn: Callable[[torch.Tensor], torch.Tensor]):
        """(per-model losses (K,), gradients of their sum): autograd through the whole program."""
        per_model = loss_fn(self(x))
        return per_model.detach(), list(torch.autograd.grad(per_model.sum(), self.tensors()))


class StackedMLP(Stack):
    """K MLPs as batched matmuls, with a hand-written backward pass (checked against autograd in the tests).

    The output layer is padded with zero columns to a multiple of 16 (narrow batched matmuls are slow); the
    padded logits are never read, so their weights get zero gradients and stay exactly zero.
    """

    ACTIVATIONS = {nn.ReLU: "relu", nn.Tanh: "tanh"}
    dropout: "Dropout | None" = None  # dropout of the hidden units in training steps (never in evaluation)

    def __init__(self, modules: list[MLP], device):
        linears = [[layer for layer in m.modules() if isinstance(layer, nn.Linear)] for m in modules]
        weights = [torch.stack([ls[j].weight.detach().T for ls in linears]) for j in range(len(linears[0]))]
        biases = [torch.stack([ls[j].bias.detach()[None] for ls in linears]) for j in range(len(linears[0]))]
        self._build(weights, biases, self.ACTIVATIONS[type(modules[0].features[2])], device, pad=True)

    @classmethod
    def of(cls, weights: list[torch.Tensor], biases: list[torch.Tensor] | None = None, act: str = "relu",
           device="cpu", pad: bool = True) -> "StackedMLP":
        """K MLPs from their stacked weights, (K, in, out) per layer, and biases (K, 1, out) or none (a bias-free
        net). pad=False keeps the output width as it is (the padded matmul may sum in another order)."""
        net = cls.__new__(cls)
        net._build(weights, biases, act, device, pad)
        return net

    def _build(self, weights, biases, act, device, pad):
        self.act, self.n_layers, self.classes = act, len(weights), weights[-1].shape[-1]
        pad = -self.classes % 16 if pad else 0
        params = {}
        for j, w in enumerate(weights):
            b = None if biases is None else biases[j]
            if j == self.n_layers - 1 and pad:
                w, b = nn.functional.pad(w, (0, pad)), None if b is None else nn.functional.pad(b, (0, pad))
            params[f"w{j}"] = w.to(device).contiguous().requires_grad_()
            if b is not None:
                params[f"b{j}"] = b.to(device).contiguous().requires_grad_()
        Stack.__init__(self, params, self._forward_sliced)

    def model(self, m: int) -> dict:
        """Model m's parameters (detached slices): what `forward_one` and the probes take."""
        return {n: p[m].detach() for n, p in self.params.items()}

    def forward_one(self, p: dict, x: torch.Tensor) -> torch.Tensor:
        """One model's logits (n, classes) on x (n, ...) from its own parameters `p` (as `model` gives): the same
        layers as the stacked forward, written for torch.func (Hessian-vector products of one model's loss)."""
        h = x.reshape(x.shape[0], -1)
        for j in range(self.n_layers):
            b = p.get(f"b{j}")
            h = h @ p[f"w{j}"] if b is None else torch.addmm(b[0], h, p[f"w{j}"])
            if j < self.n_layers - 1:
                h = torch.relu(h) if self.act == "relu" else torch.tanh(h)
        return h[:, :self.classes]

    def _layers(self, p, x, prec=None, ws=None, masks=None):
        """The input of each layer (K, B, in) as the matmul reads it, the weights as read, the activations before
        rounding and dropout (for the activation's derivative), and the padded logits. `ws` (a dict) holds buffers
        reused from step to step: a fresh multi-megabyte tensor per op costs its page faults on the CPU (a third of
        a step). `masks[j]` (training with dropout) scales the hidden units entering layer j ≥ 1."""
        h = x.reshape(x.shape[0], x.shape[1], -1)
        inputs, weights, raw = [], [], []
        for j in range(self.n_layers):
            raw.append(h)
            if masks is not None and j > 0:
                h = h * masks[j - 1]
            w = p[f"w{j}"]
            if prec is not None:
                h, w = prec.act(h), prec.weight(w)
            inputs.append(h)
            weights.append(w)
            out = _buffer(ws, f"h{j}", (h.shape[0], h.shape[1], w.shape[2]), h)
            b = p.get(f"b{j}")
            h = torch.bmm(h, w, out=out) if b is None else torch.baddbmm(b, h, w, out=out)  # fp32 accumulation
            if j < self.n_layers - 1:
                h = torch.relu_(h) if self.act == "relu" else torch.tanh_(h)
        return inputs, weights, raw, h

    def _forward_sliced(self, p, x):
        return self._layers(p, x, self.precision)[-1][..., :self.classes]

    def gradients(self, x, loss_fn):
        """Per-model losses and gradients by the hand-written backward. The gradient tensors are buffers of this
        object, overwritten by its next call: use them (an optimizer step) before calling again."""
        p, prec, ws = self.params, self.precision, self.ws
        masks = self.dropout.masks(x.shape[1], [p[f"w{j}"].shape[1] for j in range(1, self.n_layers)]) \
            if self.dropout is not None else None
        with torch.no_grad():
            inputs, weights, raw, logits = self._layers(p, x, prec, ws, masks)
        z = logits[..., :self.classes].detach().requires_grad_()
        per_model = loss_fn(z)
        (g,) = torch.autograd.grad(per_model.sum(), z)  # dL/dlogits (K, B, C), through the loss's own autograd
        with torch.no_grad():
            g = nn.functional.pad(g, (0, logits.shape[-1] - self.classes))
            if prec is not None:
                g = prec.grad(g * prec.loss_scale.view(-1, 1, 1))
            grads = {}
            for j in reversed(range(self.n_layers)):
                w = p[f"w{j}"]
                grads[f"w{j}"] = torch.bmm(inputs[j].transpose(1, 2), g, out=_buffer(ws, f"gw{j}", w.shape, w))
                if f"b{j}" in p:
                    grads[f"b{j}"] = torch.sum(g, 1, keepdim=True, out=_buffer(ws, f"gb{j}", p[f"b{j}"].shape, w))
                if j > 0:
                    shape = (g.shape[0], g.shape[1], w.shape[1])
                    # back through layer j, then the activation's derivative from its output (before rounding)
                    g = torch.bmm(g, weights[j].transpose(1, 2), out=_buffer(ws, f"g{j}", shape, g))
                    if masks is not None:
                        g.mul_(masks[j - 1])
                    if self.act == "relu":  # g where h > 0, else 0
                        g = torch.ops.aten.threshold_backward.grad_input(g, raw[j], 0.0, grad_input=g)
                    else:
                        g.mul_(1 - raw[j] * raw[j])  # tanh' = 1 - tanh²
                    if prec is not None:
                        g = prec.grad(g)
            if prec is not None and prec.dynamic:
                for v in grads.values():
                    v.div_(prec.loss_scale.view(-1, 1, 1))
        return per_model.detach(), [grads[n] for n in p]

    def gradient_noise_scale(self, x, loss_sum_fn) -> torch.Tensor:
        """B_simple = tr Σ / |G|² (McCandlish et al. 2018) of each model on the m examples x (K, m, ...), exactly.

        G is the mean gradient over the m examples and Σ the covariance of the per-example gradients.
        `loss_sum_fn(logits)` returns the summed per-example losses, shape (K,).
        """
        per_example, sums = self.per_example_gradients(x, loss_sum_fn)
        return noise_scale(per_example.sum(1), sums, x.shape[1])

    def example_gradient_norms(self, x, loss_sum_fn) -> torch.Tensor:
        """|∇ℓ_i| over all parameters, per model and example (K, m): the GraNd score (Paul et al. 2021)."""
        return self.per_example_gradients(x, loss_sum_fn)[0].clamp_min(0).sqrt()

    def per_example_gradients(self, x, loss_sum_fn) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(|∇ℓ_i|² per model and example (K, m), the gradients of the summed losses, one tensor per parameter
        (K, ...)), without forming any per-example gradient: a weight gradient is an outer product h gᵀ per example,
        so its squared norm is |h|²|g|². Chunks of a large set combine: add the per-example norms and the sums."""
        p = self.params
        with torch.no_grad():
            inputs, _, _, logits = self._layers(p, x)
        z = logits[..., :self.classes].detach().requires_grad_()
        (g,) = torch.autograd.grad(loss_sum_fn(z).sum(), z)  # per-example dℓ_i/dz (K, m, C)
        m = x.shape[1]
        with torch.no_grad():
            g = nn.functional.pad(g, (0, logits.shape[-1] - self.classes))
            per_example = torch.zeros(x.shape[0], m, device=x.device)  # Σ_layers |∇ℓ_i|²
            sums = []  # Σ_i ∇ℓ_i, per parameter
            for j in reversed(range(self.n_layers)):
                h = inputs[j]
                g2 = (g * g).sum(-1)
                bias = f"b{j}" in p
                per_example += (h * h).sum(-1) * g2 + (g2 if bias else 0)
                sums.append(torch.bmm(h.transpose(1, 2), g))
                if bias:
                    sums.append(g.sum(1))
                if j > 0:
                    g = torch.bmm(g, p[f"w{j}"].transpose(1, 2))
                    g = torch.ops.aten.threshold_backward(g, h, 0.0) if self.act == "relu" else g * (1 - h * h)
        return per_example, sums


def noise_scale(per_example_sum: torch.Tensor, grad_sums: list[torch.Tensor], m: int) -> torch.Tensor:
    """B_simple = tr Σ / |G|² from Σ_i |∇ℓ_i|² (K,) and the summed gradients over m examples: G = Σ_i ∇ℓ_i / m
    and tr Σ = mean_i |∇ℓ_i|² − |G|² (the examples' own covariance)."""
    g_sq = sum((s / m).pow(2).flatten(1).sum(1) for s in grad_sums)
    return (per_example_sum / m - g_sq) / g_sq


class Dropout:
    """Dropout of a stacked MLP's hidden units in training: model k drops each unit with its own rate `rates[k]` and
    scales the rest by 1 / (1 - rate) (inverted dropout), with masks drawn from its own generator, so a model's
    masks do not depend on the models trained beside it."""

    def __init__(self, rates: torch.Tensor, generators: list[torch.Generator]):
        self.rates, self.generators = rates, generators

    def masks(self, batch: int, widths: list[int]) -> list[torch.Tensor]:
        """One mask (K, batch, width) per hidden layer's output, each model's drawn from its generator."""
        dev = self.rates.device
        keep = (1 - self.rates).view(-1, 1, 1)
        out = []
        for w in widths:
            u = torch.stack([torch.rand(batch, w, generator=g) for g in self.generators]).to(dev)
            out.append((u < keep).float() / keep)
        return out


class GradientNoise:
    """Gaussian noise injected into every gradient before the optimizer step, as DP-SGD injects it (Abadi et al.
    2016), independent across steps or anti-correlated (Koloskova et al. 2023, "Correlated noise provably beats
    independent noise"): model k's step t adds σ_k (ξ_t − β_k ξ_{t−1}), ξ_t ~ N(0, I) drawn from model k's own
    generator (ξ_0 = 0). β = 0 is DP-SGD's independent noise; with β > 0 consecutive steps' noise partly cancels in
    the sum the parameters accumulate (β = 1: the sum telescopes to the last draw), at the same multiplier σ."""

    def __init__(self, sigma: torch.Tensor, beta: torch.Tensor, generators: list[torch.Generator]):
        self.sigma, self.beta, self.generators = sigma, beta, generators  # (K,), (K,), one per model
        self.previous: list[torch.Tensor] | None = None

    def __call__(self, grads: list[torch.Tensor]) -> list[torch.Tensor]:
        # per model, every tensor in order: a model's draws never depend on the models beside it
        draws = [[torch.randn(g.shape[1:], generator=gen) for g in grads] for gen in self.generators]
        xi = [torch.stack([d[j] for d in draws]).to(g.device) for j, g in enumerate(grads)]  # like grads (K, ...)
        noise = xi if self.previous is None else [x - _bcast(self.beta, x) * prev for x, prev in zip(xi, self.previous)]
        self.previous = xi
        return [g + _bcast(self.sigma, g) * n for g, n in zip(grads, noise)]


def _buffer(ws: dict | None, name: str, shape, like: torch.Tensor) -> torch.Tensor | None:
    """A reusable tensor of `shape` from the workspace `ws` (None: no workspace, let the op allocate)."""
    if ws is None:
        return None
    buf = ws.get(name)
    if buf is None or buf.shape != tuple(shape) or buf.dtype != like.dtype or buf.device != like.device:
        buf = ws[name] = torch.empty(shape, dtype=like.dtype, device=like.device)
    return buf


def stack(modules: list[nn.Module], device="cpu", precision=None) -> Stack:
    """Stack K modules of one architecture (each initialised from its own seed) into one program; `precision`
    (an engine.precision.Precision) makes it quantization-aware."""
    if all(isinstance(m, MLP) for m in modules) and type(modules[0].features[2]) in StackedMLP.ACTIVATIONS:
        net = StackedMLP(modules, device)
        net.precision = precision if precision is not None and precision.active else None
        return net
    if precision is not None and precision.active:
        raise ConfigError("precision", precision.format.name,
                          f"fp32 for a {type(modules[0]).__name__}: low-precision training runs on ReLU/tanh MLPs")
    template = modules[0].to(device)
    names = [n for n, _ in template.named_parameters()]
    params = {n: torch.stack([dict(m.named_parameters())[n].detach() for m in modules]).to(device).requires_grad_()
              for n in names}

    def one(p, x):
        return functional_call(template, p, (x,))

    return Stack(params, vmap(one, in_dims=(0, 0)))


def unstack_mlp(stack_: "StackedMLP", k: int, template: MLP) -> MLP:
    """Model k of a stacked MLP as a plain module (for probes or export)."""
    linears = [layer for layer in template.modules() if isinstance(layer, nn.Linear)]
    with torch.no_grad():
        for j, layer in enumerate(linears):
            out = layer.out_features
            layer.weight.copy_(stack_.params[f"w{j}"][k, :, :out].T)
            layer.bias.copy_(stack_.params[f"b{j}"][k, 0, :out])
    return template


def per_model(value, k: int, device="cpu") -> torch.Tensor:
    """A dial as a (K,) float tensor (a scalar is repeated)."""
    t = torch.as_tensor(value, dtype=torch.float32, device=device)
    return t.expand(k).clone() if t.ndim == 0 else t


FUSED_ADAM = hasattr(torch, "_fused_adam_") and hasattr(torch, "_fused_adamw_")


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.ndim - 1)))


class Optimizer:
    """Adam or SGD (with momentum, L2 weight decay) over stacked parameters, the update of torch.optim's
    Adam/SGD for each model, with a learning rate, momentum and weight decay per model. decoupled=True makes the
    weight decay AdamW's (p <- p·(1 - lr·wd) before the step)."""

    def __init__(self, params: list[torch.Tensor], kind: str, lr, momentum=0.0, weight_decay=0.0,
                 betas=(0.9, 0.999), eps=1e-8, decoupled: bool = False):
        if kind not in ("adam", "sgd"):
            raise ValueError(f"unknown optimizer {kind!r}")
        self.params, self.kind, self.betas, self.eps, self.decoupled = params, kind, betas, eps, decoupled
        k, dev = params[0].shape[0], params[0].device
        self.lr, self.momentum, self.wd = (per_model(v, k, dev) for v in (lr, momentum, weight_decay))
        self.state = [(torch.zeros_like(p), torch.zeros_like(p) if kind == "adam" else None) for p in params]
        self._denom: list[torch.Tensor] | None = None  # the multi-tensor path's buffers, made on first use
        self.t = 0
        self.skipped = torch.zeros(k, device=dev)  # steps skipped per model (loss-scale overflow)

    @torch.no_grad()
    def step(self, grads: list[torch.Tensor], skip: torch.Tensor | None = None) -> None:
        """One step of every model; models where `skip` (K,) is True keep their parameters and state."""
        if skip is not None and skip.any():
            keep = [(p.clone(), *(s.clone() for s in st if s is not None)) for p, st in zip(self.params, self.state)]
            grads = [torch.where(_bcast(skip, g), 0.0, g) for g in grads]
            self._step(grads, skip)
            for p, st, old in zip(self.params, self.state, keep):
                for now, before in zip((p, *(s for s in st if s is not None)), old):
                    now.copy_(torch.where(_bcast(skip, now), before, now))
            self.skipped += skip.float()
        else:
            self._step(grads)

    def _fused_groups(self) -> list[tuple[float, float, list[int] | None]]:
        """Models grouped by (learning rate, weight decay): torch's fused Adam takes one of each per call
        (None: all models in one group)."""
        key = (self.lr.tolist(), self.wd.tolist())
        if getattr(self, "_groups_key", None) != key:
            groups: dict[tuple[float, float], list[int]] = {}
            for k, lr_wd in enumerate(zip(*key)):
                groups.setdefault(lr_wd, []).append(k)
            self._groups_key = key
            self._groups = [(lr, wd, None if len(groups) == 1 else ks) for (lr, wd), ks in groups.items()]
        return self._groups

    def _step_fused(self, grads) -> None:
        """torch's fused Adam/AdamW kernel (one pass over the parameters, ~7x the multi-tensor update on a CPU),
        once per group of models sharing a learning rate and weight decay."""
        fused = torch._fused_adamw_ if self.decoupled else torch._fused_adam_
        b1, b2 = self.betas
        # the kernel walks a gradient in its parameter's memory order: a gradient laid out otherwise (a Linear's
        # weight gradient under vmap is a transposed view) would be read scrambled
        grads = [g if g.stride() == p.stride() else g.contiguous() for g, p in zip(grads, self.params)]
        step = torch.tensor(float(self.t), device=self.params[0].device)
        tensors = [self.params, grads, [s[0] for s in self.state], [s[1] for s in self.state]]
        for lr, wd, models in self._fused_groups():
            lists = tensors if models is None else [[t[k] for k in models for t in ts] for ts in tensors]
            fused(*lists, [], [step] * len(lists[0]), amsgrad=False, lr=lr, beta1=b1, beta2=b2, weight_decay=wd,
                  eps=self.eps, maximize=False)

    def _step(self, grads, skip=None) -> None:
        self.t += 1
        params = self.params
        grads = list(grads)
        if self.kind == "adam" and FUSED_ADAM and not self.skipped.any():
            return self._step_fused(grads)
        lrs = [_bcast(self.lr, p) for p in params]
        if self.wd.any():
            if self.decoupled:
                for p, lr in zip(params, lrs):
                    p.mul_(1 - lr * _bcast(self.wd, p))
            else:
                grads = [g + _bcast(self.wd, p) * p for p, g in zip(params, grads)]
        s1 = [s[0] for s in self.state]
        if self.kind == "adam":
            # torch.optim.Adam's update, elementwise over all models at once (multi-tensor ops)
            b1, b2 = self.betas
            s2 = [s[1] for s in self.state]
            torch._foreach_lerp_(s1, grads, 1 - b1)
            torch._foreach_mul_(s2, b2)
            torch._foreach_addcmul_(s2, grads, grads, value=1 - b2)
            if self._denom is None:
                self._denom = [torch.empty_like(p) for p in params]
            denom = self._denom  # (sqrt(v̂) + eps) / (lr / bc1), in place in buffers kept between steps
            torch._foreach_copy_(denom, s2)
            torch._foreach_sqrt_(denom)
            if self.skipped.any():  # models that skipped steps have their own step count
                t = self.t - self.skipped
                bc1, bc2 = 1 - b1**t, torch.sqrt(1 - b2**t)
                torch._foreach_div_(denom, [_bcast(bc2, p) for p in params])
                lrs = [lr / _bcast(bc1, p) for lr, p in zip(lrs, params)]
            else:
                bc1, bc2 = 1 - b1**self.t, math.sqrt(1 - b2**self.t)
                torch._foreach_div_(denom, bc2)
                lrs = [lr / bc1 for lr in lrs]
            torch._foreach_add_(denom, self.eps)
            torch._foreach_div_(denom, lrs)  # over the per-model step size lr_k / bc1 (lr 0: inf, a zero step)
            torch._foreach_addcdiv_(params, s1, denom, value=-1.0)
        else:
            # torch's momentum buffer: g on the first step, then μ·buf + g (dampening 0)
            for p, g, buf, lr in zip(params, grads, s1, lrs):
                buf.mul_(_bcast(self.momentum, p)).add_(g)
                p.addcmul_(buf, lr, value=-1.0)


def batches(perms: torch.Tensor, batch_size: int):
    """Per-model minibatch indices (K, B) from per-model permutations (K, n); the last batch may be short."""
    n = perms.shape[1]
    for start in range(0, n, batch_size):
        yield perms[:, start:start + batch_size]


def gather(x: torch.Tensor, idx: torch.Tensor, ws: dict | None = None, name: str = "") -> torch.Tensor:
    """x: (K, n, ...) per-model data, idx: (K, B) -> (K, B, ...); into the buffer `ws[name]` when given.

    One index_select over the rows (of the shared data when x is one data set expanded over the models), which
    runs several times faster on the CPU than advanced indexing."""
    k, n = x.shape[:2]
    shape = (k, idx.shape[1], *x.shape[2:])
    if x.stride(0) == 0:  # one data set seen by every model
        rows, flat = x[0], idx.reshape(-1)
    elif x.is_contiguous():
        rows = x.reshape(k * n, *x.shape[2:])
        flat = (idx + n * torch.arange(k, device=idx.device)[:, None]).reshape(-1)
    else:
        return x[torch.arange(k, device=x.device)[:, None], idx]
    out = _buffer(ws, name, (k * idx.shape[1], *x.shape[2:]), x)
    return torch.index_select(rows, 0, flat, out=out).view(shape)


def train_step(net: Stack, opt: Optimizer, loss_fn, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor):
    """One step of every model on its own minibatch idx (K, B); returns the per-model losses (K,), detached.

    Models never mix: the gradient of the summed losses with respect to model k's parameters is model k's own.
    """
    y_b = gather(y, idx, net.ws, "y")
    per_model, grads = net.gradients(gather(x, idx, net.ws, "x"), lambda logits: loss_fn(logits, y_b, idx))  # (K,)
    apply(net, opt, grads)
    return per_model


def apply(net: Stack, opt: Optimizer, grads: list[torch.Tensor]) -> None:
    """The optimizer step after a backward pass, with what low precision needs: non-finite gradients noted per
    model (`precision.grad_finite`), and with fp16's dynamic loss scale those models' steps skipped and their scale
    halved (grown after `growth_interval` good steps). Every study's step goes through here."""
    skip = None
    prec = net.precision
    if prec is not None:
        finite = torch.stack([torch.isfinite(g.sum(tuple(range(1, g.ndim)))) for g in grads]).all(0)
        skip = prec.update_scale(finite)
        prec.grad_finite = finite | skip
    if net.grad_noise is not None:
        grads = net.grad_noise(grads)
    opt.step(grads, skip)
