"""Where one batch's time goes in a worker, in one process without HTTP: `make profile`.

For MNIST PNGs and paper-photo JPEGs (make bench's bodies) at each --batch-size, on the device a
worker would use (the first GPU when there is one), DigitHandler.handle is measured three ways:
1. wall and CPU time per image over --seconds. On a GPU, CPU near wall means the worker's core is
   busy throughout (launching work, or spinning through its waits: handler.cuda_sync), well under
   it that it sleeps while the device works;
2. torch.profiler over --profiled batches: operator calls per batch (top-level ones: what
   the code asks for), and on a GPU its kernel launches, host-device copies, synchronizations and
   the device's busy time per batch; the operators that take most CPU;
3. cProfile over the same batches: the share of handle's time in each stage (parsing and decoding
   on the CPU, JPEG decoding on the device, preprocessing, the network, answers); cProfile's
   per-call cost inflates the stages that make many Python calls, so read them as a ranking.
On a GPU every --cuda-sync schedule runs in a fresh process (it must be set before CUDA starts).
Writes OUT/batch-profile.{json,md}, or batch-profile-gpu.{json,md} on a GPU host.
"""

from __future__ import annotations

import argparse
import cProfile
import itertools
import json
import multiprocessing
import pstats
import tempfile
from pathlib import Path

import torch

from benchmarks.bench_report import markdown_table, write_report
from benchmarks.in_process import batches_of, listed_bodies, timed_handle, write_bodies
from handler.cuda_sync import SCHEDULES
from harness.inprocess import load_handler
from ops.paths import ROOT
from ops.stamp import stamp

# (file under handler/, function) -> the stage it is, for cProfile's cumulative times
STAGES = {
    ("preprocess/envelopes.py", "request_grays"): "parse and decode (CPU)",
    ("preprocess/device_jpeg.py", "decode_jpegs"): "JPEG decode (device)",
    ("preprocess/mnistify.py", "candidate_views"): "preprocessing",
    ("inference.py", "digit_probabilities"): "network",
    ("mnist_handler.py", "postprocess"): "answers",
}
TOP_OPERATORS = 8


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-size", type=int, nargs="+", default=[16, 64], help="batch sizes")
    p.add_argument("--seconds", type=float, default=2.0, help="seconds of timed batches per body set and size")
    p.add_argument("--profiled", type=int, default=8, help="batches under torch.profiler and under cProfile")
    p.add_argument(
        "--cuda-sync",
        nargs="+",
        default=["auto"],
        choices=sorted(SCHEDULES),
        metavar="SCHEDULE",
        help=f"GPU wait schedules, each in its own process ({', '.join(SCHEDULES)}); ignored without CUDA",
    )
    p.add_argument("--out", default=str(ROOT / "reports"), help="report folder")
    p.add_argument("--label", default=None, help="machine description in the stamp (default: detected)")
    return p


def timed(handler, context, batches: list[list[dict]], seconds: float) -> dict:
    """Wall and CPU (every thread of the process) microseconds per image."""
    images, wall, cpu = timed_handle(handler, context, batches, seconds)
    return {"wall_us": round(wall / images * 1e6, 1), "cpu_us": round(cpu / images * 1e6, 1)}


def profiled(handler, context, batches: list[list[dict]], cuda: bool) -> dict:
    """torch.profiler's counts per batch and the operators with most CPU time."""
    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
    with torch.profiler.profile(activities=activities) as prof:
        for batch in batches:
            handler.handle(batch, context)
        if cuda:
            torch.cuda.synchronize()
    n = len(batches)
    events = prof.events()
    top_level = [e for e in events if _operator(e) and (e.cpu_parent is None or not _operator(e.cpu_parent))]
    out = {"operators": round(len(top_level) / n, 1)}
    if cuda:

        def calls(*names):
            return round(sum(1 for e in events if any(name in e.name for name in names)) / n, 1)

        kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
        out.update(
            launches=calls("LaunchKernel"),
            copies=calls("Memcpy"),
            syncs=calls("Synchronize"),
            device_busy_us=round(sum(e.device_time_total for e in kernels) / n, 1),
        )
    averages = sorted(
        (a for a in prof.key_averages() if _operator(a)), key=lambda a: a.self_cpu_time_total, reverse=True
    )[:TOP_OPERATORS]
    out["top"] = [
        {"operator": a.key, "calls": round(a.count / n, 1), "self_cpu_us": round(a.self_cpu_time_total / n, 1)}
        for a in averages
    ]
    return out


def _operator(event) -> bool:
    """Whether a profiler event (or average) is an operator (aten::add, mkldnn::...,
    torchvision::...), not a CUDA runtime call or a kernel."""
    return event.device_type == torch.autograd.DeviceType.CPU and "::" in event.key


