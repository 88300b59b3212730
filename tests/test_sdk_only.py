"""Proof that the emulator speaks Kaggle's protocol: a program that knows only the official `kaggle` client and
its SDK (endpoint from KAGGLE_API_ENVIRONMENT=TEST, i.e. http://localhost:7777; no kagglerun code) pushes a
folder, follows it to COMPLETE and downloads its outputs with the client's own download code."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from kagglerun.emulator import DEFAULT_PORT, EmulatorConfig, start_in_thread

pytestmark = pytest.mark.slow  # trains, runs notebooks or waits on the emulator

USER, KEY = "kagglerun-test", "sdk-only-key-42"

# The client part: standard library plus the official kaggle client and kagglesdk, nothing else.
PROGRAM = r'''
import json, os, sys, time
from kagglesdk.kaggle_client import KaggleClient
from kagglesdk.kaggle_env import get_env
from kaggle.api.kaggle_api_extended import KaggleApi

class EnvironmentKaggleApi(KaggleApi):
    """kaggle 2.2.5's build_kaggle_client always picks production; choose the endpoint the SDK's own way."""

    def build_kaggle_client(self):
        return KaggleClient(env=get_env(), username=self.config_values["username"],
                            password=self.config_values["key"])


folder, out = sys.argv[1], sys.argv[2]
api = EnvironmentKaggleApi()
api.authenticate()
kernel = json.load(open(os.path.join(folder, "kernel-metadata.json")))["id"]
pushed = api.kernels_push(folder)
if pushed.error:
    sys.exit("push refused: " + pushed.error)
seen, deadline = [], time.time() + 120
while time.time() < deadline:
    answer = api.kernels_status(f"{kernel}/{pushed.version_number}")
    if not seen or seen[-1] != answer.status.name:
        seen.append(answer.status.name)
    if answer.status.name in ("COMPLETE", "ERROR"):
        break
    time.sleep(0.3)
files, _ = api.kernels_output(f"{kernel}/{pushed.version_number}", out, force=True, page_size=3)
print(json.dumps({"version": pushed.version_number, "states": seen, "failure": answer.failure_message,
                  "files": sorted(os.path.relpath(f, out) for f in files),
                  "kagglerun_imported": any(m.startswith("kagglerun") for m in sys.modules)}))
'''


@pytest.fixture(scope="module")
def emulator_on_7777(tmp_path_factory):
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", DEFAULT_PORT)) == 0:
            pytest.skip(f"port {DEFAULT_PORT} is taken; the SDK's TEST environment only knows that port")
    state = tmp_path_factory.mktemp("sdk-only-state")
    with start_in_thread(EmulatorConfig(port=DEFAULT_PORT, state_dir=state, credentials={USER: KEY})) as handle:
        yield handle


def run_program(folder: Path, out: Path, home: Path) -> dict:
    script = home / "sdk_only_program.py"
    script.write_text(PROGRAM)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAGGLE", "KAGGLERUN"))}
    env.update(KAGGLE_API_ENVIRONMENT="TEST", KAGGLE_USERNAME=USER, KAGGLE_KEY=KEY, HOME=str(home))
    done = subprocess.run([sys.executable, str(script), str(folder), str(out)], env=env, cwd=home,
                          capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_official_client_pushes_follows_and_downloads(emulator_on_7777, tmp_path):
    folder = tmp_path / "kernel"
    folder.mkdir()
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("import os\nos.makedirs('plots', exist_ok=True)\nprint('training')"),
        nbformat.v4.new_code_cell("for i in range(4):\n    open(f'plots/p{i}.txt', 'w').write('x' * (1000 * i + 1))"),
        nbformat.v4.new_code_cell("open('summary.json', 'w').write('{\"acc\": 99.5}')\nprint('done')"),
    ])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, folder / "proof.ipynb")
    (folder / "kernel-metadata.json").write_text(json.dumps({
        "id": f"{USER}/sdk-only-proof", "title": "Sdk Only Proof", "code_file": "proof.ipynb",
        "language": "python", "kernel_type": "notebook", "is_private": True, "enable_gpu": True,
        "enable_internet": False, "dataset_sources": [], "kernel_sources": [], "competition_sources": [],
    }))
    result = run_program(folder, tmp_path / "out", tmp_path)

    assert result["states"][-1] == "COMPLETE" and not result["failure"] and not result["kagglerun_imported"]
    assert result["files"] == sorted(["plots/p0.txt", "plots/p1.txt", "plots/p2.txt", "plots/p3.txt",
                                      "summary.json", "sdk-only-proof.log",  # and the files Kaggle's runner adds:
                                      "__notebook__.ipynb", "__output__.json", "__results__.html", "custom.css"])
    assert (tmp_path / "out" / "plots" / "p3.txt").read_text() == "x" * 3001
    log = json.loads((tmp_path / "out" / "sdk-only-proof.log").read_text())
    assert [e["data"] for e in log if e["stream_name"] == "stdout"] == ["training\n", "done\n"]
    assert emulator_on_7777.stats()["peak_running"] == 1


def test_official_client_runs_a_rendered_experiment(emulator_on_7777, workspace, tmp_path, monkeypatch):
    from kagglerun.core.contract import CONTRACT_FILES, MANIFEST_FILE, file_sha256
    from kagglerun.notebook.render import render_experiments

    (workspace.experiments / "quick.toml").write_text(
        'description = "two short epochs"\nextends = "digits_base"\n[model]\nwidth = 0.125\n'
        "[data]\ntrain_limit = 256\ntest_limit = 128\n[training]\nepochs = 2\n")
    (folder,) = render_experiments(workspace, ["quick"], owner=USER)
    result = run_program(folder, tmp_path / "out", tmp_path)

    assert result["states"][-1] == "COMPLETE", result["failure"]
    out = tmp_path / "out"
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    for name in CONTRACT_FILES:
        assert (out / name).is_file(), name
    for name, entry in manifest.items():
        assert file_sha256(out / name) == entry["sha256"], name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["state"] == "complete" and summary["epochs_done"] == 2
