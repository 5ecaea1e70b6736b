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
twice the no-op's time (README, "Performance").
At every level the CPU time of the frontend (Java), the workers (Python) and wrk is divided by
the requests answered: where the time goes. Writes reports/bench.{json,md,png}, or on a host with a
GPU reports/bench-gpu.{json,md,png}, and names the cores and GPUs it found.
Instead of all that, --sweep serves batch size x delay x workers, and --cuda-sync the GPU wait
schedules (handler/cuda_sync.py) one after the other.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import torch
import yaml

from handler.cuda_sync import SCHEDULES
from harness.clients import count_right, predict_concurrently
from harness.inprocess import load_handler
from harness.local_server import LocalTorchServe
from harness.samples import sample_digits
from harness.settings import model_config
from ops.build_archive import build_archive
from ops.host_settings import HostSettings, host_settings, model_snapshot
from ops.paths import ROOT
from synthetic.families import generate

IN_PROCESS_BATCHES = (16, 64, 256)  # batch sizes of the in-process ceiling, besides 1 and the archive's
SETS = {"mnist_png": ("clean", "image/png"), "paper_jpeg": ("paper_photo", "image/jpeg")}


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=int, default=10, help="seconds per load level")
    p.add_argument("--warmup", type=int, default=60, help="seconds of unmeasured load on each server first")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 128], help="connections")
    p.add_argument("--out", default=str(ROOT / "reports"), help="report folder")
    p.add_argument("--label", default=None, help="machine description for the table (default: detected)")
    p.add_argument("--pairs", type=int, default=2,
                   help="back-to-back no-op/service pairs for the goals' ratios (0: steps 2-3 alone)")
    p.add_argument("--sweep", action="store_true", help="instead: sweep batch size, delay and workers")
    p.add_argument("--sweep-workers", type=int, nargs="+", default=[1, 2], help="sweep: worker counts")
    p.add_argument("--sweep-delays", type=int, nargs="+", default=None,
                   help="sweep: max batch delays (ms) at batch size 16, instead of the batch/delay pairs")
    p.add_argument("--cuda-sync", nargs="+", default=None, choices=sorted(SCHEDULES), metavar="SCHEDULE",
                   help="instead: the service once per GPU wait schedule (model-config.yaml's handler.cuda_sync: "
                        f"{', '.join(SCHEDULES)}) with the host's settings, both body sets at each --concurrency; "
                        "writes cuda-sync.{json,md}")
    return p


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    accelerators = "".join(f", {name}" for name in gpus())
    return f"{os.cpu_count()} x {cpu}{accelerators}, {platform.system()} {platform.release()}"


def write_bodies(folder: Path) -> dict[str, tuple[Path, list[int]]]:
    """Body files per set and their labels: the 100 committed MNIST test digits, as PNG and paper JPEG."""
    digits, labels = sample_digits()
    sets = {}
    for name, (family, _) in SETS.items():
        paths = []
        for i, body in enumerate(generate(family, digits, seed=5)):
            path = folder / f"{name}_{i:03d}"
            path.write_bytes(body)
            paths.append(str(path))
        listing = folder / f"{name}.txt"
        listing.write_text("\n".join(paths) + "\n")
        sets[name] = (listing, [int(y) for y in labels])
    return sets


def in_process(sets, batch_sizes: tuple[int, ...], seconds: float = 3.0, suffix: str = "",
               **settings) -> tuple[str, dict]:
    """Images/s of one worker's whole handler path (decode, preprocess, forward, postprocess; no
    HTTP) at each batch size, on the device a worker would use (the first GPU when there is one),
    and that device. Batches cycle through the set's bodies; `settings` override the handler's."""
    handler, context = load_handler(gpu_id=0 if torch.cuda.is_available() else None, **settings)
    results = {}
    for name, (listing, _) in sets.items():
        bodies = itertools.cycle(listed_bodies(listing))
        for size in sorted(set(batch_sizes)):
            images, wall, _ = timed_handle(handler, context, batches_of(bodies, size), seconds)
            results[f"{name}_batch{size}{suffix}"] = round(images / wall, 1)
    return str(handler.device), results


def listed_bodies(listing: Path | str) -> list[bytes]:
    """The bodies of a write_bodies listing, in its order."""
    return [Path(p).read_bytes() for p in Path(listing).read_text().split()]


