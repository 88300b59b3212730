"""Your own model (models/NAME.py) and torchvision's: resolved, inlined into the notebook, part of the code
hash, checked on a dummy batch before anything is pushed, trained by `run`, by packs and on resume; ImageNet
weights found under the inputs; the scratch engine refusing what it cannot build."""

from __future__ import annotations

import json

import nbformat
import pytest
import torch
from click.testing import CliRunner
from helpers import snapshot, write_experiment

from kagglerun.cli import main
from kagglerun.core.contract import read_history
from kagglerun.core.models import ModelError, build_model, find_weight_file
from kagglerun.errors import ExperimentError
from kagglerun.notebook.render import default_owner, render_experiments, render_packs
from kagglerun.runs.ledger import Ledger, Record, Version
from kagglerun.runs.push import plan_push
from kagglerun.states import PlanAction

MODEL = '''\
"""A tiny CNN for tests."""
from torch import nn


def build(in_channels, image_size, num_classes, hidden=8):
    side = image_size // 4
    return nn.Sequential(nn.Conv2d(in_channels, hidden, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4),
                         nn.Flatten(), nn.Linear(hidden * side * side, num_classes))
'''

def PARAMS(hidden: int) -> int:  # noqa: N802 (the tiny model's parameter count on 1x28x28, 10 classes)
    return hidden * 9 + hidden + hidden * 49 * 10 + 10


OWN = """\
description = "a workspace model on synthetic data"
[model]
name = "{model}"
args = {{ hidden = {hidden} }}
[data]
dataset = "synthetic"
synthetic_like = "mnist"
synthetic_train = 512
synthetic_test = 64
augment = false
mean = [0.5]
std = [0.5]
[training]
optimizer = "{optimizer}"
lr = 0.01
epochs = {epochs}
batch_size = 32
device = "cpu"
channels_last = false
"""


def own(ws, name="own", model="tinynet", hidden=8, epochs=1, optimizer="adam", source=MODEL):
    ws.models.mkdir(exist_ok=True)
    (ws.models / f"{model}.py").write_text(source)
    write_experiment(ws, name, OWN.format(model=model, hidden=hidden, epochs=epochs, optimizer=optimizer))


def notebook_of(folder):
    return nbformat.read(folder / f"{folder.name}.ipynb", as_version=4)


def test_a_workspace_model_is_inlined_readable_and_its_content_decides_the_code_hash(workspace):
    own(workspace)
    (folder,) = render_experiments(workspace, ["own"])
    nb = notebook_of(folder)
    cell = next(c.source for c in nb.cells if c.source.startswith("%%writefile kagglerun_payload/models/tinynet.py"))
    assert cell.split("\n", 1)[1] == MODEL.rstrip()  # the file as it is
    assert "models/tinynet.py" in nb.cells[0].source  # the header lists it among the notebook's code
    first = nb.metadata["kagglerun"]["core_hash"]
    (again,) = render_experiments(workspace, ["own"])
    assert notebook_of(again).metadata["kagglerun"]["core_hash"] == first  # unchanged file: same hash
    (workspace.models / "tinynet.py").write_text(MODEL.replace("hidden=8", "hidden=6"))
    (edited,) = render_experiments(workspace, ["own"])
    assert notebook_of(edited).metadata["kagglerun"]["core_hash"] != first
    assert not any("models/" in c.source.split("\n")[0] for c in notebook_of(render_experiments(
        workspace, ["tiny"])[0]).cells)  # a built-in model's notebook carries no models/


def test_editing_only_the_model_file_makes_push_dry_run_say_changed(workspace):
    own(workspace)
    owner = default_owner()
    (plan,) = plan_push(workspace, ["own"], owner)
    assert plan.action == PlanAction.PUSH and plan.reason == "never pushed"
    with Ledger(workspace.results).update() as entries:
        entries["own"] = Record(plan.kernel, [Version(1, plan.settings_hash, plan.core_hash, "2026-01-01T00:00:00+00:00",
                                                      state="complete", run_state="complete")])
    assert plan_push(workspace, ["own"], owner)[0].action == PlanAction.SKIP  # unchanged file: not pushed
    result = CliRunner().invoke(main, ["push", "own", "--dry-run"])
    assert result.exit_code == 0 and "skipped" in result.output, result.output
    (workspace.models / "tinynet.py").write_text(MODEL + "# a comment is a change too\n")
    (plan,) = plan_push(workspace, ["own"], owner)
    assert plan.action == PlanAction.PUSH and plan.reason.startswith("code changed since v1")
    result = CliRunner().invoke(main, ["push", "own", "--dry-run"])
    assert result.exit_code == 0 and "would push" in result.output and "code changed" in result.output, result.output


