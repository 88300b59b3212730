"""The Kaggle emulator, driven through the official SDK (kagglesdk) the way the kaggle client drives Kaggle."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import nbformat
import pytest
import requests

from kagglerun.emulator import EmulatorConfig, start_in_thread
from kagglerun.emulator.faults import FaultConfig

pytestmark = pytest.mark.slow  # trains, runs notebooks or waits on the emulator

USER, KEY = "kagglerun-test", "test-key-0123456789"
HTTP_TIMEOUT = 10


@pytest.fixture(autouse=True)
def _no_token(monkeypatch):
    monkeypatch.delenv("KAGGLE_API_TOKEN", raising=False)  # the SDK would prefer it over username/key


@pytest.fixture
def start(tmp_path):
    """start(**config) -> a running emulator on a free port, stopped after the test."""
    handles = []

    def _start(**overrides):
        config = dict(port=0, state_dir=tmp_path / "state", credentials={USER: KEY, "someone-else": "other-key"})
        config.update(overrides)
        handle = start_in_thread(EmulatorConfig(**config))
        handles.append(handle)
        return handle

    yield _start
    for handle in handles:
        handle.stop()


def api(handle, user=USER, key=KEY):
    """The SDK's kernels client, aimed at this emulator's port."""
    from kagglesdk.kaggle_client import KaggleClient
    from kagglesdk.kaggle_env import KaggleEnv

    client = KaggleClient(env=KaggleEnv.TEST, username=user, password=key)
    client.http_client()._endpoint = handle.url
    return client.kernels.kernels_api_client


def notebook_text(*cells: str) -> str:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nbformat.writes(nb)


def push(kernels, slug, *cells, gpu=True, owner=USER, **fields):
    from kagglesdk.kernels.types.kernels_api_service import ApiSaveKernelRequest

    request = ApiSaveKernelRequest()
    request.slug, request.new_title, request.text = f"{owner}/{slug}", slug.replace("-", " ").title(), notebook_text(*cells)
    request.language, request.kernel_type, request.enable_gpu = "python", "notebook", gpu
    for name, value in fields.items():
        setattr(request, name, value)
    return kernels.save_kernel(request)


def status(kernels, slug, version=None, owner=USER):
    from kagglesdk.kernels.types.kernels_api_service import ApiGetKernelSessionStatusRequest

    request = ApiGetKernelSessionStatusRequest()
    request.user_name, request.kernel_slug = owner, slug
    if version:
        request.version_label = f"v{version}"
    return kernels.get_kernel_session_status(request)


def wait(kernels, slug, version=None, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        answer = status(kernels, slug, version)
        if answer.status.name in ("COMPLETE", "ERROR", "CANCEL_ACKNOWLEDGED"):
            return answer
        time.sleep(0.2)
    raise AssertionError(f"{slug} v{version} did not end within {timeout} s")


def outputs(kernels, slug, version=None, page_size=20):
    """Every (fileName, url) over all pages, and the log of the first page."""
    from kagglesdk.kernels.types.kernels_api_service import ApiListKernelSessionOutputRequest

    files, token, log = [], None, None
    while True:
        request = ApiListKernelSessionOutputRequest()
        request.user_name, request.kernel_slug, request.page_size = USER, slug, page_size
        if version:
            request.version_label = f"v{version}"
        if token:
            request.page_token = token
        answer = kernels.list_kernel_session_output(request)
        log = log if token else answer.log
        files += [(f.file_name, f.url) for f in answer.files]
        token = answer.next_page_token
        if not token:
            return files, json.loads(log) if log else []


def session_id(handle, slug, version=-1) -> int:
    """The session running a version, from the emulator's own state: the push answer names none (as Kaggle's)."""
    return handle.emulator.state.kernel(USER, slug).sessions[version]


def own(files):
    """The names of a session's own outputs, without the files Kaggle's runner adds (__results__.html, …)."""
    from kagglerun.emulator.sessions import KAGGLE_RUNNER_FILES

    return [name for name, _ in files if name not in KAGGLE_RUNNER_FILES]


def test_push_run_and_pull_outputs_with_paging_ranges_and_log(start):
    handle = start()
    kernels = api(handle)
    pushed = push(kernels, "basic-run",
                  "import os, time\nprint('input at', os.environ['KAGGLERUN_INPUT'])",
                  "os.makedirs('sub', exist_ok=True)\nfor i in range(3): open(f'sub/f{i}.txt', 'w').write(str(i) * 100)",
                  "open('big.bin', 'wb').write(bytes(range(256)) * 40)\nprint('done')")
    assert not pushed.error and pushed.version_number == 1 and pushed.ref == f"/code/{USER}/basic-run"
    assert pushed.url == f"{handle.url}/code/{USER}/basic-run"  # the kernel's page: no session id in it
    assert status(kernels, "basic-run").status.name in ("QUEUED", "RUNNING")
    final = wait(kernels, "basic-run")
    assert final.status.name == "COMPLETE" and not final.failure_message

    files, log = outputs(kernels, "basic-run", page_size=2)  # 8 files over 4 pages
    assert sorted(name for name, _ in files) == ["__notebook__.ipynb", "__output__.json", "__results__.html", "big.bin",
                                                 "custom.css", "sub/f0.txt", "sub/f1.txt", "sub/f2.txt"]
    assert [e["data"] for e in log if e["stream_name"] == "stdout"][-1] == "done\n"
    assert {"stream_name", "time", "data"} <= set(log[0])

    url = dict(files)["big.bin"]  # an unauthenticated signed link, like Kaggle's storage URLs
    full = requests.get(url, timeout=HTTP_TIMEOUT)
    assert full.content == bytes(range(256)) * 40 and full.headers["Accept-Ranges"] == "bytes"
    part = requests.get(url, headers={"Range": "bytes=100-", "If-Range": full.headers["ETag"]}, timeout=HTTP_TIMEOUT)
    assert part.status_code == 206 and part.content == full.content[100:]
    assert requests.get(url.replace("big.bin", "sub/f0.txt"), timeout=HTTP_TIMEOUT).status_code == 403  # forged

    quota = kernels.get_accelerator_quota_statistics()
    assert 0 < quota.gpu_quota.time_used.total_seconds() < 60
    assert quota.gpu_quota.total_time_allowed.total_seconds() == 30 * 3600

    again = push(kernels, "basic-run", "print('second')")
    assert again.version_number == 2
    assert wait(kernels, "basic-run", version=2).status.name == "COMPLETE"
    assert own(outputs(kernels, "basic-run", version=2)[0]) == []  # each version starts empty


def test_credentials_and_ownership_are_enforced(start):
    from requests import HTTPError

    handle = start()
    rpc = f"{handle.url}/api/v1/kernels.KernelsApiService/GetKernelSessionStatus"
    assert requests.post(rpc, json={}, timeout=HTTP_TIMEOUT).status_code == 401
    assert requests.post(rpc, json={}, auth=(USER, "wrong"), timeout=HTTP_TIMEOUT).status_code == 401
    with pytest.raises(HTTPError) as denied:
        push(api(handle), "not-mine", "print(1)", owner="someone-else")
    error = denied.value.response.json()["error"]  # Kaggle's nested form, which the SDK does not read
    assert denied.value.response.status_code == 403 and "denied" in error["message"]
    assert error == {"code": 403, "message": error["message"], "status": "PERMISSION_DENIED"}
    with pytest.raises(HTTPError) as unknown:
        status(api(handle), "never-pushed")
    assert unknown.value.response.status_code == 403
    bearer = requests.post(rpc, json={"userName": USER, "kernelSlug": "never-pushed"},
                           headers={"Authorization": f"Bearer {KEY}"}, timeout=HTTP_TIMEOUT)
    assert bearer.status_code == 403  # authenticated, but no such kernel
    stats = requests.get(f"{handle.url}/emulator/stats", timeout=HTTP_TIMEOUT).json()
    assert stats["sessions"] == 0


def test_gpu_cap_rejects_a_third_push_cancel_and_peak(start):
    handle = start(gpu_session_cap=2, workers=3)
    kernels = api(handle)
    sleeper = "import time\nopen('started', 'w').write('1')\ntime.sleep({})\nopen('finished', 'w').write('1')"
    first = push(kernels, "cap-one", sleeper.format(1))
    second = push(kernels, "cap-two", sleeper.format(60))
    third = push(kernels, "cap-three", sleeper.format(1))
    assert not first.error and not second.error
    assert third.error == "Maximum batch GPU session count of 2 reached." and not third.version_number
    assert not push(kernels, "cpu-only", "print(1)", gpu=False).error  # the cap counts GPU sessions only

    deadline = time.time() + 30
    while status(kernels, "cap-two").status.name != "RUNNING" and time.time() < deadline:
        time.sleep(0.1)
    assert not kernels.cancel_kernel_session(_cancel(session_id(handle, "cap-two"))).error_message
    assert status(kernels, "cap-two").status.name in ("CANCEL_REQUESTED", "CANCEL_ACKNOWLEDGED")
    cancelled = wait(kernels, "cap-two")
    assert cancelled.status.name == "CANCEL_ACKNOWLEDGED" and "cancel" in cancelled.failure_message
    assert wait(kernels, "cap-one").status.name == "COMPLETE"
    assert wait(kernels, "cpu-only").status.name == "COMPLETE"
    assert not push(kernels, "cap-three", sleeper.format(0)).error  # slots are free again
    assert wait(kernels, "cap-three").status.name == "COMPLETE"
    assert handle.stats()["peak_running"] >= 2


def _cancel(sid):
    from kagglesdk.kernels.types.kernels_api_service import ApiCancelKernelSessionRequest

    request = ApiCancelKernelSessionRequest()
    request.kernel_session_id = sid
    return request


def test_failure_time_limit_and_sources(start, tmp_path):
    (tmp_path / "datasets" / "owner" / "local-data").mkdir(parents=True)
    (tmp_path / "datasets" / "owner" / "local-data" / "rows.csv").write_text("a,b\n")
    handle = start(workers=3, gpu_session_cap=3, datasets_dir=tmp_path / "datasets")
    kernels = api(handle)
    push(kernels, "fails", "open('partial.txt', 'w').write('kept')\nprint('before')", "raise ValueError('boom')")
    push(kernels, "too-slow", "open('early.txt', 'w').write('kept')\nprint('early', flush=True)",
         "import time\ntime.sleep(60)", session_timeout_seconds=5)
    push(kernels, "source-kernel", "open('weights.txt', 'w').write('42')")

    failed = wait(kernels, "fails")
    assert failed.status.name == "ERROR" and failed.failure_message == "ValueError: boom"
    files, log = outputs(kernels, "fails")
    assert own(files) == ["partial.txt"]
    assert any("boom" in e["data"] for e in log if e["stream_name"] == "stderr")

    timed_out = wait(kernels, "too-slow")  # Kaggle's time limit cancels the session
    assert timed_out.status.name == "CANCEL_ACKNOWLEDGED"
    assert "exceeded the max allowed execution duration" in timed_out.failure_message
    files, log = outputs(kernels, "too-slow")
    assert [name for name, _ in files] == ["early.txt"] and log[0]["data"] == "early\n"

    assert wait(kernels, "source-kernel").status.name == "COMPLETE"
    reader = push(kernels, "reads-source",
                  "import os\ninput = os.environ['KAGGLERUN_INPUT']\n"
                  f"print(open(os.path.join(input, 'notebooks', '{USER}', 'source-kernel', 'weights.txt')).read())",
                  "print(open(os.path.join(input, 'datasets', 'owner', 'local-data', 'rows.csv')).read())",
                  kernel_data_sources=[f"{USER}/source-kernel", f"{USER}/no-such-kernel"],
                  dataset_data_sources=["owner/local-data", "someone/some-data"])
    assert reader.invalid_kernel_sources == [f"{USER}/no-such-kernel"]
    assert reader.invalid_dataset_sources == ["someone/some-data"]
    assert wait(kernels, "reads-source").status.name == "COMPLETE"
    assert [e["data"] for e in outputs(kernels, "reads-source")[1] if e["stream_name"] == "stdout"] == ["42\n", "a,b\n\n"]


def get_kernel(kernels, slug, owner=USER):
    from kagglesdk.kernels.types.kernels_api_service import ApiGetKernelRequest

    request = ApiGetKernelRequest()
    request.user_name, request.kernel_slug = owner, slug
    return kernels.get_kernel(request)


def test_a_kernel_listing_itself_as_a_source_is_refused_and_runs_without_it(start):
    """As Kaggle answers a source it cannot add: the version is made, the source comes back in
    invalidKernelSources and is not mounted; a partner kernel's output is."""
    handle = start()
    kernels = api(handle)
    push(kernels, "own-output", "open('checkpoint.txt', 'w').write('7')")
    assert wait(kernels, "own-output").status.name == "COMPLETE"
    listing = ("import glob, os\nroot = os.environ['KAGGLERUN_INPUT']\n"
               "print(sorted(os.path.relpath(p, root) for p in glob.glob(root + '/*/*/*')))")
    again = push(kernels, "own-output", listing, kernel_data_sources=[f"{USER}/own-output"])
    assert again.version_number == 2 and again.invalid_kernel_sources == [f"{USER}/own-output"]
    assert wait(kernels, "own-output", 2).status.name == "COMPLETE"
    # the notebook's own line first (Kaggle's runner, papermill and nbconvert, logs after it)
    assert outputs(kernels, "own-output", 2)[1][0]["data"] == "[]\n"  # nothing mounted
    partner = push(kernels, "own-output-b", listing, kernel_data_sources=[f"{USER}/own-output"])
    assert not partner.invalid_kernel_sources and wait(kernels, "own-output-b").status.name == "COMPLETE"
    assert outputs(kernels, "own-output-b")[1][0]["data"] == f"['notebooks/{USER}/own-output']\n"
    assert handle.stats()["self_sources_refused"] == 1

    # GetKernel: the current version and when it last ran, what a client asks after a lost push answer
    meta = get_kernel(kernels, "own-output").metadata
    assert meta.current_version_number == 2 and meta.last_run_time is not None and meta.slug == "own-output"
    assert get_kernel(kernels, "own-output-b").metadata.kernel_data_sources == [f"{USER}/own-output"]
    with pytest.raises(requests.HTTPError) as denied:
        get_kernel(kernels, "never-pushed")
    assert denied.value.response.status_code == 403


