"""Faults and sustained load against a real TorchServe serving both models: a worker killed under
load, a restart, a soak of valid and invalid requests. `make soak` (benchmarks/reliability.py)
runs them long and reports; tests/test_faults.py runs them short and asserts.

The load is a list of Jobs, requests of either model with the status and answer each must get;
outcomes are counted per model, so that a worker of one model killed under a load on both shows
what it cost that model and that the other did not notice.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from dataclasses import dataclass

import psutil
import requests

from harness.bad_inputs import BAD_BODIES, number_bad_bodies
from harness.clients import answered_digit, count_right, predict_concurrently
from harness.local_server import LocalTorchServe
from harness.samples import sample_digits
from ops.tsctl import describe, wait_for_workers
from synthetic.families import generate
from synthetic.numbers import number_family

# The number model's valid requests: NUMBERS_PER_FAMILY numbers of 3-7 of the committed sample
# digits in each of these families (synthetic/numbers.py).
NUMBER_FAMILIES = ("gaps", "touching", "sizes_baseline", "paper_photo", "canvas")
NUMBERS_PER_FAMILY = 10


@dataclass(frozen=True)
class Job:
    """A request and what it must get: its status and, for a 200, the digit (the number) it reads."""

    model: str
    body: bytes
    status: int = 200
    answer: int | str | None = None
    content_type: str = "application/octet-stream"

    @property
    def path(self) -> str:
        return predictions(self.model)


def predictions(model: str) -> str:
    """The model's TorchServe prediction route."""
    return f"/predictions/{model}"


def models_of(jobs: list[Job]) -> list[str]:
    return sorted({job.model for job in jobs})


def valid_of(jobs: list[Job], model: str) -> list[Job]:
    """The model's jobs that must be answered 200."""
    return [job for job in jobs if job.model == model and job.status == 200]


def valid_bodies(model: str = "mnist") -> tuple[list[bytes], list[int | str]]:
    """The 100 committed MNIST test digits as PNGs and their labels; for the number model, numbers
    written with them (NUMBER_FAMILIES) and their digits."""
    digits, labels = sample_digits()
    if model == "number":
        made = [
            pair
            for seed, family in enumerate(NUMBER_FAMILIES)
            for pair in number_family(family, digits, labels, NUMBERS_PER_FAMILY, seed=seed)
        ]
        return [body for body, _ in made], [text for _, text in made]
    return generate("clean", digits), [int(y) for y in labels]


def reference_answers(server: LocalTorchServe, bodies: list[bytes], model: str = "mnist") -> list[int | str | None]:
    """What the healthy service answers for each body (None: no 200): the yardstick for "never a
    wrong answer"."""
    return [answered_digit(r) for r in predict_concurrently(server, bodies, path=predictions(model))]


def valid_jobs(model: str, bodies: list[bytes], answers: list[int | str | None]) -> list[Job]:
    """The bodies the healthy service read, each with its answer."""
    return [Job(model, body, 200, answer) for body, answer in zip(bodies, answers) if answer is not None]


def bad_jobs(model: str) -> list[Job]:
    """The bad-input catalogue (harness/bad_inputs.py) as the model must refuse it."""
    bad = BAD_BODIES + (number_bad_bodies() if model == "number" else [])
    return [Job(model, b.body, b.status, content_type=b.content_type) for b in bad]


def worker_rss_mb(server: LocalTorchServe) -> float:
    """The RSS of every worker of every model."""
    total = 0
    for pid in (pid for model in server.models for pid in server.worker_pids(model)):
        try:
            total += psutil.Process(pid).memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return round(total / 2**20, 1)


class Load:
    """`concurrency` threads sending Jobs until stopped, recording every outcome."""

    def __init__(self, server, jobs: list[Job], concurrency: int, timeout: float = 10):
        self.server, self.jobs, self.timeout = server, jobs, timeout
        self.stop = threading.Event()
        # (sent, answered or failed, model, "ok" | "error:<status>" | "timeout" | "wrong" | ...), monotonic times
        self.outcomes: list[tuple[float, float, str, str]] = []
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(concurrency)]

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        while not self.stop.is_set():
            job = rng.choice(self.jobs)
            sent = time.monotonic()
            outcome = self._send(job)
            self.outcomes.append((sent, time.monotonic(), job.model, outcome))

    def _send(self, job: Job) -> str:
        try:
            r = self.server.predict(job.body, job.content_type, timeout=self.timeout, path=job.path)
        except requests.Timeout:
            return "timeout"
        except requests.RequestException as e:
            return f"connection:{type(e).__name__}"
        if r.status_code != job.status:
            return f"error:{r.status_code}" if r.status_code >= 400 else f"unexpected:{r.status_code}"
        try:
            if job.status == 200:
                return "ok" if answered_digit(r) == job.answer else "wrong"
            answer = r.json()
        except ValueError:
            return "bad_body"
        # "code" is absent from the Open Inference Protocol's error body
        return "ok" if answer.get("code", job.status) == job.status and answer.get("error") else "bad_body"

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=self.timeout + 5)

    def counts(self, model: str, since: float = 0, until: float = float("inf")) -> dict[str, int]:
        """The model's outcomes of the requests sent at `since` or later and answered (or failed) by `until`."""
        return self._counted(model, lambda sent, done: since <= sent and done <= until)

    def in_flight(self, model: str, start: float, end: float) -> dict[str, int]:
        """The model's outcomes of the requests in flight at some moment from `start` to `end`: sent
        before `end` and answered (or failed) after `start`. A request sent before a worker was
        killed and timed out after it was replaced belongs here, not to the time after recovery."""
        return self._counted(model, lambda sent, done: sent < end and done > start)

    def _counted(self, model: str, picked) -> dict[str, int]:
        counts: dict[str, int] = {}
        for sent, done, of, outcome in list(self.outcomes):
            if of == model and picked(sent, done):
                counts[outcome] = counts.get(outcome, 0) + 1
        return counts


