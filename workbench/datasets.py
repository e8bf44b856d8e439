"""Small data sets that ship or are generated: nothing is downloaded.

Every loader returns a `Data` with a fixed train/test split drawn from `seed`; labels are clean
(label noise is applied by the study, to the training labels only).
"""
from __future__ import annotations

import functools
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import ConfigError

NAMES = ("digits", "blobs", "xor", "npz")


@dataclass(frozen=True)
class Data:
    name: str
    x_train: torch.Tensor  # (n_train, *input_shape) float32
    y_train: torch.Tensor  # (n_train,) int64
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    input_shape: tuple  # (64,) for flat digits; images also keep `image_shape`
    image_shape: tuple | None = None

    @property
    def input_dim(self) -> int:
        return math.prod(self.input_shape)


def _split(x: np.ndarray, y: np.ndarray, n_train: int | None, seed: int, name: str, field="n_train"):
    n = len(y)
    if not n_train:  # None or 0: two thirds for training
        n_train = int(round(n * 2 / 3))
    if not 1 <= n_train < n:
        raise ConfigError(field, n_train, f"between 1 and {n - 1} for data set {name!r} ({n} examples)")
    perm = np.random.default_rng(seed).permutation(n)
    tr, te = perm[:n_train], perm[n_train:]
    t = lambda a, dt: torch.as_tensor(np.ascontiguousarray(a), dtype=dt)  # noqa: E731
    return t(x[tr], torch.float32), t(y[tr], torch.long), t(x[te], torch.float32), t(y[te], torch.long)


