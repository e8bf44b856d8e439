"""Diffusion noise schedules: train a small denoiser, sample from it, see what the schedule does.

Chen 2023 ("On the importance of noise scheduling for diffusion models"), Lin et al. 2024 ("Common diffusion noise
schedules and sample steps are flawed"), Hang et al. 2024 ("Improved noise schedule for diffusion training"), Li et
al. 2024 ("Immiscible diffusion"), Daras et al. 2024 ("How much is a noisy image worth?"). Here on 2-D toy data with
an MLP denoiser; every schedule of `workbench.noise.schedules`, three prediction targets, four samplers.
"""
from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import numpy as np
import param
import torch

from .. import datasets
from ..engine import diffusion as dif
from ..engine.loop import Plan
from ..errors import ConfigError
from ..models import ConvDenoiser, Denoiser, OneMoreStep, TimeClassifier, init_
from ..probes import ptq
from ..probes.spectra import radial_power_spectrum
from ..noise import labels as label_noise, schedules
from ..engine.measure import DIVERGENCE_METRICS, Metric
from .base import Study

STEP_GRID = (1, 2, 5, 10, 20, 50)
T_BINS = 10  # the training loss is also kept per bin of t
SAMPLE_FORMATS = ("fp32", "bf16", "fp16", "fp8_e4m3", "fp8_e5m2", "int8", "mxfp8_e4m3", "fp6_e2m3", "int6",
                  "fp4_e2m1", "int4", "mxfp4_e2m1")
PREVIEW_SAMPLES = 500  # points (or 64 images) of model 0 shown while it samples
OMS_STEPS = 1000  # One More Step's net: Adam steps after the denoiser's training
OMS_METRICS = ("oms_sw", "oms_brightness_std", "oms_brightness_error", "brightness_error")  # measured at the end
BRIGHTNESS_EDGES = np.linspace(-1.5, 1.5, 31)  # the brightness histograms' bins
BRIGHTNESS_CENTRES = (BRIGHTNESS_EDGES[1:] + BRIGHTNESS_EDGES[:-1]) / 2


SCALED = ("chen_cosine", "sigmoid")  # the schedules with Chen 2023's input scale b


def _schedule(values: dict, name_field: str, params_field: str):
    name = values.get(name_field, "linear")
    params = schedules.parse_params(values.get(params_field, ""), name, params_field)
    if name_field == "schedule" and name in SCALED:
        if "b" in params:
            raise ConfigError(params_field, values.get(params_field), "the parameters other than b: Chen's input "
                                                                      "scale b is the input_scale dial")
        params["b"] = float(values.get("input_scale", 1.0))
    try:
        return schedules.get(name, zero_terminal_snr=bool(values.get("zero_terminal_snr", False))
                             if name_field == "schedule" else False, **params)
    except ConfigError as e:
        if e.field in ("schedule", "zero_terminal_snr"):
            raise
        raise ConfigError(params_field, values.get(params_field), f"{e.field}: {e.allowed}") from None


def noise_schedules(values: dict):
    """(the sampling schedule, the training one or None) of a diffusion run's dials (a dict: a config, a page's
    values): `schedule` with `schedule_params` and `input_scale`, `train_schedule` with `train_schedule_params`."""
    sampling = _schedule(values, "schedule", "schedule_params")
    if values.get("train_schedule", "same") == "same":
        return sampling, None
    return sampling, _schedule(values, "train_schedule", "train_schedule_params")


def training_times(sch, train, noisy: torch.Tensor, t_min: float, g: torch.Generator) -> torch.Tensor:
    """The time t of each training example (float64), from t_min for the `noisy` ones (ambient diffusion). Without a
    training schedule of its own (`train` None): U(0, 1] (the grid i/T for a discrete schedule). With one: its
    noise level at u ~ U(0, 1) (from the level of t_min for noisy ones), as `sch`'s time of that level, so the
    denoiser is conditioned as the sampler will ask it."""
    if train is not None:
        u_min = float(schedules.time_at(train, sch.logsnr(t_min))) if t_min > 0 else 0.0
        lo = torch.where(noisy, u_min, 0.0).double()
        u = (lo + (1 - lo) * torch.rand(len(lo), generator=g, dtype=torch.float64)).clamp(1e-4, 1 - 1e-4)
        return schedules.time_at(sch, train.logsnr(u)).clamp_min(1e-4)
    lo = torch.where(noisy, t_min, 0.0).double()
    if sch.steps is not None:
        first = torch.ceil(lo * sch.steps).clamp_min(1)
        return (first + torch.floor(torch.rand(len(lo), generator=g, dtype=torch.float64)
                                    * (sch.steps + 1 - first))) / sch.steps
    u = torch.rand(len(lo), generator=g, dtype=torch.float64)
    return (lo + (1 - lo) * u).clamp(1e-4, 1 - 1e-4)


def _brightness_hist(xs) -> np.ndarray:
    """Each model's density of per-image mean brightness over BRIGHTNESS_EDGES (non-finite samples left out)."""
    return np.stack([np.histogram(b[np.isfinite(b)], BRIGHTNESS_EDGES, density=True)[0]
                     for b in (x.mean(1).numpy() for x in xs)])


