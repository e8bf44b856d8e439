"""Small data sets that ship or are generated: nothing is downloaded.

Every loader returns a `Data` with a fixed train/test split drawn from `seed`; labels are clean
(label noise is applied by the study, to the training labels only).
"""
from __future__ import annotations

import functools
import math
import sys
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from .errors import ConfigError, require

NAMES = ("digits", "blobs", "xor", "npz", "folder", "hf")  # and an import path naming a torch Dataset


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
    digest: str = ""  # a user's data (folder, Hugging Face, a torch Dataset): the converted content's digest

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


def long_tailed(data: Data, ratio: float) -> Data:
    """The training set made long-tailed (the exponential profile of Cao et al. 2019): class c keeps the first
    round(m · ratio^(−c/(C−1))) of its training examples, so class 0 is the head and class C−1 holds `ratio` times
    fewer; the test set stays as it was. m is three quarters of what the smallest class would hold in a
    training split of this size, so the sizes (and the models' tensor shapes) do not depend on the split's seed."""
    if ratio == 1:
        return data
    c = data.num_classes
    y = data.y_train.numpy()
    total = np.bincount(y, minlength=c) + np.bincount(data.y_test.numpy(), minlength=c)
    m = int(0.75 * total.min() * len(y) / total.sum())
    want = [max(1, int(round(m * ratio ** (-k / max(c - 1, 1))))) for k in range(c)]
    keep = []
    for k in range(c):
        where = np.flatnonzero(y == k)  # in the split's random order
        if len(where) < want[k]:
            raise ConfigError("imbalance", ratio, f"a split where class {k} has {want[k]} training examples (it "
                                                  f"has {len(where)}): a larger n_train")
        keep.append(where[:want[k]])
    idx = torch.as_tensor(np.sort(np.concatenate(keep)))
    return replace(data, x_train=data.x_train[idx], y_train=data.y_train[idx])  # the test set and digest as they were


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


def shifted(x: torch.Tensor, image_shape: tuple, pixels: int, generator: torch.Generator) -> torch.Tensor:
    """Flat images (..., n, prod(image_shape)) each moved `pixels` up, down, left or right (one direction per image,
    drawn from `generator`, the same for every leading index), the uncovered border zero: a domain shift for a net
    without translation invariance (an MLP on digits)."""
    h, w = image_shape[-2:]
    n = x.shape[-2]
    img = x.reshape(*x.shape[:-1], -1, h, w)  # (..., n, channels, h, w)
    padded = torch.nn.functional.pad(img, (pixels, pixels, pixels, pixels))
    moves = torch.tensor([(-1, 0), (1, 0), (0, -1), (0, 1)])[torch.randint(0, 4, (n,), generator=generator)] * pixels
    out = torch.empty_like(img)
    for i, (dy, dx) in enumerate(moves.tolist()):  # the window of the padded image that puts the digit dy, dx off
        out[..., i, :, :, :] = padded[..., i, :, pixels - dy:pixels - dy + h, pixels - dx:pixels - dx + w]
    return out.reshape(x.shape)


#: the share of the 1,797 digits kept out of training for diffusion's held-out images
HELD_OUT_SHARE = 0.25
#: how many distinct digits diffusion's training images come from (the rest are held out)
IMAGE_TRAIN_POOL = 1797 - int(round(1797 * HELD_OUT_SHARE))


def images(name: str, n: int, generator: torch.Generator, side: int = 8, n_held: int = 0):
    """`labelled_images` without the labels: the training images, or (training, held-out) when n_held > 0."""
    train, y, held, y_held = labelled_images(name, n, generator, side, n_held)
    return (train, held) if n_held else train


def labelled_images(name: str, n: int, generator: torch.Generator, side: int = 8, n_held: int = 0):
    """side×side images for diffusion, flattened to side² values in about [-1, 1], from sklearn's 8×8 digits
    (bilinearly upsampled for side 16 or 32). bright_dark: each digit as a ±0.2 pattern around a brightness of +0.7
    or −0.7 (half each: the mean brightness is bimodal, Lin et al.'s terminal-SNR setting); digits_images: pixels
    scaled to [-1, 1].

    The digits are split once (by `generator`) into a training pool and a held-out pool of HELD_OUT_SHARE of them;
    the n training images come from the first (each digit once while n allows, then drawn with replacement), the
    n_held held-out images from the second. So held-out images are never copies of training images, and nearest-
    training distances of held-out data mean what they say. Returns (training images, their digits, held-out
    images, their digits); the labels are int64."""
    from sklearn.datasets import load_digits

    if name not in IMAGES:
        raise ConfigError("dataset", name, f"one of {', '.join(POINTS + IMAGES)}")
    if side not in RESOLUTIONS:
        raise ConfigError("resolution", side, f"one of {', '.join(map(str, RESOLUTIONS))}")
    digits = load_digits()
    x = torch.as_tensor(digits.data / 16.0, dtype=torch.float32)  # (1797, 64) in [0, 1]
    label = torch.as_tensor(digits.target, dtype=torch.long)
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

    train = draw(train_pool, n)
    x_train = render(train)  # (drawn in this order: render draws bright_dark's signs)
    held = draw(held_pool, n_held) if n_held else train[:0]
    return x_train, label[train], render(held) if n_held else x_train[:0], label[held]


