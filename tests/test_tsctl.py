"""ops/tsctl.py's own logic, without a server (the server tests use it against a real TorchServe)."""
from __future__ import annotations

import pytest
import requests

from ops import tsctl


class _Answer:
    def __init__(self, status: int):
        self.status_code = status

    def raise_for_status(self):
        if self.status_code >= 400:
            raise requests.HTTPError(f"{self.status_code}", response=self)

    def json(self):
        return {"status": "done"}


@pytest.mark.parametrize("statuses, calls, fails", [([500, 200], 2, False), ([200], 1, False),
                                                    ([500, 500, 500], 3, True), ([404], 1, True)])
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
