"""make bench's report: the goals' ratios, the Markdown tables and the plot of
reports/bench{,-gpu}.{json,md,png}, and the helpers every benchmark report uses (write_report,
markdown_table). Every report starts with its stamp (ops/stamp.py).
"""

from __future__ import annotations

import json
from pathlib import Path

from ops import stamp


def write_report(stem: Path, report: dict, text: str) -> None:
    """STEM.json (the report, its "stamp" included) and STEM.md (`text`, under its stamp line); prints the latter."""
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    stem.with_suffix(".md").write_text(f"{stamp.line(report['stamp'])}\n\n{text}")
    print(stem.with_suffix(".md").read_text())


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """The lines of a Markdown table; an empty cell is written `| |`."""

    def line(cells: list[str]) -> str:
        return "|" + "|".join(f" {cell} " if cell else " " for cell in cells) + "|"

    return [line(header), "|" + "---|" * len(header)] + [line(row) for row in rows]


def failures(result: dict) -> int:
    """Requests of a wrk result that got no right answer: not a 200 with a digit, a socket error or a timeout."""
    return result["bad"] + result["socket_errors"] + result["timeouts"]


def total_cpu_us(result: dict) -> int | None:
    """All processes' CPU us per request of a measured_wrk result; None for a plain wrk one."""
    return sum(result["cpu_us_per_request"].values()) if "cpu_us_per_request" in result else None


def report_stem(report: dict) -> str:
    """bench on a CPU host, bench-gpu on a GPU host: both reports live side by side in reports/."""
    return "bench-gpu" if report.get("gpus") else "bench"