def test_faults_after_the_request_was_handled_lose_only_the_answer(start):
    handle = start(faults=FaultConfig(drop_after=1.0))
    kernels = api(handle)
    with pytest.raises(requests.ConnectionError):
        push(kernels, "answer-lost", "print(1)")
    handle.emulator.set_faults(FaultConfig(http_500_after=1.0))
    with pytest.raises(requests.HTTPError) as e500:
        push(kernels, "answer-lost", "print(2)")
    assert e500.value.response.status_code == 500
    handle.emulator.set_faults(FaultConfig())
    assert get_kernel(kernels, "answer-lost").metadata.current_version_number == 2  # both pushes were made


def test_state_survives_a_restart(start, tmp_path):
    handle = start(queue_s=3600)  # stays QUEUED while this server lives
    kernels = api(handle)
    push(kernels, "queued-then-run", "open('ran.txt', 'w').write('1')")
    handle.stop()

    state = tmp_path / "state" / "state.json"
    data = json.loads(state.read_text())
    (lost,) = data["sessions"].values()
    assert lost["status"] == "QUEUED"
    ghost = dict(lost, id=999, slug="was-running", status="RUNNING", started_at=time.time() - 5, pid=None)
    data["sessions"]["999"] = ghost  # as if the server had died while this one ran
    data["kernels"][f"{USER}/was-running"] = {"id": 998, "owner": USER, "slug": "was-running",
                                             "title": "Was Running", "is_private": True, "sessions": [999]}
    state.write_text(json.dumps(data))

    handle = start()
    kernels = api(handle)
    assert wait(kernels, "queued-then-run").status.name == "COMPLETE"  # queued work is not lost
    dead = status(kernels, "was-running")
    assert dead.status.name == "ERROR" and "lost" in dead.failure_message
    assert push(kernels, "queued-then-run", "print(2)").version_number == 2  # versions keep counting


