"""`make bench`: the service beside TorchServe's own ceiling and the handler's in-process ceiling.

In one run on one machine:
1. in-process ceiling: DigitHandler.handle (decode, preprocess, forward, postprocess) without HTTP,
   at batch sizes 1, the served one (BATCH_SIZE=), 16, 64 and 256, on the worker's device (a GPU when there is one;
   there also with MNIST's PNGs preprocessed on the GPU, which the handler does on the CPU);
2. TorchServe ceiling: a no-op handler archive served with the same batch size, delay and workers:
   the host's (ops.host_settings, as `make serve` and the image; WORKERS=, BATCH_SIZE= and BATCH_DELAY_MS= override);
3. the service: requests/s and p50/p90/p99 at each concurrency, with MNIST test PNGs and with
   paper-photo JPEGs; every answer must be a 200 with a digit, and a checked pass compares every
   digit with its label;
4. pairs (--pairs): the no-op, then the service, each started afresh, warmed and measured at
   concurrency 32 and 1 with MNIST PNGs, a minute apart at most. This VM's speed drifts over
   minutes, and steps 2 and 3 are several minutes apart: the goals' ratios are the median of
   step 2-3's ratio and each pair's.
Load comes from wrk (apt-get install wrk). Each server first gets --warmup seconds of load that
are not measured: the JVM's JIT compilers take most of a core for the first half minute, and
they compile by calls, so the service, answering half the requests per second, needs about
twice the no-op's time (docs/performance.md).
At every level the CPU time of the frontend (Java), the workers (Python) and wrk is divided by
the requests answered: where the time goes. Writes reports/bench.{json,md,png}, or on a host with a
GPU reports/bench-gpu.{json,md,png}, and names the cores and GPUs it found.
Instead of all that, --sweep serves batch size x delay x workers, and --cuda-sync the GPU wait
schedules (handler/cuda_sync.py) one after the other.
This module drives the servers and wrk; the bodies and step 1 live in benchmarks/in_process.py, the
reports' tables, goals and plot in benchmarks/bench_report.py.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import tempfile
from pathlib import Path

import psutil
import yaml

from benchmarks.bench_report import (
    cuda_sync_markdown,
    failures,
    markdown,
    plot,
    ratios,
    report_stem,
    sweep_markdown,
    total_cpu_us,
    write_report,
)
from benchmarks.in_process import IN_PROCESS_BATCHES, SETS, in_process, listed_bodies, write_bodies
from handler.cuda_sync import SCHEDULES
from harness.clients import count_right, predict_concurrently
from harness.local_server import LocalTorchServe
from harness.settings import model_config
from ops.build_archive import build_archive
from ops.host_settings import HostSettings, host_settings, model_snapshot
from ops.paths import ROOT
from ops.stamp import gpus, stamp


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=int, default=10, help="seconds per load level")
    p.add_argument("--warmup", type=int, default=60, help="seconds of unmeasured load on each server first")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 128], help="connections")
    p.add_argument("--out", default=str(ROOT / "reports"), help="report folder")
    p.add_argument("--label", default=None, help="machine description in the reports' stamp (default: detected)")
    p.add_argument(
        "--pairs",
        type=int,
        default=2,
        help="back-to-back no-op/service pairs for the goals' ratios (0: steps 2-3 alone)",
    )
    p.add_argument("--sweep", action="store_true", help="instead: sweep batch size, delay and workers")
    p.add_argument("--sweep-workers", type=int, nargs="+", default=[1, 2], help="sweep: worker counts")
    p.add_argument(
        "--sweep-delays",
        type=int,
        nargs="+",
        default=None,
        help="sweep: max batch delays (ms) at batch size 16, instead of the batch/delay pairs",
    )
    p.add_argument(
        "--cuda-sync",
        nargs="+",
        default=None,
        choices=sorted(SCHEDULES),
        metavar="SCHEDULE",
        help="instead: the service once per GPU wait schedule (model-config.yaml's handler.cuda_sync: "
        f"{', '.join(SCHEDULES)}) with the host's settings, both body sets at each --concurrency; "
        "writes cuda-sync.{json,md}",
    )
    return p


def checked_pass(server: LocalTorchServe, listing: Path, labels: list[int], content_type: str) -> dict:
    """Every body once at concurrency 32, every answer compared with its label."""
    bodies = listed_bodies(listing)
    responses = predict_concurrently(server, bodies, content_type, concurrency=32)
    errors = sum(r.status_code != 200 for r in responses)
    right = count_right(responses, labels)
    return {"requests": len(bodies), "errors": errors, "right": right}


def wrk(server: LocalTorchServe, listing: Path, content_type: str, connections: int, seconds: int) -> dict:
    command = [
        "wrk",
        f"-t{min(connections, 2)}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(ROOT / "benchmarks" / "bench.lua"),
        server.predictions,
        "--",
        str(listing),
        server.keys()["inference"],
        content_type,
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


def measured_wrk(server: LocalTorchServe, listing: Path, content_type: str, connections: int, seconds: int) -> dict:
    """wrk at one level, plus the CPU microseconds each part spent per answered request."""
    before = cpu_seconds(server)
    result = wrk(server, listing, content_type, connections, seconds)
    after = cpu_seconds(server)
    result["cpu_us_per_request"] = {k: round((after[k] - before[k]) / max(result["answered"], 1) * 1e6) for k in before}
    return result


def serve(store: Path, settings: HostSettings) -> LocalTorchServe:
    """A started server, as `make serve` and the image serve: with the host's workers and batch
    delay (ops.host_settings), which replace the archive's."""
    return LocalTorchServe(store, overrides={"model_snapshot": model_snapshot(settings)}).start()