class Diffusion(Study):
    key = "diffusion"
    title = "Diffusion: noise schedules and samplers"
    question = "What does the noise schedule (and the sampler, its steps, the prediction target) do to training and " \
               "to the samples?"
    paper = "Chen 2023; Lin et al. 2024; Hang et al. 2024; Li et al. 2024 (immiscible); Daras et al. 2024"
    finding = "Sample quality (sliced Wasserstein to held-out data) falls as training proceeds; the schedule, sampler and prediction target set how far, and zero terminal SNR restores bright and dark images."
    claims = ('terminal_snr', 'offset_noise', 'one_more_step', 'terminal_snr_fixes', 'ambient', 'immiscible',
              'laplace_schedule', 'inference_scaling', 'negative_transfer', 'label_noise_diffusion',
              'geometry_adaptive', 'sampling_noise', 'noise_conditioning', 'resolution_shift', 'relay_snr',
              'ptq_calibration', 'fp_vs_int_diffusion')
    axis = "step"
    _quality = "Sample quality (sliced Wasserstein to held-out data; baseline: data vs data)"
    _low = "Low-precision sampling (end of training): sliced W. to data, and to the fp32 samples"
    _bright = "Brightness spread (std of per-sample means)"
    _classes = "Class-conditional: samples in the class asked for (by a 5-NN vote among held-out data)"
    _oms = "One More Step (end of training): distance from the brightness asked for, spread, sliced W."
    metrics = (
        Metric("train_loss", "training loss", "min", group="Training loss"),
        Metric("sw", "sliced Wasserstein to held-out data", "min", group=_quality),
        Metric("sw_baseline", "sliced W., data vs data", group=_quality),
        Metric("mmd", "RBF-MMD² to held-out data", "min", group="RBF-MMD²"),
        Metric("sw_quantized", "sliced W. of low-precision samples", "min", group=_low),
        Metric("sw_quantized_vs_fp32", "sliced W., low-precision vs fp32 samples", "min", group=_low),
        Metric("nearest_train_ratio", "nearest-training distance, samples / held-out",
               group="Memorization (median distance to the nearest training example, samples / held-out data)"),
        Metric("brightness_std", "std of sample brightness", group=_bright),
        Metric("data_brightness_std", "std of data brightness", group=_bright),
        Metric("brightness_extreme", "share of samples with |brightness| > 0.5"),
        Metric("oms_brightness_error", "distance, One More Step", "min", group=_oms),
        Metric("brightness_error", "distance, plain samples (they ignore it)", group=_oms),
        Metric("oms_brightness_std", "brightness spread, One More Step", group=_oms),
        Metric("oms_sw", "sliced W. to held-out data, One More Step", "min", group=_oms),
        Metric("condition_accuracy", "share of samples in the class asked for", "max", group=_classes),
        Metric("condition_accuracy_data", "the vote's accuracy on held-out data", group=_classes),
        *DIVERGENCE_METRICS,
    )
    headline = "sw"
    tiny = {"steps": 20, "eval_every": 10, "n_train": 64, "n_samples": 64, "width": 16, "depth": 1,
            "sample_steps": 4, "batch_size": 16}
    batchable = frozenset({"seed"})
    # how the trained denoiser is sampled from and measured: models differing only in these train once
    sampling = frozenset({"sampler", "sample_steps", "spacing", "eta", "clip_x0", "sample_precision",
                          "sample_act_precision", "calibration"})
    applies = {"eta": ("sampler", ("ddim",)), "input_scale": ("schedule", SCALED),
               "train_schedule_params": ("train_schedule", schedules.NAMES),
               "calibration": ("sample_precision", tuple(f for f in SAMPLE_FORMATS if f != "fp32")),
               "sample_act_precision": ("sample_precision", tuple(f for f in SAMPLE_FORMATS if f != "fp32")),
               "condition_flip": ("conditional", (True,)), "condition_loss": ("conditional", (True,))}
    primary = ("dataset", "schedule", "zero_terminal_snr", "prediction", "sampler", "sample_steps", "spacing",
               "steps", "seed")
    presets = {
        "schedule_vs_steps": {
            "about": "Sample quality (sliced Wasserstein, lower is better) over schedule × sampling steps.",
            "grid": {"schedule": ["linear", "cosine", "sigmoid", "laplace", "edm"], "sample_steps": [5, 10, 20, 50]},
            "seeds": [0, 1],
            "dials": {"steps": 3000, "eval_every": 3000},
            "x": "sample_steps", "y": "schedule", "metric": "sw", "epoch": "final",
        },
        "clean_vs_corruption": {
            "about": "Sample quality over the clean share × the corruption's σ, corrupted points trained through "
                     "the ambient loss (Daras et al. 2024).",
            "grid": {"clean_fraction": [0.0, 0.05, 0.1, 0.25, 0.5, 1.0], "corruption_sigma": [0.25, 0.5, 1.0, 2.0]},
            "seeds": [0, 1],
            "dials": {"steps": 2000, "eval_every": 2000},
            "x": "clean_fraction", "y": "corruption_sigma", "metric": "sw", "epoch": "final",
        },
        "terminal_snr": {
            "about": "Brightness spread of samples on the bright/dark set (data: 0.70) over prediction target × zero "
                     "terminal SNR, Stable Diffusion's scaled-linear schedule (Lin et al. 2024).",
            "grid": {"prediction": ["epsilon", "v"], "zero_terminal_snr": [False, True]},
            "seeds": [0, 1],
            "dials": {"dataset": "bright_dark", "schedule": "scaled_linear", "clip_x0": 1.0, "sample_steps": 25,
                      "steps": 2000, "eval_every": 2000, "n_samples": 1000},
            "x": "zero_terminal_snr", "y": "prediction", "metric": "brightness_std", "epoch": "final",
        },
    }

    dataset = param.Selector(default="eight_gaussians", objects=list(datasets.POINTS + datasets.IMAGES),
                             doc="2-D points, or 8×8 images (bright_dark: bimodal mean brightness; digits_images).")
    n_train = param.Integer(5000, bounds=(16, 1_000_000), doc="Training points (a held-out set of the same size is "
                                                               "drawn for the metrics).")
    data_split = param.Selector(default="all", objects=["all", "half_a", "half_b"],
                                doc="all: n_train examples; half_a / half_b: one of two disjoint halves of a pool of "
                                    "2·n_train (held-out data disjoint from both), half_b's denoiser from other "
                                    "initial weights. Two runs differing only here sample from the same initial "
                                    "noise (Kadkhodaie et al. 2024: do they learn the same density?).")
    schedule = param.Selector(default="linear", objects=list(schedules.NAMES),
                              doc="Noise schedule (workbench.noise.schedules; discrete ones have T = 1000).")
    schedule_params = param.String("", doc="The schedule's own parameters, named as in its paper: 'name=value, "
                                           "...' (sigmoid, chen_cosine: start, end, tau; laplace: mu, b; cauchy: "
                                           "mu, gamma; shifted_cosine: shift, scale; edm: sigma_min, sigma_max, "
                                           "rho; discrete ones: T and their betas). Empty: the paper's defaults.")
    input_scale = param.Number(1.0, bounds=(1e-3, 1e3), doc="Chen 2023's input scale b (chen_cosine, sigmoid): the "
                                                            "data scaled by b before noise is added, logSNR shifted "
                                                            "by 2·log b; below 1 every step is noisier.")
    train_schedule = param.Selector(default="same", objects=["same", *schedules.NAMES],
                                    doc="The noise levels training draws: the sampling schedule's own (same), or "
                                        "t ~ U(0, 1) through this schedule's logSNR, the denoiser told the "
                                        "sampling schedule's time of that level (Hang et al. 2024: laplace). "
                                        "Sampling is unchanged.")
    train_schedule_params = param.String("", doc="The training schedule's own parameters, as schedule_params.")
    zero_terminal_snr = param.Boolean(False, doc="Lin et al.'s rescale to ᾱ(1) = 0 (discrete schedules; use "
                                                  "v or x0 prediction with it).")
    prediction = param.Selector(default="epsilon", objects=list(dif.PREDICTIONS),
                                doc="What the denoiser predicts: epsilon, v (robust at low SNR) or x0.")
    sampler = param.Selector(default="ddim", objects=list(dif.SAMPLERS), doc="ddpm, ddim (eta), euler, heun.")
    sample_steps = param.Integer(50, bounds=(1, 1000), doc="Sampling steps.")
    spacing = param.Selector(default="trailing", objects=list(schedules.SPACINGS),
                             doc="Which grid steps a discrete schedule samples at.")
    eta = param.Number(0.0, bounds=(0.0, 1.0), doc="DDIM's η: 0 deterministic, 1 as DDPM.")
    clip_x0 = param.Number(3.0, bounds=(0.0, 1000.0), doc="Clip the predicted clean point to ±clip_x0 while "
                                                          "sampling (0: off).")
    immiscible = param.Boolean(False, doc="Assign each batch's noise to its examples by least total distance.")
    offset_noise = param.Number(0.0, bounds=(0.0, 1.0), doc="Training noise gets a per-example constant of this "
                                                            "std added to every coordinate (Guttenberg's offset "
                                                            "noise: lets images drift in mean brightness).")
    clean_fraction = param.Number(1.0, bounds=(0.0, 1.0), doc="Share of training points kept clean; the rest carry "
                                                              "fixed Gaussian noise of corruption_sigma.")
    corruption_sigma = param.Number(0.0, bounds=(0.0, 10.0), doc="Std of the noise on the corrupted points.")
    ambient = param.Boolean(True, doc="Corrupted points teach only at diffusion noise levels above their own, "
                                      "through ambient diffusion's loss (off: trained on as if clean).")
    conditional = param.Boolean(False, doc="Class-conditional: the denoiser is told each training example's class "
                                           "(eight_gaussians: its mode; moons: its moon; images: the digit), and "
                                           "samples are asked for every class in turn.")
    condition_flip = param.Number(0.0, bounds=(0.0, 0.95), doc="Share of the training examples whose class, as the "
                                                               "denoiser is told it, is flipped to another class "
                                                               "(uniformly among the others); samples are still "
                                                               "asked for true classes. Needs conditional.")
    condition_loss = param.Selector(default="plain", objects=["plain", "transition"],
                                    doc="plain: the denoiser learns the class it is told; transition: TDSM (Na et "
                                        "al. 2024): its output for the told class is the sum of its outputs for "
                                        "every class weighted by p(class | told class, x_t), from the known flip "
                                        "rate and a time-dependent classifier trained beside it on the told "
                                        "classes (forward-corrected).")
    one_more_step = param.Boolean(False, doc="Images: after training, freeze the denoiser and train One More Step "
                                             "(Hu et al. 2024) beside it — a small net from pure noise and a "
                                             "request (the image's mean brightness; and its class, where "
                                             "conditional) to x̂_0 at zero SNR, 1,000 Adam steps — then sample "
                                             "again with one DDIM step from zero SNR onto the first sampling "
                                             "time, each sample asked for a held-out image's brightness.")
    time_conditioning = param.Boolean(True, doc="Give the denoiser the time (off: it must infer the noise level).")
    resolution = param.Selector(default=8, objects=list(datasets.RESOLUTIONS),
                                doc="Image side (8: the digits as they are; 16, 32: upsampled). Images only.")
    denoiser = param.Selector(default="mlp", objects=["mlp", "conv"],
                              doc="mlp (any data) or conv (images: 3×3 residual blocks with global context).")
    sample_precision = param.Selector(default="fp32", objects=list(SAMPLE_FORMATS),
                                      doc="Also sample at the end with weights and layer inputs rounded to this "
                                          "format (post-training, static activation scales), against fp32.")
    sample_act_precision = param.Selector(default="same", objects=["same", *SAMPLE_FORMATS],
                                          doc="The layer inputs' format in that low-precision sampling, apart from "
                                              "the weights' (W4A8: sample_precision int4, this int8); same: "
                                              "sample_precision.")
    calibration = param.Selector(default="all", objects=["all", "single"],
                                 doc="Activation ranges from noisy held-out data at every sampling time (all) or "
                                     "at t = 0.5 only (single).")
    width = param.Integer(256, bounds=(8, 4096), doc="Denoiser hidden units (conv: channels).")
    depth = param.Integer(3, bounds=(1, 8), doc="Denoiser hidden layers (conv: residual blocks).")
    lr = param.Number(1e-3, bounds=(1e-6, 1.0), doc="Adam learning rate.")
    ema = param.Number(0.999, bounds=(0.0, 0.99999), doc="Samples come from an exponential moving average of the "
                                                         "weights with this decay (warmed up as (1+s)/(10+s)); 0: "
                                                         "the raw weights.")
    batch_size = param.Integer(256, bounds=(2, 100_000), doc="Examples per step.")
    steps = param.Integer(3000, bounds=(1, 10_000_000), doc="Training steps.")
    eval_every = param.Integer(500, bounds=(1, 10_000_000), doc="Steps between sample-quality measurements.")
    best_of = param.Integer(0, bounds=(0, 256), doc="Inference-time search (eight_gaussians, whose density is "
                                                    "known): at the end, each of min(n_samples, 500) samples is also "
                                                    "the best of M = 1, 4, 16, ... up to best_of initial noises under "
                                                    "the true log-density as verifier. 0: off.")
    n_samples = param.Integer(2000, bounds=(16, 1_000_000), doc="Samples per measurement.")

    def check(self):
        sch, _ = noise_schedules(self.param.values())  # refused here, naming the field
        if self.denoiser == "conv" and self.dataset not in datasets.IMAGES:
            raise ConfigError("denoiser", "conv", f"mlp for the 2-D dataset {self.dataset!r} (conv needs images: "
                                                  f"{', '.join(datasets.IMAGES)})")
        if self.data_split != "all" and self.dataset in datasets.IMAGES \
                and 2 * self.n_train > datasets.IMAGE_TRAIN_POOL:
            raise ConfigError("n_train", self.n_train, f"at most {datasets.IMAGE_TRAIN_POOL // 2} with data_split "
                                                       f"{self.data_split!r}: two disjoint halves of the "
                                                       f"{datasets.IMAGE_TRAIN_POOL} training digits")
        if self.conditional and self.dataset not in datasets.CLASSES:
            raise ConfigError("conditional", True, f"off for the data set {self.dataset!r}, which has no classes "
                                                   f"(classes: {', '.join(datasets.CLASSES)})")
        if self.one_more_step and self.dataset not in datasets.IMAGES:
            raise ConfigError("one_more_step", True, f"off for the data set {self.dataset!r}: its request is an "
                                                     f"image's brightness (images: {', '.join(datasets.IMAGES)})")
        if self.condition_flip and not self.conditional:
            raise ConfigError("condition_flip", self.condition_flip, "0 unless conditional is on (the flips act on "
                                                                     "the classes the denoiser is told)")
        if self.best_of and self.dataset not in datasets.DENSITIES:
            raise ConfigError("best_of", self.best_of, f"0 for the data set {self.dataset!r}: the search needs a "
                                                       f"known density ({', '.join(datasets.DENSITIES)})")
        if self.ambient and self.clean_fraction < 1 and self.corruption_sigma > 0:
            dif.ambient_t_min(sch, self.corruption_sigma)  # the schedule must reach noise above the corruption

    # -- the hooks of the training loop (engine/loop.py) --------------------------------------------------------
    @classmethod
    def setup(cls, ctx, group) -> Plan:
        dev, c0, k, streams, configs = group.device, group.c0, group.k, group.streams, group.configs
        sch, train_sch = noise_schedules(c0.param.values())
        images = c0.dataset in datasets.IMAGES
        classes = datasets.CLASSES[c0.dataset] if c0.conditional else 0
        flips = label_noise.symmetric(classes, c0.condition_flip).float().to(dev) if classes else None
        data, sigma, held, base, told, held_y, base_y = [], [], [], [], [], [], []
        halves = c0.data_split != "all"
        for c, st in zip(configs, streams):
            g = st.generator("data")
            pool = 2 * c.n_train if halves else c.n_train  # a half: the first or second n_train of the pool
            if images:  # held-out images from digits disjoint from the training ones
                x, y, other, y_other = datasets.labelled_images(c.dataset, pool, g, c0.resolution,
                                                                n_held=2 * c.n_samples)
                held.append(other[:c.n_samples])
                base.append(other[c.n_samples:])
                held_y.append(y_other[:c.n_samples])
                base_y.append(y_other[c.n_samples:])
            else:
                x, y = datasets.labelled_points(c.dataset, pool, g)
                for kept, kept_y in ((held, held_y), (base, base_y)):
                    h, hy = datasets.labelled_points(c.dataset, c.n_samples, g)
                    kept.append(h)
                    kept_y.append(hy)
            if halves:
                part = slice(c.n_train) if c0.data_split == "half_a" else slice(c.n_train, None)
                x, y = x[part], None if y is None else y[part]
            noise = st.generator("noise")
            corrupt = (torch.rand(c.n_train, generator=noise) >= c.clean_fraction) & (c.corruption_sigma > 0)
            x = x + corrupt[:, None] * c.corruption_sigma * torch.randn(x.shape, generator=noise)
            data.append(x.to(dev))
            sigma.append((corrupt * (c.corruption_sigma if c.ambient else 0.0)).to(dev))  # the noise it carries
            if classes:  # the class each example is told as (flipped after the corruption's draws)
                told.append(label_noise.flip(y, flips.double().cpu(), noise)[0].to(dev))
        dim = data[0].shape[1]
        if c0.denoiser == "conv":
            def build():
                return ConvDenoiser(c0.resolution, c0.width, c0.depth, time_conditioning=c0.time_conditioning,
                                    classes=classes)
        else:
            def build():
                return Denoiser(dim, c0.width, c0.depth, time_conditioning=c0.time_conditioning, classes=classes)
        inits = [st.fresh("init", 1) for st in streams] if c0.data_split == "half_b" else group.generators("init")
        # one denoiser (and optimiser, EMA copy, classifier) per training, shared by the models that only sample
        # from it differently (group.training); its minibatches, times and noise from its leader's order stream
        lead, shared = group.leaders, group.shared
        trained = shared([init_(build(), inits[m]).to(dev) for m in lead])
        # transition-aware training (TDSM): a noisy-class classifier per model, from the same init stream
        clfs = shared([init_(TimeClassifier(dim, classes), inits[m]).to(dev) for m in lead]) \
            if classes and c0.condition_loss == "transition" else []
        gens = group.generators("order")
        opts = shared([torch.optim.Adam(trained[m].parameters(), lr=c0.lr) for m in lead])
        clf_opts = shared([torch.optim.Adam(clfs[m].parameters(), lr=c0.lr) for m in lead]) if clfs else []
        nets = shared([copy.deepcopy(trained[m]).requires_grad_(False) for m in lead]) if c0.ema else trained
        t_min = dif.ambient_t_min(sch, c0.corruption_sigma) if c0.ambient and c0.clean_fraction < 1 else 0.0

        def proj(m):  # model m's random projections for sliced Wasserstein: the same directions at every measurement
            return streams[m].fresh("probe")

        sw_base = np.array([dif.sliced_wasserstein(h, b, generator=proj(m)) for m, (h, b) in enumerate(zip(held, base))])
        asked = torch.arange(c0.n_samples) % classes if classes else None  # the class each sample is asked for
        vote_base = np.array([float((dif.nearest_class(b, h, hy) == by).float().mean()) if classes else np.nan
                              for h, hy, b, by in zip(held, held_y, base, base_y)])
        # K denoisers of their own (not stacked): each model's step is its own Adam step
        near_held = np.stack([torch.cdist(h, x.cpu()).min(1).values.numpy() for h, x in zip(held, data)])
        ctx.put("nearest_train_heldout", ("model", "sample"), near_held)
        running = [[] for _ in lead]  # per training
        bin_sum, bin_n = np.zeros((len(lead), T_BINS)), np.zeros((len(lead), T_BINS))
        bin_centres = (np.arange(T_BINS) + 0.5) / T_BINS

        def draw(m, steps, live=False, model=None, memo=None):
            """Model m's samples in `steps` steps (from `model`: a rounded copy of its denoiser). With a `memo` (one
            per state of the nets), models of one training that sample alike draw once: the same net, the same
            sampling stream."""
            c = configs[m]
            key = (group.training[m], steps, c.sampler, c.spacing, c.eta, c.clip_x0)
            if memo is not None and model is None and key in memo:
                return memo[key]

            def show(i, x0):  # the page draws model 0's x̂_0 as sampling proceeds (with the classes asked for)
                ctx.preview("sampling", ("sample", "coord"), x0[:PREVIEW_SAMPLES].cpu().numpy(),
                            sampling_step=np.array([i + 1, steps]),
                            **({} if asked is None else {"sample_class": asked[:PREVIEW_SAMPLES].numpy()}))

            x = dif.sample(conditioned(model or nets[m], asked), sch, (c0.n_samples, dim), steps,
                           streams[m].fresh("sampling"), c.sampler, c0.prediction, c.spacing, c.eta, dev,
                           clip_x0=c.clip_x0, callback=show if live else None).cpu()
            if memo is not None and model is None:
                memo[key] = x
            return x

        def conditioned(model, y):
            """model(x, t), asked for classes y (None: unconditional)."""
            if y is None:
                return model
            y = y.to(dev)
            return lambda x, t: model(x, t, y)

        def draw_times(g, noisy):
            return training_times(sch, train_sch, noisy, t_min, g)

        def quantized_quality(samples):
            """Sample again (same noise) with the rounded denoiser: quality, and distance to the fp32 samples (nan
            for the models sampled in fp32 only)."""
            sw, drift = np.full(k, np.nan), np.full(k, np.nan)
            for m, c in enumerate(configs):
                if c.sample_precision == "fp32":
                    continue
                ts = dif.times(sch, c.sample_steps, c.spacing)[:-1] if c.calibration == "all" \
                    else torch.tensor([0.5], dtype=torch.float64)
                cal = held[m][:512].to(dev)
                batches = ptq.timestep_batches(cal, sch, ts, streams[m].fresh("probe", 1))
                if classes:  # calibrated on held-out data told its own classes
                    y_cal = held_y[m][:512].to(dev)
                    plain = batches
                    batches = lambda plain=plain: ((xt, tt, y_cal) for xt, tt in plain())  # noqa: E731
                act = None if c.sample_act_precision == "same" else c.sample_act_precision
                low = ptq.quantized(nets[m], c.sample_precision, ptq.calibrate(nets[m], batches()), act_fmt=act)
                s = draw(m, c.sample_steps, model=low)
                if torch.isfinite(s).all():
                    sw[m] = dif.sliced_wasserstein(s, held[m], generator=proj(m))
                    drift[m] = dif.sliced_wasserstein(s, samples[m], generator=proj(m))
            return {"sw_quantized": sw, "sw_quantized_vs_fp32": drift}

        s = SimpleNamespace(k=k, c0=c0, sch=sch, dev=dev, dim=dim, streams=streams, images=images, configs=configs,
                            data=data, sigma=sigma, held=held, trained=trained, nets=nets, opts=opts, gens=gens,
                            draw=draw, conditioned=conditioned, classes=classes, flips=flips, told=told,
                            asked=asked, held_y=held_y, vote_base=vote_base, clfs=clfs, clf_opts=clf_opts,
                            draw_times=draw_times, proj=proj, quantized_quality=quantized_quality, sw_base=sw_base,
                            leaders=lead, training=group.training,
                            near_held=near_held, bin_sum=bin_sum, bin_n=bin_n, bin_centres=bin_centres,
                            running=running, ok=np.ones(k, dtype=bool), final=None, memo=None)
        return Plan(total=c0.steps, every=c0.eval_every, state=s)

    @classmethod
    def step(cls, plan, batch, step):
        s, c0, dev, n = plan.state, plan.state.c0, plan.state.dev, step + 1
        for j, m in enumerate(s.leaders):  # each training once
            net, opt, g, x, sig = s.trained[m], s.opts[m], s.gens[m], s.data[m], s.sigma[m]
            idx = torch.randint(0, len(x), (c0.batch_size,), generator=g).to(dev)
            x0, sn = x[idx], sig[idx]
            eps = torch.randn(x0.shape, generator=g)
            if c0.offset_noise:
                eps = eps + c0.offset_noise * torch.randn(len(eps), 1, generator=g)
            eps = eps.to(dev)
            if c0.immiscible:
                eps = dif.immiscible(x0, eps)
            t = s.draw_times(g, (sn > 0).cpu())
            abar = s.sch.alpha_bar(t).float().to(dev)
            x_t, tgt, weight = dif.ambient_batch(x0, sn, eps, abar, c0.prediction)
            tt = t.float().to(dev)
            if not s.classes:
                out = net(x_t, tt)
            elif s.clfs:  # TDSM: the told class's output as the flip-aware mixture of every class's
                out = dif.transition_output(net, x_t, tt, cls._class_weights(s, m, x_t, tt, s.told[m][idx]))
            else:
                out = net(x_t, tt, s.told[m][idx])
            per_example = (out - tgt).pow(2).mean(1) * weight
            loss = per_example.mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if c0.ema:
                decay = min(c0.ema, (1 + n) / (10 + n))
                torch._foreach_lerp_(list(s.nets[m].parameters()), list(net.parameters()), 1 - decay)
            s.running[j].append(float(loss.detach()))
            bins = np.minimum((t.numpy() * T_BINS).astype(int), T_BINS - 1)
            np.add.at(s.bin_sum[j], bins, per_example.detach().cpu().numpy())
            np.add.at(s.bin_n[j], bins, 1)
        return torch.tensor([s.running[j][-1] for j in s.training])

    @staticmethod
    def _class_weights(s, m, x_t, t, told):
        """One step of model m's noisy-class classifier on (x_t, told class), forward-corrected by the flip matrix
        (so its softmax estimates p(true class | x_t)), and the weights p(class | told, x_t) it gives."""
        clf, opt = s.clfs[m], s.clf_opts[m]
        p = clf(x_t, t).softmax(1)
        loss = torch.nn.functional.nll_loss(torch.log((p @ s.flips).clamp_min(1e-12)), told)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return dif.transition_weights(p.detach(), s.flips, told)

    @classmethod
    def measure(cls, plan, i, step):
        s, c0, ctx, k = plan.state, plan.state.c0, plan.ctx, plan.state.k
        s.memo = {}  # the nets as they are now: what one model draws, its training's others drawing alike reuse
        samples = [s.draw(m, c.sample_steps, live=m == 0, memo=s.memo) for m, c in enumerate(s.configs)]
        ok = np.array([bool(torch.isfinite(x).all()) for x in samples])
        sw = np.array([dif.sliced_wasserstein(x, h, generator=s.proj(m)) if o else np.nan
                       for m, (x, h, o) in enumerate(zip(samples, s.held, ok))])
        mmd = np.array([dif.mmd_rbf(x[:1000], h[:1000]) if o else np.nan for x, h, o in zip(samples, s.held, ok)])
        loss = np.array([np.mean(r) if r else np.nan for r in s.running])[s.training]
        for r in s.running:
            r.clear()
        low = {"sw_quantized": np.full(k, np.nan), "sw_quantized_vs_fp32": np.full(k, np.nan)}
        if step == c0.steps and any(c.sample_precision != "fp32" for c in s.configs):
            low = s.quantized_quality(samples)
        oms = {key: np.full(k, np.nan) for key in OMS_METRICS}
        if step == c0.steps and c0.one_more_step:
            oms = cls._one_more_step(ctx, s, samples)
        bright = [x.mean(1) for x in samples]  # per-sample mean value (an image's brightness)
        # memorization: each sample's distance to its nearest training example, against held-out data's
        near = np.stack([torch.cdist(x, d.cpu()).min(1).values.numpy() for x, d in zip(samples, s.data)])
        ctx.put("nearest_train", ("model", "sample"), near)
        ctx.put("samples", ("model", "sample", "coord"), np.stack([x.numpy() for x in samples]))
        asked = np.full(k, np.nan)
        if s.classes:
            ctx.put("sample_class", ("model", "sample"), np.tile(s.asked.numpy(), (k, 1)))
            asked = np.array([float((dif.nearest_class(x, h, hy) == s.asked).float().mean()) if o else np.nan
                              for x, h, hy, o in zip(samples, s.held, s.held_y, ok)])
        with np.errstate(invalid="ignore"):
            ctx.put("loss_by_t", ("model", "t_bin"), (s.bin_sum / s.bin_n)[s.training], t_bin=s.bin_centres)
        s.ok, s.final = ok, samples
        return {"train_loss": loss, "sw": sw, "mmd": mmd, "sw_baseline": s.sw_base,
                "nearest_train_ratio": np.median(near, 1) / np.maximum(np.median(s.near_held, 1), 1e-12), **low,
                **oms,
                "brightness_std": np.array([float(b.std()) for b in bright]),
                "brightness_extreme": np.array([float((b.abs() > 0.5).float().mean()) for b in bright]),
                "data_brightness_std": np.array([float(h.mean(1).std()) for h in s.held]),
                "condition_accuracy": asked, "condition_accuracy_data": s.vote_base}

    @classmethod
    def judge(cls, plan, rec, step):
        plan.diverged.update(step, ~plan.state.ok, "samples")

    @classmethod
    def finish(cls, plan):
        s = plan.state
        cls._final_analysis(plan.ctx, s.configs, s.final, s.held, lambda m, n: s.draw(m, n, memo=s.memo), s.proj,
                            s.sch, s.images)
        cls._transfer(plan.ctx, s)
        if s.c0.best_of:
            cls._best_of(plan.ctx, s)

    @staticmethod
    def _one_more_step(ctx, s, samples) -> dict:
        """One More Step beside each frozen model: its net trained on the training images (x̂_0 from pure noise
        and the request: the image's own brightness, and the class it is told), then n_samples drawn with it, each
        asked for a held-out image's brightness (and the class the plain samples are asked for). The plain samples'
        distance to the same requests is the baseline: they ignore them."""
        c0, k, dev = s.c0, s.k, s.dev

        def request(x, y):
            r = x.mean(1, keepdim=True)
            return torch.cat([r, torch.nn.functional.one_hot(y, s.classes).float()], 1) if s.classes else r

        def train(m):  # model m's One More Step net (one per training: it does not depend on the sampling)
            oms = init_(OneMoreStep(s.dim, 1 + s.classes), s.streams[m].fresh("init", 2)).to(dev)
            opt, g, x = torch.optim.Adam(oms.parameters(), lr=c0.lr), s.streams[m].fresh("order", 1), s.data[m]
            for _ in range(OMS_STEPS):
                idx = torch.randint(0, len(x), (c0.batch_size,), generator=g).to(dev)
                x0 = x[idx]
                z = torch.randn(x0.shape, generator=g).to(dev)
                loss = (oms(z, request(x0, s.told[m][idx] if s.classes else None)) - x0).pow(2).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            return oms

        out = {key: np.full(k, np.nan) for key in OMS_METRICS}
        drawn, steppers = [], [train(m) for m in s.leaders]
        for m, c in enumerate(s.configs):
            oms = steppers[s.training[m]]
            wanted = s.held[m][:c0.n_samples].to(dev)
            g = s.streams[m].fresh("sampling", 2)
            with torch.no_grad():
                z = torch.randn((c0.n_samples, s.dim), generator=g).to(dev)
                asked = None if s.asked is None else s.asked.to(dev)
                start = dif.one_more_step(oms, s.sch, c.sample_steps, c.spacing, z, request(wanted, asked))
            x = dif.sample(s.conditioned(s.nets[m], s.asked), s.sch, (c0.n_samples, s.dim), c.sample_steps, g,
                           c.sampler, c0.prediction, c.spacing, c.eta, dev, clip_x0=c.clip_x0,
                           x_init=start).cpu()
            drawn.append(x)
            r = wanted.mean(1).cpu()
            out["brightness_error"][m] = float((samples[m].mean(1) - r).abs().mean())
            if torch.isfinite(x).all():
                out["oms_sw"][m] = dif.sliced_wasserstein(x, s.held[m], generator=s.proj(m))
                out["oms_brightness_std"][m] = float(x.mean(1).std())
                out["oms_brightness_error"][m] = float((x.mean(1) - r).abs().mean())
        ctx.put("brightness_hist_oms", ("model", "brightness"), _brightness_hist(drawn), brightness=BRIGHTNESS_CENTRES)
        return out

    @staticmethod
    def _transfer(ctx, s, batch: int = 2048):
        """How training at one noise level pulls against another (Go et al. 2023, negative transfer): the trained
        denoiser's loss gradient in each of T_BINS bins of t (one large batch of the training data, the same
        examples and noise in every bin, t uniform within the bin), and the cosine between every two bins' gradients,
        with each bin's logSNR at its centre."""
        c0 = s.c0
        cos = np.full((len(s.leaders), T_BINS, T_BINS), np.nan)
        for j, m in enumerate(s.leaders):  # a probe of the trained denoiser: once per training
            net, g = s.trained[m], s.streams[m].fresh("probe", 2)
            x = s.data[m]
            idx = torch.randint(0, len(x), (min(batch, len(x)),), generator=g).to(s.dev)
            x0 = x[idx]
            eps = torch.randn(x0.shape, generator=g).to(s.dev)
            u = torch.rand(len(x0), generator=g, dtype=torch.float64)
            grads = []
            for b in range(T_BINS):
                t = ((b + u) / T_BINS).clamp(1e-4, 1 - 1e-4)
                abar = s.sch.alpha_bar(t).float().to(s.dev)
                x_t, tgt, _ = dif.ambient_batch(x0, torch.zeros(len(x0), device=s.dev), eps, abar, c0.prediction)
                told = s.told[m][idx] if s.classes else None  # a conditional one told the classes it trained on
                loss = (s.conditioned(net, told)(x_t, t.float().to(s.dev)) - tgt).pow(2).mean()
                grads.append(torch.cat([gr.reshape(-1) for gr in torch.autograd.grad(loss, list(net.parameters()))]))
            G = torch.nn.functional.normalize(torch.stack(grads).double(), dim=1)
            cos[j] = (G @ G.T).cpu().numpy()
        centres = torch.tensor((np.arange(T_BINS) + 0.5) / T_BINS, dtype=torch.float64)
        ctx.put("grad_cosine", ("model", "t_bin", "t_bin_other"), cos[s.training], t_bin_other=centres.numpy())
        ctx.put("logsnr_by_t_bin", ("model", "t_bin"), np.tile(s.sch.logsnr(centres).numpy(), (s.k, 1)))

    @staticmethod
    def _best_of(ctx, s):
        """Search over initial noise (Ma et al. 2025): for each of n samples, M candidates from fresh initial
        noise, the one the verifier (the data's true log-density) scores highest kept; the verifier's mean score
        and the kept samples' sliced Wasserstein to held-out data, for M = 1, 4, 16, ... (nested: the first M of
        the same candidates)."""
        c0, k = s.c0, s.k
        grid = [4 ** i for i in range(5) if 4 ** i <= c0.best_of]
        n, most = min(c0.n_samples, 500), grid[-1]
        score, sw = np.full((k, len(grid)), np.nan), np.full((k, len(grid)), np.nan)
        rows = torch.arange(n)
        for m in range(k):
            asked = None if s.asked is None else (torch.arange(n) % s.classes).repeat_interleave(most)
            c = s.configs[m]
            cand = dif.sample(s.conditioned(s.nets[m], asked), s.sch, (n * most, s.dim), c.sample_steps,
                              s.streams[m].fresh("sampling", 1), c.sampler, c0.prediction, c.spacing, c.eta,
                              s.dev, clip_x0=c.clip_x0).cpu()
            logp = datasets.log_density(c0.dataset, cand)
            logp = torch.where(torch.isfinite(logp), logp, -math.inf).view(n, most)
            cand = cand.view(n, most, s.dim)
            for j, M in enumerate(grid):
                best = logp[:, :M].argmax(1)
                kept = cand[rows, best]
                if torch.isfinite(kept).all():
                    score[m, j] = float(logp[rows, best].mean())
                    sw[m, j] = dif.sliced_wasserstein(kept, s.held[m], generator=s.proj(m))
        ctx.put("best_of_log_density", ("model", "candidates"), score, candidates=np.array(grid))
        ctx.put("best_of_sw", ("model", "candidates"), sw)

    @staticmethod
    def _final_analysis(ctx, configs, samples, held, draw, proj, sch, images):
        """What the trained models make: quality against sampling steps; for images, histograms of mean brightness
        and radially averaged power spectra (samples against held-out data)."""
        k, side = len(configs), configs[0].resolution
        grid = [s for s in STEP_GRID if s <= (sch.steps or 10**9)]
        sw_steps = np.array([[dif.sliced_wasserstein(draw(m, s), held[m], generator=proj(m)) for s in grid]
                             for m in range(k)])
        ctx.put("sw_vs_steps", ("model", "sampling_steps"), sw_steps, sampling_steps=np.array(grid))
        if not images:
            return
        ctx.put("brightness_hist", ("model", "brightness"), _brightness_hist(samples), brightness=BRIGHTNESS_CENTRES)
        ctx.put("brightness_hist_data", ("model", "brightness"), _brightness_hist(held))
        power = lambda x: radial_power_spectrum(x.reshape(-1, side, side))  # noqa: E731
        radius = power(held[0][:1])[0]
        ctx.put("power_samples", ("model", "radius"),
                np.stack([power(s)[1] if torch.isfinite(s).all() else np.full(len(radius), np.nan)
                          for s in samples]), radius=radius)
        ctx.put("power_data", ("model", "radius"), np.stack([power(h)[1] for h in held]))