#: the 2-D sets whose density is known in closed form (a verifier for inference-time search)
DENSITIES = ("eight_gaussians",)


def log_density(name: str, x: torch.Tensor) -> torch.Tensor:
    """The true log-density of the 2-D distribution `name` at points x (n, 2), as `points` draws it: eight
    Gaussians of std 0.1 at radius 1.4, equally weighted."""
    if name not in DENSITIES:
        raise ConfigError("dataset", name, f"a data set with a known density: {', '.join(DENSITIES)}")
    x = x.double()
    k = torch.arange(8, dtype=torch.float64)
    centres = torch.stack([torch.cos(k * math.pi / 4), torch.sin(k * math.pi / 4)], 1) * 1.4
    sq = torch.cdist(x, centres) ** 2
    log_n = -sq / (2 * 0.1 ** 2) - math.log(2 * math.pi * 0.1 ** 2)
    return torch.logsumexp(log_n, 1) - math.log(8)


#: the classes of the diffusion data sets that have them (a class-conditional denoiser's conditions): eight
#: Gaussians' modes, the two moons, the digits under the images
CLASSES = {"eight_gaussians": 8, "moons": 2, "bright_dark": 10, "digits_images": 10}


def points(name: str, n: int, generator: torch.Generator) -> torch.Tensor:
    """2-D toy distributions for diffusion, scaled to about unit variance: eight Gaussians on a circle, two moons,
    a swiss roll."""
    return labelled_points(name, n, generator)[0]


