"""The study protocol, checked over every study (present and future: parametrised over wb.studies()).

A model's result does not depend on its company; every declared metric is in every record; "best" follows the
declared direction; a run id names the code and data that made it. Tiny settings (each study's `tiny` dials).
"""
import importlib
import sqlite3
import sys

import numpy as np
import param
import pytest
import torch

import workbench as wb
from workbench.engine import Context, pick_device
from workbench.engine.group import Group, Streams, derive
from workbench.errors import ConfigError
from workbench.cli import main
from workbench.runs.identity import code_fingerprint
from workbench.runs.run import run_id, summarize, to_dataset
from workbench.studies import get as get_study
from workbench.studies.base import Metric, Study
from workbench.viz import browser

from .conftest import optimizer_steps

STUDIES = wb.studies()


def _train(cls, configs):
    """Train configs as one group (squeeze=False) or one config alone; the dataset of what it kept."""
    ctx = Context(pick_device("cpu"), squeeze=False)
    try:
        cls.execute_group(ctx, configs)
    except wb.Diverged:
        pass
    return to_dataset(ctx, cls.axis), ctx


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape:
        return False
    if a.dtype.kind in "fc":
        return bool(np.allclose(a, b, rtol=1e-5, atol=1e-6, equal_nan=True))
    return bool(np.array_equal(a, b))


@pytest.mark.parametrize("key", STUDIES)
def test_a_model_in_a_group_equals_the_model_trained_alone(key):
    """Each model of a group equals its config trained alone, every stored variable. The second model also holds
    its split and init fixed and redraws only its noise (a purpose seed), which must not reach model 0."""
    cls = get_study(key)
    assert cls.tiny, f"study {key!r} declares no `tiny` dials (the protocol's tests train every study with them)"
    configs = [cls.configure(**cls.tiny, seed=3), cls.configure(**cls.tiny, seed=3, noise_seed=11)]
    configs.append(cls.configure(**cls.tiny, seed=5))
    group, _ = _train(cls, configs)
    for m, cfg in enumerate(configs):
        alone, _ = _train(cls, [cfg])
        assert set(alone.data_vars) == set(group.data_vars), key
        different = _differing(group, m, alone)
        assert not different, f"{key}: model {m} of the group differs from the run alone in {different}"


def _differing(group, m: int, alone) -> list[str]:
    """The stored variables in which model m of a group's dataset differs from a run alone."""
    def model(ds, i):
        return lambda v: ds[v].isel(model=i).values if "model" in ds[v].dims else ds[v].values

    of_group, of_alone = model(group, m), model(alone, 0)
    return [v for v in alone.data_vars if not _same(of_group(v), of_alone(v))]


def _sampled_otherwise(cls, config):
    """The config with each of its study's sampling dials moved to another value it accepts (a dial whose other
    values the config refuses is left as it is)."""
    values = config.config()
    for name in sorted(cls.sampling):
        p, now = cls.param[name], values[name]
        if getattr(p, "objects", None):
            options = [v for v in p.objects if v != now]
        elif isinstance(p, param.Boolean):
            options = [not now]
        else:
            lo, hi = p.bounds or (None, None)
            options = [v for v in (now * 2, now / 2, now + 1) if (lo is None or v >= lo) and (hi is None or v <= hi)]
            options = [int(v) if isinstance(p, param.Integer) else v for v in options if v != now]
        for option in options:
            try:
                cls.configure(**{**values, name: option})
            except ConfigError:
                continue
            values[name] = option
            break
    return cls.configure(**values)


SAMPLING = [k for k in STUDIES if get_study(k).sampling]


