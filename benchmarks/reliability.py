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
import time
from pathlib import Path

from benchmarks.bench import machine
from harness.faults import kill_worker, reference_answers, restart, soak, valid_bodies
from harness.local_server import LocalTorchServe
from ops.build_archive import build_archive
from ops.paths import ROOT


def fuzz_count(profile: str) -> dict:
    """Run the fuzz tests and report how many inputs they tried."""
    env = dict(os.environ, HYPOTHESIS_PROFILE=profile)
    result = subprocess.run([sys.executable, "-m", "pytest", "tests/test_fuzz.py", "-q", "-p", "no:cacheprovider",
                             "--hypothesis-show-statistics"], cwd=ROOT, env=env, capture_output=True, text=True)
    examples = sum(int(n) for n in re.findall(r"(\d+) passing examples", result.stdout))
    return {"profile": profile, "passed": result.returncode == 0, "inputs": examples,
            "summary": result.stdout.strip().splitlines()[-1]}


def main(args: argparse.Namespace) -> dict:
    import tempfile

    store = Path(tempfile.mkdtemp(prefix="reliability-"))
    build_archive(store)
    bodies, _ = valid_bodies()
    server = LocalTorchServe(store).start()
    try:
        answers = reference_answers(server, bodies)
        report = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(),
                  "workers": len(server.worker_pids())}
        report["kill"] = kill_worker(server, bodies, answers)
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


def markdown(r: dict) -> str:
    k, s, f, rs = r["kill"], r["soak"], r["fuzz"], r["restart"]
    failed = sum(v for key, v in k["during_recovery"].items() if key != "ok")
    return "\n".join([
        "# Reliability", "",
        f"Written by `make soak` on {r['date']}; machine: {r['machine']}; {r['workers']} workers.", "",
        "## Bad input", "",
        f"- Fuzzing (`tests/test_fuzz.py`, profile `{f['profile']}`): {f['inputs']:,} generated inputs "
        "(random bytes, mutated PNG/JPEG/GIF/WebP/BMP/TIFF in odd modes, animated GIFs, huge declared "
        "sizes, base64/data-URL/JSON wrappings, arbitrary JSON, multipart-like fields); "
        f"result: `{f['summary']}`. "
        + ("No failures. " if f["passed"] else "**The fuzz tests FAILED: see the summary.** ")
        + "Found and fixed earlier: a JSON scalar "
        "body raised TypeError; an image with no background (all ink) took the mean of an empty array; images of 89-179 M pixels only "
        "warned in Pillow (now refused as bombs); a TIFF with a rational strip size made Pillow raise "
        "TypeError (found by fuzzing decode_batch). Each has a regression test in `tests/test_preprocess.py`.",
        "- Decompression bombs: a PNG declaring 50,000 x 50,000 pixels is refused with 413 from its header "
        "(`tests/test_preprocess.py::test_bomb_is_refused_before_decoding`: under 5 MB traced).", "",
        "## Worker killed (kill -9) under load", "",
        f"- 8 concurrent clients; worker pid {k['killed_pid']} killed; TorchServe replaced it in "
        f"{k['recovery_seconds']} s.",
        f"- Before the kill: {k['before_kill']}. During recovery: {k['during_recovery']} "
        f"({failed} failed, all as error statuses or timeouts; wrong digits: "
        f"{k['during_recovery'].get('wrong', 0)}). After recovery: {k['after_recovery']}.",
        f"- Then {k['after_sequential_ok']}/{k['after_sequential_sent']} sequential requests right; "
        f"/ping: {k['ping']}.", "",
        "## Restart", "",
        f"- Stopped and started from the same store and config: settings equal: {rs['settings_equal']} "
        f"({rs['settings']}), workers {rs['workers']}, same answers: {rs['answers_equal']}.", "",
        "## Soak", "",
        f"- {s['seconds']} s at concurrency {s['concurrency']}, {1 - s['invalid_share']:.0%} valid requests and "
        f"{s['invalid_share']:.0%} from the bad-input catalogue (`harness/bad_inputs.py`): "
        f"{s['requests']:,} requests ({s['requests_per_s']}/s), outcomes {s['outcomes']}, "
        f"unexpected: {s['unexpected']}.",
        f"- Worker memory (RSS, all workers, shared libraries included): {s['worker_rss_mb_before']} MB "
        f"before, {s['worker_rss_mb_after']} MB after.", "",
    ])


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--soak-seconds", type=float, default=180, help="soak duration")
    p.add_argument("--concurrency", type=int, default=8, help="soak clients")
    p.add_argument("--fuzz-profile", default="ci", help="hypothesis profile for the fuzz count (smoke, ci or long)")
    p.add_argument("--out", default=str(ROOT / "reports"), help="report folder")
    main(p.parse_args())
