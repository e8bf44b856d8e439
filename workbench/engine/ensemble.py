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

from ..models import MLP


class Stack:
    """Stacked parameters `params` (name -> (K, ...)) and `forward(params, x) -> logits`, x: (K, B, ...)."""

    def __init__(self, params: dict[str, torch.Tensor], forward: Callable):
        self.params, self._forward = params, forward

    @property
    def k(self) -> int:
        return next(iter(self.params.values())).shape[0]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(self.params, x)

    def tensors(self) -> list[torch.Tensor]:
        return list(self.params.values())


def stack(modules: list[nn.Module], device="cpu") -> Stack:
    """Stack K modules of one architecture (each initialised from its own seed) into one program."""
    if all(isinstance(m, MLP) for m in modules):
        return _stack_mlp(modules, device)
    template = modules[0]
    names = [n for n, _ in template.named_parameters()]
    params = {n: torch.stack([dict(m.named_parameters())[n].detach() for m in modules]).to(device).requires_grad_()
              for n in names}
    template = template.to(device)

    def one(p, x):
        return functional_call(template, p, (x,))

    return Stack(params, vmap(one, in_dims=(0, 0)))


def _stack_mlp(modules: list[MLP], device) -> Stack:
    linears = [[layer for layer in m.modules() if isinstance(layer, nn.Linear)] for m in modules]
    acts = [type(layer) for layer in modules[0].features if not isinstance(layer, (nn.Linear, nn.Flatten))]
    params = {}
    for j in range(len(linears[0])):
        params[f"w{j}"] = torch.stack([ls[j].weight.detach().T for ls in linears]).to(device).contiguous()  # (K, in, out)
        params[f"b{j}"] = torch.stack([ls[j].bias.detach()[None] for ls in linears]).to(device)  # (K, 1, out)
    for p in params.values():
        p.requires_grad_()
    act_fns = [a() for a in acts]
    n_layers = len(linears[0])

    def forward(p, x):
        h = x.reshape(x.shape[0], x.shape[1], -1)  # (K, B, in)
        for j in range(n_layers):
            h = torch.baddbmm(p[f"b{j}"], h, p[f"w{j}"])
            if j < n_layers - 1:
                h = act_fns[j](h)
        return h

    return Stack(params, forward)


def unstack_mlp(stack_: Stack, k: int, template: MLP) -> MLP:
    """Model k of a stacked MLP as a plain module (for probes or export)."""
    linears = [layer for layer in template.modules() if isinstance(layer, nn.Linear)]
    with torch.no_grad():
        for j, layer in enumerate(linears):
            layer.weight.copy_(stack_.params[f"w{j}"][k].T)
            layer.bias.copy_(stack_.params[f"b{j}"][k, 0])
    return template


def per_model(value, k: int, device="cpu") -> torch.Tensor:
    """A dial as a (K,) float tensor (a scalar is repeated)."""
    t = torch.as_tensor(value, dtype=torch.float32, device=device)
    return t.expand(k).clone() if t.ndim == 0 else t


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.ndim - 1)))


class Optimizer:
    """Adam or SGD (with momentum, L2 weight decay) over stacked parameters, the update of torch.optim's
    Adam/SGD for each model, with a learning rate, momentum and weight decay per model."""

    def __init__(self, params: list[torch.Tensor], kind: str, lr, momentum=0.0, weight_decay=0.0,
                 betas=(0.9, 0.999), eps=1e-8):
        if kind not in ("adam", "sgd"):
            raise ValueError(f"unknown optimizer {kind!r}")
        self.params, self.kind, self.betas, self.eps = params, kind, betas, eps
        k, dev = params[0].shape[0], params[0].device
        self.lr, self.momentum, self.wd = (per_model(v, k, dev) for v in (lr, momentum, weight_decay))
        self.state = [(torch.zeros_like(p), torch.zeros_like(p)) for p in params]
        self.t = 0

    @torch.no_grad()
    def step(self, grads: list[torch.Tensor]) -> None:
        self.t += 1
        b1, b2 = self.betas
        bc1, bc2 = 1 - b1 ** self.t, math.sqrt(1 - b2 ** self.t)
        for p, g, (s1, s2) in zip(self.params, grads, self.state):
            lr = _bcast(self.lr, p)
            if self.wd.any():
                g = g + _bcast(self.wd, p) * p
            if self.kind == "adam":
                s1.lerp_(g, 1 - b1)
                s2.mul_(b2).addcmul_(g, g, value=1 - b2)
                p.sub_((lr / bc1) * s1 / (s2.sqrt() / bc2 + self.eps))
            else:
                s1.mul_(_bcast(self.momentum, p)).add_(g)  # torch's buffer: g on the first step, then μ·buf + g
                p.sub_(lr * s1)


def batches(perms: torch.Tensor, batch_size: int):
    """Per-model minibatch indices (K, B) from per-model permutations (K, n); the last batch may be short."""
    n = perms.shape[1]
    for start in range(0, n, batch_size):
        yield perms[:, start:start + batch_size]


def gather(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x: (K, n, ...) per-model data, idx: (K, B) -> (K, B, ...)."""
    return x[torch.arange(x.shape[0], device=x.device)[:, None], idx]
