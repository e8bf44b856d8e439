"""A user's own model (a factory named by an import path) and data (a torch Dataset, an image folder, a Hugging Face
dataset): trained like the built-in ones, their source and content part of the run id, bad ones refused by name."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import workbench as wb
from workbench.cli import main
from workbench.datasets import _arrays_digest
from workbench.errors import ConfigError
from workbench.runs.run import run_id
from workbench.studies import get

FAST = dict(epochs=3, n_train=300, width=16, seed=0)

NETS = """
import torch
from torch import nn
from workbench.models import MLP, init_


class Residual(nn.Module):
    def __init__(self, d, w, c):
        super().__init__()
        self.inp, self.out = nn.Linear(d, w), nn.Linear(w, c)
        self.block = nn.Sequential(nn.LayerNorm(w), nn.Linear(w, w), nn.GELU())

    def forward(self, x):
        h = self.inp(x)
        return self.out(h + self.block(h))


def make_residual(input_dim, num_classes, width):  # takes some of the arguments; init from torch's default
    return Residual(input_dim, width, num_classes)


def make_mlp(input_dim, num_classes, width, depth, generator):  # the built-in MLP, built by the user
    return init_(MLP(input_dim, width, depth, num_classes), generator)


def make_batchnorm(input_dim, num_classes):
    return nn.Sequential(nn.Linear(input_dim, 8), nn.BatchNorm1d(8), nn.Linear(8, num_classes))


def make_wrong_width(input_dim):
    return nn.Linear(input_dim, 3)


def make_not_a_module(input_dim):
    return "a string"


def needs_more(input_dim, hidden_size):
    return nn.Linear(input_dim, 10)
"""

DATA = """
import numpy as np
import torch
from torch.utils.data import Dataset

ARRAYS = np.load(__file__.replace("mydata.py", "digits.npz"))


class Pairs(Dataset):
    def __len__(self):
        return len(ARRAYS["y"])

    def __getitem__(self, i):
        return torch.as_tensor(ARRAYS["X"][i]), int(ARRAYS["y"][i])


def make():
    return Pairs()


train = Pairs()


class Dicts(Pairs):
    def __getitem__(self, i):
        return {"pixel_values": ARRAYS["X"][i], "label": ARRAYS["y"][i]}


dicts = Dicts()


class Stream(torch.utils.data.IterableDataset):
    def __iter__(self):
        yield from ()


stream = Stream()


class Ragged(Pairs):
    def __getitem__(self, i):
        return np.zeros(3 + (i == 5)), 0


ragged = Ragged()
"""


@pytest.fixture
def user_code(tmp_path, monkeypatch):
    """A user's modules in a folder of their own on the path: mynets (models) and mydata (a torch Dataset over 8×8
    digit images, saved also as digits.npz)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    np.savez(tmp_path / "digits.npz", X=(d.images[:400] / 16).astype(np.float32), y=d.target[:400])
    (tmp_path / "mynets.py").write_text(NETS)
    (tmp_path / "mydata.py").write_text(DATA)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for m in ("mynets", "mydata"):
        sys.modules.pop(m, None)


def test_a_factory_model_trains_and_its_seeds_batch_as_they_run_alone(user_code):
    run = wb.run("label_noise", model="mynets:make_residual", **{**FAST, "epochs": 12}, progress=False)
    acc = run.ds["test_acc"].values
    assert run.status == "done" and acc[-1] > acc[0] + 0.3, acc  # it learns digits, well past chance
    batch = wb.sweep("label_noise", {"flip_rate": [0.4]}, seeds=[0, 1], model="mynets:make_residual",
                     **{k: v for k, v in FAST.items() if k != "seed"}, progress=False)
    alone = wb.run("label_noise", model="mynets:make_residual", **{**FAST, "seed": 1}, progress=False)
    np.testing.assert_allclose(batch.ds["test_loss"].sel(seed=1).values.ravel(), alone.ds["test_loss"].values,
                               rtol=1e-5)


def test_a_factory_building_the_mlp_trains_as_the_built_in_mlp(user_code):
    """The generic torch.func path and the stacked MLP's own matmuls train the same net to the same numbers."""
    mine = wb.run("label_noise", model="mynets:make_mlp", **FAST, progress=False)
    builtin = wb.run("label_noise", model="mlp", **FAST, progress=False)
    assert mine.id != builtin.id
    np.testing.assert_allclose(mine.ds["train_loss"].values, builtin.ds["train_loss"].values, rtol=1e-4)
    np.testing.assert_allclose(mine.ds["test_acc"].values, builtin.ds["test_acc"].values, atol=0.01)


