"""`make soak`: faults and sustained load against a real TorchServe, written to reports/reliability.{json,md}.

    python -m benchmarks.reliability --soak-seconds 180

1. worker kill: `kill -9` one worker while requests are in flight; count what failed during
   recovery (must be error statuses, never a wrong digit) and check everything after it;
2. restart: stop the server and start it again from the same store and config;
3. soak: constant concurrency with a mix of valid and invalid requests, every answer checked,
   worker memory (RSS) before and after;
4. the fuzz tests, counted.
The scenarios live in harness/faults.py; the test suite runs them short (tests/test_faults.py).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from harness.faults import kill_worker, reference_answers, restart, soak, valid_bodies
from harness.local_server import LocalTorchServe
from ops.build_archive import build_archive
from ops.paths import ROOT
from ops.stamp import line, stamp


def fuzz_count(profile: str) -> dict:
    """Run the fuzz tests and report how many inputs they tried."""
    env = dict(os.environ, HYPOTHESIS_PROFILE=profile)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "tests/test_fuzz.py",
            "-q",
            "-p",
            "no:cacheprovider",
            "--hypothesis-show-statistics",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    examples = sum(int(n) for n in re.findall(r"(\d+) passing examples", result.stdout))
    return {
        "profile": profile,
        "passed": result.returncode == 0,
        "inputs": examples,
        "summary": result.stdout.strip().splitlines()[-1],
    }


def main(args: argparse.Namespace) -> dict:
    import tempfile

    store = Path(tempfile.mkdtemp(prefix="reliability-"))
    build_archive(store)
    bodies, _ = valid_bodies()
    server = LocalTorchServe(store).start()
    try:
        answers = reference_answers(server, bodies)
        report = {"stamp": stamp(), "workers": len(server.worker_pids())}
        report["kill"] = kill_worker(server, bodies, answers, args.kill_clients)
        report["kill"]["clients"] = args.kill_clients
        report["restart"] = restart(server, bodies, answers)
        report["soak"] = soak(server, bodies, answers, args.soak_seconds, args.concurrency)
    finally:
        server.stop()
    report["fuzz"] = fuzz_count(args.fuzz_profile)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "reliability.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "reliability.md").write_text(markdown(report))
    print((out / "reliability.md").read_text())
    return report


def failure_kinds(outcomes: dict[str, int]) -> dict[str, int]:
    """harness.faults.Load's outcome counts -> failed requests by kind (those that occurred)."""
    kinds: dict[str, int] = {}
    for outcome, count in outcomes.items():
        kind = (
            "error status"
            if outcome.startswith("error:")
            else "timeout"
            if outcome == "timeout"
            else "connection error"
            if outcome.startswith("connection:")
            else "wrong digit"
            if outcome == "wrong"
            else None
            if outcome == "ok"
            else "other answer"
        )
        if kind:
            kinds[kind] = kinds.get(kind, 0) + count
    return kinds


def _counted(kinds: dict[str, int]) -> str:
    """{"timeout": 2, "error status": 1} -> "2 timeouts, 1 error status"."""
    plural = {"error status": "error statuses"}
    return ", ".join(f"{n} {kind if n == 1 else plural.get(kind, kind + 's')}" for kind, n in kinds.items()) or "none"


def markdown(r: dict) -> str:
    k, s, f, rs = r["kill"], r["soak"], r["fuzz"], r["restart"]
    kinds = failure_kinds(k["during_recovery"])
    return "\n".join(
        [
            line(r["stamp"]),
            "",
            "# Reliability",
            "",
            f"TorchServe with {r['workers']} workers, from a freshly built archive.",
            "",
            "## Bad input",
            "",
            f"- Fuzzing (`tests/test_fuzz.py`, profile `{f['profile']}`): {f['inputs']:,} generated inputs "
            "(random bytes, mutated PNG/JPEG/GIF/WebP/BMP/TIFF/HEIC/AVIF in odd modes, HEIC/AVIF/WebP headers "
            "mutated on their own, animated GIFs, huge declared sizes, base64/data-URL/JSON wrappings, arbitrary "
            "JSON, multipart-like fields); "
            f"result: `{f['summary']}`. "
            + ("No failures. " if f["passed"] else "**The fuzz tests FAILED: see the summary.** ")
            + "Found and fixed earlier: a JSON scalar body raised TypeError; an image with no background "
            "(all ink) took the mean of an empty array; images of 89-179 M pixels only warned in Pillow (now "
            "refused as bombs); a TIFF with a rational strip size made Pillow raise TypeError (found by fuzzing "
            "decode_batch). Each has a regression test (`tests/test_bad_inputs.py`, `tests/test_views.py`).",
            "- Decompression bombs (checked by the test suite, not by this run): a PNG declaring 50,000 x 50,000 "
            "pixels is refused with 413 from its header "
            "(`tests/test_bad_inputs.py::test_bomb_is_refused_before_decoding`: under 5 MB traced).",
            "",
            "## Worker killed (kill -9) under load",
            "",
            f"- {k['clients']} concurrent clients; worker pid {k['killed_pid']} killed; TorchServe replaced it in "
            f"{k['recovery_seconds']} s.",
            f"- Before the kill: {k['before_kill']}. During recovery: {k['during_recovery']} "
            f"({sum(kinds.values())} failed: {_counted(kinds)}{'' if 'wrong digit' in kinds else '; no wrong digit'}). "
            f"After recovery: {k['after_recovery']}.",
            f"- Then {k['after_sequential_ok']}/{k['after_sequential_sent']} sequential requests right; "
            f"/ping: {k['ping']}.",
            "",
            "## Restart",
            "",
            f"- Stopped and started from the same store and config: settings equal: {rs['settings_equal']} "
            f"({rs['settings']}), workers {rs['workers']}, same answers: {rs['answers_equal']}.",
            "",
            "## Soak",
            "",
            f"- {s['seconds']} s at concurrency {s['concurrency']}, {1 - s['invalid_share']:.0%} valid requests and "
            f"{s['invalid_share']:.0%} from the bad-input catalogue (`harness/bad_inputs.py`): "
            f"{s['requests']:,} requests ({s['requests_per_s']}/s), outcomes {s['outcomes']}, "
            f"unexpected: {s['unexpected']}.",
            f"- Worker memory (RSS, all workers, shared libraries included): {s['worker_rss_mb_before']} MB "
            f"before, {s['worker_rss_mb_after']} MB after.",
            "",
        ]
    )


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--soak-seconds", type=float, default=180, help="soak duration")
    p.add_argument("--concurrency", type=int, default=8, help="soak clients")
    p.add_argument("--kill-clients", type=int, default=8, help="clients sending requests while a worker is killed")
    p.add_argument("--fuzz-profile", default="ci", help="hypothesis profile for the fuzz count (smoke, ci or long)")
    p.add_argument("--out", default=str(ROOT / "reports"), help="report folder")
    main(p.parse_args())
