"""`make soak`: faults and sustained load against a real TorchServe serving both models (the digit
model and the number model), written to reports/reliability.{json,md}.

    python -m benchmarks.reliability --soak-seconds 180

1. worker kill, once per model: `kill -9` one of its workers while requests to both models are in
   flight; count what failed during recovery (must be error statuses, never a wrong answer), check
   everything after it, and that the other model noticed nothing;
2. restart: stop the server and start it again from the same store and config;
3. soak: constant concurrency with a mix of valid and invalid requests to both models, every
   answer checked, worker memory (RSS) before, warmed up and after;
4. the fuzz tests of both models, counted.
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

from harness.faults import kill_worker, reference_answers, restart, soak, valid_bodies, valid_jobs
from harness.local_server import LocalTorchServe
from ops.build_archive import build_archive
from ops.host_settings import MODEL_NAMES
from ops.paths import ROOT
from ops.stamp import line, stamp

FUZZ_TESTS = ("tests/test_fuzz.py", "tests/test_fuzz_numbers.py")  # the digit model's inputs, the number model's


def fuzz_count(profile: str) -> dict:
    """Run the fuzz tests and report how many inputs they tried."""
    env = dict(os.environ, HYPOTHESIS_PROFILE=profile)
    command = [sys.executable, "-m", "pytest", *FUZZ_TESTS, "-q", "-p", "no:cacheprovider"]
    result = subprocess.run(
        [*command, "--hypothesis-show-statistics"], cwd=ROOT, env=env, capture_output=True, text=True
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
    for model in MODEL_NAMES:
        build_archive(store, model)
    server = LocalTorchServe(store).start()
    try:
        jobs = []
        for model in MODEL_NAMES:
            bodies, _ = valid_bodies(model)
            jobs += valid_jobs(model, bodies, reference_answers(server, bodies, model))
        report = {"stamp": stamp(), "workers": {model: len(server.worker_pids(model)) for model in MODEL_NAMES}}
        report["kill"] = {model: kill_worker(server, jobs, model, args.kill_clients) for model in MODEL_NAMES}
        report["kill_clients"] = args.kill_clients
        report["restart"] = restart(server, jobs)
        report["soak"] = soak(server, jobs, args.soak_seconds, args.concurrency)
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
            else "wrong answer"
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


def _kill_lines(model: str, k: dict, clients: int) -> list[str]:
    """The worker-kill section's lines for a worker of `model` killed under a load on every model."""
    lines = [
        f"- A `{model}` worker (pid {k['killed_pid']}) killed under {clients} concurrent clients sending requests "
        f"to both models; TorchServe replaced it in {k['recovery_seconds']} s.",
    ]
    for of, phases in k["load"].items():
        kinds = failure_kinds(phases["during_recovery"])
        wrong = "" if "wrong answer" in kinds else "; no wrong answer"
        failed = f"{sum(kinds.values())} failed: {_counted(kinds)}{wrong}"
        lines.append(
            f"  - `{of}`{'' if of == model else ' (the other model)'}: before the kill {phases['before_kill']}, "
            f"during recovery {phases['during_recovery']} ({failed}), after recovery {phases['after_recovery']}."
        )
    lines.append(
        f"  - Then {k['after_sequential_ok']}/{k['after_sequential_sent']} sequential `{model}` requests right; "
        f"/ping: {k['ping']}."
    )
    return lines


def markdown(r: dict) -> str:
    s, f = r["soak"], r["fuzz"]
    workers = ", ".join(f"{n} `{model}` workers" for model, n in r["workers"].items())
    kills = [line for model, k in r["kill"].items() for line in _kill_lines(model, k, r["kill_clients"])]
    restarts = [
        f"- `{model}`: settings equal: {rs['settings_equal']} ({rs['settings']}), workers {rs['workers']}, "
        f"same answers: {rs['answers_equal']}."
        for model, rs in r["restart"].items()
    ]
    return "\n".join(
        [
            line(r["stamp"]),
            "",
            "# Reliability",
            "",
            f"TorchServe serving both models from freshly built archives: {workers}.",
            "",
            "## Bad input",
            "",
            f"- Fuzzing (`{'`, `'.join(FUZZ_TESTS)}`, profile `{f['profile']}`): {f['inputs']:,} generated inputs "
            "(random bytes, mutated PNG/JPEG/GIF/WebP/BMP/TIFF/HEIC/AVIF in odd modes, HEIC/AVIF/WebP headers "
            "mutated on their own, animated GIFs, huge declared sizes, base64/data-URL/JSON wrappings, arbitrary "
            "JSON, multipart-like fields; for the number model, batches of strokes, specks, rules, grids, noise "
            "and rows of digits of any size, read past decoding); "
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
            *kills,
            "",
            "## Restart",
            "",
            "Stopped and started from the same store and config:",
            "",
            *restarts,
            "",
            "## Soak",
            "",
            f"- {s['seconds']} s at concurrency {s['concurrency']} on both models, {1 - s['invalid_share']:.0%} valid "
            f"requests and {s['invalid_share']:.0%} from the bad-input catalogue (`harness/bad_inputs.py`): "
            f"{s['requests']:,} requests ({s['requests_per_s']}/s), outcomes {s['outcomes']}, "
            f"unexpected: {s['unexpected']}.",
            f"- Worker memory (RSS, every worker of both models, shared libraries included): "
            f"{s['worker_rss_mb_before']} MB before, {s['worker_rss_mb_warm']} MB a third of the way in (warmed up), "
            f"{s['worker_rss_mb_after']} MB after.",
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