def test_the_factorys_source_is_part_of_the_run_id(user_code):
    cls = get("label_noise")
    before = run_id(cls.configure(model="mynets:make_residual", **FAST))
    assert run_id(cls.configure(model="mynets:make_residual", **FAST)) == before
    run = wb.run("label_noise", model="mynets:make_residual", **FAST, progress=False)
    assert run.id == before
    nets = user_code / "mynets.py"
    nets.write_text(nets.read_text().replace("nn.GELU()", "nn.Tanh()"))
    os.utime(nets, ns=(1, 1))  # a different stamp even on a coarse clock
    after = run_id(cls.configure(model="mynets:make_residual", **FAST))
    assert after != before
    again = wb.run("label_noise", model="mynets:make_residual", **FAST, progress=False)
    assert again.id == after and not np.allclose(again.ds["train_loss"].values, run.ds["train_loss"].values)
    import mynets  # the edited file was loaded again: what ran is what the id names

    assert "Tanh" in repr(mynets.make_residual(4, 2, 3))


@pytest.mark.parametrize("path, said", [
    ("mynets:nope", "module 'mynets' has no 'nope'"),
    ("no_such_module:f", "'no_such_module' is not found"),
    ("mynets:make_batchnorm", "vmap"),
    ("mynets:make_wrong_width", "(B, 10) logits"),
    ("mynets:make_not_a_module", "returns a torch.nn.Module"),
    ("mynets:needs_more", "hidden_size"),
    ("not a path", "import path"),
])
def test_a_bad_factory_is_refused_by_name_before_any_work(user_code, path, said, data_root):
    with pytest.raises(ConfigError) as e:
        wb.run("label_noise", model=path, **FAST, progress=False)
    assert e.value.field == "model" and said in str(e.value)
    assert not (data_root / "runs").exists() or not any((data_root / "runs").iterdir())


def test_a_factory_model_refuses_the_dials_of_the_mlp(user_code):
    with pytest.raises(ConfigError) as e:
        wb.run("label_noise", model="mynets:make_residual", precision="bf16", **FAST, progress=False)
    assert e.value.field == "precision"


def test_the_cli_and_the_schema_take_an_import_path(user_code, capsys):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(user_code), os.environ.get("PYTHONPATH", "")])}
    exe = os.path.join(os.path.dirname(sys.executable), "workbench")
    out = subprocess.run([exe, "run", "label_noise", "--model", "mynets:make_residual", "--epochs", "2",
                          "--n-train", "300", "--width", "16", "--json"], capture_output=True, text=True, env=env,
                         timeout=180)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["params"]["model"] == "mynets:make_residual"
    bad = subprocess.run([exe, "run", "label_noise", "--model", "mynets:nope"], capture_output=True, text=True,
                         env=env, timeout=120)
    assert bad.returncode == 2 and "model='mynets:nope'" in bad.stderr
    assert main(["dials", "label_noise", "--schema"]) == 0
    model = json.loads(capsys.readouterr().out)["properties"]["model"]
    import jsonschema

    for ok in ("mlp", "mypkg.nets:make_resnet"):
        jsonschema.validate(ok, model)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate("resnet", model)


# -- data ---------------------------------------------------------------------------------------------------------
def _npz_run(user_code, **dials):
    return wb.run("label_noise", dataset="npz", data_path=str(user_code / "digits.npz"), **FAST, **dials,
                  progress=False)


@pytest.mark.parametrize("dataset", ["mydata:make", "mydata:train", "mydata:dicts"])
def test_a_torch_dataset_trains_as_the_same_arrays_in_an_npz(user_code, dataset):
    """Converted once into the workbench's arrays: the same examples in the same order split and train to the same
    numbers as the .npz holding them (images keep their shape: the CNN runs on them)."""
    mine = wb.run("label_noise", dataset=dataset, model="cnn", **FAST, progress=False)
    ref = _npz_run(user_code, model="cnn")
    assert mine.id != ref.id
    np.testing.assert_array_equal(mine.ds["test_acc"].values, ref.ds["test_acc"].values)
    np.testing.assert_array_equal(mine.ds["noisy_label"].values, ref.ds["noisy_label"].values)


