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


def answered_digit(response: requests.Response) -> int | str | None:
    """The digit of a 200 answer, in the service's own form or the Open Inference Protocol's (the
    number model's: its number)."""
    if response.status_code != 200:
        return None
    answer = response.json()
    if "outputs" in answer:
        digits = [o["data"] for o in answer["outputs"] if o["name"] == "digit"]
        return digits[0][0] if digits and len(digits[0]) == 1 else None
    return answer.get("digit", answer.get("number"))


def count_right(responses: Sequence[requests.Response], digits: Sequence[int | str]) -> int:
    """How many responses are a 200 with the expected digit (number)."""
    return sum(answered_digit(r) == y for r, y in zip(responses, digits))
