"""No request lost: DigitClient's retries against a real TorchServe whose workers die under load.

TorchServe answers 5xx for the batch of a worker killed with SIGKILL, and a scale-down drops the
batch of each stopped worker without answering it at all (pytorch/serve#1101). Measured without a
client that retries: a SIGKILL under 16 callers failed 12 of 600 requests. With DigitClient every
request must come back with the digit the healthy server gives for the same image.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from harness.samples import sample_digits
from mnist_digit_client import DigitClient, Prediction
from ops.tsctl import describe, scale, wait_for_workers
from synthetic.families import generate

pytestmark = pytest.mark.integration

CALLERS = 16
REQUESTS = 800  # the 100 sample digits, 8 times each
ROUND, MAX_REQUESTS = 200, 4000  # the load's rounds, and how long it may wait for the fault to end
FAULT_AFTER = 100  # answers before the fault: it lands while the load runs
# Per attempt: far above a healthy answer under this load (tens of ms), yet short enough that a
# batch dropped by a scale-down costs its callers seconds, not the suite minutes.
ATTEMPT_TIMEOUT = 5.0
DEADLINE = 120.0


@pytest.fixture(scope="module")
def bodies() -> list[bytes]:
    return generate("clean", sample_digits()[0])


@pytest.fixture()
def client(server):
    with DigitClient(
        server.inference,
        token_file=server.root / "key_file.json",
        timeout=ATTEMPT_TIMEOUT,
        retries=8,
        deadline=DEADLINE,
    ) as client:
        yield client


@pytest.fixture(scope="module")
def healthy_digits(server, bodies) -> list[int]:
    """What the undisturbed service answers for each body: the yardstick."""
    with DigitClient(server.inference, token_file=server.root / "key_file.json", retries=0) as client:
        answers = client.predict_many(bodies, concurrency=4)
    assert all(isinstance(a, Prediction) for a in answers), answers
    return [a.digit for a in answers]


def load_with_fault(client: DigitClient, bodies: list[bytes], fault: Callable[[], object]) -> list:
    """At least REQUESTS predictions from CALLERS threads, in rounds of ROUND; `fault()` starts
    once FAULT_AFTER are answered.

    The fault runs on its own thread so that answers keep being counted while it acts (a
    synchronous scale-down takes a while, longer on a busy machine): rounds go on, up to
    MAX_REQUESTS, until plenty came after it, which the test checks.
    """
    results: list = []
    with ThreadPoolExecutor(max_workers=1) as fault_runner:
        fault_done = None
        answered = answered_after_fault = 0
        while len(results) < REQUESTS or (answered_after_fault < CALLERS * 10 and len(results) < MAX_REQUESTS):
            first = len(results)
            results += [None] * ROUND
            jobs = [bodies[i % len(bodies)] for i in range(first, first + ROUND)]
            for i, result in client.as_completed(jobs, concurrency=CALLERS):
                results[first + i] = result
                answered += 1
                if answered == FAULT_AFTER:
                    fault_done = fault_runner.submit(fault)
                elif fault_done is not None and fault_done.done():
                    answered_after_fault += 1
        fault_done.result()  # the fault's own error, if it had one
    assert answered_after_fault >= CALLERS * 10, f"the load was over before the fault: {answered_after_fault}"
    return results


def assert_every_request_answered_right(results: list, healthy_digits: list[int]) -> None:
    failed = [(i, r) for i, r in enumerate(results) if not isinstance(r, Prediction)]
    assert not failed, f"{len(failed)} of {len(results)} requests failed, e.g. {failed[:3]}"
    wrong = [i for i, r in enumerate(results) if r.digit != healthy_digits[i % len(healthy_digits)]]
    assert not wrong, f"{len(wrong)} answers differ from the healthy server's, e.g. request {wrong[:5]}"


def test_worker_killed_under_load_loses_no_request(server, client, bodies, healthy_digits):
    victim = server.worker_pids()[0]
    results = load_with_fault(client, bodies, lambda: os.kill(victim, signal.SIGKILL))
    # TorchServe replaced it; the next tests see 2 workers
    wait_for_workers(server.management, server.keys()["management"], 2, without=victim)
    print(f"SIGKILL of worker {victim}: {client.retried} attempts retried")
    assert_every_request_answered_right(results, healthy_digits)
    assert victim not in server.worker_pids()


def test_scale_down_under_load_loses_no_request(server, client, bodies, healthy_digits):
    key = server.keys()["management"]
    scale(server.management, key, 3)
    try:
        wait_for_workers(server.management, key, 3)
        results = load_with_fault(client, bodies, lambda: scale(server.management, key, 1))
        assert len(describe(server.management, key)["workers"]) == 1
    finally:
        scale(server.management, key, 2)
    print(f"scale 3 -> 1: {client.retried} attempts retried")
    assert_every_request_answered_right(results, healthy_digits)