def serve_and_load(store: Path, sets: dict, names: list[str], settings: HostSettings, args) -> dict:
    """Load at each level (see serve)."""
    server = serve(store, settings)
    try:
        if args.warmup:
            listing, _ = sets[names[0]]
            wrk(server, listing, SETS[names[0]][1], 32, args.warmup)
        rows = {}
        for name in names:
            listing, labels = sets[name]
            content_type = SETS[name][1]
            rows[name] = {"checked": checked_pass(server, listing, labels, content_type), "load": {}}
            for connections in args.concurrency:
                rows[name]["load"][connections] = measured_wrk(
                    server, listing, content_type, connections, args.duration
                )
                print(name, connections, rows[name]["load"][connections], flush=True)
        return rows
    finally:
        server.stop()


def pairs(stores: dict[str, Path], sets: dict, settings: HostSettings, args) -> list[dict]:
    """Step 4: per pair, the no-op's and the service's c32 requests/s (and CPU per request, all
    processes) and c1 p50, and their ratios."""
    listing, _ = sets["mnist_png"]
    content_type = SETS["mnist_png"][1]
    out = []
    for _ in range(args.pairs):
        pair = {}
        for target in ("noop", "service"):
            server = serve(stores[target], settings)
            try:
                wrk(server, listing, content_type, 32, args.warmup)
                c32 = measured_wrk(server, listing, content_type, 32, args.duration)
                c1 = wrk(server, listing, content_type, 1, args.duration)
            finally:
                server.stop()
            pair[target] = {
                "c32_rps": c32["rps"],
                "c1_p50_us": c1["p50_us"],
                "c32_cpu_us_per_request": total_cpu_us(c32),
            }
        pair["c32"] = round(pair["service"]["c32_rps"] / pair["noop"]["c32_rps"], 3)
        pair["c1_p50"] = round(pair["service"]["c1_p50_us"] / pair["noop"]["c1_p50_us"], 3)
        print("pair", pair, flush=True)
        out.append(pair)
    return out


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
                    wrk(server, listing, "image/png", 32, args.warmup)
                for connections in (1, 32):
                    r = wrk(server, listing, "image/png", connections, args.duration)
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


def main(args: argparse.Namespace) -> dict:
    if not shutil.which("wrk"):
        raise SystemExit("wrk not found: `apt-get install wrk` (make bench does it when run as root)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    settings = host_settings()  # WORKERS=, BATCH_SIZE= and BATCH_DELAY_MS= override, as for make serve
    try:
        sets = write_bodies(work)
        if args.sweep:
            report = {"stamp": stamp(args.label), "rows": sweep(sets, work, args)}
            write_report(out / "sweep", report, sweep_markdown(report))
            return report
        if args.cuda_sync:
            report = {"stamp": stamp(args.label), "rows": cuda_sync_runs(sets, work, settings, args)}
            write_report(out / "cuda-sync", report, cuda_sync_markdown(report, settings))
            return report
        return full_report(sets, work, settings, out, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def full_report(sets: dict, work: Path, settings: HostSettings, out: Path, args) -> dict:
    """Steps 1-4 of the module's docstring; writes reports/bench{,-gpu}.{json,md,png} to `out`."""
    report = {
        "stamp": stamp(args.label),
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "model_config": {
            "minWorkers": settings.workers,
            "batchSize": settings.batch_size,
            "maxBatchDelay": settings.batch_delay_ms,
            "source": settings.source,
        },
    }
    report["cores"], report["gpus"] = os.cpu_count(), gpus()
    report["in_process_device"], report["in_process_rps"] = in_process(
        sets, (1, settings.batch_size) + IN_PROCESS_BATCHES
    )
    if report["gpus"]:  # the choice behind mnistify.GPU_MIN_PIXELS: MNIST's PNGs preprocessed on the GPU too
        on_gpu = in_process(
            {"mnist_png": sets["mnist_png"]},
            (settings.batch_size,) + IN_PROCESS_BATCHES,
            suffix="_preprocessed_on_gpu",
            gpu_min_pixels=0,
        )[1]
        report["in_process_rps"].update(on_gpu)
    print("in-process", report["in_process_device"], report["in_process_rps"], flush=True)

    build_archive(work / "noop", handler=ROOT / "benchmarks" / "noop_handler.py")
    build_archive(work / "service")
    report["noop"] = serve_and_load(work / "noop", sets, ["mnist_png"], settings, args)["mnist_png"]
    report["service"] = serve_and_load(work / "service", sets, list(SETS), settings, args)
    report["pairs"] = pairs({"noop": work / "noop", "service": work / "service"}, sets, settings, args)
    report["ratios"] = ratios(report)
    stem = out / report_stem(report)
    plot(report, stem.with_suffix(".png"))
    write_report(stem, report, markdown(report))
    return report


if __name__ == "__main__":
    main(get_args_parser().parse_args())
