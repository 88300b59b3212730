"""The emulator and the adapter agree with what Kaggle does (issue 12, item 4; the fidelity table in
BENCHMARKS.md names each behaviour's source): one test per behaviour, through the official SDK over HTTP."""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path

import nbformat
import pytest
from helpers import KEY, USER, make_workspace, start_emulator, tiny_toml

from kagglerun.errors import CredentialsError, KernelError, RenderError, SessionCapError
from kagglerun.kaggle import ENDPOINT_ENV, Credentials, KaggleKernels, RetryPolicy, load_credentials, session_cause
from kagglerun.kaggle.logs import failure_tail

TOKEN = "KGAT_0123456789abcdef0123456789abcdef"  # the shape of kaggle 2.2.5's API tokens


@pytest.fixture(autouse=True)
def _no_ambient_token(monkeypatch, tmp_path):
    monkeypatch.delenv("KAGGLE_API_TOKEN", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture
def emulator(tmp_path):
    handles = []

    def _start(**config):
        handle = start_emulator(tmp_path / f"emu{len(handles)}", **config)
        handles.append(handle)
        return handle

    yield _start
    for handle in handles:
        handle.stop()


def client(handle, credentials: Credentials | None = None) -> KaggleKernels:
    return KaggleKernels(credentials or Credentials(USER, KEY), environ={ENDPOINT_ENV: handle.url},
                         retry=RetryPolicy(attempts=2, base_seconds=0.01, cap_seconds=0.02))


def kernel_folder(root: Path, slug: str, *cells: str, gpu: bool = True) -> Path:
    """A folder the official client pushes: kernel-metadata.json and its notebook."""
    folder = root / slug
    folder.mkdir(parents=True)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells or ("print(1)",)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, folder / f"{slug}.ipynb")
    meta = {"id": f"{USER}/{slug}", "title": slug.replace("-", " "), "code_file": f"{slug}.ipynb",
            "language": "python", "kernel_type": "notebook", "is_private": True, "enable_gpu": gpu,
            "enable_internet": False, "dataset_sources": [], "kernel_sources": [], "competition_sources": []}
    (folder / "kernel-metadata.json").write_text(json.dumps(meta))
    return folder


def wait_finished(api: KaggleKernels, kernel: str, version: int, timeout: float = 90):
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = api.status(kernel, version)
        if status.finished:
            return status
        time.sleep(0.2)
    raise AssertionError(f"{kernel} v{version} did not finish")


# -- errors in Kaggle's nested form -------------------------------------------------------------------------

def test_nested_errors_are_read_for_their_message(emulator):
    handle = emulator()
    with pytest.raises(KernelError) as denied:
        client(handle).status(f"{USER}/never-pushed", 1)
    # The SDK raises "403 Client Error: Forbidden for url: ..." for the nested form; its message is read.
    assert "(Permission 'kernels.get' was denied)" in str(denied.value)

    from kagglerun.kaggle.client import _http_message

    class Answer:
        def __init__(self, body):
            self.body = body

        def json(self):
            return self.body

    class Failed(Exception):
        response: Answer

    for body in ({"error": {"code": 400, "message": "bad slug", "status": "INVALID_ARGUMENT"}},
                 {"code": 400, "message": "bad slug"}):
        e = Failed("400 Client Error: Bad Request for url: http://x")
        e.response = Answer(body)
        assert _http_message(e) == "bad slug"


# -- the push answer names no session; the CPU session cap ----------------------------------------------------

def test_push_answer_names_no_session_and_the_cpu_cap_is_a_session_cap(emulator, tmp_path):
    handle = emulator(queue_s=3600, cpu_session_cap=1)  # sessions stay queued: nothing runs
    api = client(handle)
    pushed = api.push(kernel_folder(tmp_path, "cpu-one", gpu=False))
    assert pushed.kernel == f"{USER}/cpu-one" and pushed.version == 1
    assert pushed.url == f"{handle.url}/code/{USER}/cpu-one" and not hasattr(pushed, "session_id")
    assert api.status(pushed.kernel, pushed.version).state == "queued"  # the version is the handle
    with pytest.raises(SessionCapError, match=r"Maximum batch CPU session count of 1 reached\."):
        api.push(kernel_folder(tmp_path, "cpu-two", gpu=False))
    assert api.push(kernel_folder(tmp_path, "gpu-one")).version == 1  # the GPU cap is its own


# -- why a session ended, in words -----------------------------------------------------------------------------