def digits(n_train: int | None = 1200, seed: int = 0) -> Data:
    """scikit-learn's bundled 8×8 handwritten digits (1,797 images, 10 classes), pixels scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    parts = _split(x, d.target, n_train, seed, "digits")
    return Data("digits", *parts, num_classes=10, input_shape=(64,), image_shape=(8, 8))


def blobs(n_train: int | None = 1200, seed: int = 0, n: int = 2000, num_classes: int = 4, dim: int = 10,
          spread: float = 1.5) -> Data:
    """Isotropic Gaussian blobs: num_classes centres ~ U(-3, 3)^dim, unit-variance clusters times `spread`."""
    rng = np.random.default_rng(10_000 + seed)
    centres = rng.uniform(-3, 3, size=(num_classes, dim))
    y = rng.integers(0, num_classes, size=n)
    x = centres[y] + spread * rng.standard_normal((n, dim))
    return Data("blobs", *_split(x, y, n_train, seed, "blobs"), num_classes=num_classes, input_shape=(dim,))


def xor(n_train: int | None = 1200, seed: int = 0, n: int = 2000, dim: int = 50, separation: float = 3.0) -> Data:
    """XOR clusters (Frei et al. 2022, benign overfitting): x = ±μ1 or ±μ2 plus N(0, I); label 0 for ±μ1, 1 for ±μ2.

    μ1 ⟂ μ2 with ‖μ‖ = separation, so no linear classifier does better than chance.
    """
    rng = np.random.default_rng(20_000 + seed)
    mu = np.zeros((2, dim))
    mu[0, 0] = mu[1, 1] = separation
    y = rng.integers(0, 2, size=n)
    sign = rng.choice([-1.0, 1.0], size=(n, 1))
    x = sign * mu[y] + rng.standard_normal((n, dim))
    return Data("xor", *_split(x, y, n_train, seed, "xor"), num_classes=2, input_shape=(dim,))


def modular_addition(p: int = 113, train_fraction: float = 0.4, seed: int = 0) -> Data:
    """All pairs (a, b) of residues mod p, label (a + b) mod p; inputs are the two one-hot vectors concatenated
    (2p dims), as in "Grokking at the edge of numerical stability" (Prieto et al. 2025)."""
    a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    a, b = a.ravel(), b.ravel()
    x = np.zeros((p * p, 2 * p), dtype=np.float32)
    x[np.arange(p * p), a] = 1.0
    x[np.arange(p * p), p + b] = 1.0
    n_train = int(round(train_fraction * p * p))
    parts = _split(x, (a + b) % p, n_train, seed, f"modular addition mod {p}", field="train_fraction")
    return Data(f"mod{p}", *parts, num_classes=p, input_shape=(2 * p,))


POINTS = ("eight_gaussians", "moons", "swiss_roll")
IMAGES = ("bright_dark", "digits_images")


RESOLUTIONS = (8, 16, 32)


#: the share of the 1,797 digits kept out of training for diffusion's held-out images
HELD_OUT_SHARE = 0.25


def images(name: str, n: int, generator: torch.Generator, side: int = 8, n_held: int = 0):
    """side×side images for diffusion, flattened to side² values in about [-1, 1], from sklearn's 8×8 digits
    (bilinearly upsampled for side 16 or 32). bright_dark: each digit as a ±0.2 pattern around a brightness of +0.7
    or −0.7 (half each: the mean brightness is bimodal, Lin et al.'s terminal-SNR setting); digits_images: pixels
    scaled to [-1, 1].

    The digits are split once (by `generator`) into a training pool and a held-out pool of HELD_OUT_SHARE of them;
    the n training images come from the first (each digit once while n allows, then drawn with replacement), the
    n_held held-out images from the second. So held-out images are never copies of training images, and nearest-
    training distances of held-out data mean what they say. Returns the training images, or (training, held-out)
    when n_held > 0."""
    from sklearn.datasets import load_digits

    if name not in IMAGES:
        raise ConfigError("dataset", name, f"one of {', '.join(POINTS + IMAGES)}")
    if side not in RESOLUTIONS:
        raise ConfigError("resolution", side, f"one of {', '.join(map(str, RESOLUTIONS))}")
    x = torch.as_tensor(load_digits().data / 16.0, dtype=torch.float32)  # (1797, 64) in [0, 1]
    perm = torch.randperm(len(x), generator=generator)
    n_out = int(round(len(x) * HELD_OUT_SHARE))
    train_pool, held_pool = perm[n_out:], perm[:n_out]

    def draw(pool, count):
        if count <= len(pool):
            return pool[torch.randperm(len(pool), generator=generator)[:count]]
        return pool[torch.randint(0, len(pool), (count,), generator=generator)]

    def render(idx):
        pick = x[idx]
        if side != 8:
            pick = torch.nn.functional.interpolate(pick.reshape(len(idx), 1, 8, 8), size=(side, side),
                                                   mode="bilinear", align_corners=False).reshape(len(idx), side * side)
        if name == "digits_images":
            return pick * 2 - 1
        sign = torch.where(torch.rand(len(idx), generator=generator) < 0.5, -1.0, 1.0)
        return (pick - 0.5) * 0.4 + 0.7 * sign[:, None]

    train = render(draw(train_pool, n))
    return (train, render(draw(held_pool, n_held))) if n_held else train


def points(name: str, n: int, generator: torch.Generator) -> torch.Tensor:
    """2-D toy distributions for diffusion, scaled to about unit variance: eight Gaussians on a circle, two moons,
    a swiss roll."""
    if name == "eight_gaussians":
        k = torch.randint(0, 8, (n,), generator=generator).double()
        centres = torch.stack([torch.cos(k * math.pi / 4), torch.sin(k * math.pi / 4)], 1) * 1.4
        return (centres + 0.1 * torch.randn(n, 2, generator=generator, dtype=torch.float64)).float()
    if name == "moons":
        upper = torch.rand(n, generator=generator) < 0.5
        a = torch.rand(n, generator=generator, dtype=torch.float64) * math.pi
        x = torch.where(upper, torch.cos(a), 1 - torch.cos(a))
        y = torch.where(upper, torch.sin(a), 0.5 - torch.sin(a))
        pts = torch.stack([x - 0.5, y - 0.25], 1) / 0.6
        return (pts + 0.05 * torch.randn(n, 2, generator=generator, dtype=torch.float64)).float()
    if name == "swiss_roll":
        u = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=generator, dtype=torch.float64))
        pts = torch.stack([u * torch.cos(u), u * torch.sin(u)], 1) / 7.0
        return (pts + 0.05 * torch.randn(n, 2, generator=generator, dtype=torch.float64)).float()
    raise ConfigError("dataset", name, f"one of {', '.join(POINTS)}")


def from_npz(path: str | Path, n_train: int | None = None, seed: int = 0, field: str = "data_path") -> Data:
    """A user's own .npz holding X (n, ...) and y (n,) with integer labels 0..K-1."""
    p = Path(str(path)).expanduser()
    if not str(path) or not p.is_file():
        raise ConfigError(field, str(path), "a path to an existing .npz file holding arrays X and y")
    try:
        with np.load(p, allow_pickle=False) as f:
            if "X" not in f.files or "y" not in f.files:
                raise ConfigError(field, str(path), f"an .npz holding arrays 'X' and 'y' (found {sorted(f.files)})")
            x, y = np.asarray(f["X"]), np.asarray(f["y"])
    except ConfigError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise ConfigError(field, str(path), f"a readable .npz file ({type(e).__name__}: {e})") from None
    if x.ndim < 2 or y.ndim != 1 or len(x) != len(y):
        raise ConfigError(field, str(path), f"X of shape (n, ...) and y of shape (n,) (got {x.shape} and {y.shape})")
    if not np.issubdtype(x.dtype, np.number) or not np.isfinite(x.astype(np.float64)).all():
        raise ConfigError(field, str(path), "X holding finite numbers")
    if not (np.issubdtype(y.dtype, np.integer) or (np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y)))):
        raise ConfigError(field, str(path), f"y holding integer class labels (got dtype {y.dtype})")
    y = y.astype(np.int64)
    if y.min() < 0 or len(np.unique(y)) < 2:
        raise ConfigError(field, str(path), "y with labels 0..K-1 and at least 2 classes")
    if len(y) < 4:
        raise ConfigError(field, str(path), "at least 4 examples")
    num_classes = int(y.max()) + 1
    x = x.astype(np.float32)
    image_shape = tuple(x.shape[1:]) if x.ndim == 3 else None
    x = x.reshape(len(x), -1)
    parts = _split(x, y, n_train, seed, p.name)
    return Data("npz", *parts, num_classes=num_classes, input_shape=(x.shape[1],), image_shape=image_shape)


def load(name: str, n_train: int | None = None, seed: int = 0, path: str = "") -> Data:
    """Load a data set by name; see NAMES. Results are cached (a sweep asks for the same split many times)."""
    stamp = None
    if name == "npz" and path and Path(path).expanduser().is_file():
        st = Path(path).expanduser().stat()
        stamp = (st.st_mtime_ns, st.st_size)  # a changed file is read again
    return _load(name, n_train, seed, path, stamp)


@functools.lru_cache(maxsize=64)
def _load(name: str, n_train: int | None, seed: int, path: str, stamp) -> Data:
    if name == "digits":
        return digits(n_train, seed)
    if name == "blobs":
        return blobs(n_train, seed)
    if name == "xor":
        return xor(n_train, seed)
    if name == "npz":
        return from_npz(path, n_train, seed)
    raise ConfigError("dataset", name, f"one of {', '.join(NAMES)}")