def test_faults_http_level(start):
    handle = start(faults=FaultConfig(http_500=1.0))
    with pytest.raises(requests.HTTPError) as e500:
        status(api(handle), "x")
    assert e500.value.response.status_code == 500
    handle.stop()

    handle = start(faults=FaultConfig(http_429=1.0, retry_after=7))
    with pytest.raises(requests.HTTPError) as e429:
        status(api(handle), "x")
    assert e429.value.response.status_code == 429 and e429.value.response.headers["Retry-After"] == "7"
    handle.stop()

    handle = start(faults=FaultConfig(drop=1.0))
    with pytest.raises(requests.ConnectionError):
        status(api(handle), "x")
    assert handle.stats()["faults_injected"]["drop"] == 1
    handle.stop()

    handle = start(faults=FaultConfig(cap_reject=1.0, slow=1.0, slow_seconds=0.2))
    assert "Maximum batch GPU session count" in push(api(handle), "rejected", "print(1)").error
    assert {k: v for k, v in handle.stats()["faults_injected"].items() if v} == {"cap_reject": 1, "slow": 1}


def test_gpu_quota_counts_session_time(start):
    handle = start(gpu_quota_hours=1.5 / 3600)  # a quota of 1.5 s
    kernels = api(handle)
    push(kernels, "uses-quota", "import time\ntime.sleep(4)")
    ran = wait(kernels, "uses-quota")  # a running session is not stopped when the quota runs out
    assert ran.status.name == "COMPLETE"
    quota = kernels.get_accelerator_quota_statistics().gpu_quota
    assert quota.time_used >= quota.total_time_allowed and quota.time_reserved.total_seconds() == 0
    assert "quota" in push(kernels, "uses-quota", "print(1)").error
    assert not push(kernels, "cpu-is-free", "print(1)", gpu=False).error