def test_time_limit_and_out_of_memory_are_named_in_words():
    from kagglerun.emulator.store import CANCEL_MESSAGE, OOM_MESSAGE, TIME_LIMIT_MESSAGE
    from kagglerun.progress import StatusRow
    from kagglerun.runs.ledger import Version
    from kagglerun.runs.status import row_for

    assert session_cause("cancel_acknowledged", TIME_LIMIT_MESSAGE) == "stopped at Kaggle's time limit"
    assert session_cause("error", OOM_MESSAGE) == "out of memory"
    assert session_cause("cancel_acknowledged", CANCEL_MESSAGE) == "cancelled"
    assert session_cause("error", "ValueError: boom") == "failed"
    assert session_cause("complete", "") == ""
    run = Version(version=3, settings_hash="h", core_hash="c", pushed_at="2026-01-01T00:00:00+00:00",
                  state="cancel_acknowledged", failure=TIME_LIMIT_MESSAGE, finished_at="2026-01-01T12:00:00+00:00")
    row = row_for("long_a", f"{USER}/kagglerun-long-a", run)
    assert row.cause == "stopped at Kaggle's time limit"

    from rich.console import Console

    from kagglerun.cli.views import failure_lines, status_table

    console = Console(width=140, record=True)
    console.print(status_table([row, StatusRow("ok_a", "o/k", 1, "complete")]))
    for line in failure_lines([row]):
        console.print(line)
    shown = console.export_text()
    assert "stopped at Kaggle's time limit" in shown and "max allowed execution duration" in shown


@pytest.mark.slow  # runs notebooks in the emulator
def test_sessions_at_the_time_limit_and_out_of_memory_end_as_on_kaggle(emulator, tmp_path):
    from kagglerun.emulator import FaultConfig

    handle = emulator(session_limit_s=3.0, workers=2)
    api = client(handle)
    slow = api.push(kernel_folder(tmp_path, "too-long", "import time\ntime.sleep(60)"))
    limited = wait_finished(api, slow.kernel, slow.version)
    assert limited.state == "cancel_acknowledged" and limited.cause == "stopped at Kaggle's time limit"
    assert "Your notebook was stopped because it exceeded the max allowed execution duration" in limited.failure

    handle.emulator.set_faults(FaultConfig(oom=1.0, crash_after=1.0))
    hungry = api.push(kernel_folder(tmp_path, "too-big", "import time\ntime.sleep(60)"))
    oom = wait_finished(api, hungry.kernel, hungry.version)
    assert oom.state == "error" and oom.cause == "out of memory" and "more memory than is available" in oom.failure


# -- papermill and nbconvert: their files and their log lines ---------------------------------------------------

KAGGLE_LIKE_LOG = """before
---------------------------------------------------------------------------
ValueError                                Traceback (most recent call last)
Cell In[2], line 1
----> 1 raise ValueError('boom')

ValueError: boom
Traceback (most recent call last):
  File "<string>", line 1, in <module>
  File "/usr/local/lib/python3.11/site-packages/papermill/execute.py", line 131, in execute_notebook
    raise_for_execution_errors(nb, output_path)
papermill.exceptions.PapermillExecutionError:
---------------------------------------------------------------------------
Exception encountered at "In [2]":
ValueError: boom (repeated)

/usr/local/lib/python3.11/site-packages/traitlets/traitlets.py:2915: FutureWarning: --Exporter.preprocessors=[...]
  warn(
[NbConvertApp] Converting notebook __notebook__.ipynb to html
[NbConvertApp] Writing 281364 bytes to __results__.html
"""


def test_the_failure_tail_is_the_traceback_not_nbconverts_lines():
    tail = failure_tail(KAGGLE_LIKE_LOG, 4)
    assert tail[-1] == "ValueError: boom (repeated)"
    assert not any("NbConvertApp" in line or "warn(" in line or "papermill" in line for line in tail)
    assert failure_tail(KAGGLE_LIKE_LOG, 12)[0] == "before"
    assert failure_tail("", 5) == [] and failure_tail("one\n", 0) == []