@pytest.mark.parametrize("key", SAMPLING)
def test_models_that_differ_only_in_sampling_train_once_and_each_equals_its_run_alone(key):
    """Configs differing only in sampling dials share one training in a group (one optimiser step per training
    step, not one per model), and each still equals its config trained alone."""
    cls = get_study(key)
    base = cls.configure(**cls.tiny, seed=3)
    other = _sampled_otherwise(cls, base)
    moved = sorted(n for n in cls.sampling if getattr(other, n) != getattr(base, n))
    assert moved, f"{key}: no sampling dial could be moved from its tiny value"
    configs = [base, other, cls.configure(**cls.tiny, seed=5)]
    group = Group(configs)
    assert group.leaders == [0, 2] and group.training == [0, 0, 1]
    with optimizer_steps() as steps:
        together, _ = _train(cls, configs)
    assert len(steps) == 2 * cls.tiny["steps"], key  # two trainings, not three
    for m, config in enumerate(configs):
        different = _differing(together, m, _train(cls, [config])[0])
        assert not different, f"{key}: model {m} (sampling dials {moved} moved) differs alone in {different}"
    differ = [v for v in ("samples", "sw") if v in together and
              not np.allclose(together[v].isel(model=0).values, together[v].isel(model=1).values, equal_nan=True)]
    assert differ, f"{key}: moving {moved} changed no sample: the dials did not reach the sampler"


@pytest.mark.parametrize("key", STUDIES)
def test_records_hold_every_declared_metric_and_the_axis(key):
    cls = get_study(key)
    _, ctx = _train(cls, [cls.configure(**cls.tiny)])
    declared = set(cls.record_metrics())
    assert ctx.records, key
    for rec in ctx.records:
        assert cls.axis in rec and "step" in rec, (key, sorted(rec))
        keys = set(rec) - {cls.axis, "step"}
        assert keys == declared, f"{key}: undeclared {sorted(keys - declared)}, missing {sorted(declared - keys)}"
    kept = {m.name for m in cls.metrics if m.per == "run"}
    assert kept <= set(ctx.arrays), f"{key}: per-run metrics not kept: {sorted(kept - set(ctx.arrays))}"


@pytest.mark.parametrize("key", STUDIES)
def test_best_follows_the_declared_direction(key, tmp_path):
    cls = get_study(key)
    run = wb.run(key, **cls.tiny, progress=False, store=wb.Store(tmp_path))
    summary = summarize(run.ds, cls)
    assert summary, key
    for name, s in summary.items():
        values = run.ds[name].values.astype(float)
        finite = values[np.isfinite(values)]
        better = cls.better(name)
        if better == "none" or not finite.size:
            assert np.isnan(s["best"]) and s["best_at"] is None, (key, name)
        else:
            assert s["best"] == (finite.min() if better == "min" else finite.max()), (key, name)
    # the metrics that were ranked backwards by the old name rule
    if key == "diffusion":
        assert cls.better("sw") == cls.better("mmd") == "min"


def test_a_group_refuses_to_share_a_dial_that_is_not_batchable():
    cls = get_study("label_noise")
    a, b = cls.configure(**cls.tiny), cls.configure(**{**cls.tiny, "width": 32})
    with pytest.raises(ConfigError) as e:
        Group([a, b])
    assert e.value.field == "width"
    Group([a, cls.configure(**cls.tiny, seed=4, flip_rate=0.1, data_seed=2)])  # batchable dials and seeds may differ


def test_streams_are_independent_by_purpose_and_follow_their_own_seed_dial():
    cls = get_study("label_noise")
    a = Streams(cls.configure(seed=1))
    b = Streams(cls.configure(seed=1, noise_seed=7))
    c = Streams(cls.configure(seed=7))
    assert len({a.seed(p) for p in ("data", "noise", "init", "order", "sampling", "rounding", "probe")}) == 7
    assert a.seed("data") == b.seed("data") and a.seed("init") == b.seed("init")
    assert b.seed("noise") == c.seed("noise") != a.seed("noise")
    assert derive(1, "noise") == a.seed("noise")
    draw = lambda g: torch.rand(4, generator=g)  # noqa: E731
    assert torch.equal(draw(a.fresh("sampling")), draw(a.fresh("sampling")))  # fresh: the same draws every time
    assert not torch.equal(draw(a.generator("order")), draw(a.generator("order")))  # persistent: one after another


