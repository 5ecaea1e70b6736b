"""`make bench`'s variants: --sweep serves batch size x delay x workers, --cuda-sync the GPU wait
schedules (handler/cuda_sync.py), each archive built with its own model-config.yaml; their runs and
their reports (sweep.{json,md}, cuda-sync.{json,md})."""

from __future__ import annotations

from pathlib import Path

import yaml

from benchmarks.bench_report import failures, markdown_table
from benchmarks.in_process import SETS
from benchmarks.load import serve_and_load, wrk
from harness.local_server import LocalTorchServe
from harness.settings import model_config
from ops.build_archive import build_archive
from ops.host_settings import HostSettings


def sweep(sets: dict, work: Path, args) -> list[dict]:
    """Throughput and latency of the service for batch size x max delay x workers (MNIST PNGs)."""
    base = model_config()
    rows = []
    pairs = [(16, d) for d in args.sweep_delays] if args.sweep_delays else [(1, 0), (8, 2), (16, 5), (32, 5), (16, 10)]
    for workers in args.sweep_workers:
        for batch, delay in pairs:
            config = dict(base, minWorkers=workers, maxWorkers=workers, batchSize=batch, maxBatchDelay=delay)
            server = LocalTorchServe(archive_with(config, work / f"sweep-{workers}-{batch}-{delay}")).start()
            try:
                listing, _ = sets["mnist_png"]
                row = {"workers": workers, "batchSize": batch, "maxBatchDelay": delay}
                if args.warmup:
                    wrk(server, listing, SETS["mnist_png"], 32, args.warmup)
                for connections in (1, 32):
                    r = wrk(server, listing, SETS["mnist_png"], connections, args.duration)
                    row[f"c{connections}_rps"], row[f"c{connections}_p50_ms"] = r["rps"], r["p50_us"] / 1000
                    row[f"c{connections}_p99_ms"] = r["p99_us"] / 1000
            finally:
                server.stop()
            print("sweep", row, flush=True)
            rows.append(row)
    return rows


def archive_with(config: dict, folder: Path) -> Path:
    """A model store in `folder` holding the service's archive with `config` as its model-config.yaml."""
    folder.mkdir()
    (folder / "model-config.yaml").write_text(yaml.safe_dump(config))
    build_archive(folder / "store", config_file=folder / "model-config.yaml")
    return folder / "store"


def cuda_sync_runs(sets: dict, work: Path, settings: HostSettings, args) -> list[dict]:
    """The service with each --cuda-sync schedule (handler/cuda_sync.py) in its archive's
    model-config.yaml, otherwise as in step 3: whether sleeping instead of spinning through the
    GPU waits lowers the workers' CPU per request, and what it costs in requests/s and latency."""
    base = model_config()
    rows = []
    for schedule in args.cuda_sync:
        config = dict(base, handler={**base.get("handler", {}), "cuda_sync": schedule})
        store = archive_with(config, work / f"cuda-sync-{schedule}")
        for name, result in serve_and_load(store, sets, list(SETS), settings, args).items():
            for connections, r in result["load"].items():
                rows.append(
                    {
                        "cuda_sync": schedule,
                        "bodies": name,
                        "concurrency": connections,
                        "rps": r["rps"],
                        "p50_ms": r["p50_us"] / 1000,
                        "p99_ms": r["p99_us"] / 1000,
                        "errors": failures(r),
                        "worker_cpu_us": r["cpu_us_per_request"]["workers"],
                        "checked": f"{result['checked']['right']}/{result['checked']['requests']}",
                    }
                )
    return rows


def cuda_sync_markdown(report: dict, settings) -> str:
    """The GPU wait schedules' table (`settings`: the host's HostSettings)."""
    rows = report["rows"]
    lines = [
        "# GPU wait schedules",
        "",
        f"The service with handler.cuda_sync set in its archive, {settings.workers} workers, "
        f"batch {settings.batch_size}, max delay {settings.batch_delay_ms} ms; "
        "`python -m benchmarks.bench --cuda-sync ...`. Workers' CPU is per answered request; checked: "
        "right answers of one pass over the bodies at concurrency 32.",
        "",
    ]
    lines += markdown_table(
        [
            "cuda_sync",
            "bodies",
            "concurrency",
            "requests/s",
            "p50 ms",
            "p99 ms",
            "errors",
            "workers' CPU us",
            "checked",
        ],
        [
            [
                r["cuda_sync"],
                r["bodies"],
                str(r["concurrency"]),
                f"{r['rps']:,.0f}",
                f"{r['p50_ms']:.1f}",
                f"{r['p99_ms']:.1f}",
                str(r["errors"]),
                str(r["worker_cpu_us"]),
                r["checked"],
            ]
            for r in rows
        ],
    )
    return "\n".join(lines) + "\n"


def sweep_markdown(report: dict) -> str:
    """The sweep's table."""
    rows = report["rows"]
    lines = [
        "# Batching and workers sweep",
        "",
        "The service with MNIST test PNGs, wrk at concurrency 1 and 32; `python -m benchmarks.bench --sweep`.",
        "",
    ]
    lines += markdown_table(
        ["workers", "batch size", "max delay ms", "c1 req/s", "c1 p50 ms", "c32 req/s", "c32 p50 ms", "c32 p99 ms"],
        [
            [
                str(r["workers"]),
                str(r["batchSize"]),
                str(r["maxBatchDelay"]),
                f"{r['c1_rps']:,.0f}",
                f"{r['c1_p50_ms']:.1f}",
                f"{r['c32_rps']:,.0f}",
                f"{r['c32_p50_ms']:.1f}",
                f"{r['c32_p99_ms']:.1f}",
            ]
            for r in rows
        ],
    )
    return "\n".join(lines) + "\n"