def test_faults_in_sessions_and_downloads(start, tmp_path):
    sleeper = "import time\nopen('out-{0}.txt', 'w').write('{0}' * 1000)\ntime.sleep(30)"
    crashing = start(faults=FaultConfig(crash=1.0, crash_after=1.0), state_dir=tmp_path / "crash")
    push(api(crashing), "crashes", sleeper.format("a"))
    faults = FaultConfig(timeout=1.0, timeout_after=4.0, truncate=1.0, stale=1.0)
    handle = start(faults=faults, state_dir=tmp_path / "others")
    kernels = api(handle)
    push(kernels, "times-out", sleeper.format("a"))

    crashed = wait(api(crashing), "crashes")
    assert crashed.status.name == "ERROR" and "died" in crashed.failure_message
    assert crashing.stats()["faults_injected"]["crash"] == 1
    for version, mark in ((1, None), (2, "b")):
        if mark:
            push(kernels, "times-out", sleeper.format(mark))
        ended = wait(kernels, "times-out", version=version)
        assert ended.status.name == "CANCEL_ACKNOWLEDGED" and "max allowed execution" in ended.failure_message
    files, _ = outputs(kernels, "times-out", version=2)  # stale: version 1's outputs served for version 2
    assert [name for name, _ in files] == ["out-a.txt"]
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(files[0][1], timeout=HTTP_TIMEOUT).content  # fewer bytes than Content-Length
    assert {k: v for k, v in handle.stats()["faults_injected"].items() if v} == {
        "timeout": 2, "stale": 1, "truncate": 1}


