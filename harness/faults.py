"""Faults and sustained load against a real TorchServe: a worker killed under load, a restart, a
soak of valid and invalid requests. `make soak` (benchmarks/reliability.py) runs them long and
reports; tests/test_faults.py runs them short and asserts.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time

import psutil
import requests

from harness.bad_inputs import BAD_BODIES
from harness.clients import count_right, predict_concurrently
from harness.local_server import LocalTorchServe
from harness.samples import sample_digits
from ops.tsctl import describe, wait_for_workers
from synthetic.families import generate


def valid_bodies() -> tuple[list[bytes], list[int]]:
    """The 100 committed MNIST test digits as PNGs, and their labels."""
    digits, labels = sample_digits()
    return generate("clean", digits), [int(y) for y in labels]


def reference_answers(server: LocalTorchServe, bodies: list[bytes]) -> list[int]:
    """What the healthy service answers for each body: the yardstick for "never a wrong answer"."""
    return [r.json()["digit"] for r in predict_concurrently(server, bodies)]


def worker_rss_mb(server: LocalTorchServe) -> float:
    total = 0
    for pid in server.worker_pids():
        try:
            total += psutil.Process(pid).memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return round(total / 2**20, 1)


class Load:
    """`concurrency` threads sending requests until stopped, recording every outcome."""

    def __init__(self, server, jobs: list[tuple[bytes, int, int | None]], concurrency: int, timeout: float = 10):
        self.server, self.jobs, self.timeout = server, jobs, timeout  # (body, status, digit)
        self.stop = threading.Event()
        # (sent, answered or failed, "ok" | "error:<status>" | "timeout" | "wrong" | ...), monotonic times
        self.outcomes: list[tuple[float, float, str]] = []
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(concurrency)]

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        while not self.stop.is_set():
            sent = time.monotonic()
            outcome = self._send(*rng.choice(self.jobs))
            self.outcomes.append((sent, time.monotonic(), outcome))

    def _send(self, body: bytes, status: int, digit: int | None) -> str:
        try:
            r = self.server.predict(body, timeout=self.timeout)
        except requests.Timeout:
            return "timeout"
        except requests.RequestException as e:
            return f"connection:{type(e).__name__}"
        if r.status_code != status:
            return f"error:{r.status_code}" if r.status_code >= 400 else f"unexpected:{r.status_code}"
        try:
            answer = r.json()
        except ValueError:
            return "bad_body"
        if status == 200:
            return "ok" if answer.get("digit") == digit else "wrong"
        # "code" is absent from the Open Inference Protocol's error body
        return "ok" if answer.get("code", status) == status and answer.get("error") else "bad_body"

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=self.timeout + 5)

    def counts(self, since: float = 0, until: float = float("inf")) -> dict[str, int]:
        """The outcomes of the requests sent at `since` or later and answered (or failed) by `until`."""
        return self._counted(lambda sent, done: since <= sent and done <= until)

    def in_flight(self, start: float, end: float) -> dict[str, int]:
        """The outcomes of the requests in flight at some moment from `start` to `end`: sent before
        `end` and answered (or failed) after `start`. A request sent before a worker was killed and
        timed out after it was replaced belongs here, not to the time after recovery."""
        return self._counted(lambda sent, done: sent < end and done > start)

    def _counted(self, picked) -> dict[str, int]:
        counts: dict[str, int] = {}
        for sent, done, outcome in list(self.outcomes):
            if picked(sent, done):
                counts[outcome] = counts.get(outcome, 0) + 1
        return counts


def kill_worker(server: LocalTorchServe, bodies, answers, concurrency: int = 8) -> dict:
    """kill -9 a worker under load; TorchServe must restart it and answer everything afterwards."""
    jobs = [(b, 200, d) for b, d in zip(bodies, answers)]
    workers_before = server.worker_pids()
    with Load(server, jobs, concurrency) as load:
        time.sleep(2)
        victim, killed_at = workers_before[0], time.monotonic()
        os.kill(victim, signal.SIGKILL)
        wait_for_workers(server.management, server.keys()["management"], len(workers_before), without=victim)
        recovered_at = time.monotonic()
        time.sleep(2)
    after = predict_concurrently(server, bodies[:50], concurrency=1)
    ping = requests.get(f"{server.inference}/ping", headers=server.headers(), timeout=10).json()
    return {
        "killed_pid": victim,
        "recovery_seconds": round(recovered_at - killed_at, 2),
        "before_kill": load.counts(until=killed_at),
        "during_recovery": load.in_flight(killed_at, recovered_at),
        "after_recovery": load.counts(since=recovered_at),
        "after_sequential_ok": count_right(after, answers),
        "after_sequential_sent": len(after),
        "ping": ping.get("status"),
        "workers_after": server.worker_pids(),
    }


def restart(server: LocalTorchServe, bodies, answers) -> dict:
    """Stop and start again from the same store and config: same model settings, same answers."""
    key = server.keys()["management"]
    before = describe(server.management, key)
    server.stop()
    server.start()
    after = describe(server.management, server.keys()["management"])
    same = ("modelName", "modelVersion", "batchSize", "maxBatchDelay", "minWorkers", "maxWorkers", "responseTimeout")
    answered = [server.predict(b).json().get("digit") for b in bodies[:20]]
    return {
        "settings_equal": all(before[k] == after[k] for k in same),
        "settings": {k: after[k] for k in same},
        "workers": len(after["workers"]),
        "answers_equal": answered == answers[:20],
    }


def soak(server: LocalTorchServe, bodies, answers, seconds: float, concurrency: int = 8) -> dict:
    """Constant load, about 80% valid requests and 20% from the bad-input catalogue, every answer
    checked; worker RSS before/after."""
    jobs = [(b, 200, d) for b, d in zip(bodies, answers)]
    repeats = max(1, round(len(jobs) / (4 * len(BAD_BODIES))))
    jobs += [(bad.body, bad.status, None) for bad in BAD_BODIES] * repeats
    memory_before = worker_rss_mb(server)
    start = time.monotonic()
    with Load(server, jobs, concurrency) as load:
        time.sleep(seconds)
    elapsed = time.monotonic() - start
    counts = load.counts()
    return {
        "seconds": round(elapsed, 1),
        "concurrency": concurrency,
        "requests": sum(counts.values()),
        "invalid_share": round(len(BAD_BODIES) * repeats / len(jobs), 2),
        "requests_per_s": round(sum(counts.values()) / elapsed, 1),
        "outcomes": counts,
        "unexpected": sum(v for k, v in counts.items() if k != "ok"),
        "worker_rss_mb_before": memory_before,
        "worker_rss_mb_after": worker_rss_mb(server),
    }