BAD_MODELS = [
    (None, "model.name: no model 'tinynet': no file"),
    ("x = 1\n", "defines no build(in_channels, image_size, num_classes, **args)"),
    ("def build(c, s, k, **a):\n    raise RuntimeError('boom')\n", "build(1, 28, 10, hidden=8) raised RuntimeError: boom"),
    ("def build(c, s, k, **a):\n    return 3\n", "build() returned int, not a torch.nn.Module"),
    ("from torch import nn\ndef build(c, s, k, **a):\n    return nn.Flatten()\n",
     "a dummy batch [2, 1, 28, 28] gives output (2, 784), expected [2, 10]"),
    ("from torch import nn\ndef build(c, s, k, **a):\n    return nn.Linear(3, k)\n", "a dummy batch [2, 1, 28, 28] fails"),
    ("def build(:\n", "cannot be imported: SyntaxError"),
]


@pytest.mark.parametrize("source, expected", BAD_MODELS, ids=["missing", "no-build", "raises", "not-a-module",
                                                              "wrong-shape", "forward-fails", "syntax"])
def test_every_bad_model_file_is_one_line_naming_it_before_anything_is_pushed(workspace, source, expected):
    own(workspace, source=source or MODEL)
    if source is None:
        (workspace.models / "tinynet.py").unlink()
    before = snapshot(workspace.root / "build"), snapshot(workspace.results)
    for command in (["render", "own"], ["push", "own", "--dry-run"], ["run", "own"]):
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 1, (command, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0] and "tinynet.py" in lines[0], (command, result.output)
    assert (snapshot(workspace.root / "build"), snapshot(workspace.results)) == before


def test_a_workspace_model_wins_over_the_built_in_of_that_name_and_show_says_so(workspace):
    own(workspace, model="c5l3")
    result = CliRunner().invoke(main, ["show", "own"])
    assert result.exit_code == 0, result.output
    assert "wins over the built-in c5l3" in result.output and "models/c5l3.py" in result.output
    (folder,) = render_experiments(workspace, ["own"])
    assert any(c.source.startswith("%%writefile kagglerun_payload/models/c5l3.py") for c in notebook_of(folder).cells)
    assert "the built-in c5l3" in CliRunner().invoke(main, ["show", "tiny"]).output


@pytest.mark.parametrize("text, expected", [
    ('extends = "tiny"\nengine = "scratch"\n[model]\nname = "tinynet"\n', "the scratch engine builds only its own c5l3"
     " and resnet18, not the workspace model"),
    ('extends = "tiny"\nengine = "scratch"\n[model]\nname = "torchvision:resnet18"\n', "engine: the scratch engine"),
    ('extends = "tiny"\nengine = "scratch"\n[model]\nname = "vgg16"\n', "not the built-in vgg16"),
    ('extends = "tiny"\n[model]\nname = "c5l3"\npretrained = true\n', "model.pretrained: only torchvision models"),
    ('extends = "tiny"\n[model]\nargs = { depth = 3 }\n', "model.args: only workspace and torchvision models"),
    ('extends = "tiny"\n[model]\nname = "torchvision:resnet181"\n', "torchvision has no classifier 'resnet181'; did you"),
    ('extends = "tiny"\n[model]\nname = "my-net"\n', "model.name: 'my-net' is not a model name"),
    ('extends = "tiny"\n[kaggle]\nmodel_sources = ["me/resnet"]\n', "kaggle.model_sources: 'me/resnet' is not"),
])
def test_what_a_model_cannot_be_is_one_line_naming_file_and_key(workspace, text, expected):
    own(workspace, name="ok")
    path = write_experiment(workspace, "bad", text)
    with pytest.raises(ExperimentError) as err:
        workspace.store().load("bad")
    assert expected in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)
    result = CliRunner().invoke(main, ["render", "bad"])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1 and expected in result.output


