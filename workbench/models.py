"""Models, initialised from a passed-in generator so that a seed fixes them bit for bit."""
from __future__ import annotations

import math

import torch
from torch import nn

from . import plugins
from .errors import ConfigError


def init_(module: nn.Module, generator: torch.Generator) -> nn.Module:
    """PyTorch's default Linear/Conv init (Kaiming-uniform with a = √5, bias U(±1/√fan_in)) drawn from `generator`."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            fan_in = m.weight[0].numel()
            bound = 1.0 / math.sqrt(fan_in)
            with torch.no_grad():
                # kaiming_uniform_(a=√5) has bound gain·√(3/fan_in) = √(2/6)·√(3/fan_in) = 1/√fan_in
                m.weight.uniform_(-bound, bound, generator=generator)
                if m.bias is not None:
                    m.bias.uniform_(-bound, bound, generator=generator)
    return module


class MLP(nn.Module):
    """input -> [Linear(width) -> act] × depth -> Linear(num_classes)."""

    def __init__(self, input_dim: int, width: int, depth: int, num_classes: int, activation: str = "relu"):
        super().__init__()
        act = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "silu": nn.SiLU}[activation]
        layers, d = [nn.Flatten()], input_dim
        for _ in range(depth):
            layers += [nn.Linear(d, width), act()]
            d = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(d, num_classes)

    def forward(self, x):
        return self.head(self.features(x))


class SmallCNN(nn.Module):
    """For small images (8×8 digits): [conv3×3(width) -> ReLU] × depth, 2×2 max-pool after the first, then linear."""

    def __init__(self, image_shape: tuple, width: int, depth: int, num_classes: int):
        super().__init__()
        h, w = image_shape
        layers, c = [], 1
        for i in range(depth):
            layers += [nn.Conv2d(c, width, 3, padding=1), nn.ReLU()]
            if i == 0 and h >= 4 and w >= 4:
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            c = width
        layers.append(nn.Flatten())
        self.image_shape = tuple(image_shape)
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c * h * w, num_classes)

    def forward(self, x):
        x = x.reshape(x.shape[0], 1, *self.image_shape)  # (n, 1, H, W)
        return self.head(self.features(x))


def build(kind: str, *, input_dim: int, width: int, depth: int, num_classes: int, generator: torch.Generator,
          image_shape: tuple | None = None, activation: str = "relu") -> nn.Module:
    if kind == "mlp":
        model = MLP(input_dim, width, depth, num_classes, activation)
    elif kind == "cnn":
        model = SmallCNN(image_shape, width, depth, num_classes)
    elif plugins.is_import_path(kind):
        return from_factory(kind, input_dim=input_dim, num_classes=num_classes, image_shape=image_shape, width=width,
                            depth=depth, generator=generator)
    else:
        raise ValueError(f"unknown model {kind!r}")
    return init_(model, generator)


def from_factory(path: str, *, generator: torch.Generator, field: str = "model", **shape) -> nn.Module:
    """A user's model from the factory an import path names, called with the study's shape arguments (input_dim,
    num_classes, image_shape, width, depth) and the model's init `generator`. The factory may ignore the generator:
    torch's global generator is seeded from it while the factory runs (and restored after), so its default
    initialisation is fixed by the run's init seed all the same."""
    factory = plugins.resolve(path, field, "a model factory")
    # drawn from a copy: a factory that initialises from `generator` sees the stream the built-in models see
    seed = int(torch.randint(0, 2**62, (1,), generator=torch.Generator().set_state(generator.get_state())))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = plugins.call_with(factory, field, path, generator=generator, **shape)
    if not isinstance(model, nn.Module):
        raise ConfigError(field, path, f"a factory that returns a torch.nn.Module (it returned {type(model).__name__})")
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError(field, path, "a factory whose model has trainable parameters (this one has none)")
    return model


def check_factory(path: str, *, input_dim: int, num_classes: int, field: str = "model", **shape) -> int:
    """Build two of a user's models and train them one step together as the ensemble engine will (torch.func:
    functional_call under vmap): a model that does not map a batch (B, input_dim) to logits (B, num_classes), or
    that cannot be stacked (in-place updates of buffers, as BatchNorm's running statistics), is refused before any
    work, naming what went wrong. Returns one model's parameter count."""
    from .engine import ensemble

    gens = [torch.Generator().manual_seed(i) for i in (0, 1)]
    mods = [from_factory(path, generator=g, field=field, input_dim=input_dim, num_classes=num_classes, **shape)
            for g in gens]
    x = torch.randn(2, 3, input_dim, generator=gens[0])
    try:
        net = ensemble.stack(mods)
        out = net(x)
    except Exception as e:
        raise ConfigError(field, path, f"a model that takes a batch of shape (B, {input_dim}) and can be trained "
                                       f"stacked under torch.func.vmap ({type(e).__name__}: {e})") from None
    if tuple(out.shape) != (2, 3, num_classes):
        raise ConfigError(field, path, f"a model whose output is (B, {num_classes}) logits for a batch (B, "
                                       f"{input_dim}) (it gave {tuple(out.shape[1:])})")
    try:
        net.gradients(x, lambda z: z.float().logsumexp(-1).mean(-1))
    except Exception as e:
        raise ConfigError(field, path, f"a model that can be differentiated stacked under torch.func "
                                       f"({type(e).__name__}: {e})") from None
    return sum(p.numel() for p in mods[0].parameters())


def _label_embedding(classes: int, emb_dim: int) -> nn.Module | None:
    """A class's embedding as a bias-free Linear on its one-hot (so `init_` draws it from the run's stream)."""
    return nn.Linear(classes, emb_dim, bias=False) if classes else None


