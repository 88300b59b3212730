"""The adapter over the official client: credentials, endpoint, retries and error mapping, against the emulator."""

from __future__ import annotations

import json
import os

import pytest
from helpers import KEY, USER, start_emulator

from kagglerun.errors import CredentialsError, KaggleError
from kagglerun.kaggle import ENDPOINT_ENV, Credentials, KaggleKernels, RetryPolicy, load_credentials
from kagglerun.kaggle.logs import log_text
from kagglerun.kaggle.sdk import resolve_endpoint


def _kaggle_json(tmp_path, text: str, mode: int = 0o600):
    folder = tmp_path / "cfg"
    folder.mkdir()
    path = folder / "kaggle.json"
    path.write_text(text)
    path.chmod(mode)
    return {"KAGGLE_CONFIG_DIR": str(folder), "HOME": str(tmp_path)}, path


def test_credentials_from_environment_and_file(tmp_path):
    assert load_credentials({"KAGGLE_USERNAME": "ann", "KAGGLE_KEY": "k"}) == Credentials("ann", "k")
    env, path = _kaggle_json(tmp_path, json.dumps({"username": "bob", "key": "s3cret"}))
    creds = load_credentials(env)
    assert (creds.username, creds.key, creds.source) == ("bob", "s3cret", str(path))
    assert "s3cret" not in repr(creds)  # a traceback or log never shows the key


# The bad-input table for credentials: what the user gets for each mistake.
@pytest.mark.parametrize("text, mode, message", [
    (None, None, "no Kaggle credentials: set KAGGLE_API_TOKEN"),
    ('{"username": "bob", "key": "x"}', 0o644, "is readable by other users; run `chmod 600"),
    ('{"username": "bob", "key": "x"}', 0o640, "is readable by other users"),
    ("not json", 0o600, "is not a Kaggle API token file"),
    ('{"username": "bob"}', 0o600, "is not a Kaggle API token file"),
    ('{"username": "bob", "key": "x"}', 0o000, "cannot read"),
])
def test_credentials_bad_input(tmp_path, text, mode, message):
    if text is None:
        env = {"HOME": str(tmp_path), "KAGGLE_CONFIG_DIR": str(tmp_path / "none")}
    else:
        if mode == 0o000 and os.geteuid() == 0:
            pytest.skip("root reads any file")
        env, _ = _kaggle_json(tmp_path, text, mode)
    with pytest.raises(CredentialsError, match=None) as e:
        load_credentials(env)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_half_set_environment_credentials():
    with pytest.raises(CredentialsError, match="KAGGLE_KEY is not set while KAGGLE_USERNAME is"):
        load_credentials({"KAGGLE_USERNAME": "ann"})


def test_endpoint_is_chosen_the_sdks_way(monkeypatch):
    monkeypatch.delenv("KAGGLE_API_ENVIRONMENT", raising=False)
    assert resolve_endpoint({})[1] == "https://api.kaggle.com"
    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "TEST")
    assert resolve_endpoint({})[1] == "http://localhost:7777"
    assert resolve_endpoint({ENDPOINT_ENV: "http://127.0.0.1:5/"})[1] == "http://127.0.0.1:5"
    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "MARS")
    with pytest.raises(KaggleError, match="MARS"):
        resolve_endpoint({})


def test_backoff_grows_with_jitter_and_is_capped():
    policy = RetryPolicy(base_seconds=1.0, cap_seconds=4.0)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (6, 4.0)]:
        delays = {policy.backoff(attempt) for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 1  # jitter: clients that failed together do not retry together


def test_log_text_reads_kaggles_json_events():
    raw = json.dumps([{"stream_name": "stdout", "time": 1.0, "data": "epoch 1\n"}, {"data": "epoch 2\n"}])
    assert log_text(raw) == "epoch 1\nepoch 2\n"
    assert log_text("plain\n") == "plain\n"
    coloured = json.dumps([{"stream_name": "stderr", "time": 1, "data": "\x1b[0;31mValueError\x1b[0m: bad\n"}])
    assert log_text(coloured) == "ValueError: bad\n"


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    """An emulator where every API request fails with the fault named by the test (set per test)."""
    handle = start_emulator(tmp_path_factory.mktemp("emu"))
    yield handle
    handle.stop()


def _client(handle, sleeps, key=KEY, attempts=4):
    return KaggleKernels(Credentials(USER, key), environ={ENDPOINT_ENV: handle.url},
                         retry=RetryPolicy(attempts=attempts, base_seconds=0.01, cap_seconds=0.02),
                         sleep=sleeps.append)


def _set_faults(handle, **rates):
    from kagglerun.emulator.faults import FaultConfig

    handle.emulator.set_faults(FaultConfig(**rates, retry_after=7.0, seed=1))


def test_5xx_is_retried_then_reported(faulty):
    _set_faults(faulty, http_503=1.0)
    sleeps: list[float] = []
    api = _client(faulty, sleeps)
    with pytest.raises(KaggleError, match=r"failed the GPU quota query 4 times \(HTTP 503"):
        api.gpu_quota()
    assert len(sleeps) == 3 and api.counters["retried_503"] == 3


def test_429_waits_as_long_as_retry_after_says(faulty):
    _set_faults(faulty, http_429=1.0)
    sleeps: list[float] = []
    with pytest.raises(KaggleError, match="rate-limiting"):
        _client(faulty, sleeps, attempts=3).gpu_quota()
    assert sleeps == [7.0, 7.0]


def test_dropped_connections_are_retried_and_survived(faulty):
    _set_faults(faulty, drop=0.5)
    sleeps: list[float] = []
    api = _client(faulty, sleeps, attempts=12)
    for _ in range(6):
        assert api.gpu_quota().total_seconds > 0
    assert api.counters["retried_connection"] >= 1


def test_wrong_key_and_wrong_slug_are_explained(faulty):
    _set_faults(faulty)
    with pytest.raises(CredentialsError, match="refused the credentials of 'loop-tester'.*HTTP 401"):
        _client(faulty, [], key="wrong").gpu_quota()
    with pytest.raises(KaggleError, match="HTTP 403.*kernel slug loop-tester/no-such-kernel is wrong"):
        _client(faulty, []).status("loop-tester/no-such-kernel", 1)


def test_nothing_listening_fails_fast_with_a_hint():
    sleeps: list[float] = []
    api = KaggleKernels(Credentials(USER, KEY), environ={ENDPOINT_ENV: "http://127.0.0.1:9"}, sleep=sleeps.append)
    with pytest.raises(KaggleError, match=r"cannot reach Kaggle at http://127.0.0.1:9 .*connection refused "
                                          r"\(is `kagglerun emulator` running there\?\)"):
        api.gpu_quota()
    assert len(sleeps) == 1
