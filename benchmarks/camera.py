"""`make camera`: phone photos against a real TorchServe: latency, and the workers' peak memory with
8 large uploads at once, written to reports/camera.{md,json}.

    python -m benchmarks.camera [--rounds 4] [--out reports]

The uploads are made at run time (synthetic/camera.py) from a handwritten MNIST test digit drawn
large in dark ink on off-white paper under uneven light, with sensor noise, stored as a phone held
upright stores it (turned, with EXIF orientation 6): a 48 MP JPEG at quality 90 and a 12 MP HEIC
(HEVC tiles, a 320 px thumbnail), each sent at concurrency 1 and 8; then, at concurrency 8, the
same HEIC without its thumbnail and a PNG, WebP and AVIF at their formats' full-decode limits
(handler/preprocess/decode.py), which are decoded at full size. Each client sends `rounds`
requests one after another.

Worker memory: each worker's resident set (RSS, shared libraries included) sampled with psutil
every 20 ms, and the kernel's high-water mark (VmHWM), reset before each scenario through
/proc/PID/clear_refs. The goal: under 1 GiB per worker with 8 such uploads at once.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil

from benchmarks.bench_report import markdown_table, write_report
from handler.preprocess.decode import full_decode_pixels
from harness.local_server import LocalTorchServe
from harness.samples import sample_digits
from ops.build_archive import build_archive
from ops.paths import ROOT
from ops.stamp import stamp
from synthetic.camera import paper_photo, phone_heic, phone_jpeg, sensor_photo
from synthetic.families import encode_image

GOAL_MIB = 1024  # peak RSS of each worker with 8 such uploads at once
DIGIT = 4  # of the committed MNIST test digits (a 7)
CONCURRENCY = (1, 8)
SAMPLE_SECONDS = 0.02


@dataclass(frozen=True)
class Upload:
    name: str
    body: bytes
    content_type: str
    pixels: int  # as shown
    concurrency: tuple[int, ...] = CONCURRENCY


def uploads(digit: np.ndarray) -> list[Upload]:
    """The photos this benchmark sends, made now (about a minute: x265 is slow)."""
    rng = np.random.default_rng(0)
    heic_photo = sensor_photo(digit, 3024, 4032, rng)
    made = [
        Upload("48 MP JPEG", phone_jpeg(sensor_photo(digit, 6000, 8000, rng)), "image/jpeg", 6000 * 8000),
        Upload("12 MP HEIC", phone_heic(heic_photo), "image/heic", 3024 * 4032),
        Upload("12 MP HEIC, no thumbnail", phone_heic(heic_photo, thumbnails=()), "image/heic", 3024 * 4032, (8,)),
    ]
    full_size = (("PNG", {"compress_level": 1}), ("WEBP", {"quality": 85}), ("AVIF", {"quality": 70, "speed": 10}))
    for fmt, save in full_size:
        width, height = at_limit(full_decode_pixels(fmt))
        body = encode_image(paper_photo(digit, width, height, rng), fmt, **save)
        label = f"{width * height / 1e6:.1f} MP {fmt.replace('WEBP', 'WebP')} (its limit)"
        made.append(Upload(label, body, f"image/{fmt.lower()}", width * height, (8,)))
    return made


def at_limit(pixels: int) -> tuple[int, int]:
    """The largest 4:3 landscape size within `pixels`."""
    k = math.isqrt(pixels // 12)
    return 4 * k, 3 * k


class MemorySampler:
    """The workers' RSS every SAMPLE_SECONDS on a thread: the peak per worker and of their sum."""

    def __init__(self, pids: list[int]) -> None:
        self.processes = [psutil.Process(pid) for pid in pids]
        self.peaks = [0] * len(pids)
        self.peak_total = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            sizes = [p.memory_info().rss for p in self.processes]
            self.peaks = [max(a, b) for a, b in zip(self.peaks, sizes)]
            self.peak_total = max(self.peak_total, sum(sizes))

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def reset_high_water_mark(pid: int) -> bool:
    """Set the kernel's VmHWM back to the current RSS (Linux 4.0+); False where not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def high_water_mark(pid: int) -> int:
    """VmHWM: the largest RSS since start or the last reset, in bytes."""
    return int(re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text()).group(1)) * 1024


def run_scenario(server: LocalTorchServe, upload: Upload, concurrency: int, rounds: int, label: int) -> dict:
    pids = server.worker_pids()
    before = [psutil.Process(pid).memory_info().rss for pid in pids]
    reset = all(reset_high_water_mark(pid) for pid in pids)

    def client(_) -> list[tuple[float, int, int | None]]:
        results = []
        for _ in range(rounds):
            start = time.perf_counter()
            response = server.predict(upload.body, upload.content_type, timeout=120)
            digit = response.json().get("digit") if response.status_code == 200 else None
            results.append((time.perf_counter() - start, response.status_code, digit))
        return results

    with MemorySampler(pids) as sampler, ThreadPoolExecutor(concurrency) as pool:
        results = [r for client_results in pool.map(client, range(concurrency)) for r in client_results]
    hwm = [high_water_mark(pid) for pid in pids]
    ms = np.array([r[0] for r in results]) * 1000
    return {
        "upload": upload.name,
        "concurrency": concurrency,
        "requests": len(results),
        "right": sum(status == 200 and digit == label for _, status, digit in results),
        "statuses": sorted({status for _, status, _ in results}),
        "latency_ms": {"p50": round(float(np.percentile(ms, 50)), 1), "p95": round(float(np.percentile(ms, 95)), 1)},
        "workers_restarted": sorted(server.worker_pids()) != sorted(pids),
        "memory_mib": {
            "rss_before": _mib(before),
            "peak_rss_sampled": _mib(sampler.peaks),
            "peak_rss_hwm": _mib(hwm) if reset else None,
            "peak_total_sampled": _mib([sampler.peak_total])[0],
        },
    }


def _mib(sizes: list[int]) -> list[float]:
    return [round(size / 2**20, 1) for size in sizes]


def peak_per_worker(scenario: dict) -> float:
    """A scenario's largest worker peak: VmHWM where it was reset, the samples' otherwise."""
    memory = scenario["memory_mib"]
    return max(memory["peak_rss_hwm"] or memory["peak_rss_sampled"])


def idle_breakdown(server: LocalTorchServe) -> list[dict]:
    """Each idle worker's RSS, and how much of it is its own (USS) rather than shared pages."""
    out = []
    for pid in server.worker_pids():
        info = psutil.Process(pid).memory_full_info()
        out.append({"rss": _mib([info.rss])[0], "uss": _mib([info.uss])[0], "shared": _mib([info.shared])[0]})
    return out


