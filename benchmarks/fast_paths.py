"""`make fast-paths`: what each fast path of handler/fast_paths.py saves of a worker's CPU, live.

For each switch measured, the service is served with the host's settings (as `make serve` serves
it) twice: as shipped, and with that one switch off. Each server gets --warmup seconds of unmeasured
load at concurrency 32 (the JVM compiles by calls), then --duration seconds of MNIST PNGs at the
switch's concurrency: 32 for the worker's socket (full batches), 1 for native small batches (a
batch of one image each). The two ways alternate, --rounds times,
because a shared machine's speed drifts within minutes. A way's figure is the median over rounds
of the workers' CPU per request answered; a fast path pays for its private API when it saves at
least 3% of it.

route_prediction_time is not measured: it corrects a TorchServe defect, it does not save time.
Writes reports/fast-paths.{json,md}.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
from pathlib import Path

from benchmarks.bench_report import failures, markdown_table, write_report
from benchmarks.in_process import SETS, write_bodies
from benchmarks.load import folders, measured_wrk, serve, wrk
from benchmarks.variants import archive_with
from harness.settings import model_config
from ops.host_settings import host_settings
from ops.paths import ROOT
from ops.stamp import stamp

# switch -> the concurrency it is measured at
SWITCHES = {"buffered_socket": 32, "native_small_batches": 1}
WORTH = 0.03  # the least share of a worker's CPU a private API must save


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--switches", nargs="+", default=list(SWITCHES), choices=list(SWITCHES), help="switches to measure")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds of both ways per switch")
    p.add_argument("--warmup", type=int, default=20, help="seconds of unmeasured load at concurrency 32 per server")
    p.add_argument("--duration", type=int, default=15, help="measured seconds per server")
    p.add_argument("--out", default=str(ROOT / "reports"), help="report folder")
    p.add_argument("--label", default=None, help="machine description in the report's stamp (default: detected)")
    return p


def measure(store: Path, listing: Path, concurrency: int, args) -> dict:
    """One server's warm-up, then its measured load: workers' CPU us per request, requests/s, failures."""
    server = serve(store, host_settings())
    try:
        wrk(server, listing, SETS["mnist_png"], 32, args.warmup)
        result = measured_wrk(server, listing, SETS["mnist_png"], concurrency, args.duration)
    finally:
        server.stop()
    return {"worker_us": result["cpu_us_per_request"]["workers"], "rps": result["rps"], "failures": failures(result)}


def switch_rows(switch: str, listing: Path, work: Path, args) -> dict:
    """Both ways of one switch, alternating; the medians and the share saved."""
    config = model_config()
    stores = {
        on: archive_with({**config, "handler": {**config["handler"], switch: on}}, work / f"{switch}-{on}")
        for on in (True, False)
    }
    runs: dict[bool, list[dict]] = {True: [], False: []}
    for round_ in range(args.rounds):
        for on in (True, False) if round_ % 2 == 0 else (False, True):
            runs[on].append(measure(stores[on], listing, SWITCHES[switch], args))
            print(switch, "on" if on else "off", runs[on][-1], flush=True)
    on, off = (statistics.median(r["worker_us"] for r in runs[way]) for way in (True, False))
    return {
        "switch": switch,
        "concurrency": SWITCHES[switch],
        "runs": {"on": runs[True], "off": runs[False]},
        "worker_us_on": on,
        "worker_us_off": off,
        "share_saved": round((off - on) / off, 4),
    }


def markdown(report: dict) -> str:
    rows = [
        [
            f"`{r['switch']}`",
            str(r["concurrency"]),
            f"{r['worker_us_on']:.0f}",
            f"{r['worker_us_off']:.0f}",
            f"{r['share_saved']:.1%}",
            "yes" if r["share_saved"] >= WORTH else "no",
            str(sum(run["failures"] for way in r["runs"].values() for run in way)),
        ]
        for r in report["rows"]
    ]
    lines = [
        "# Fast paths: what each saves of a worker's CPU",
        "",
        f"MNIST PNGs, the host's workers and batch delay, {report['warmup_s']} s of warm-up and "
        f"{report['duration_s']} s measured per server, {report['rounds']} alternating rounds per way; "
        "workers' CPU per request answered, median over rounds (`make fast-paths`).",
        "",
    ]
    lines += markdown_table(
        ["switch", "concurrency", "worker us/request on", "off", "saved", f"saves >= {WORTH:.0%}", "failed requests"],
        rows,
    )
    return "\n".join(lines) + "\n"


def main(args: argparse.Namespace) -> dict:
    out, work = folders(args.out, "fast-paths-")
    try:
        listing, _ = write_bodies(work)["mnist_png"]
        report = {
            "stamp": stamp(args.label),
            "rounds": args.rounds,
            "warmup_s": args.warmup,
            "duration_s": args.duration,
            "rows": [switch_rows(s, listing, work, args) for s in args.switches],
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_report(out / "fast-paths", report, markdown(report))
    return report


if __name__ == "__main__":
    main(get_args_parser().parse_args())