@pytest.mark.slow  # runs notebooks in the emulator and a tiny training run
def test_runner_files_are_listed_logged_and_kept_out_of_the_pull(emulator, tmp_path, monkeypatch):
    from helpers import check_contract, client_env

    from kagglerun.emulator.sessions import KAGGLE_RUNNER_FILES
    from kagglerun.runs.pull import pull_one
    from kagglerun.runs.push import PushOptions, push_experiments
    from kagglerun.runs.status import refresh
    from kagglerun.workspace import Workspace

    handle = emulator()
    api = client(handle)
    failing = api.push(kernel_folder(tmp_path / "k", "fails", "print('before')", "raise ValueError('boom')"))
    ws = Workspace(make_workspace(tmp_path / "ws", {"tiny_a": tiny_toml(epochs=1)}))
    client_env(monkeypatch, tmp_path / "home", handle.url)
    report = push_experiments(ws, ["tiny_a"], api=api, options=PushOptions(wait=True, poll_seconds=0.2))
    assert [r.state for r in report.rows] == ["complete"]

    assert wait_finished(api, failing.kernel, failing.version).state == "error"
    names = {f.name for f in api.outputs(failing.kernel, failing.version).files}
    assert set(KAGGLE_RUNNER_FILES) <= names
    log = api.log(failing.kernel, failing.version)
    assert "[NbConvertApp] Writing" in log and "PapermillExecutionError" in log
    assert failure_tail(log, 12)[-1] == "ValueError: boom"

    listed = {f.name for f in api.outputs(f"{USER}/kagglerun-tiny-a", 1).files}
    assert set(KAGGLE_RUNNER_FILES) <= listed
    assert pull_one(ws, api, "tiny_a").action == "pulled"
    pulled = {p.name for p in (ws.results / "tiny_a").iterdir()}
    assert not pulled & set(KAGGLE_RUNNER_FILES)  # only the contract's files, never Kaggle's own
    check_contract(ws.results / "tiny_a", ws.store().load("tiny_a").hash, 1)
    assert refresh(ws, api, ["tiny_a"])[0].state == "complete"


# -- API tokens, as kaggle 2.2.5 authenticates -------------------------------------------------------------------

def test_api_token_from_the_environment_or_its_file(emulator, tmp_path):
    handle = emulator(tokens={TOKEN: USER})
    home = tmp_path / "home"
    creds = load_credentials({"KAGGLE_API_TOKEN": TOKEN, "HOME": str(home), "KAGGLE_USERNAME": "ignored-user",
                              "KAGGLE_KEY": "ignored-key"})  # the token comes first, as in the official client
    assert (creds.token, creds.key, creds.source) == (TOKEN, "", "KAGGLE_API_TOKEN") and TOKEN not in repr(creds)
    api = client(handle, load_credentials({"KAGGLE_API_TOKEN": TOKEN, "HOME": str(home)}))
    assert api.username == USER  # asked of Kaggle (IntrospectToken), as the official client asks
    assert api.gpu_quota().total_seconds > 0  # sent as "Authorization: Bearer <token>"

    (home / ".kaggle").mkdir(parents=True)
    token_file = home / ".kaggle" / "access_token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    from_file = load_credentials({"HOME": str(home)})
    assert from_file.token == TOKEN and from_file.source == str(token_file)
    assert load_credentials({"HOME": str(home), "KAGGLE_API_TOKEN": str(token_file)}).token == TOKEN
    token_file.chmod(0o644)
    with pytest.raises(CredentialsError, match="readable by other users"):
        load_credentials({"HOME": str(home)})
    with pytest.raises(CredentialsError, match="does not accept the API token from KAGGLE_API_TOKEN"):
        client(handle, load_credentials({"KAGGLE_API_TOKEN": "KGAT_revoked", "HOME": str(home)}))


# -- quota, as the official CLI counts it; running sessions are not stopped by it ---------------------------------

def test_quota_is_counted_as_the_official_cli_counts_it(emulator):
    from kagglerun.emulator.store import COMPLETE, RUNNING, Session

    handle = emulator(gpu_quota_hours=200 / 3600)  # 200 s
    state, now = handle.emulator.state, time.time()
    with state.lock:
        for sid, status, started, ended in ((901, COMPLETE, now - 500, now - 400), (902, RUNNING, now - 120, None)):
            state.sessions[sid] = Session(id=sid, owner=USER, slug=f"s{sid}", version=1, status=status, gpu=True,
                                          created_at=started, time_limit_s=43200, kernel_inputs={}, dataset_inputs={},
                                          started_at=started, ended_at=ended, charged_s=100.0 if ended else 0.0)
    quota = client(handle).gpu_quota()
    assert quota is not None
    assert 219 < quota.used_seconds < 240 and 119 < quota.reserved_seconds < 140  # used includes running time
    assert quota.left_seconds == 0.0  # total - used, as `kaggle quota` shows it: reserved is not added again
    assert state.sessions[902].status == RUNNING  # the quota ran out; the running session goes on


# -- logs in one request; polling every 30-60 s with jitter -----------------------------------------------------