def test_redrawing_only_the_label_noise_keeps_the_split_and_the_init(tmp_path):
    """Several seed papers hold the split and init fixed and redraw only the flips."""
    base = dict(epochs=1, n_train=200, width=16, loss_snapshots=0, flip_rate=0.4, progress=False)
    store = wb.Store(tmp_path)
    runs = [wb.run("label_noise", seed=0, noise_seed=s, store=store, **base) for s in (1, 2)]
    a, b = runs[0].ds, runs[1].ds
    assert np.array_equal(a.true_label.values, b.true_label.values)  # the same split
    assert not np.array_equal(a.flipped.values, b.flipped.values)  # other flips
    for ds in (a, b):
        assert ds.flipped.values.mean() == pytest.approx(0.4, abs=0.1)  # binomial: sd 0.035 at n = 200
    init = [wb.run("label_noise", seed=0, noise_seed=s, store=store, **{**base, "epochs": 1, "flip_rate": 0.0})
            for s in (1, 2)]  # no flips to draw: with the same split and init, the same model
    assert np.array_equal(init[0].ds.test_loss.values, init[1].ds.test_loss.values)


# -- metrics declared once ----------------------------------------------------------------------------------------
def test_an_undeclared_metric_fails_when_the_class_is_defined():
    with pytest.raises(TypeError, match="headline"):
        class NoHeadline(Study):
            key = "no_headline_study"
            metrics = (Metric("a", better="min"),)
            headline = "b"
    with pytest.raises(TypeError, match="not declared"):
        class BadPreset(Study):
            key = "bad_preset_study"
            metrics = (Metric("a", better="min"),)
            headline = "a"
            presets = {"p": {"metric": "zzz"}}
    with pytest.raises(ValueError, match="better"):
        Metric("a", better="lower")
    import param

    with pytest.raises(TypeError, match="applies"):  # an inert-dial rule naming a value its dial cannot take
        class BadApplies(Study):
            key = "bad_applies_study"
            metrics = (Metric("a", better="min"),)
            headline = "a"
            mode = param.Selector(default="x", objects=["x", "y"])
            knob = param.Number(1.0)
            applies = {"knob": ("mode", ("z",))}
    assert "no_headline_study" not in wb.studies() and "bad_applies_study" not in wb.studies()


def test_inert_dials_are_said_for_the_values_where_they_do_nothing():
    from workbench.studies import get

    cls = get("label_noise")
    inert = cls.inert({**cls.defaults(), "loss": "gce"})
    assert "gce_q" not in inert and inert["elr_lambda"] == "acts only with loss = elr" and "momentum" in inert
    assert "momentum" not in cls.inert({**cls.defaults(), "optimizer": "sgd"})


# -- stale results --------------------------------------------------------------------------------------------------
def test_changing_a_data_file_gives_a_new_run_id(tmp_path):
    """Regression: the same .npz path with new contents returned the old stored run."""
    rng = np.random.default_rng(0)
    path = tmp_path / "mine.npz"
    np.savez(path, X=rng.normal(size=(120, 6)).astype(np.float32), y=rng.integers(0, 3, 120))
    store = wb.Store(tmp_path / "data")
    dials = dict(dataset="npz", data_path=str(path), n_train=80, width=8, epochs=1, loss_snapshots=0, progress=False,
                 store=store)
    first = wb.run("label_noise", **dials)
    assert wb.run("label_noise", **dials).id == first.id  # unchanged: the stored run
    np.savez(path, X=rng.normal(size=(120, 6)).astype(np.float32), y=rng.integers(0, 3, 120))
    second = wb.run("label_noise", **dials)
    assert second.id != first.id and second.meta["data"] != first.meta["data"]
    assert not np.array_equal(first.ds.test_loss.values, second.ds.test_loss.values)