def test_an_image_folder_trains_as_its_images_in_an_npz(user_code, tmp_path):
    from PIL import Image

    arrays = np.load(user_code / "digits.npz")
    x8 = np.round(arrays["X"] * 255).astype(np.uint8)
    folder = tmp_path / "images"
    for i, (im, label) in enumerate(zip(x8, arrays["y"])):
        (folder / f"digit_{label}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(im).save(folder / f"digit_{label}" / f"{i:04d}.png")
    # the folder's order: by class folder, then by file name
    order = sorted(range(len(x8)), key=lambda i: (arrays["y"][i], i))
    np.savez(tmp_path / "same.npz", X=x8[order].astype(np.float32) / 255, y=arrays["y"][order])
    mine = wb.run("label_noise", dataset="folder", data_path=str(folder), **FAST, progress=False)
    ref = wb.run("label_noise", dataset="npz", data_path=str(tmp_path / "same.npz"), **FAST, progress=False)
    np.testing.assert_array_equal(mine.ds["test_acc"].values, ref.ds["test_acc"].values)
    # a changed image changes the id; a broken one is refused naming it
    cls = get("label_noise")
    before = run_id(cls.configure(dataset="folder", data_path=str(folder), **FAST))
    Image.fromarray(255 - x8[0]).save(folder / f"digit_{arrays['y'][0]}" / "0000.png")
    assert run_id(cls.configure(dataset="folder", data_path=str(folder), **FAST)) != before
    (folder / "digit_3" / "zz.png").write_bytes(b"not an image")
    with pytest.raises(ConfigError) as e:
        cls.configure(dataset="folder", data_path=str(folder), **FAST)
    assert e.value.field == "data_path" and "zz.png" in str(e.value)


def test_a_hugging_face_dataset_trains_as_its_arrays_in_an_npz(user_code, tmp_path):
    import datasets as hf  # the [data] extra, which `make test` installs: missing, this fails (not skipped)
    from PIL import Image

    arrays = np.load(user_code / "digits.npz")
    x8 = np.round(arrays["X"] * 255).astype(np.uint8)
    hf.Dataset.from_dict({"image": [Image.fromarray(im) for im in x8], "label": arrays["y"].tolist()}) \
        .save_to_disk(str(tmp_path / "hf"))
    np.savez(tmp_path / "same.npz", X=x8.astype(np.float32) / 255, y=arrays["y"])
    mine = wb.run("label_noise", dataset="hf", data_path=str(tmp_path / "hf"), **FAST, progress=False)
    ref = wb.run("label_noise", dataset="npz", data_path=str(tmp_path / "same.npz"), **FAST, progress=False)
    np.testing.assert_array_equal(mine.ds["test_acc"].values, ref.ds["test_acc"].values)


@pytest.mark.parametrize("dials, field, said", [
    (dict(dataset="mydata:stream"), "dataset", "map-style"),
    (dict(dataset="mydata:ragged"), "dataset", "one shape"),
    (dict(dataset="mydata:nothing"), "dataset", "has no 'nothing'"),
    (dict(dataset="folder"), "data_path", "folder of images"),
    (dict(dataset="folder", data_path="/no/such/folder"), "data_path", "existing folder"),
    (dict(dataset="hf", data_path="/no/such/folder"), "data_path", "save_to_disk"),
])
def test_bad_data_is_refused_by_name(user_code, dials, field, said):
    with pytest.raises(ConfigError) as e:
        get("label_noise").configure(**{**FAST, **dials})
    assert e.value.field == field and said in str(e.value)


def test_a_data_set_larger_than_memory_allows_is_refused_before_loading(user_code, monkeypatch):
    monkeypatch.setenv("WORKBENCH_MAX_DATA_BYTES", "10000")
    with pytest.raises(ConfigError) as e:
        get("label_noise").configure(dataset="mydata:make", **FAST)
    assert "WORKBENCH_MAX_DATA_BYTES" in str(e.value) and "400 examples" in str(e.value)


def test_the_loaders_source_and_the_data_content_are_part_of_the_run_id(user_code):
    from workbench.runs.identity import identity

    cls = get("label_noise")
    first = identity(cls.configure(dataset="mydata:make", **FAST))
    arrays = dict(np.load(user_code / "digits.npz"))
    x, y = arrays["X"], arrays["y"]
    assert first["data"] == {"mydata:make": _arrays_digest(x, y)}  # the content as converted
    long_tailed = identity(cls.configure(dataset="mydata:make", imbalance=2.0, **FAST))
    assert long_tailed["data"] == first["data"]  # a training set made long-tailed keeps its source's digest
    y[:5] = (y[:5] + 1) % 10
    np.savez(user_code / "digits.npz", X=x, y=y)
    src = user_code / "mydata.py"  # the module reads the file when it is imported: an edit loads it again
    src.write_text(src.read_text() + "\n# edited\n")
    os.utime(src, ns=(1, 1))
    second = identity(cls.configure(dataset="mydata:make", **FAST))
    assert second["code"] != first["code"]  # the loader's source
    assert second["data"] == {"mydata:make": _arrays_digest(x, y)} != first["data"]  # what it loaded


def test_the_page_takes_a_typed_import_path_and_names_a_bad_one(user_code, store):
    from workbench.viz.page import StudyPage

    from .test_app import run_job

    page = StudyPage("label_noise", store=store)
    page.panel()
    box = page.dials["model"]
    assert {"mlp", "cnn"} <= set(box.options) and box.value == "mlp"  # offered, and any path may be typed
    for k, v in dict(epochs=2, width=16, n_train=300).items():
        page.dials[k].value = v
    box.value = "mynets:nope"
    page._on_run()
    assert page.alert.visible and "module 'mynets' has no 'nope'" in page.alert.object and store.list() == []
    box.value = "mynets:make_residual"
    run_job(page)
    page.tick()  # what the periodic callback does
    assert page.last_run.status == "done" and page.last_run.meta["params"]["model"] == "mynets:make_residual"