def test_fault_spec_parsing():
    config = FaultConfig.parse("all=0.1, truncate=0.5,slow_seconds=3", seed=7)
    assert config.http_500 == 0.1 and config.truncate == 0.5 and config.slow_seconds == 3 and config.seed == 7
    assert config.enabled and not FaultConfig().enabled
    with pytest.raises(ValueError, match="unknown fault"):
        FaultConfig.parse("explode=1")
    with pytest.raises(ValueError, match="between 0 and 1"):
        FaultConfig.parse("drop=2")


def test_cli_serves_until_interrupted(tmp_path):
    env = {**os.environ, "KAGGLE_USERNAME": USER, "KAGGLE_KEY": KEY}
    proc = subprocess.Popen(
        [sys.executable, "-m", "kagglerun.cli", "emulator", "--port", "0", "--state", str(tmp_path / "s")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert "Kaggle emulator on http://127.0.0.1:" in line
        url = line.split(" on ", 1)[1].split()[0]
        answer = requests.post(f"{url}/api/v1/kernels.KernelsApiService/GetAcceleratorQuotaStatistics",
                               json={}, auth=(USER, KEY), timeout=HTTP_TIMEOUT)
        assert answer.json()["gpuQuota"]["totalTimeAllowed"] == "108000s"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 130
        assert KEY not in proc.stderr.read()  # the key is never logged
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
