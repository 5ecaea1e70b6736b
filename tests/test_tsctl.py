"""ops/tsctl.py's and ops/polling.py's own logic, without a server (the server tests use them against a
real TorchServe)."""

from __future__ import annotations

import json

import pytest
import requests

from mnist_digit_client import read_inference_key, read_keys
from ops import tsctl
from ops.polling import NotYet, wait_until


class _Answer:
    def __init__(self, status: int):
        self.status_code = status

    def raise_for_status(self):
        if self.status_code >= 400:
            raise requests.HTTPError(f"{self.status_code}", response=self)

    def json(self):
        return {"status": "done"}


@pytest.mark.parametrize(
    "statuses, calls, fails", [([500, 200], 2, False), ([200], 1, False), ([500, 500, 500], 3, True), ([404], 1, True)]
)
def test_scale_tries_a_5xx_again_and_never_a_4xx(monkeypatch, statuses, calls, fails):
    """Scaling is idempotent; TorchServe 0.12 can answer 500 when a stopped worker was mid-batch."""
    answers, seen = iter(statuses), []
    monkeypatch.setattr(tsctl.requests, "put", lambda url, **kw: seen.append(kw["params"]) or _Answer(next(answers)))
    monkeypatch.setattr(tsctl.time, "sleep", lambda s: None)
    if fails:
        with pytest.raises(requests.HTTPError):
            tsctl.scale("http://ts", "key", 2)
    else:
        assert tsctl.scale("http://ts", "key", 2) == {"status": "done"}
    assert len(seen) == calls and all(p["min_worker"] == p["max_worker"] == 2 for p in seen)


def test_wait_until_returns_the_first_truthy_answer():
    answers = iter([None, 0, "", "there"])
    assert wait_until(lambda: next(answers), timeout=5, interval=0.001, what="an answer") == "there"


def test_wait_until_says_what_it_waited_for_and_what_it_saw():
    def never():
        raise NotYet("503 busy")

    with pytest.raises(TimeoutError, match=r"waited 0.05 s for the model to load; last: 503 busy"):
        wait_until(never, timeout=0.05, interval=0.01, what="the model to load")


def test_wait_until_retries_listed_errors_only():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("refused")
        return len(calls)

    assert wait_until(flaky, timeout=5, interval=0.001, errors=(ConnectionError,)) == 3

    def gone():
        raise RuntimeError("the server exited")

    with pytest.raises(RuntimeError, match="exited"):  # anything else ends the wait at once
        wait_until(gone, timeout=5, errors=(ConnectionError,))


def test_the_key_file_is_read_by_the_client_package(tmp_path):
    key_file = tmp_path / "key_file.json"
    key_file.write_text(
        json.dumps(
            {
                kind: {"key": f"{kind}-key", "expiration time": "2030-01-01T00:00:00Z"}
                for kind in ("management", "inference", "API")
            }
        )
    )
    assert tsctl.read_keys is read_keys
    assert read_keys(key_file) == {"management": "management-key", "inference": "inference-key", "API": "API-key"}
    assert read_inference_key(key_file) == "inference-key"