def batches_of(bodies: Iterator[bytes], size: int) -> list[list[dict]]:
    """About 256 images' worth of TorchServe batches of `size` requests, the next bodies of `bodies`."""
    return [[{"body": next(bodies)} for _ in range(size)] for _ in range(max(1, 256 // size))]


def timed_handle(handler, context, batches: list[list[dict]], seconds: float) -> tuple[int, float, float]:
    """The batches handled over and over for about `seconds`: images handled, wall seconds and CPU
    seconds (every thread of the process)."""
    images, wall, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - wall < seconds:
        for batch in batches:
            handler.handle(batch, context)
            images += len(batch)
    return images, time.perf_counter() - wall, time.process_time() - cpu


def gpus() -> list[str]:
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def checked_pass(server: LocalTorchServe, listing: Path, labels: list[int], content_type: str) -> dict:
    """Every body once at concurrency 32, every answer compared with its label."""
    bodies = listed_bodies(listing)
    responses = predict_concurrently(server, bodies, content_type, concurrency=32)
    errors = sum(r.status_code != 200 for r in responses)
    right = count_right(responses, labels)
    return {"requests": len(bodies), "errors": errors, "right": right}


def wrk(server: LocalTorchServe, listing: Path, content_type: str, connections: int, seconds: int) -> dict:
    command = ["wrk", f"-t{min(connections, 2)}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s",
               "-s", str(ROOT / "benchmarks" / "bench.lua"), server.predictions, "--", str(listing),
               server.keys()["inference"], content_type]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    result = json.loads(re.search(r"^BENCH_JSON (.*)$", output, re.M).group(1))
    result["rps"] = round(result["answered"] / (result["duration_us"] / 1e6), 1)
    return result


def cpu_seconds(server: LocalTorchServe) -> dict[str, float]:
    """CPU seconds used so far by the frontend (the JVM), the Python workers and wrk (our children)."""
    used = {"frontend": 0.0, "workers": 0.0}
    for proc in psutil.Process(server.process.pid).children(recursive=True):
        try:
            kind = "frontend" if proc.name() == "java" else "workers" if "model_service_worker" in " ".join(
                proc.cmdline()) else None
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
    result["cpu_us_per_request"] = {k: round((after[k] - before[k]) / max(result["answered"], 1) * 1e6)
                                    for k in before}
    return result


def failures(result: dict) -> int:
    """Requests of a wrk result that got no right answer: not a 200 with a digit, a socket error or a timeout."""
    return result["bad"] + result["socket_errors"] + result["timeouts"]


def total_cpu_us(result: dict) -> int | None:
    """All processes' CPU us per request of a measured_wrk result; None for a plain wrk one."""
    return sum(result["cpu_us_per_request"].values()) if "cpu_us_per_request" in result else None


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
                rows[name]["load"][connections] = measured_wrk(server, listing, content_type, connections,
                                                               args.duration)
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
            pair[target] = {"c32_rps": c32["rps"], "c1_p50_us": c1["p50_us"],
                            "c32_cpu_us_per_request": total_cpu_us(c32)}
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


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """The lines of a Markdown table; an empty cell is written `| |`."""
    line = lambda cells: "|" + "|".join(f" {cell} " if cell else " " for cell in cells) + "|"  # noqa: E731
    return [line(header), "|" + "---|" * len(header)] + [line(row) for row in rows]


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
                rows.append({"cuda_sync": schedule, "bodies": name, "concurrency": connections, "rps": r["rps"],
                             "p50_ms": r["p50_us"] / 1000, "p99_ms": r["p99_us"] / 1000,
                             "errors": failures(r),
                             "worker_cpu_us": r["cpu_us_per_request"]["workers"],
                             "checked": f"{result['checked']['right']}/{result['checked']['requests']}"})
    return rows


def cuda_sync_markdown(rows: list[dict], label: str, settings: HostSettings) -> str:
    lines = ["# GPU wait schedules", "",
             f"Machine: {label}. The service with handler.cuda_sync set in its archive, {settings.workers} workers, "
             f"batch {settings.batch_size}, max delay {settings.batch_delay_ms} ms; "
             "`python -m benchmarks.bench --cuda-sync ...`. Workers' CPU is per answered request; checked: "
             "right answers of one pass over the bodies at concurrency 32.", ""]
    lines += markdown_table(
        ["cuda_sync", "bodies", "concurrency", "requests/s", "p50 ms", "p99 ms", "errors", "workers' CPU us", "checked"],
        [[r["cuda_sync"], r["bodies"], str(r["concurrency"]), f"{r['rps']:,.0f}", f"{r['p50_ms']:.1f}",
          f"{r['p99_ms']:.1f}", str(r["errors"]), str(r["worker_cpu_us"]), r["checked"]] for r in rows])
    return "\n".join(lines) + "\n"


def sweep_markdown(rows: list[dict], label: str) -> str:
    lines = ["# Batching and workers sweep", "",
             f"Machine: {label}. The service with MNIST test PNGs, wrk at concurrency 1 and 32; "
             "`python -m benchmarks.bench --sweep`.", ""]
    lines += markdown_table(
        ["workers", "batch size", "max delay ms", "c1 req/s", "c1 p50 ms", "c32 req/s", "c32 p50 ms", "c32 p99 ms"],
        [[str(r["workers"]), str(r["batchSize"]), str(r["maxBatchDelay"]), f"{r['c1_rps']:,.0f}",
          f"{r['c1_p50_ms']:.1f}", f"{r['c32_rps']:,.0f}", f"{r['c32_p50_ms']:.1f}", f"{r['c32_p99_ms']:.1f}"]
         for r in rows])
    return "\n".join(lines) + "\n"


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
            rows = sweep(sets, work, args)
            (out / "sweep.json").write_text(json.dumps(rows, indent=2) + "\n")
            (out / "sweep.md").write_text(sweep_markdown(rows, args.label or machine()))
            print((out / "sweep.md").read_text())
            return {"sweep": rows}
        if args.cuda_sync:
            rows = cuda_sync_runs(sets, work, settings, args)
            (out / "cuda-sync.json").write_text(json.dumps(rows, indent=2) + "\n")
            (out / "cuda-sync.md").write_text(cuda_sync_markdown(rows, args.label or machine(), settings))
            print((out / "cuda-sync.md").read_text())
            return {"cuda_sync": rows}
        return full_report(sets, work, settings, out, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def full_report(sets: dict, work: Path, settings: HostSettings, out: Path, args) -> dict:
    """Steps 1-4 of the module's docstring; writes reports/bench{,-gpu}.{json,md,png} to `out`."""
    report = {"machine": args.label or machine(), "date": time.strftime("%Y-%m-%d %H:%M"),
              "duration_s": args.duration, "warmup_s": args.warmup,
              "model_config": {"minWorkers": settings.workers, "batchSize": settings.batch_size,
                               "maxBatchDelay": settings.batch_delay_ms, "source": settings.source}}
    report["cores"], report["gpus"] = os.cpu_count(), gpus()
    report["in_process_device"], report["in_process_rps"] = in_process(sets, (1, settings.batch_size) + IN_PROCESS_BATCHES)
    if report["gpus"]:  # the choice behind mnistify.GPU_MIN_PIXELS: MNIST's PNGs preprocessed on the GPU too
        on_gpu = in_process({"mnist_png": sets["mnist_png"]}, (settings.batch_size,) + IN_PROCESS_BATCHES,
                            suffix="_preprocessed_on_gpu", gpu_min_pixels=0)[1]
        report["in_process_rps"].update(on_gpu)
    print("in-process", report["in_process_device"], report["in_process_rps"], flush=True)

    build_archive(work / "noop", handler=ROOT / "benchmarks" / "noop_handler.py")
    build_archive(work / "service")
    report["noop"] = serve_and_load(work / "noop", sets, ["mnist_png"], settings, args)["mnist_png"]
    report["service"] = serve_and_load(work / "service", sets, list(SETS), settings, args)
    report["pairs"] = pairs({"noop": work / "noop", "service": work / "service"}, sets, settings, args)
    report["ratios"] = ratios(report)
    stem = report_stem(report)
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / f"{stem}.md").write_text(markdown(report))
    plot(report, out / f"{stem}.png")
    print((out / f"{stem}.md").read_text())
    return report


def report_stem(report: dict) -> str:
    """bench on a CPU host, bench-gpu on a GPU host: both reports live side by side in reports/."""
    return "bench-gpu" if report.get("gpus") else "bench"


def ratios(report: dict) -> dict:
    """The goals' figures, each None where its concurrency level was not measured in this run."""
    noop, service = report["noop"]["load"], report["service"]["mnist_png"]["load"]
    both = lambda level: level in noop and level in service  # noqa: E731
    paper = report["service"].get("paper_jpeg", {}).get("load", {})
    in_pairs = report.get("pairs", [])
    return {
        "throughput_c32_service_over_noop": _median_with_pairs(
            round(service[32]["rps"] / noop[32]["rps"], 3) if both(32) else None, [p["c32"] for p in in_pairs]),
        "throughput_c128_service_over_noop": round(service[128]["rps"] / noop[128]["rps"], 3) if both(128) else None,
        "p50_c1_service_over_noop": _median_with_pairs(
            round(service[1]["p50_us"] / noop[1]["p50_us"], 3) if both(1) else None, [p["c1_p50"] for p in in_pairs]),
        "errors_c128": sum(failures(s["load"][128]) for s in report["service"].values()) if 128 in service else None,
        "paper_jpeg_c128_rps": paper[128]["rps"] if 128 in paper else None,
        "worker_us_per_mnist_request_c128": service[128]["cpu_us_per_request"]["workers"] if 128 in service else None,
    }


def _median_with_pairs(main: float | None, paired: list[float]) -> float | None:
    """The median of steps 2-3's ratio (where measured) and the pairs' (see the module's step 4)."""
    values = sorted(([main] if main is not None else []) + paired)
    if not values:
        return None
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else round((values[middle - 1] + values[middle]) / 2, 3)


def goal_row(goal: str, measured: float | None, unit: str, met) -> list[str]:
    if measured is None:
        return [goal, "not measured (level not in --concurrency)", ""]
    return [goal, f"{measured:g}{unit}", "yes" if met(measured) else "no"]


def markdown(report: dict) -> str:
    cfg = report["model_config"]
    lines = [
        "# Benchmark", "",
        f"Machine: {report['machine']}. Run: {report['date']}, {report['duration_s']} s per level after "
        f"{report.get('warmup_s', 0)} s of unmeasured warm-up load per server, load from wrk on the same machine. "
        f"Served with the host's settings ({cfg.get('source', 'archive')}, ops.host_settings; both servers): "
        f"{cfg['minWorkers']} workers, batch {cfg['batchSize']}, max delay {cfg['maxBatchDelay']} ms.", "",
    ]
    targets = [("no-op handler (TorchServe ceiling)", "mnist_png", report["noop"])]
    targets += [("the service", name, result) for name, result in report["service"].items()]
    lines += markdown_table(
        ["target", "bodies", "concurrency", "requests/s", "p50 ms", "p90 ms", "p99 ms", "errors"],
        [[target, name, str(connections), f"{r['rps']:,.0f}", f"{r['p50_us'] / 1000:.1f}", f"{r['p90_us'] / 1000:.1f}",
          f"{r['p99_us'] / 1000:.1f}", str(failures(r))]
         for target, name, result in targets for connections, r in result["load"].items()])
    lines += ["", f"In-process ceiling (one worker on {report.get('in_process_device', 'cpu')}, no HTTP; images/s "
              "by batch size): " + ", ".join(f"{k} {v:,.0f}" for k, v in report["in_process_rps"].items()), ""]
    checked = [f"{name}: {r['checked']['right']}/{r['checked']['requests']} right, {r['checked']['errors']} errors"
               for name, r in report["service"].items()]
    ratio = report["ratios"]
    lines += ["Checked pass (every body once at concurrency 32): " + "; ".join(checked) + ".", ""]
    lines += pairs_markdown(report)
    goals = [goal_row("service at c32 >= 0.5 x no-op", ratio["throughput_c32_service_over_noop"], " x",
                      lambda v: v >= 0.5),
             goal_row("service p50 at c1 <= 1.5 x no-op", ratio["p50_c1_service_over_noop"], " x",
                      lambda v: v <= 1.5),
             goal_row("no errors at c128", ratio["errors_c128"], "", lambda v: v == 0)]
    if report.get("gpus"):  # the GPU host's goals
        goals += [goal_row("service at c128 >= 0.6 x no-op", ratio["throughput_c128_service_over_noop"], " x",
                           lambda v: v >= 0.6),
                  goal_row("paper-photo JPEG at c128 >= 10,000 requests/s", ratio["paper_jpeg_c128_rps"], "",
                           lambda v: v >= 10000),
                  goal_row("worker CPU per MNIST request at c128 <= 150 us", ratio["worker_us_per_mnist_request_c128"],
                           " us", lambda v: v <= 150)]
    lines += markdown_table(["goal", "measured", "met"], goals)
    lines += ["", f"![benchmark]({report_stem(report)}.png)", ""]
    lines += where_the_time_goes(report)
    return "\n".join(lines)


def pairs_markdown(report: dict) -> list[str]:
    """The pairs of step 4 beside the tables' own ratios, which the goals below take the median of."""
    in_pairs = report.get("pairs", [])
    if not in_pairs:
        return []
    noop, service = report["noop"]["load"], report["service"]["mnist_png"]["load"]
    lines = ["Back-to-back pairs (MNIST PNGs; each server started afresh, warmed for "
             f"{report.get('warmup_s', 0)} s, {report['duration_s']} s per level): the goals below are the median "
             "ratio of the tables above and these pairs.", ""]
    rows = []
    if 32 in noop and 32 in service and 1 in noop and 1 in service:
        rows.append(["the tables above", f"{noop[32]['rps']:,.0f}", f"{service[32]['rps']:,.0f}",
                     f"{service[32]['rps'] / noop[32]['rps']:.3f}",
                     f"{total_cpu_us(noop[32])} / {total_cpu_us(service[32])}", f"{noop[1]['p50_us'] / 1000:.1f}",
                     f"{service[1]['p50_us'] / 1000:.1f}", f"{service[1]['p50_us'] / noop[1]['p50_us']:.3f}"])
    for i, p in enumerate(in_pairs, 1):
        rows.append([f"pair {i}", f"{p['noop']['c32_rps']:,.0f}", f"{p['service']['c32_rps']:,.0f}", f"{p['c32']:.3f}",
                     f"{p['noop'].get('c32_cpu_us_per_request')} / {p['service'].get('c32_cpu_us_per_request')}",
                     f"{p['noop']['c1_p50_us'] / 1000:.1f}", f"{p['service']['c1_p50_us'] / 1000:.1f}",
                     f"{p['c1_p50']:.3f}"])
    header = ["measured", "no-op c32 requests/s", "service c32 requests/s", "c32 ratio",
              "no-op / service c32 CPU us per request", "no-op c1 p50 ms", "service c1 p50 ms", "c1 p50 ratio"]
    return lines + markdown_table(header, rows) + [""]


def where_the_time_goes(report: dict) -> list[str]:
    """CPU microseconds per answered request at concurrency 32 and 128 (those measured), by process."""
    lines = []
    for level in (32, 128):
        rows = [("no-op handler", report["noop"]["load"].get(level))]
        rows += [(f"the service, {name}", result["load"].get(level)) for name, result in report["service"].items()]
        rows = [(target, r) for target, r in rows if r and "cpu_us_per_request" in r]
        if not rows:
            continue
        lines += [f"## Where the time goes (concurrency {level})", "",
                  "CPU time of each process divided by the requests it answered in the same run. On a machine "
                  "with C cores, requests/s can never exceed C x 1e6 / (total us per request).", ""]
        lines += markdown_table(
            ["target", "requests/s", "frontend (Java) us", "workers (Python) us", "wrk us", "total us"],
            [[target, f"{r['rps']:,.0f}", *(str(r["cpu_us_per_request"][k]) for k in ("frontend", "workers", "wrk")),
              str(sum(r["cpu_us_per_request"].values()))] for target, r in rows])
        lines.append("")
    return lines


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    series = [("no-op ceiling", report["noop"])] + [(f"service, {n}", r) for n, r in report["service"].items()]
    for label, result in series:
        levels = [int(c) for c in result["load"]]
        loads = list(result["load"].values())
        left.plot(levels, [r["rps"] for r in loads], marker="o", label=label)
        right.plot(levels, [r["p50_us"] / 1000 for r in loads], marker="o", label=f"{label} p50")
        right.plot(levels, [r["p99_us"] / 1000 for r in loads], marker="x", linestyle="--", label=f"{label} p99")
    left.set(xscale="log", xlabel="concurrency", ylabel="requests/s", title="Throughput")
    right.set(xscale="log", yscale="log", xlabel="concurrency", ylabel="ms", title="Latency")
    left.legend(fontsize=7)
    right.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