def test_torchvision_models_are_adapted_to_channels_and_classes_and_take_model_args(workspace):
    net = build_model({"name": "torchvision:resnet18", "args": {}}, 1, 32, 7)
    assert net.conv1.in_channels == 1 and net(torch.zeros(2, 1, 32, 32)).shape == (2, 7)
    net = build_model({"name": "torchvision:squeezenet1_1", "args": {"dropout": 0.2}}, 3, 64, 4)
    assert net(torch.zeros(2, 3, 64, 64)).shape == (2, 4)
    write_experiment(workspace, "tv", 'extends = "tiny"\n[model]\nname = "torchvision:resnet18"\n'
                                      '[kaggle]\nmodel_sources = ["me/resnet18/pytorch/default/1"]\n')
    (folder,) = render_experiments(workspace, ["tv"])
    assert json.loads((folder / "kernel-metadata.json").read_text())["model_sources"] == ["me/resnet18/pytorch/default/1"]
    write_experiment(workspace, "tv_small", 'extends = "tiny"\n[model]\nname = "torchvision:alexnet"\n')
    with pytest.raises(ExperimentError, match=r"torchvision:alexnet: a dummy batch \[2, 1, 28, 28\] fails"):
        render_experiments(workspace, ["tv_small"])  # too small an image for it: said at render