STUDY_MODULE = '''
import param
from workbench.studies.base import Metric, Study
from workbench.viz import browser


class Mine(Study):
    key = "{key}"
    axis = "step"
    metrics = (Metric("loss", "loss", "min"),)
    headline = "loss"
    tiny = {{"steps": 3}}
    steps = param.Integer(3, bounds=(1, 100))

    @classmethod
    def execute_group(cls, ctx, configs):
        for s in range(configs[0].steps + 1):
            ctx.emit({{"step": s, "loss": [{value} / (1 + s)] * len(configs)}})
'''


def _write_study(folder, key, value):
    (folder / f"{key}.py").write_text(STUDY_MODULE.format(key=key, value=value))


@pytest.fixture
def user_modules(tmp_path, monkeypatch):
    """Imports user study modules from tmp_path; afterwards their studies are unregistered, so that no
    later test sees them."""
    monkeypatch.syspath_prepend(str(tmp_path))
    loaded = []

    def load(name):
        sys.modules.pop(name, None)
        loaded.append(importlib.import_module(name))
        return loaded[-1]

    yield load
    for mod in loaded:
        mod.Mine._checked = False
        sys.modules.pop(mod.__name__, None)


def test_changing_a_studys_code_gives_a_new_run_id(tmp_path, user_modules):
    """Regression: the id hashed the dials and a fixed version string, so results of old code kept coming back."""
    _write_study(tmp_path, "wb_user_study_a", 1.0)
    mod = user_modules("wb_user_study_a")
    store = wb.Store(tmp_path / "data")
    first = wb.run("wb_user_study_a", progress=False, store=store)  # found although defined after the first lookup
    assert first.status == "done" and first.current and float(first.ds.loss[0]) == 1.0
    before = code_fingerprint(mod.Mine)
    _write_study(tmp_path, "wb_user_study_a", 2.0)  # the code changes (a re-run cell: the later class wins)
    mod2 = user_modules("wb_user_study_a")
    assert code_fingerprint(mod2.Mine) != before
    second = wb.run("wb_user_study_a", progress=False, store=store)
    assert second.id != first.id and float(second.ds.loss[0]) == 2.0
    old = wb.load(first.id, store=store)  # the old run stays readable, marked as made by other code
    assert old.status == "done" and not old.current and "made by other code" in repr(old)


def test_package_fingerprints_follow_the_imports():
    """A study's fingerprint covers its module and what it imports, not the dashboard or the store."""
    from workbench.runs import identity

    files = {str(p.relative_to(identity.ROOT)) for p in identity._closure(["workbench.studies.label_noise"])}
    assert {"studies/label_noise.py", "studies/base.py", "engine/ensemble.py", "engine/precision.py",
            "noise/formats.py", "noise/labels.py", "datasets.py", "models.py"} <= files
    assert not any(f.startswith(("viz/", "runs/")) or f in ("cli.py", "reproduce.py") for f in files)
    assert "studies/diffusion.py" not in files
    fps = {key: code_fingerprint(get_study(key)) for key in STUDIES}
    assert len(set(fps.values())) == len(fps)
    cfg = get_study("label_noise").configure()
    assert run_id(cfg) == run_id(get_study("label_noise").configure()) and len(run_id(cfg)) == 12


def test_old_catalog_rows_without_a_fingerprint_are_marked(data_root, capsys):
    store = wb.Store(data_root)
    run = wb.run("label_noise", epochs=1, n_train=100, width=8, loss_snapshots=0, progress=False, store=store)
    assert run.current
    main(["runs"])
    assert "current" in capsys.readouterr().out
    with sqlite3.connect(store.catalog) as con:
        con.execute("UPDATE runs SET code = '' WHERE id = ?", (run.id,))
    assert not wb.load(run.id, store=store).current
    main(["runs"])
    out = capsys.readouterr().out
    assert run.id in out and "other" in out and "computed by another version" in out
    assert browser.Catalog(store).frame(browser.Catalog(store).rows())["code"].tolist() == ["other"]