def test_the_log_takes_one_request_and_polling_is_jittered(emulator):
    from kagglerun.emulator.store import COMPLETE, Kernel, Session
    from kagglerun.runs.push import PushOptions
    from kagglerun.runs.status import POLL_SECONDS, poll_pause

    handle = emulator()
    state = handle.emulator.state
    with state.lock:
        state.kernels[f"{USER}/many-files"] = Kernel(800, USER, "many-files", "Many Files", True, [801])
        state.sessions[801] = Session(id=801, owner=USER, slug="many-files", version=1, status=COMPLETE, gpu=True,
                                      created_at=1.0, time_limit_s=60, kernel_inputs={}, dataset_inputs={},
                                      started_at=1.0, ended_at=2.0)
    working = state.session_dir(801) / "working"
    working.mkdir(parents=True)
    for i in range(7):
        (working / f"f{i}.txt").write_text(str(i))
    (state.session_dir(801) / "log.json").write_text(json.dumps([{"stream_name": "stdout", "time": 0, "data": "hi\n"}]))
    api = client(handle)
    calls = []
    listing = api._kernels.list_kernel_session_output
    api._kernels.list_kernel_session_output = lambda request: calls.append(request) or listing(request)
    assert api.log(f"{USER}/many-files", 1) == "hi\n" and len(calls) == 1
    assert len(api.outputs(f"{USER}/many-files", 1, page_size=2).files) == 7 and len(calls) == 5

    assert POLL_SECONDS == 30 and PushOptions().poll_seconds == 30
    pauses = {poll_pause(POLL_SECONDS) for _ in range(50)}
    assert all(30 <= p <= 60 for p in pauses) and len(pauses) > 1
    from kagglerun.cli.runs import push, status

    assert {p.name: p.default for p in push.params}["poll"] == 30 and \
        {p.name: p.default for p in status.params}["interval"] == 30


# -- inputs where Kaggle mounts them, read-only ------------------------------------------------------------------

def test_inputs_are_mounted_where_kaggle_mounts_them_and_found_in_both_layouts(tmp_path, monkeypatch):
    from test_data import settings, write_mnist

    from kagglerun.core.data import find_path, load_data
    from kagglerun.emulator.scheduler import input_path, set_writable

    inputs = tmp_path / "input"
    assert input_path(inputs, "notebooks", "ann/run-a", "nested") == inputs / "notebooks" / "ann" / "run-a"
    assert input_path(inputs, "datasets", "ann/mnist", "nested") == inputs / "datasets" / "ann" / "mnist"
    assert input_path(inputs, "datasets", "ann/mnist", "flat") == inputs / "mnist"

    monkeypatch.setenv("KAGGLERUN_DATA", str(tmp_path / "no-data"))
    for layout in ("nested", "flat"):
        root = tmp_path / layout
        write_mnist(input_path(root, "datasets", "ann/mnist", layout) / "raw")
        set_writable(root, False)
        mode = (input_path(root, "datasets", "ann/mnist", layout) / "raw" / "t10k-images-idx3-ubyte").stat().st_mode
        assert not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)  # read-only, as Kaggle's mounts
        monkeypatch.setenv("KAGGLERUN_INPUT", str(root))
        assert load_data(settings("mnist")).train_x.shape == (6, 1, 28, 28)
        assert find_path("raw") == input_path(root, "datasets", "ann/mnist", layout) / "raw"  # data.path too
        set_writable(root, True)


# -- slugs checked at render ------------------------------------------------------------------------------------

def test_slugs_are_checked_at_render(tmp_path):
    from kagglerun.notebook.render import render_experiments
    from kagglerun.workspace import Workspace

    long_name = "a" * 45  # kagglerun-aaa… is 55 characters
    ws = Workspace(make_workspace(tmp_path / "ws", {long_name: tiny_toml(), "fine_a": tiny_toml(),
                                                    "trailing_": tiny_toml()}))
    # a name too long for Kaggle's 50 characters gets a shortened slug (its start and a hash), checked like any
    import re

    from kagglerun.notebook.render import METADATA_FILE

    folder = render_experiments(ws, [long_name], owner="someone")[0]
    slug = json.loads((folder / METADATA_FILE).read_text())["id"].split("/")[1]
    assert len(slug) <= 50 and re.fullmatch(r"[a-z0-9][a-z0-9-]*[a-z0-9]", slug) and slug.startswith("kagglerun-aaa")
    with pytest.raises(RenderError, match="holds characters other than a-z, 0-9 and '-'"):
        render_experiments(ws, ["trailing_"], owner="someone")
    assert render_experiments(ws, ["fine_a"], owner="someone")[0].name == "fine_a"