def stage_shares(handler, context, batches: list[list[dict]]) -> dict[str, float | None]:
    """Each stage's share (%) of handle's cumulative time under cProfile; None for a stage that never
    ran (JPEG decoding on the device on a CPU host, for one)."""
    profiler = cProfile.Profile()
    profiler.enable()
    for batch in batches:
        handler.handle(batch, context)
    profiler.disable()
    stats = pstats.Stats(profiler).stats  # (file, line, function) -> (calls, ..., total, cumulative, callers)

    def cumulative(tail: str, function: str) -> float | None:
        entries = [entry for (path, _, name), entry in stats.items() if path.endswith(tail) and name == function]
        return sum(entry[3] for entry in entries) if entries else None

    total = cumulative("mnist_handler.py", "handle") or 1.0
    return {
        stage: None if (seconds := cumulative(tail, function)) is None else round(100 * seconds / total, 1)
        for (tail, function), stage in STAGES.items()
    }


def profile(schedule: str, sets: dict, args) -> list[dict]:
    """Every body set at every batch size under one GPU wait schedule (irrelevant on the CPU)."""
    cuda = torch.cuda.is_available()
    handler, context = load_handler(gpu_id=0 if cuda else None, cuda_sync=schedule)
    rows = []
    for name, (listing, _) in sets.items():
        bodies = itertools.cycle(listed_bodies(listing))
        for size in args.batch_size:
            batches = batches_of(bodies, size)
            for batch in batches:  # warm-up: the first calls allocate and pick kernels
                handler.handle(batch, context)
            sample = (batches * args.profiled)[: args.profiled]
            rows.append(
                {
                    "cuda_sync": schedule if cuda else "-",
                    "bodies": name,
                    "batch": size,
                    **timed(handler, context, batches, args.seconds),
                    **profiled(handler, context, sample, cuda),
                    "stages": stage_shares(handler, context, sample),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def markdown(report: dict) -> str:
    rows, cuda = report["rows"], report["device"].startswith("cuda")
    lines = [
        "# Where a batch's time goes",
        "",
        f"DigitHandler.handle in one process on "
        f"{report['device']}, no HTTP (`python -m benchmarks.batch_profile`, module docstring). Per image: wall "
        "and CPU time (every thread of the process). Per batch: top-level operator calls"
        + (", kernel launches, host-device copies, synchronizations, the device's busy time" if cuda else "")
        + ".",
        "",
    ]
    header = ["cuda_sync", "bodies", "batch", "wall us/image", "CPU us/image", "operators"]
    header += ["launches", "copies", "syncs", "device busy us"] if cuda else []
    lines += markdown_table(
        header,
        [
            [
                r["cuda_sync"],
                r["bodies"],
                str(r["batch"]),
                f"{r['wall_us']:,.0f}",
                f"{r['cpu_us']:,.0f}",
                f"{r['operators']:g}",
            ]
            + (
                [f"{r['launches']:g}", f"{r['copies']:g}", f"{r['syncs']:g}", f"{r['device_busy_us']:,.0f}"]
                if cuda
                else []
            )
            for r in rows
        ],
    )
    lines += [
        "",
        "Stages' shares of handle's time under cProfile (%; its per-call cost inflates the stages that "
        'make many Python calls; "not run": the stage was never called):',
        "",
    ]
    lines += markdown_table(
        ["cuda_sync", "bodies", "batch", *STAGES.values()],
        [
            [
                r["cuda_sync"],
                r["bodies"],
                str(r["batch"]),
                *("not run" if v is None else f"{v:g}" for v in r["stages"].values()),
            ]
            for r in rows
        ],
    )
    lines += ["", f"Operators with most CPU time (self, per batch; the {TOP_OPERATORS} largest):", ""]
    lines += markdown_table(
        ["cuda_sync", "bodies", "batch", "operator", "calls", "self CPU us"],
        [
            [r["cuda_sync"], r["bodies"], str(r["batch"]), t["operator"], f"{t['calls']:g}", f"{t['self_cpu_us']:,.0f}"]
            for r in rows
            for t in r["top"]
        ],
    )
    return "\n".join(lines) + "\n"


def main(args: argparse.Namespace) -> dict:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cuda = torch.cuda.is_available()
    with tempfile.TemporaryDirectory(prefix="batch-profile-") as work:
        sets = {name: (str(listing), labels) for name, (listing, labels) in write_bodies(Path(work)).items()}
        if not cuda:
            rows = profile("auto", sets, args)
        else:  # each schedule in a fresh process: it is set on the device's context before CUDA starts
            with multiprocessing.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
                rows = [row for schedule in args.cuda_sync for row in pool.apply(profile, (schedule, sets, args))]
    report = {"stamp": stamp(args.label), "device": "cuda:0" if cuda else "cpu", "rows": rows}
    write_report(out / ("batch-profile-gpu" if cuda else "batch-profile"), report, markdown(report))
    return report


if __name__ == "__main__":
    main(get_args_parser().parse_args())