def test_push_warns_of_pretrained_weights_a_kernel_could_not_reach(workspace):
    base = 'extends = "tiny"\n[model]\nname = "torchvision:resnet18"\npretrained = true\n'
    write_experiment(workspace, "pre", base)
    write_experiment(workspace, "pre_attached", base + '[kaggle]\nmodel_sources = ["me/resnet18/pytorch/default/1"]\n')
    result = CliRunner().invoke(main, ["push", "pre", "pre_attached", "--dry-run"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "warning: pre: model.pretrained, but kaggle.internet is false and nothing is attached" in text
    assert "pre_attached: model.pretrained" not in text

def test_pretrained_weights_are_found_under_the_inputs_and_a_missing_file_says_where_it_looked(tmp_path, monkeypatch):
    import torchvision

    inputs, cache = tmp_path / "input", tmp_path / "torch"
    monkeypatch.setenv("KAGGLERUN_INPUT", str(inputs))
    monkeypatch.setenv("TORCH_HOME", str(cache))
    model = {"name": "torchvision:resnet18", "args": {}, "pretrained": True}
    with pytest.raises(ModelError) as err:
        build_model(model, 3, 32, 5)
    message = str(err.value)
    assert "no weight file resnet18-f37072fd.pth for torchvision:resnet18" in message and "\n" not in message
    assert str(inputs) in message and str(cache) in message and "kaggle.model_sources" in message
    assert "kaggle.internet = true" in message
    # A weight file attached as a Kaggle model: mounted somewhere below the inputs, named as torchvision names it
    saved = torchvision.models.resnet18().state_dict()
    attached = inputs / "resnet18" / "pytorch" / "default" / "1" / "resnet18-f37072fd.pth"
    attached.parent.mkdir(parents=True)
    torch.save(saved, attached)
    assert find_weight_file("resnet18-f37072fd.pth") == attached
    net = build_model(model, 1, 32, 5)
    assert net.fc.out_features == 5 and net(torch.zeros(2, 1, 32, 32)).shape == (2, 5)
    assert torch.equal(net.layer1[0].conv1.weight, saved["layer1.0.conv1.weight"])  # the attached weights
    assert torch.allclose(net.conv1.weight, saved["conv1.weight"].sum(1, keepdim=True))  # RGB folded into grey
    attached.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="resnet18-f37072fd.pth: not a readable weight file"):
        build_model(model, 3, 32, 5)


# --- slow: training through `kagglerun run`, a pack and resume ---------------------------------------------

@pytest.mark.slow
def test_a_workspace_model_trains_through_run_resumes_and_refuses_an_edited_files_checkpoint(workspace):
    own(workspace, epochs=2)
    result = CliRunner().invoke(main, ["run", "own", "--epochs", "1"])
    assert result.exit_code == 0, result.output
    out = workspace.result_dir("own")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["state"] == "complete" and summary["params"] == PARAMS(8)
    result = CliRunner().invoke(main, ["run", "own"])  # two epochs: continues from the first
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed_from_epoch"] == 1 and summary["epochs_done"] == 2 and len(read_history(out / "history.csv")) == 2
    assert summary["best_test_acc"] > 50.0  # synthetic classes are easy to tell apart
    (workspace.models / "tinynet.py").write_text(MODEL.replace("hidden=8", "hidden=4"))
    write_experiment(workspace, "own", OWN.format(model="tinynet", hidden=8, epochs=3, optimizer="adam"))
    result = CliRunner().invoke(main, ["run", "own"])
    assert result.exit_code == 1 and "written by different settings or model file" in result.output


@pytest.mark.slow
def test_both_members_of_a_pack_train_their_workspace_models(workspace, tmp_path, monkeypatch):
    from kagglerun.core.pack import PACK_PROCESSES_ENV
    from kagglerun.notebook.execute import execute_notebook

    own(workspace, name="own_a", model="tinynet", hidden=4)
    own(workspace, name="own_b", model="widenet", hidden=6, optimizer="sgd", source=MODEL.replace("tiny", "wide"))
    (folder,) = render_packs(workspace, [workspace.store().load_many(["own_a", "own_b"])])
    monkeypatch.setenv(PACK_PROCESSES_ENV, "1")  # one process per member, as on a T4 x2
    out = tmp_path / "working"
    execute_notebook(folder / f"{folder.name}.ipynb", out, timeout=300)
    for name, hidden in (("own_a", 4), ("own_b", 6)):
        summary = json.loads((out / name / "summary.json").read_text())
        assert summary["state"] == "complete" and summary["params"] == PARAMS(hidden)
    assert (out / "kagglerun_payload" / "models" / "widenet.py").read_text() == MODEL.replace("tiny", "wide")


@pytest.mark.slow
def test_a_pack_of_workspace_models_through_the_emulator_and_a_model_edit_pushes_it_again(tmp_path, monkeypatch):
    from helpers import client_env, make_workspace, start_emulator

    from kagglerun.workspace import Workspace

    ws = Workspace(make_workspace(tmp_path / "ws", {}))
    own(ws, name="own_a", model="tinynet", hidden=4)
    own(ws, name="own_b", model="widenet", hidden=6, source=MODEL.replace("tiny", "wide"))
    emulator = start_emulator(tmp_path / "emu", workers=1, gpu_session_cap=2)
    try:
        client_env(monkeypatch, tmp_path / "home", emulator.url)
        monkeypatch.chdir(ws.root)
        for args in (["push", "--pack", "own_a,own_b"], ["status", "--watch", "--interval", "0.5"], ["pull", "--all"]):
            result = CliRunner().invoke(main, args, catch_exceptions=False)
            assert result.exit_code == 0, (args, result.output)
        for name, hidden in (("own_a", 4), ("own_b", 6)):
            summary = json.loads((ws.result_dir(name) / "summary.json").read_text())
            assert summary["state"] == "complete" and summary["params"] == PARAMS(hidden), name
        result = CliRunner().invoke(main, ["push", "--pack", "own_a,own_b", "--dry-run"])
        assert result.exit_code == 0 and "would" not in result.output, result.output  # unchanged: skipped
        (ws.models / "widenet.py").write_text(MODEL.replace("tiny", "wide") + "# edited\n")
        result = CliRunner().invoke(main, ["push", "--pack", "own_a,own_b", "--dry-run"])
        assert result.exit_code == 0 and "would push" in result.output and "code changed" in result.output, result.output
    finally:
        emulator.stop()


# --- issue 13's first "done when": a new user's own study, from `kagglerun init` ----------------------------

STUDY = """\
description = "my own CNN on my own images"

[model]
name = "stripes_cnn"
args = { channels = 8 }

[data]
dataset = "imagefolder"
path = "stripes"
image_size = 16
test_split = 0.25
val_split = 0.2
augment = false
mean = [0.5, 0.5, 0.5]
std = [0.5, 0.5, 0.5]

[training]
optimizer = "adamw"
weight_decay = 0.01
lr = 3e-3
lr_schedule = "cosine"
warmup_epochs = 1
label_smoothing = 0.1
grad_clip_norm = 1.0
epochs = 4
batch_size = 16
device = "cpu"
"""

STRIPES_CNN = '''\
"""A user's own network for 3-channel images of any size."""
from torch import nn


def build(in_channels, image_size, num_classes, channels=8):
    return nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(channels * (image_size // 2) ** 2, num_classes))
'''


@pytest.mark.slow
def test_a_new_users_own_model_on_own_images_trains_with_run_and_the_summary_gives_the_val_chosen_epoch(
        tmp_path, monkeypatch):
    from test_own_data_run import write_stripes

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KAGGLERUN_WORKSPACE", raising=False)
    monkeypatch.delenv("KAGGLERUN_DATA", raising=False)
    assert CliRunner().invoke(main, ["init"]).exit_code == 0
    (tmp_path / "models" / "stripes_cnn.py").write_text(STRIPES_CNN)
    (tmp_path / "experiments" / "study.toml").write_text(STUDY)
    write_stripes(tmp_path / "data" / "stripes")  # PNGs in ImageFolder layout, one folder per class
    result = CliRunner().invoke(main, ["run", "study"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "results" / "study"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["state"] == "complete" and summary["selection"] == "val" and summary["num_classes"] == 3
    assert summary["params"] == 3 * 8 * 9 + 8 + 2 * 8 + 8 * 64 * 3 + 3  # the user's network, built for 3 classes
    history = read_history(out / "history.csv")
    assert summary["best_epoch"] == max(history, key=lambda r: (r["val_acc"], -r["epoch"]))["epoch"]
    assert summary["test_acc_at_best"] == history[summary["best_epoch"] - 1]["test_acc"]
    assert summary["test_acc_at_best"] >= 80.0, summary  # chance is 33 %
    assert (out / "kagglerun_payload" / "models" / "stripes_cnn.py").read_text() == STRIPES_CNN


@pytest.mark.slow
def test_the_same_study_through_the_emulator_trains_the_users_model_to_a_real_accuracy(tmp_path, monkeypatch):
    from helpers import client_env, start_emulator
    from test_own_data_run import write_stripes

    root = tmp_path / "study"
    assert CliRunner().invoke(main, ["init", str(root)]).exit_code == 0
    (root / "models" / "stripes_cnn.py").write_text(STRIPES_CNN)
    (root / "experiments" / "study.toml").write_text(STUDY.replace("epochs = 4", "epochs = 3"))
    data = tmp_path / "data"
    write_stripes(data / "stripes")
    emulator = start_emulator(tmp_path / "emu", workers=1, data_dir=data)
    try:
        client_env(monkeypatch, tmp_path / "home", emulator.url)
        monkeypatch.chdir(root)
        for args in (["push", "study", "--wait", "--poll", "0.5"], ["pull", "study"]):
            result = CliRunner().invoke(main, args, catch_exceptions=False)
            assert result.exit_code == 0, (args, result.output)
    finally:
        emulator.stop()
    summary = json.loads((root / "results" / "study" / "summary.json").read_text())
    assert summary["state"] == "complete" and summary["selection"] == "val" and summary["num_classes"] == 3
    assert summary["params"] == 3 * 8 * 9 + 8 + 2 * 8 + 8 * 64 * 3 + 3
    history = read_history(root / "results" / "study" / "history.csv")
    assert summary["test_acc_at_best"] == history[summary["best_epoch"] - 1]["test_acc"] >= 60.0, summary


@pytest.mark.slow
def test_run_with_pretrained_resnet18_uses_the_attached_weight_file_and_without_one_fails_in_one_line(
        workspace, tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty cache: the inputs are all there is
    write_experiment(workspace, "pre", 'extends = "tiny"\n[model]\nname = "torchvision:resnet18"\npretrained = true\n'
                                       '[data]\ntrain_limit = 128\ntest_limit = 64\n[training]\nepochs = 1\n'
                                       'device = "cpu"\n')
    result = CliRunner().invoke(main, ["run", "pre"])
    assert result.exit_code == 1
    line = " ".join(result.output.split())  # the console wraps
    assert "ModelError: model.pretrained: no weight file resnet18-f37072fd.pth" in line
    assert str(workspace.root / "input") in line and "kaggle.model_sources" in line
    attached = workspace.root / "input" / "resnet18-weights" / "resnet18-f37072fd.pth"
    attached.parent.mkdir(parents=True)
    torch.save(torchvision.models.resnet18().state_dict(), attached)  # a randomly initialised one will do
    result = CliRunner().invoke(main, ["run", "pre", "--fresh"])
    assert result.exit_code == 0, result.output
    summary = json.loads((workspace.result_dir("pre") / "summary.json").read_text())
    grey_in_ten_out = 11_689_512 - 3 * 64 * 49 + 64 * 49 - 513 * 1000 + 513 * 10  # torchvision's resnet18, adapted
    assert summary["state"] == "complete" and summary["params"] == grey_in_ten_out