def main(args: argparse.Namespace) -> dict:
    digits, labels = sample_digits()
    made = uploads(digits[DIGIT])
    store = Path(tempfile.mkdtemp(prefix="camera-"))
    build_archive(store)
    server = LocalTorchServe(store).start()
    report = {"stamp": stamp(), "load_average_start": os.getloadavg(), "goal_mib_per_worker": GOAL_MIB}
    try:
        report["workers"] = len(server.worker_pids())
        report["idle_workers_mib"] = idle_breakdown(server)
        report["uploads"] = {u.name: {"bytes": len(u.body), "pixels": u.pixels, "type": u.content_type} for u in made}
        for upload in made:  # warm: each format's decoder loaded once before it is timed
            server.predict(upload.body, upload.content_type, timeout=120)
        label = int(labels[DIGIT])
        report["scenarios"] = [
            run_scenario(server, upload, concurrency, args.rounds, label)
            for upload in made
            for concurrency in upload.concurrency
        ]
    finally:
        server.stop()
    report["load_average_end"] = os.getloadavg()
    at_eight = [s for s in report["scenarios"] if s["concurrency"] == 8]
    report["goal_met"] = all(peak_per_worker(s) < GOAL_MIB for s in at_eight)
    write_report(Path(args.out) / "camera", report, markdown(report))
    return report


def markdown(r: dict) -> str:
    rows = []
    for s in r["scenarios"]:
        memory = s["memory_mib"]
        upload = r["uploads"][s["upload"]]
        rows.append(
            [
                s["upload"],
                f"{upload['bytes'] / 2**20:.1f} MiB",
                str(s["concurrency"]),
                f"{s['right']}/{s['requests']}",
                f"{s['latency_ms']['p50']:,.0f}",
                f"{s['latency_ms']['p95']:,.0f}",
                " / ".join(f"{m:,.0f}" for m in memory["rss_before"]),
                " / ".join(f"{m:,.0f}" for m in memory["peak_rss_hwm"] or memory["peak_rss_sampled"]),
                f"{memory['peak_total_sampled']:,.0f}",
            ]
        )
    idle = r["idle_workers_mib"]
    worst = max(r["scenarios"], key=peak_per_worker)
    return "\n".join(
        [
            "# Camera uploads",
            "",
            f"TorchServe with {r['workers']} workers, from a freshly built archive, reading phone photos of a "
            "handwritten MNIST test digit made at run time (benchmarks/camera.py, synthetic/camera.py): stored "
            "turned with EXIF orientation 6, as a phone held upright stores them. 1-minute load average of the "
            f"host: {r['load_average_start'][0]:.1f} at the start, {r['load_average_end'][0]:.1f} at the end, "
            f"on {os.cpu_count()} cores.",
            "",
            *markdown_table(
                [
                    "upload",
                    "body",
                    "clients",
                    "right",
                    "p50 ms",
                    "p95 ms",
                    "RSS before, per worker, MiB",
                    "peak RSS per worker, MiB",
                    "peak RSS of all workers, MiB",
                ],
                rows,
            ),
            "",
            "Peak RSS per worker: the kernel's high-water mark (VmHWM), reset before each row; of all workers: "
            "the largest sum of their RSS sampled every 20 ms (psutil). RSS counts the shared libraries in each "
            f"worker: idle, each holds {' / '.join(str(w['rss']) for w in idle)} MiB, of which "
            f"{' / '.join(str(w['uss']) for w in idle)} MiB are its own (USS) and the rest is shared with the "
            "others (torch's libraries).",
            "",
            f"Goal: under {r['goal_mib_per_worker']:,} MiB per worker with 8 such uploads at once: "
            + ("**met**" if r["goal_met"] else "**NOT met**")
            + f"; the largest peak was {peak_per_worker(worst):,.0f} MiB ({worst['upload']}, "
            f"{worst['concurrency']} clients), and of all {r['workers']} workers together "
            f"{max(s['memory_mib']['peak_total_sampled'] for s in r['scenarios']):,.0f} MiB (their shared "
            "libraries counted once per worker). Every answer right: "
            + ("yes" if all(s["right"] == s["requests"] for s in r["scenarios"]) else "**no**")
            + "; a worker restarted: "
            + ("**yes**" if any(s["workers_restarted"] for s in r["scenarios"]) else "no")
            + ".",
            "",
        ]
    )


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=4, help="requests each client sends, one after another")
    p.add_argument("--out", default=str(ROOT / "reports"), help="report folder")
    main(p.parse_args())