def _condition(model: nn.Module, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    """A denoiser's conditioning vector: the time's sinusoidal embedding (zeros without time conditioning), plus
    the class's embedding for a class-conditional one (which must be given y)."""
    from .engine.diffusion import time_embedding

    emb = time_embedding(t, model.emb_dim)
    if not model.time_conditioning:
        emb = torch.zeros_like(emb)
    if model.label is not None:
        if y is None:
            raise ValueError(f"{type(model).__name__} is class-conditional: call it as model(x, t, y)")
        emb = emb + model.label(nn.functional.one_hot(y, model.label.in_features).to(emb.dtype))
    return emb


class TimeClassifier(nn.Module):
    """p(class | x_t) at any noise level: [x, emb(t)] -> width ×depth (SiLU) -> class logits. Label-noise robust
    diffusion's transition-aware weights come from it (Na et al. 2024)."""

    def __init__(self, dim: int, classes: int, width: int = 128, depth: int = 2, emb_dim: int = 32):
        super().__init__()
        self.emb_dim = emb_dim
        layers, d = [], dim + emb_dim
        for _ in range(depth):
            layers += [nn.Linear(d, width), nn.SiLU()]
            d = width
        self.net = nn.Sequential(*layers, nn.Linear(d, classes))

    def forward(self, x, t):
        from .engine.diffusion import time_embedding

        return self.net(torch.cat([x.reshape(len(x), -1), time_embedding(t, self.emb_dim)], dim=1))


class Denoiser(nn.Module):
    """An MLP denoiser for flat data (2-D points, flattened small images): [x, emb(t)] -> width ×depth (SiLU) -> d.
    time_conditioning=False feeds zeros for the embedding ("Is noise conditioning necessary?", Sun et al. 2025).
    classes > 0 makes it class-conditional: forward(x, t, y) adds a learned embedding of the class y to the time's."""

    def __init__(self, dim: int, width: int = 256, depth: int = 3, emb_dim: int = 32, time_conditioning: bool = True,
                 classes: int = 0):
        super().__init__()
        self.emb_dim, self.time_conditioning = emb_dim, time_conditioning
        self.label = _label_embedding(classes, emb_dim)
        layers, d = [], dim + emb_dim
        for _ in range(depth):
            layers += [nn.Linear(d, width), nn.SiLU()]
            d = width
        self.net = nn.Sequential(*layers, nn.Linear(d, dim))

    def forward(self, x, t, y=None):
        emb = _condition(self, t, y)
        shape = x.shape
        return self.net(torch.cat([x.reshape(shape[0], -1), emb], dim=1)).reshape(shape)


class MaskedTokenNet(nn.Module):
    """A masked diffusion model's denoiser for L tokens over a vocabulary of V (Sahoo et al. 2024; Zheng et al.
    2024): the tokens one-hot, with the mask as token V, through an MLP (SiLU) to logits over the V tokens at every
    position (n, L, V). No time input: the masked tokens say how far sampling has come (a masked diffusion model is
    time-agnostic, Zheng et al.)."""

    def __init__(self, length: int, vocab: int, width: int = 256, depth: int = 2):
        super().__init__()
        self.length, self.vocab = length, vocab
        layers, d = [], length * (vocab + 1)
        for _ in range(depth):
            layers += [nn.Linear(d, width), nn.SiLU()]
            d = width
        self.net = nn.Sequential(*layers, nn.Linear(d, length * vocab))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = nn.functional.one_hot(tokens, self.vocab + 1).float().flatten(1)
        return self.net(x).view(len(tokens), self.length, self.vocab)


class OneMoreStep(nn.Module):
    """One More Step's compact net (Hu et al. 2024): pure noise z and a request (a vector: here the image's mean
    brightness, with the class one-hot where the run is conditional — a prompt's stand-in) -> x̂_0 at zero SNR."""

    def __init__(self, dim: int, request_dim: int, width: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim + request_dim, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
                                 nn.Linear(width, dim))

    def forward(self, z, request):
        return self.net(torch.cat([z, request], dim=1))


class ConvDenoiser(nn.Module):
    """A small convolutional denoiser for square one-channel images given flat (B, side²): a 3×3 conv stem, `depth`
    residual blocks (3×3 conv, SiLU, plus a per-channel bias from the time embedding and a linear map of the
    channels' spatial means — global context, which a few 3×3 convs lack at 16×16 or 32×32 and which carries
    an image's mean brightness), and a 3×3 conv back to one channel."""

    def __init__(self, side: int, channels: int = 32, depth: int = 3, emb_dim: int = 32,
                 time_conditioning: bool = True, classes: int = 0):
        super().__init__()
        self.side, self.emb_dim, self.time_conditioning = side, emb_dim, time_conditioning
        self.label = _label_embedding(classes, emb_dim)
        self.stem = nn.Conv2d(1, channels, 3, padding=1)
        self.convs = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in range(depth))
        self.times = nn.ModuleList(nn.Linear(emb_dim, channels) for _ in range(depth))
        self.globals = nn.ModuleList(nn.Linear(channels, channels) for _ in range(depth))
        self.out = nn.Conv2d(channels, 1, 3, padding=1)

    def forward(self, x, t, y=None):
        emb = _condition(self, t, y)
        shape = x.shape
        h = self.stem(x.reshape(shape[0], 1, self.side, self.side))
        for conv, time, glob in zip(self.convs, self.times, self.globals):
            bias = time(emb) + glob(h.mean((2, 3)))
            h = h + conv(nn.functional.silu(h + bias[:, :, None, None]))
        return self.out(nn.functional.silu(h)).reshape(shape)