def ratios(report: dict) -> dict:
    """The goals' figures, each None where its concurrency level was not measured in this run."""
    noop, service = report["noop"]["load"], report["service"]["mnist_png"]["load"]

    def both(level) -> bool:
        return level in noop and level in service

    paper = report["service"].get("paper_jpeg", {}).get("load", {})
    v2 = report["service"].get("mnist_v2", {}).get("load", {})
    number = report["service"].get("number_png", {}).get("load", {})
    in_process_cpu = report.get("in_process_cpu_us_per_request", {})
    in_pairs = report.get("pairs", [])
    return {
        "asyncio_client_over_threaded_c32": report.get("clients", {}).get("asyncio_over_threaded"),
        # the same PNGs in Open Inference Protocol requests against the raw-bytes route, same server
        "v2_bytes_c32_over_raw": round(v2[32]["rps"] / service[32]["rps"], 3) if 32 in v2 and 32 in service else None,
        "throughput_c32_service_over_noop": _median_with_pairs(
            round(service[32]["rps"] / noop[32]["rps"], 3) if both(32) else None, [p["c32"] for p in in_pairs]
        ),
        "throughput_c128_service_over_noop": round(service[128]["rps"] / noop[128]["rps"], 3) if both(128) else None,
        "p50_c1_service_over_noop": _median_with_pairs(
            round(service[1]["p50_us"] / noop[1]["p50_us"], 3) if both(1) else None, [p["c1_p50"] for p in in_pairs]
        ),
        "errors_c128": sum(failures(s["load"][128]) for s in report["service"].values()) if 128 in service else None,
        "paper_jpeg_c128_rps": paper[128]["rps"] if 128 in paper else None,
        "worker_us_per_mnist_request_c128": service[128]["cpu_us_per_request"]["workers"] if 128 in service else None,
        # a 4-digit number's worker CPU per request over an MNIST digit's, same server, same run
        "number_worker_cpu_over_mnist_c32": _median_with_pairs(
            (
                round(number[32]["cpu_us_per_request"]["workers"] / service[32]["cpu_us_per_request"]["workers"], 2)
                if 32 in number and 32 in service
                else None
            ),
            [p["number_c32"] for p in in_pairs if "number_c32" in p],
        ),
        "number_cpu_over_mnist_in_process": (
            round(in_process_cpu["number_png"] / in_process_cpu["mnist_png"], 2)
            if {"number_png", "mnist_png"} <= set(in_process_cpu)
            else None
        ),
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
        "# Benchmark",
        "",
        f"{report['duration_s']} s per level after "
        f"{report.get('warmup_s', 0)} s of unmeasured warm-up load per server, load from wrk on the same machine. "
        f"Served with the host's settings ({cfg.get('source', 'archive')}, ops.host_settings; both servers): "
        f"{cfg['minWorkers']} workers, batch {cfg['batchSize']}, max delay {cfg['maxBatchDelay']} ms.",
        "",
    ]
    targets = [("no-op handler (TorchServe ceiling)", "mnist_png", report["noop"])]
    targets += [("the service", name, result) for name, result in report["service"].items()]
    lines += markdown_table(
        ["target", "bodies", "concurrency", "requests/s", "p50 ms", "p90 ms", "p99 ms", "errors"],
        [
            [
                target,
                name,
                str(connections),
                f"{r['rps']:,.0f}",
                f"{r['p50_us'] / 1000:.1f}",
                f"{r['p90_us'] / 1000:.1f}",
                f"{r['p99_us'] / 1000:.1f}",
                str(failures(r)),
            ]
            for target, name, result in targets
            for connections, r in result["load"].items()
        ],
    )
    lines += [
        "",
        f"In-process ceiling (one worker on {report.get('in_process_device', 'cpu')}, no HTTP; images/s "
        "by batch size): " + ", ".join(f"{k} {v:,.0f}" for k, v in report["in_process_rps"].items()),
        "",
    ]
    if report.get("in_process_cpu_us_per_request"):
        cpu = report["in_process_cpu_us_per_request"]
        lines += [
            f"In process, batches of {cfg['batchSize']}, CPU us per request: "
            + ", ".join(f"{k} {v:,.0f}" for k, v in cpu.items())
            + (
                f" (a 4-digit number {report['ratios']['number_cpu_over_mnist_in_process']} x an MNIST digit)"
                if report["ratios"].get("number_cpu_over_mnist_in_process")
                else ""
            ),
            "",
        ]
    checked = [
        f"{name}: {r['checked']['right']}/{r['checked']['requests']} right, {r['checked']['errors']} errors"
        for name, r in report["service"].items()
    ]
    ratio = report["ratios"]
    lines += ["Checked pass (every body once at concurrency 32): " + "; ".join(checked) + ".", ""]
    lines += pairs_markdown(report)
    goals = [
        goal_row("service at c32 >= 0.5 x no-op", ratio["throughput_c32_service_over_noop"], " x", lambda v: v >= 0.5),
        goal_row("service p50 at c1 <= 1.5 x no-op", ratio["p50_c1_service_over_noop"], " x", lambda v: v <= 1.5),
        goal_row("no errors at c128", ratio["errors_c128"], "", lambda v: v == 0),
        goal_row("v2 BYTES at c32 >= 0.9 x raw bytes", ratio["v2_bytes_c32_over_raw"], " x", lambda v: v >= 0.9),
        goal_row(
            "asyncio client >= threaded client at c32",
            ratio["asyncio_client_over_threaded_c32"],
            " x",
            lambda v: v >= 1,
        ),
        goal_row(
            "4-digit number: workers' CPU per request at c32 <= 3 x an MNIST digit's",
            ratio.get("number_worker_cpu_over_mnist_c32"),
            " x",
            lambda v: v <= 3,
        ),
    ]
    if report.get("gpus"):  # the GPU host's goals
        goals += [
            goal_row(
                "service at c128 >= 0.6 x no-op", ratio["throughput_c128_service_over_noop"], " x", lambda v: v >= 0.6
            ),
            goal_row(
                "paper-photo JPEG at c128 >= 10,000 requests/s", ratio["paper_jpeg_c128_rps"], "", lambda v: v >= 10000
            ),
            goal_row(
                "worker CPU per MNIST request at c128 <= 150 us",
                ratio["worker_us_per_mnist_request_c128"],
                " us",
                lambda v: v <= 150,
            ),
        ]
    lines += markdown_table(["goal", "measured", "met"], goals)
    lines += [
        "",
        f"`make bench` also draws `{report_stem(report)}.png` beside this report; it is not kept in the repository.",
        "",
    ]
    lines += where_the_time_goes(report)
    return "\n".join(lines)