def kill_worker(server: LocalTorchServe, jobs: list[Job], model: str, concurrency: int = 8) -> dict:
    """kill -9 a worker of `model` under a load of `jobs` (of any model); TorchServe must restart
    it and answer everything afterwards. Per model of the jobs, its outcomes before the kill,
    during recovery and after it."""
    workers_before = server.worker_pids(model)
    with Load(server, jobs, concurrency) as load:
        time.sleep(2)
        victim, killed_at = workers_before[0], time.monotonic()
        os.kill(victim, signal.SIGKILL)
        key = server.keys()["management"]
        wait_for_workers(server.management, key, len(workers_before), without=victim, model=model)
        recovered_at = time.monotonic()
        time.sleep(2)
    mine = valid_of(jobs, model)[:50]
    after = predict_concurrently(server, [job.body for job in mine], concurrency=1, path=predictions(model))
    ping = requests.get(f"{server.inference}/ping", headers=server.headers(), timeout=10).json()
    return {
        "model": model,
        "killed_pid": victim,
        "recovery_seconds": round(recovered_at - killed_at, 2),
        "load": {
            of: {
                "before_kill": load.counts(of, until=killed_at),
                "during_recovery": load.in_flight(of, killed_at, recovered_at),
                "after_recovery": load.counts(of, since=recovered_at),
            }
            for of in models_of(jobs)
        },
        "after_sequential_ok": count_right(after, [job.answer for job in mine]),
        "after_sequential_sent": len(after),
        "ping": ping.get("status"),
        "workers_after": server.worker_pids(model),
    }


SETTINGS = ("modelName", "modelVersion", "batchSize", "maxBatchDelay", "minWorkers", "maxWorkers", "responseTimeout")


def restart(server: LocalTorchServe, jobs: list[Job]) -> dict:
    """Stop and start again from the same store and config: per model, the same settings, as many
    workers and the same answers to its first 20 valid jobs."""
    models = models_of(jobs)
    key = server.keys()["management"]
    before = {model: describe(server.management, key, model) for model in models}
    server.stop()
    server.start()
    key = server.keys()["management"]
    out = {}
    for model in models:
        after = describe(server.management, key, model)
        mine = valid_of(jobs, model)[:20]
        answered = [answered_digit(server.predict(job.body, path=job.path)) for job in mine]
        out[model] = {
            "settings_equal": all(before[model][k] == after[k] for k in SETTINGS),
            "settings": {k: after[k] for k in SETTINGS},
            "workers": len(after["workers"]),
            "answers_equal": answered == [job.answer for job in mine],
        }
    return out


def soak(server: LocalTorchServe, jobs: list[Job], seconds: float, concurrency: int = 8) -> dict:
    """Constant load of `jobs` and the bad-input catalogue of each of their models, about 80% valid
    and 20% bad requests, every answer checked; every worker's RSS before, once warmed up (a third
    of the way: the first large uploads grow the allocators' pools) and after."""
    mixed = list(jobs)
    models = models_of(jobs)
    for model in models:
        bad = bad_jobs(model)
        mixed += bad * max(1, round(len(valid_of(jobs, model)) / (4 * len(bad))))
    memory_before = worker_rss_mb(server)
    start = time.monotonic()
    with Load(server, mixed, concurrency) as load:
        time.sleep(seconds / 3)
        memory_warm = worker_rss_mb(server)
        time.sleep(seconds * 2 / 3)
    elapsed = time.monotonic() - start
    per_model = {model: load.counts(model) for model in models}
    requests_sent = sum(sum(counts.values()) for counts in per_model.values())
    return {
        "seconds": round(elapsed, 1),
        "concurrency": concurrency,
        "requests": requests_sent,
        "invalid_share": round(sum(job.status != 200 for job in mixed) / len(mixed), 2),
        "requests_per_s": round(requests_sent / elapsed, 1),
        "outcomes": per_model,
        "unexpected": sum(n for counts in per_model.values() for k, n in counts.items() if k != "ok"),
        "worker_rss_mb_before": memory_before,
        "worker_rss_mb_warm": memory_warm,
        "worker_rss_mb_after": worker_rss_mb(server),
    }