def labelled_points(name: str, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`points` and each point's class (int64: eight Gaussians' mode 0..7 counter-clockwise from (1.4, 0), the
    moon 0 upper / 1 lower), or None for a set without classes (swiss_roll). The same draws as `points`."""
    if name == "eight_gaussians":
        k = torch.randint(0, 8, (n,), generator=generator)
        a = k.double() * math.pi / 4
        centres = torch.stack([torch.cos(a), torch.sin(a)], 1) * 1.4
        return (centres + 0.1 * torch.randn(n, 2, generator=generator, dtype=torch.float64)).float(), k
    if name == "moons":
        upper = torch.rand(n, generator=generator) < 0.5
        a = torch.rand(n, generator=generator, dtype=torch.float64) * math.pi
        x = torch.where(upper, torch.cos(a), 1 - torch.cos(a))
        y = torch.where(upper, torch.sin(a), 0.5 - torch.sin(a))
        pts = torch.stack([x - 0.5, y - 0.25], 1) / 0.6
        return (pts + 0.05 * torch.randn(n, 2, generator=generator, dtype=torch.float64)).float(), (~upper).long()
    if name == "swiss_roll":
        u = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=generator, dtype=torch.float64))
        pts = torch.stack([u * torch.cos(u), u * torch.sin(u)], 1) / 7.0
        return (pts + 0.05 * torch.randn(n, 2, generator=generator, dtype=torch.float64)).float(), None
    raise ConfigError("dataset", name, f"one of {', '.join(POINTS)}")


MAX_CLASSES = 10_000
MAX_RATIO = 200  # uncompressed / compressed size above which a large member is taken for a decompression bomb
_BOMB_FLOOR = 16 << 20  # members smaller than this decompress harmlessly whatever their ratio


def max_data_bytes() -> int:
    """The most bytes a user's data set may take in memory: $WORKBENCH_MAX_DATA_BYTES, else a quarter of the memory
    available now."""
    import os

    from .runs.jobs import available_memory

    env = os.environ.get("WORKBENCH_MAX_DATA_BYTES")
    if env:
        try:
            return int(float(env))
        except ValueError:
            raise ConfigError("WORKBENCH_MAX_DATA_BYTES", env, "a number of bytes") from None
    return available_memory() // 4


def _array_sizes(p: Path, field: str, shown: str) -> dict[str, tuple[tuple, np.dtype]]:
    """The shape and dtype of each array of an .npz, read from the archive's headers only (nothing is decompressed
    beyond each member's .npy header); refuses what is not an .npz archive, a member whose array is larger than its
    entry says, and archives that would decompress to more than the machine should hold."""
    with open(p, "rb") as f:
        head = f.read(6)
    if head == b"\x93NUMPY":
        raise ConfigError(field, shown, "an .npz archive (np.savez) holding arrays X and y: this is an .npy file "
                                        "holding one array")
    if not zipfile.is_zipfile(p):
        raise ConfigError(field, shown, "a readable .npz file (np.savez) holding arrays X and y: this is not a zip "
                                        "archive")
    limit, total, out = max_data_bytes(), 0, {}
    with zipfile.ZipFile(p) as z:
        for info in z.infolist():
            if not info.filename.endswith(".npy"):
                continue
            name = info.filename[:-4]
            if info.file_size > _BOMB_FLOOR and info.file_size > MAX_RATIO * max(1, info.compress_size):
                raise ConfigError(field, shown, f"an .npz whose arrays are stored, not a decompression bomb: "
                                                f"{name!r} is {info.compress_size:,} bytes that expand to "
                                                f"{info.file_size:,} (over {MAX_RATIO}×)")
            with z.open(info) as m:
                try:
                    version = np.lib.format.read_magic(m)
                    shape, _, dtype = (np.lib.format.read_array_header_1_0(m) if version == (1, 0)
                                       else np.lib.format.read_array_header_2_0(m))
                except ValueError as e:
                    raise ConfigError(field, shown, f"an .npz of plain arrays ({name!r}: {e})") from None
            nbytes = math.prod(shape) * dtype.itemsize
            if dtype.hasobject:
                raise ConfigError(field, shown, f"arrays of numbers ({name!r} holds Python objects, which are never "
                                                "loaded)")
            if nbytes > info.file_size:
                raise ConfigError(field, shown, f"an .npz whose arrays match their entries ({name!r} says shape "
                                                f"{shape}, {nbytes:,} bytes, in an entry of {info.file_size:,})")
            total += nbytes
            out[name] = (shape, dtype)
    if total > limit:
        raise ConfigError(field, shown, f"a data set of at most {limit / 2**20:,.0f} MiB in memory "
                                        f"(WORKBENCH_MAX_DATA_BYTES; this one is {total / 2**20:,.0f} MiB)")
    return out


def from_npz(path: str | Path, n_train: int | None = None, seed: int = 0, field: str = "data_path") -> Data:
    """A user's own .npz holding X (n, ...) and y (n,) with integer labels 0..K-1, every class present. Everything
    is checked before training, naming what is wrong: the archive (sizes from its headers, before reading), X's
    shape, type and range (real numbers finite in float32) and the labels."""
    p = Path(str(path)).expanduser()
    shown = str(path)
    if not shown or not p.is_file():
        raise ConfigError(field, shown, "a path to an existing .npz file holding arrays X and y")
    try:
        arrays = _array_sizes(p, field, shown)
        if "X" not in arrays or "y" not in arrays:
            raise ConfigError(field, shown, f"an .npz holding arrays 'X' and 'y' (found {sorted(arrays)})")
        (xs, xt), (ys, yt) = arrays["X"], arrays["y"]
        if len(xs) < 2 or len(ys) != 1 or xs[0] != ys[0]:
            raise ConfigError(field, shown, f"X of shape (n, features...) and y of shape (n,) (got {xs} and {ys})")
        if math.prod(xs[1:]) == 0:
            raise ConfigError(field, shown, f"X with at least one feature per example (got shape {xs})")
        if not (np.issubdtype(xt, np.integer) or np.issubdtype(xt, np.floating) or xt == np.bool_):
            raise ConfigError(field, shown, f"X of real numbers (got dtype {xt}"
                                            + (": split complex values into real features)" if xt.kind == "c" else ")"))
        if not (np.issubdtype(yt, np.integer) or np.issubdtype(yt, np.floating)):
            raise ConfigError(field, shown, f"y holding integer class labels (got dtype {yt})")
        with np.load(p, allow_pickle=False) as f:
            x, y = np.asarray(f["X"]), np.asarray(f["y"])
    except ConfigError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError) as e:
        raise ConfigError(field, shown, f"a readable .npz file ({type(e).__name__}: {e})") from None
    return _from_arrays(x, y, n_train, seed, "npz", field, shown)


def _from_arrays(x: np.ndarray, y: np.ndarray, n_train: int | None, seed: int, name: str, field: str, shown: str,
                 digest: str = "") -> Data:
    """A user's examples X (n, ...) and labels y (n,) checked (finite float32 values, integer labels 0..K-1, every
    class present) and split; (n, H, W) images keep their image shape."""
    with np.errstate(over="ignore", invalid="ignore"):
        x32 = x.astype(np.float32)
    if not np.isfinite(x32).all():
        bad = ~np.isfinite(x32)
        if np.isfinite(x[bad].astype(np.float64)).all():
            raise ConfigError(field, shown, f"X within float32's range (±3.4e38; the largest |X| here is "
                                            f"{np.abs(x.astype(np.float64)).max():.3g})")
        raise ConfigError(field, shown, f"X holding finite numbers ({int(bad.sum())} NaN or infinite values)")
    if np.issubdtype(y.dtype, np.floating) and not (np.isfinite(y).all() and np.all(y == np.round(y))):
        raise ConfigError(field, shown, f"y holding integer class labels (got dtype {y.dtype} with fractions)")
    if len(y) < 4:
        raise ConfigError(field, shown, "at least 4 examples")
    lo, hi = y.min(), y.max()
    if lo < 0 or hi >= MAX_CLASSES:
        raise ConfigError(field, shown, f"y with labels 0..K-1 and at most {MAX_CLASSES:,} classes (got labels from "
                                        f"{lo:g} to {hi:g})")
    y = y.astype(np.int64)
    present = np.unique(y)
    if len(present) < 2:
        raise ConfigError(field, shown, "y with at least 2 classes")
    if len(present) != int(hi) + 1:
        missing = sorted(set(range(int(hi) + 1)) - set(present.tolist()))
        said = ", ".join(map(str, missing[:5])) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ConfigError(field, shown, f"y with labels 0..K-1, every class present (labels {said} have no "
                                        "example: renumber the classes)")
    image_shape = tuple(x32.shape[1:]) if x32.ndim == 3 else None
    x32 = x32.reshape(len(x32), -1)
    parts = _split(x32, y, n_train, seed, Path(shown).name or shown)
    return Data(name, *parts, num_classes=len(present), input_shape=(x32.shape[1],), image_shape=image_shape,
                digest=digest)


# -- a user's own data: an image folder, a torch Dataset, a Hugging Face dataset ---------------------------------
#: the names an example's input and label go by in a dict-shaped item (a Hugging Face row)
INPUT_KEYS = ("image", "img", "pixel_values", "x", "input", "inputs", "features")
LABEL_KEYS = ("label", "labels", "y", "target", "targets", "fine_label")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}


def _as_array(v, field: str, shown: str, where: str) -> np.ndarray:
    """One example's input as a float array: a tensor, an array, a number list or an image (a grey one as (H, W),
    a colour one as (H, W, C)); 8-bit images and uint8 arrays are scaled to [0, 1]."""
    if hasattr(v, "getbands"):  # a PIL image
        v = v.convert("L") if len(v.getbands()) == 1 and v.mode != "P" else v.convert("RGB")
        return np.asarray(v, dtype=np.float32) / 255.0
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu().numpy()
    try:
        a = np.asarray(v)
    except Exception as e:  # noqa: BLE001 - anything a user's item may hold
        raise ConfigError(field, shown, f"examples whose input is an array, a tensor or an image ({where}: "
                                        f"{type(e).__name__}: {e})") from None
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
        raise ConfigError(field, shown, f"examples whose input is numbers or an image ({where} is a "
                                        f"{type(v).__name__} of dtype {a.dtype})")
    return a.astype(np.float32)


def _split_item(item, field: str, shown: str, i: int):
    """(input, label) of one item: a pair, or a dict with an input key and a label key."""
    if isinstance(item, dict):
        xk = next((k for k in INPUT_KEYS if k in item), None)
        yk = next((k for k in LABEL_KEYS if k in item), None)
        if xk is None or yk is None:
            raise ConfigError(field, shown, f"items with an input ({', '.join(INPUT_KEYS)}) and a label "
                                            f"({', '.join(LABEL_KEYS)}); item {i} has keys {sorted(item)}")
        return item[xk], item[yk]
    if isinstance(item, (tuple, list)) and len(item) >= 2:
        return item[0], item[1]
    raise ConfigError(field, shown, f"items that are (input, label) pairs or dicts with an input and a label (item "
                                    f"{i} is a {type(item).__name__})")


def _label(v, field: str, shown: str, i: int) -> float:
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu()
    a = np.asarray(v)
    if a.size != 1 or not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
        raise ConfigError(field, shown, f"one class label (an integer) per example (item {i}'s label is {v!r})")
    return float(a.reshape(()))


def _check_fits(n: int, first: np.ndarray, field: str, shown: str) -> None:
    """Refuse a data set larger than the machine should hold, from its size and first example, before loading."""
    need, limit = n * first.size * 4, max_data_bytes()
    if need > limit:
        raise ConfigError(field, shown, f"a data set of at most {limit / 2**20:,.0f} MiB in memory "
                                        f"(WORKBENCH_MAX_DATA_BYTES; {n:,} examples of {first.size:,} values are "
                                        f"{need / 2**20:,.0f} MiB)")


def _items(dataset, field: str, shown: str) -> tuple[np.ndarray, np.ndarray]:
    """Every example of a map-style data set (len() and [i]: a torch Dataset, a Hugging Face Dataset, a list of
    pairs) as arrays X (n, ...) and y (n,), its size checked against memory after reading the first example."""
    if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
        raise ConfigError(field, shown, f"a map-style data set with len() and [i] (a torch.utils.data.Dataset, a "
                                        f"Hugging Face Dataset); got a {type(dataset).__name__}, which an iterable "
                                        "data set is not")
    n = len(dataset)
    if n < 4:
        raise ConfigError(field, shown, f"a data set of at least 4 examples (it has {n})")
    xs, ys = [], []
    for i in range(n):
        try:
            item = dataset[i]
        except Exception as e:  # noqa: BLE001 - the user's __getitem__
            raise ConfigError(field, shown, f"a data set whose items can be read (item {i}: {type(e).__name__}: "
                                            f"{e})") from None
        xv, yv = _split_item(item, field, shown, i)
        x = _as_array(xv, field, shown, f"item {i}")
        if i == 0:
            _check_fits(n, x, field, shown)
        elif x.shape != xs[0].shape:
            raise ConfigError(field, shown, f"examples of one shape (item 0 is {xs[0].shape}, item {i} is {x.shape})")
        xs.append(x)
        ys.append(_label(yv, field, shown, i))
    return np.stack(xs), np.asarray(ys)


def _folder(path: Path, field: str, shown: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """An image folder by class: one subfolder per class (labels in the sorted order of their names), images of
    one size inside; returns X, y and the class names."""
    from PIL import Image, UnidentifiedImageError

    classes = sorted(d.name for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    files = [(f, k) for k, c in enumerate(classes) for f in sorted((path / c).rglob("*"))
             if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
    if len(classes) < 2 or not files:
        raise ConfigError(field, shown, f"a folder with one subfolder of images per class, at least 2 classes "
                                        f"(found {len(classes)} subfolders and {len(files)} images)")
    xs = []
    for i, (f, _) in enumerate(files):
        try:
            with Image.open(f) as im:
                x = _as_array(im, field, shown, str(f.relative_to(path)))
        except (UnidentifiedImageError, OSError) as e:
            raise ConfigError(field, shown, f"a folder of readable images ({f.relative_to(path)}: {e})") from None
        if i == 0:
            _check_fits(len(files), x, field, shown)
        elif x.shape != xs[0].shape:
            raise ConfigError(field, shown, f"images of one size and colour mode ({files[0][0].relative_to(path)} is "
                                            f"{xs[0].shape}, {f.relative_to(path)} is {x.shape})")
        xs.append(x)
    return np.stack(xs), np.array([k for _, k in files]), classes


def _hugging_face(where: str, field: str):
    """A Hugging Face dataset from a folder `Dataset.save_to_disk` wrote, else by name from the local cache (no
    download is attempted: HF_DATASETS_OFFLINE); a DatasetDict gives its 'train' split."""
    hf = require("datasets", "data", "dataset", "hf")  # the Hugging Face package (this module is workbench.datasets)
    p = Path(where).expanduser()
    try:
        if p.is_dir():
            ds = hf.load_from_disk(str(p))
        else:
            import os

            os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
            ds = hf.load_dataset(where)
    except Exception as e:  # noqa: BLE001 - whatever the loader raises for a missing or broken set
        raise ConfigError(field, where, f"a folder written by Dataset.save_to_disk or a data set in the local "
                                        f"Hugging Face cache ({type(e).__name__}: {e})") from None
    if isinstance(ds, dict) or hasattr(ds, "keys") and not hasattr(ds, "features"):
        if "train" not in ds:
            raise ConfigError(field, where, f"a Dataset, or a DatasetDict with a 'train' split (splits: {list(ds)})")
        ds = ds["train"]
    return ds.with_format("numpy") if hasattr(ds, "with_format") else ds


def _arrays_digest(x: np.ndarray, y: np.ndarray) -> str:
    import hashlib

    h = hashlib.sha256(repr((x.shape, y.shape)).encode())  # of the values as trained on: float32 X, float64 y
    h.update(np.ascontiguousarray(x, dtype=np.float32).tobytes())
    h.update(np.ascontiguousarray(y, dtype=np.float64).tobytes())
    return h.hexdigest()[:16]


def user_arrays(kind: str, path: str) -> tuple[np.ndarray, np.ndarray, str]:
    """A user's data converted once into arrays (X, y) and their content digest (part of the run id): kind
    'folder' (`path`: an image folder by class), 'hf' (`path`: a saved Hugging Face dataset or a cached one's name)
    or an import path naming a map-style data set or a function returning one (`path` unused)."""
    from . import plugins

    if kind == "folder":
        p = Path(str(path)).expanduser()
        if not path or not p.is_dir():
            raise ConfigError("data_path", path, "an existing folder with one subfolder of images per class")
        x, y, _ = _folder(p, "data_path", str(path))
    elif kind == "hf":
        if not path:
            raise ConfigError("data_path", path, "a folder written by Dataset.save_to_disk, or a cached dataset's name")
        x, y = _items(_hugging_face(str(path), "data_path"), "data_path", str(path))
    else:
        obj = plugins.resolve(kind, "dataset", "a data set or a function returning one", need_callable=False)
        if callable(obj) and not hasattr(obj, "__getitem__"):
            try:
                obj = obj()
            except ConfigError:
                raise
            except Exception as e:  # noqa: BLE001 - the user's loader
                raise ConfigError("dataset", kind, f"a function that returns a data set (it raised "
                                                   f"{type(e).__name__}: {e})") from None
        x, y = _items(obj, "dataset", kind)
    return x, y, _arrays_digest(x, y)


def load(name: str, n_train: int | None = None, seed: int = 0, path: str = "", **options) -> Data:
    """Load a data set by name; see NAMES. `options` go to a generated set's loader (xor: dim, separation).
    Results are cached (a sweep asks for the same split many times)."""
    from . import plugins

    stamp = None
    if name == "npz" and path and Path(path).expanduser().is_file():
        st = Path(path).expanduser().stat()
        stamp = (st.st_mtime_ns, st.st_size)  # a changed file is read again
    elif name in ("folder", "hf") and path and Path(path).expanduser().is_dir():
        stats = ((f, f.stat()) for f in sorted(Path(path).expanduser().rglob("*")) if f.is_file())
        stamp = tuple((str(f), st.st_mtime_ns, st.st_size) for f, st in stats)
    elif plugins.is_import_path(name):  # an edited loader is run again (and one of that name elsewhere)
        stamp = (plugins.source_digest(name, "dataset"), getattr(sys.modules.get(name.split(":")[0]), "__file__", ""))
    return _load(name, n_train, seed, path, stamp, tuple(sorted(options.items())))


@functools.lru_cache(maxsize=8)
def _user_raw(kind: str, path: str, stamp) -> tuple[np.ndarray, np.ndarray, str]:
    return user_arrays(kind, path)


@functools.lru_cache(maxsize=64)
def _load(name: str, n_train: int | None, seed: int, path: str, stamp, options: tuple = ()) -> Data:
    if name == "digits":
        return digits(n_train, seed)
    if name == "blobs":
        return blobs(n_train, seed)
    if name == "xor":
        return xor(n_train, seed, **dict(options))
    if name == "npz":
        return from_npz(path, n_train, seed)
    from .plugins import is_import_path

    if name in ("folder", "hf") or is_import_path(name):
        x, y, digest = _user_raw(name, path, stamp)
        field, shown = ("dataset", name) if is_import_path(name) else ("data_path", path)
        return _from_arrays(x, y, n_train, seed, name, field, shown, digest)
    raise ConfigError("dataset", name, f"one of {', '.join(NAMES)}, or an import path module:attr naming a data set")
