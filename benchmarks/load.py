"""Serving and loading for the benchmarks: a server started as `make serve` starts it, wrk's load
at a concurrency, the CPU that the frontend, the workers and wrk spent per request answered, and a
checked pass that compares every answer with its label."""

from __future__ import annotations

import json
import re
import resource
import shutil
import subprocess
import tempfile
from pathlib import Path

import psutil

from benchmarks.in_process import BODY_SETS, BodySet, listed_bodies
from harness.clients import count_right, predict_concurrently
from harness.local_server import LocalTorchServe
from ops.host_settings import HostSettings, model_snapshot, stored_models
from ops.paths import ROOT


def checked_pass(server: LocalTorchServe, listing: Path, labels: list, body_set: BodySet) -> dict:
    """Every body once at concurrency 32, every answer compared with its label."""
    bodies = listed_bodies(listing)
    responses = predict_concurrently(server, bodies, body_set.content_type, concurrency=32, path=body_set.path)
    errors = sum(r.status_code != 200 for r in responses)
    right = count_right(responses, labels)
    return {"requests": len(bodies), "errors": errors, "right": right}


def wrk(server: LocalTorchServe, listing: Path, body_set: BodySet, connections: int, seconds: int) -> dict:
    command = [
        "wrk",
        f"-t{min(connections, 2)}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(ROOT / "benchmarks" / "bench.lua"),
        server.inference + body_set.path,
        "--",
        str(listing),
        server.keys()["inference"],
        body_set.content_type,
        body_set.digit_pattern,
    ]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    result = json.loads(re.search(r"^BENCH_JSON (.*)$", output, re.M).group(1))
    result["rps"] = round(result["answered"] / (result["duration_us"] / 1e6), 1)
    return result


def cpu_seconds(server: LocalTorchServe) -> dict[str, float]:
    """CPU seconds used so far by the frontend (the JVM), the Python workers and wrk (our children)."""
    used = {"frontend": 0.0, "workers": 0.0}
    for proc in psutil.Process(server.process.pid).children(recursive=True):
        try:
            kind = (
                "frontend"
                if proc.name() == "java"
                else "workers"
                if "model_service_worker" in " ".join(proc.cmdline())
                else None
            )
            if kind:
                times = proc.cpu_times()
                used[kind] += times.user + times.system
        except psutil.NoSuchProcess:
            pass  # a worker that ended between the listing and the reading
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    used["wrk"] = children.ru_utime + children.ru_stime
    return used


def measured_wrk(server: LocalTorchServe, listing: Path, body_set: BodySet, connections: int, seconds: int) -> dict:
    """wrk at one level, plus the CPU microseconds each part spent per answered request."""
    before = cpu_seconds(server)
    result = wrk(server, listing, body_set, connections, seconds)
    after = cpu_seconds(server)
    result["cpu_us_per_request"] = {k: round((after[k] - before[k]) / max(result["answered"], 1) * 1e6) for k in before}
    return result


def serve(store: Path, settings: HostSettings) -> LocalTorchServe:
    """A started server, as `make serve` and the image serve: with the host's workers and batch
    delay (ops.host_settings), which replace the archive's."""
    return LocalTorchServe(store, overrides={"model_snapshot": model_snapshot(settings, stored_models(store))}).start()


def serve_and_load(store: Path, sets: dict, names: list[str], settings: HostSettings, args) -> dict:
    """Load at each level (see serve)."""
    server = serve(store, settings)
    try:
        if args.warmup:
            listing, _ = sets[names[0]]
            wrk(server, listing, BODY_SETS[names[0]], 32, args.warmup)
        rows = {}
        for name in names:
            listing, labels = sets[name]
            rows[name] = {"checked": checked_pass(server, listing, labels, BODY_SETS[name]), "load": {}}
            for connections in args.concurrency:
                rows[name]["load"][connections] = measured_wrk(
                    server, listing, BODY_SETS[name], connections, args.duration
                )
                print(name, connections, rows[name]["load"][connections], flush=True)
        return rows
    finally:
        server.stop()


def folders(out: str, prefix: str) -> tuple[Path, Path]:
    """The report folder (made if missing) and a fresh work folder for a benchmark run; stops at once
    when wrk is missing."""
    if not shutil.which("wrk"):
        raise SystemExit("wrk not found: `apt-get install wrk` (make wrk does it when run as root)")
    Path(out).mkdir(parents=True, exist_ok=True)
    return Path(out), Path(tempfile.mkdtemp(prefix=prefix))
