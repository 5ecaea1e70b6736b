"""No request lost: the client's retries against a real TorchServe whose workers die under load, or
which is killed whole and started again, for both clients (threaded and asyncio); and a number
model's worker killed under read_number.

TorchServe answers 5xx for the batch of a worker killed with SIGKILL, and a scale-down drops the
batch of each stopped worker without answering it at all (pytorch/serve#1101). Measured without a
client that retries: a SIGKILL under 16 callers failed 12 of 600 requests. A whole-server restart
(a pod restarted, a rolling update) refuses connections until the new server listens, then answers
with new keys. With the client every request must come back with the digit the undisturbed server
gives for the same image.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from harness.faults import valid_bodies
from harness.samples import sample_digits
from mnist_digit_client import DigitClient, NumberReading, Prediction, RetryPolicy
from ops.tsctl import describe, scale, wait_for_workers
from synthetic.families import generate
from tests.client_helpers import KINDS, make_client

pytestmark = pytest.mark.integration

CALLERS = 16
REQUESTS = 800  # the 100 sample digits, 8 times each
ROUND, MAX_REQUESTS = 200, 4000  # the load's rounds, and how long it may wait for the fault to end
FAULT_AFTER = 100  # answers before the fault: it lands while the load runs
# Per attempt: far above a healthy answer under this load (tens of ms), yet short enough that a
# batch dropped by a scale-down costs its callers seconds, not the suite minutes.
ATTEMPT_TIMEOUT = 5.0
DEADLINE = 120.0
# Seconds the killed server stays down before a new one starts (which takes a few more): with the
# start, the restart lasts about 15 s, what the client's default deadline (30 s) must ride through.
DOWN_FOR = 12.0


@pytest.fixture(scope="module")
def bodies() -> list[bytes]:
    return generate("clean", sample_digits()[0])


@pytest.fixture(params=KINDS)
def client(request, server):
    with make_client(
        request.param,
        server.inference,
        token_file=server.root / "key_file.json",
        timeout=ATTEMPT_TIMEOUT,
        retries=8,
        deadline=DEADLINE,
    ) as client:
        yield client


@pytest.fixture(params=KINDS)
def default_client(request, server):
    """The client as a caller makes it: the default timeout, retries and deadline."""
    with make_client(request.param, server.inference, token_file=server.root / "key_file.json") as client:
        yield client


@pytest.fixture(scope="module")
def healthy_digits(server, bodies) -> list[int]:
    """What the undisturbed service answers for each body: the yardstick."""
    with DigitClient(server.inference, token_file=server.root / "key_file.json", retries=0) as client:
        answers = client.predict_many(bodies, concurrency=4)
    assert all(isinstance(a, Prediction) for a in answers), answers
    return [a.digit for a in answers]


def each_answer(client, jobs: list[bytes], on_answer: Callable[[int, object], None]) -> None:
    """on_answer(index, result) for each job as it is answered, CALLERS at a time, by either client."""
    if isinstance(client, DigitClient):
        for i, result in client.as_completed(jobs, concurrency=CALLERS):
            on_answer(i, result)
        return

    async def drive() -> None:
        async for i, result in client.client.as_completed(jobs, concurrency=CALLERS):
            on_answer(i, result)

    client.loop.run_until_complete(drive())


def load_with_fault(client, bodies: list[bytes], fault: Callable[[], object]) -> list:
    """At least REQUESTS predictions in rounds of ROUND; `fault()` starts once FAULT_AFTER are answered.

    The fault runs on its own thread so that answers keep being counted while it acts (a
    synchronous scale-down takes a while, longer on a busy machine): rounds go on, up to
    MAX_REQUESTS, until plenty came after it, which the test checks.
    """
    results: list = []
    state = {"answered": 0, "after_fault": 0, "fault": None}
    with ThreadPoolExecutor(max_workers=1) as fault_runner:

        def on_answer(first: int, i: int, result: object) -> None:
            results[first + i] = result
            state["answered"] += 1
            if state["answered"] == FAULT_AFTER:
                state["fault"] = fault_runner.submit(fault)
            elif state["fault"] is not None and state["fault"].done():
                state["after_fault"] += 1

        while len(results) < REQUESTS or (state["after_fault"] < CALLERS * 10 and len(results) < MAX_REQUESTS):
            first = len(results)
            results += [None] * ROUND
            jobs = [bodies[i % len(bodies)] for i in range(first, first + ROUND)]
            each_answer(client, jobs, lambda i, result, first=first: on_answer(first, i, result))
        state["fault"].result()  # the fault's own error, if it had one
    assert state["after_fault"] >= CALLERS * 10, f"the load was over before the fault: {state['after_fault']}"
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
        wait_for_workers(server.management, key, 2)
    print(f"scale 3 -> 1: {client.retried} attempts retried")
    assert_every_request_answered_right(results, healthy_digits)


def test_whole_server_restart_under_load_loses_no_request(server, default_client, bodies, healthy_digits):
    """SIGKILL of the frontend and every worker at once, then a new server on the same ports with
    new keys: callers see refused connections, then refused keys (re-read from the key file)."""
    downtime = {}

    def restart() -> None:
        killed = time.monotonic()
        server.kill()
        time.sleep(DOWN_FOR)
        server.start(attempts=1)  # the same ports, or fail
        downtime["s"] = time.monotonic() - killed

    results = load_with_fault(default_client, bodies, restart)
    print(f"restart: down {downtime['s']:.1f} s; {default_client.retried} attempts retried")
    assert default_client.policy == RetryPolicy()  # the defaults, as callers have them
    assert_every_request_answered_right(results, healthy_digits)


def test_number_worker_killed_under_read_number_loses_no_reading(server):
    """A worker of the number model killed while CALLERS threads read numbers through one client:
    every reading comes back, the healthy server's."""
    bodies, _ = valid_bodies("number")
    key_file = server.root / "key_file.json"
    with DigitClient(
        server.inference, token_file=key_file, timeout=ATTEMPT_TIMEOUT, retries=8, deadline=DEADLINE
    ) as client:
        healthy = [client.read_number(body).number for body in bodies]
        workers = server.worker_pids("number")
        victim = workers[0]
        lock, state = threading.Lock(), {"answered": 0, "after_kill": 0}

        def read(i: int) -> NumberReading:
            reading = client.read_number(bodies[i % len(bodies)])
            with lock:
                state["answered"] += 1
                if state["answered"] == FAULT_AFTER:
                    os.kill(victim, signal.SIGKILL)
                elif state["answered"] > FAULT_AFTER:
                    state["after_kill"] += 1
            return reading

        with ThreadPoolExecutor(CALLERS) as pool:
            readings = list(pool.map(read, range(len(bodies) * 8)))
        print(f"SIGKILL of number worker {victim}: {client.retried} attempts retried")
    wait_for_workers(server.management, server.keys()["management"], len(workers), without=victim, model="number")
    assert state["after_kill"] >= CALLERS * 10, state
    wrong = [i for i, r in enumerate(readings) if r.number != healthy[i % len(bodies)]]
    assert not wrong, f"{len(wrong)} readings differ from the healthy server's, e.g. request {wrong[:5]}"