def pairs_markdown(report: dict) -> list[str]:
    """The pairs of step 4 beside the tables' own ratios, which the goals below take the median of."""
    in_pairs = report.get("pairs", [])
    if not in_pairs:
        return []
    noop, service = report["noop"]["load"], report["service"]["mnist_png"]["load"]
    lines = [
        "Back-to-back pairs (MNIST PNGs; each server started afresh, warmed for "
        f"{report.get('warmup_s', 0)} s, {report['duration_s']} s per level; on the service, right after its "
        "MNIST c32, the number model's c32 after as many seconds of its own warm-up): the goals below are the "
        "median ratio of the tables above and these pairs.",
        "",
    ]
    number = report["service"].get("number_png", {}).get("load", {})
    rows = []
    if 32 in noop and 32 in service and 1 in noop and 1 in service:
        rows.append(
            [
                "the tables above",
                f"{noop[32]['rps']:,.0f}",
                f"{service[32]['rps']:,.0f}",
                f"{service[32]['rps'] / noop[32]['rps']:.3f}",
                f"{total_cpu_us(noop[32])} / {total_cpu_us(service[32])}",
                f"{noop[1]['p50_us'] / 1000:.1f}",
                f"{service[1]['p50_us'] / 1000:.1f}",
                f"{service[1]['p50_us'] / noop[1]['p50_us']:.3f}",
                _number_cell(
                    number[32]["cpu_us_per_request"]["workers"] if 32 in number else None,
                    service[32]["cpu_us_per_request"]["workers"],
                ),
            ]
        )
    for i, p in enumerate(in_pairs, 1):
        rows.append(
            [
                f"pair {i}",
                f"{p['noop']['c32_rps']:,.0f}",
                f"{p['service']['c32_rps']:,.0f}",
                f"{p['c32']:.3f}",
                f"{p['noop'].get('c32_cpu_us_per_request')} / {p['service'].get('c32_cpu_us_per_request')}",
                f"{p['noop']['c1_p50_us'] / 1000:.1f}",
                f"{p['service']['c1_p50_us'] / 1000:.1f}",
                f"{p['c1_p50']:.3f}",
                _number_cell(
                    p["service"].get("number_c32_workers_us_per_request"),
                    p["service"].get("c32_workers_us_per_request"),
                ),
            ]
        )
    header = [
        "measured",
        "no-op c32 requests/s",
        "service c32 requests/s",
        "c32 ratio",
        "no-op / service c32 CPU us per request",
        "no-op c1 p50 ms",
        "service c1 p50 ms",
        "c1 p50 ratio",
        "number / MNIST c32 workers' us per request",
    ]
    return lines + markdown_table(header, rows) + [""]


def _number_cell(number_us: int | None, mnist_us: int | None) -> str:
    """The number's and the MNIST digit's workers' CPU per request at c32, and their ratio."""
    if number_us is None or not mnist_us:
        return "not measured"
    return f"{number_us:,} / {mnist_us:,} = {number_us / mnist_us:.2f} x"


def where_the_time_goes(report: dict) -> list[str]:
    """CPU microseconds per answered request at concurrency 32 and 128 (those measured), by process."""
    lines = []
    for level in (32, 128):
        rows = [("no-op handler", report["noop"]["load"].get(level))]
        rows += [(f"the service, {name}", result["load"].get(level)) for name, result in report["service"].items()]
        rows = [(target, r) for target, r in rows if r and "cpu_us_per_request" in r]
        if not rows:
            continue
        lines += [
            f"## Where the time goes (concurrency {level})",
            "",
            "CPU time of each process divided by the requests it answered in the same run. On a machine "
            "with C cores, requests/s can never exceed C x 1e6 / (total us per request).",
            "",
        ]
        lines += markdown_table(
            ["target", "requests/s", "frontend (Java) us", "workers (Python) us", "wrk us", "total us"],
            [
                [
                    target,
                    f"{r['rps']:,.0f}",
                    *(str(r["cpu_us_per_request"][k]) for k in ("frontend", "workers", "wrk")),
                    str(sum(r["cpu_us_per_request"].values())),
                ]
                for target, r in rows
            ],
        )
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
