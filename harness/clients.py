"""Send many requests to a LocalTorchServe at once and compare the digits with what was expected:
shared by the integration tests, `make bench` and `make soak`."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import requests

from harness.local_server import LocalTorchServe


def predict_concurrently(
    server: LocalTorchServe,
    bodies: Sequence[bytes],
    content_type: str | Sequence[str] = "application/octet-stream",
    concurrency: int = 16,
    **kwargs,
) -> list[requests.Response]:
    """Every body POSTed once from `concurrency` threads (one content type, or one per body);
    the responses in the order of the bodies."""
    types = [content_type] * len(bodies) if isinstance(content_type, str) else list(content_type)
    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(lambda job: server.predict(job[0], job[1], **kwargs), zip(bodies, types)))


def count_right(responses: Sequence[requests.Response], digits: Sequence[int]) -> int:
    """How many responses are a 200 with the expected digit."""
    return sum(r.status_code == 200 and r.json().get("digit") == y for r, y in zip(responses, digits))
