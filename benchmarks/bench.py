"""`make bench`: the service beside TorchServe's own ceiling and the handler's in-process ceiling.

In one run on one machine:
1. in-process ceiling: DigitHandler.handle (decode, preprocess, forward, postprocess) without HTTP,
   at batch sizes 1, the served one (BATCH_SIZE=), 16, 64 and 256, on the worker's device (a GPU when there is one;
   there also with MNIST's PNGs preprocessed on the GPU, which the handler does on the CPU);
2. TorchServe ceiling: a no-op handler archive served with the same batch size, delay and workers:
   the host's (ops.host_settings, as `make serve` and the image; WORKERS=, BATCH_SIZE= and BATCH_DELAY_MS= override);
3. the service: requests/s and p50/p90/p99 at each concurrency, with MNIST test PNGs and with
   paper-photo JPEGs, and the number model with 4-digit numbers (the same digits in a row); every
   answer must be a 200 with a digit (a number), and a checked pass compares each with its label;
   the number row's goal compares its workers' CPU per request with the MNIST PNGs' (also in
   process, step 1);
4. pairs (--pairs): the no-op, then the service, each started afresh, warmed and measured at
   concurrency 32 and 1 with MNIST PNGs, a minute apart at most, and on the service the number
   model at concurrency 32 right after the MNIST PNGs. This VM's speed drifts over minutes, and
   steps 2 and 3 (and step 3's rows) are several minutes apart: the goals' ratios are the median
   of step 2-3's ratio and each pair's;
5. the Python client (--client-rounds): its threaded and asyncio clients' requests/s at
   concurrency 32 against the service (benchmarks/clients.py).
Load comes from wrk (apt-get install wrk). Each server first gets --warmup seconds of load that
are not measured: the JVM's JIT compilers take most of a core for the first half minute, and
they compile by calls, so the service, answering half the requests per second, needs about
twice the no-op's time (docs/performance.md).
At every level the CPU time of the frontend (Java), the workers (Python) and wrk is divided by
the requests answered: where the time goes. Writes reports/bench.{json,md,png}, or on a host with a
GPU reports/bench-gpu.{json,md,png}, and names the cores and GPUs it found.
Instead of all that, --sweep serves batch size x delay x workers, and --cuda-sync the GPU wait
schedules (handler/cuda_sync.py) one after the other.
This module runs the steps; the bodies and step 1 live in benchmarks/in_process.py, serving and
wrk's load in benchmarks/load.py, the reports' tables, goals and plot in benchmarks/bench_report.py,
--sweep and --cuda-sync in benchmarks/variants.py.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from benchmarks.bench_report import markdown, plot, ratios, report_stem, total_cpu_us, write_report
from benchmarks.clients import client_rounds, clients_markdown
from benchmarks.in_process import BODY_SETS, IN_PROCESS_BATCHES, SETS, cpu_per_request, in_process, write_bodies
from benchmarks.load import folders, measured_wrk, serve, serve_and_load, wrk
from benchmarks.variants import cuda_sync_markdown, cuda_sync_runs, sweep, sweep_markdown
from handler.cuda_sync import SCHEDULES
from harness.local_server import LocalTorchServe
from ops.build_archive import build_archive
from ops.host_settings import HostSettings, host_settings
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
    p.add_argument("--client-rounds", type=int, default=2, help="rounds of each Python client (0: step 5 skipped)")
    p.add_argument("--client-requests", type=int, default=3000, help="requests per client round")
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


def pairs(stores: dict[str, Path], sets: dict, settings: HostSettings, args) -> list[dict]:
    """Step 4: per pair, the no-op's and the service's c32 requests/s (and CPU per request, all
    processes) and c1 p50, and their ratios; on the service, right after its MNIST c32, the number
    model's c32 too (warmed for --duration first), for the number's workers' CPU over the digit's."""
    listing, _ = sets["mnist_png"]
    body_set = SETS["mnist_png"]
    out = []
    for _ in range(args.pairs):
        pair = {}
        for target in ("noop", "service"):
            server = serve(stores[target], settings)
            try:
                wrk(server, listing, body_set, 32, args.warmup)
                c32 = measured_wrk(server, listing, body_set, 32, args.duration)
                number = measured_number(server, sets, args.duration) if target == "service" else None
                c1 = wrk(server, listing, body_set, 1, args.duration)
            finally:
                server.stop()
            pair[target] = {
                "c32_rps": c32["rps"],
                "c1_p50_us": c1["p50_us"],
                "c32_cpu_us_per_request": total_cpu_us(c32),
                "c32_workers_us_per_request": c32["cpu_us_per_request"]["workers"],
            }
            if number is not None:
                pair[target]["number_c32_workers_us_per_request"] = number["cpu_us_per_request"]["workers"]
        pair["c32"] = round(pair["service"]["c32_rps"] / pair["noop"]["c32_rps"], 3)
        pair["c1_p50"] = round(pair["service"]["c1_p50_us"] / pair["noop"]["c1_p50_us"], 3)
        if "number_c32_workers_us_per_request" in pair["service"]:
            service = pair["service"]
            pair["number_c32"] = round(
                service["number_c32_workers_us_per_request"] / service["c32_workers_us_per_request"], 2
            )
        print("pair", pair, flush=True)
        out.append(pair)
    return out


def measured_number(server: LocalTorchServe, sets: dict, seconds: int) -> dict:
    """The number model at c32, after `seconds` of unmeasured load: its workers start cold while
    the digit's were warmed."""
    listing, _ = sets["number_png"]
    wrk(server, listing, BODY_SETS["number_png"], 32, seconds)
    return measured_wrk(server, listing, BODY_SETS["number_png"], 32, seconds)


def main(args: argparse.Namespace) -> dict:
    out, work = folders(args.out, "bench-")
    settings = host_settings()  # WORKERS=, BATCH_SIZE= and BATCH_DELAY_MS= override, as for make serve
    try:
        sets = write_bodies(work, BODY_SETS)
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
    # the number row's goal, in process: a 4-digit number's CPU against an MNIST digit's
    compared = {name: sets[name] for name in ("mnist_png", "number_png")}
    report["in_process_cpu_us_per_request"] = cpu_per_request(compared, settings.batch_size)
    print("in-process", report["in_process_device"], report["in_process_rps"], flush=True)

    build_archive(work / "noop", handler=ROOT / "benchmarks" / "noop_handler.py")
    build_archive(work / "service")
    build_archive(work / "service", "number")
    report["noop"] = serve_and_load(work / "noop", sets, ["mnist_png"], settings, args)["mnist_png"]
    report["service"] = serve_and_load(work / "service", sets, list(BODY_SETS), settings, args)
    report["pairs"] = pairs({"noop": work / "noop", "service": work / "service"}, sets, settings, args)
    if args.client_rounds:
        report["clients"] = clients(work / "service", sets, settings, args)
    report["ratios"] = ratios(report)
    stem = out / report_stem(report)
    plot(report, stem.with_suffix(".png"))
    clients_section = clients_markdown(report["clients"]) if args.client_rounds else []
    write_report(stem, report, "\n".join([markdown(report), "", *clients_section]))
    return report


def clients(store: Path, sets: dict, settings: HostSettings, args) -> dict:
    """Step 5, on a server started afresh and warmed like the others."""
    listing, _ = sets["mnist_png"]
    server = serve(store, settings)
    try:
        wrk(server, listing, SETS["mnist_png"], 32, args.warmup)
        return client_rounds(server, listing, args.client_rounds, args.client_requests)
    finally:
        server.stop()


if __name__ == "__main__":
    main(get_args_parser().parse_args())
