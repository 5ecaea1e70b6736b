"""Worker count, batch size and batch delay that fit the host, with overrides (WORKERS,
BATCH_SIZE, BATCH_DELAY_MS).

TorchServe gives the archive's model-config.yaml precedence over config.properties' `models=`
for minWorkers, maxWorkers, batchSize and maxBatchDelay (ModelServer.initModelStore and
ModelManager.createModel in 0.12.0). A `model_snapshot` in config.properties is restored with
exactly the values it holds (Model.setModelState), so that is how these settings reach the
server: `model_snapshot(...)` below, written by ops.entrypoint and ops.model_layout.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from ops.version import release_version

MODEL_NAME = "mnist"
# Every model the service serves (ops/build_archive.py, HANDLERS), each with the same settings.
MODEL_NAMES = (MODEL_NAME, "number")
# The archive's batch size, for every host. On the GPU host, fewer workers with larger batches
# served more paper photos and fewer MNIST PNGs (docs/deploy.md, "Settings that fit the host").
BATCH_SIZE = 16
# A sweep on a 2-core CPU host (docs/decisions.md, "Batching, delay and workers"; measured with an
# earlier, smaller network): batch 16 with 5 ms served the most at concurrency 32 with 2 workers
# (3,877 req/s; batch 8 with 2 ms: 2,712, but 5.7 ms instead of 8.6 ms p50 at concurrency 1).
# 0 ms makes TorchServe send batches of at most two (Model.pollInferJob stops polling once the
# delay is spent), which starves the workers under load.
CPU_BATCH_DELAY_MS = 5
# A GPU host answers far more requests per second, so batches fill in well under 1 ms under load,
# and 1 ms bounds what a lone request waits (on an H200 host with 5 ms: p50 8.3 ms at concurrency 1;
# docs/deploy.md, "Settings that fit the host").
GPU_BATCH_DELAY_MS = 1
RESPONSE_TIMEOUT_S = 30
STARTUP_TIMEOUT_S = 120


@dataclass(frozen=True)
class HostSettings:
    cpus: int
    gpus: int
    workers: int
    batch_delay_ms: int
    source: str  # "host" or "override"
    batch_size: int = BATCH_SIZE


def cpu_count() -> int:
    """CPUs this process may use: its affinity, capped by a cgroup CPU quota (a pod's limit)."""
    cpus = len(os.sched_getaffinity(0))
    quota = _cgroup_cpu_quota()
    return max(1, min(cpus, math.ceil(quota))) if quota else cpus


def _cgroup_cpu_quota() -> float | None:
    """The CPU limit in cores from cgroup v2 cpu.max or v1 cfs files; None when unlimited."""
    v2 = Path("/sys/fs/cgroup/cpu.max")
    if v2.exists():
        quota, period = v2.read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    v1_quota, v1_period = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")
    if v1_quota.exists() and v1_period.exists():
        quota = int(v1_quota.read_text())
        return None if quota <= 0 else quota / int(v1_period.read_text())
    return None


def gpu_count() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def workers_for(cpus: int, gpus: int) -> int:
    """One worker per core on a CPU host; half the cores (at least one per GPU) on a GPU host.

    CPU: each worker runs PyTorch on one thread; a sweep on 2 cores measured 2 workers
    above 1 (3,877 against 2,539 req/s at concurrency 32, batch 16, 5 ms). GPU: the network
    is tiny, so decoding and preprocessing on the CPU bound a worker: an H200 host (16 cores)
    served 20,004 req/s at concurrency 128 with 8 workers against 5,433 with 2 (docs/deploy.md,
    "Settings that fit the host"), and each CUDA worker holds a GPU context and a busy host thread, hence
    half the cores.
    """
    if gpus:
        return max(gpus, cpus // 2)
    return max(1, cpus)


def host_settings(environ: dict[str, str] | None = None) -> HostSettings:
    environ = os.environ if environ is None else environ
    cpus, gpus = cpu_count(), gpu_count()
    workers = workers_for(cpus, gpus)
    delay = GPU_BATCH_DELAY_MS if gpus else CPU_BATCH_DELAY_MS
    batch_size, overridden = BATCH_SIZE, False
    if environ.get("WORKERS"):
        workers, overridden = _positive_int("WORKERS", environ["WORKERS"]), True
    if environ.get("BATCH_DELAY_MS"):
        delay, overridden = _positive_int("BATCH_DELAY_MS", environ["BATCH_DELAY_MS"], allow_zero=True), True
    if environ.get("BATCH_SIZE"):
        batch_size, overridden = _positive_int("BATCH_SIZE", environ["BATCH_SIZE"]), True
    return HostSettings(cpus, gpus, workers, delay, "override" if overridden else "host", batch_size)


def _positive_int(name: str, text: str, allow_zero: bool = False) -> int:
    try:
        value = int(text)
    except ValueError:
        raise SystemExit(f"{name} must be an integer, got {text!r}") from None
    if value < (0 if allow_zero else 1):
        raise SystemExit(f"{name} must be {'>= 0' if allow_zero else '>= 1'}, got {value}")
    return value


def stored_models(store: str | os.PathLike) -> tuple[str, ...]:
    """Those of the service's models whose archive (NAME.mar) is in the model store `store`: a
    snapshot must name no other, or TorchServe stops at start."""
    return tuple(name for name in MODEL_NAMES if (Path(store) / f"{name}.mar").exists())


def model_snapshot(settings: HostSettings, models: tuple[str, ...] = MODEL_NAMES) -> str:
    """The `model_snapshot` property: registers each of `models` (NAME.mar in the model store) with
    exactly these settings, keyed by the release's version (TorchServe 0.12 registers the archive's
    own version whatever the key, so an archive of another release still gets them:
    tests/test_versions.py)."""
    models_of = {name: {release_version(): _settings_of_version(settings, f"{name}.mar")} for name in models}
    snapshot = {"name": "startup.cfg", "modelCount": len(models_of), "models": models_of}
    return json.dumps(snapshot, separators=(",", ":"))


def _settings_of_version(settings: HostSettings, mar_name: str) -> dict:
    return {
        "defaultVersion": True,
        "marName": mar_name,
        "minWorkers": settings.workers,
        "maxWorkers": settings.workers,
        "batchSize": settings.batch_size,
        "maxBatchDelay": settings.batch_delay_ms,
        "responseTimeout": RESPONSE_TIMEOUT_S,
        "startupTimeout": STARTUP_TIMEOUT_S,
    }