# -- the other regressions of the protocol issue ------------------------------------------------------------------
def test_to_dataset_keeps_a_metric_that_first_appears_later():
    ctx = Context(pick_device("cpu"))
    ctx.emit({"epoch": 0, "step": 0, "a": 1.0})
    ctx.emit({"epoch": 1, "step": 5, "a": 2.0, "b": 3.0})
    ds = to_dataset(ctx, "epoch")
    assert list(ds.b.values[1:]) == [3.0] and np.isnan(ds.b.values[0])


def test_held_out_images_are_never_copies_of_training_images():
    """Regression: 94 % (digits_images) and 59 % (bright_dark) of held-out images were copies of training ones."""
    from workbench import datasets

    for name in datasets.IMAGES:
        train, held = datasets.images(name, 1000, torch.Generator().manual_seed(0), 8, n_held=2000)
        d = torch.cdist(held, train).min(1).values
        # bright_dark's ±0.7 brightness: the same digit in the other brightness is 1.4 per pixel away anyway
        assert (d > 1e-6).all(), name
    train, held = datasets.images("digits_images", 1000, torch.Generator().manual_seed(0), 16, n_held=100)
    assert train.shape == (1000, 256) and held.shape == (100, 256)


@pytest.mark.parametrize("dials", [dict(precision="fp8_e4m3", scale="tensor"), dict(precision="mxfp6_e3m2"),
                                   dict(precision="int8"), dict(precision="fp6_e3m2", scale="channel"),
                                   dict(precision="custom", exp_bits=3, man_bits=1, scale="none")])
def test_stochastic_rounding_in_a_group_equals_rounding_alone(dials):
    """Regression: stochastic rounding drew from one generator seeded by the group's first config. Each model
    draws its own uniforms, in every rounding path (per tensor, per channel, MX blocks, integers, unscaled)."""
    cls = get_study("precision")
    base = {**cls.tiny, "width": 32, "rounding": "stochastic", **dials}
    configs = [cls.configure(**base, seed=s) for s in (0, 1, 2)]
    group, _ = _train(cls, configs)
    for m, cfg in enumerate(configs):
        alone, _ = _train(cls, [cfg])
        for v in ("train_loss", "test_acc", "underflow_gradients"):
            assert _same(group[v].isel(model=m).values, alone[v].isel(model=0).values), (dials, m, v)


@pytest.mark.parametrize("dials, other", [
    (dict(dropout=0.3), dict(dropout=0.0)),  # a model without dropout beside one with it draws nothing
    (dict(grad_noise=0.3, noise_correlation=1.0), dict(grad_noise=0.0)),  # nor one without gradient noise
    (dict(grad_noise=0.3), dict(grad_noise=0.1, noise_correlation=0.5)),
    (dict(selection="fixed_k", keep_fraction=0.5), dict(selection="fixed_k", keep_fraction=0.8)),
    (dict(selection="adaptive_k"), dict(selection="adaptive_k", flip_rate=0.1)),
])
def test_dropout_and_sample_selection_in_a_group_equal_them_alone(dials, other):
    """Dropout masks, gradient noise and the selection's running threshold are each model's own: per-model rates,
    streams and state."""
    cls = get_study("label_noise")
    configs = [cls.configure(**cls.tiny, seed=1, **dials), cls.configure(**cls.tiny, seed=2, **other)]
    group, _ = _train(cls, configs)
    for m, cfg in enumerate(configs):
        alone, _ = _train(cls, [cfg])
        for v in ("train_loss", "test_acc", "selected", "selected_flipped", "memorized"):
            assert _same(group[v].isel(model=m).values, alone[v].isel(model=0).values), (dials, m, v)
