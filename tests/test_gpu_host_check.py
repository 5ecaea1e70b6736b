"""benchmarks/gpu_host_check.sh, the GPU host's one command, on this host: its stages run, keep to
their time limits and report into --out."""

from __future__ import annotations

import os
import subprocess

from ops.paths import ROOT


def check(out, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "benchmarks/gpu_host_check.sh", "--out", str(out), *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_gpu_host_check_runs_its_stages_and_fails_on_an_unknown_one(tmp_path):
    run = check(tmp_path, "--limit", "profile=120", "tests", "profile", "no-such-stage")
    log = (tmp_path / "gpu-host-check.log").read_text()
    assert "== profile (at most 120 s)" in log
    assert any(line.startswith("torch ") and " cuda " in line for line in log.splitlines())  # whether CUDA answers
    assert "== tests: exit 0" in log  # without CUDA every gpu test is skipped, none fails
    assert "== profile: exit 0" in log
    profile = (tmp_path / "batch-profile.md").read_text()  # batch-profile-gpu.md on a GPU host
    assert all(f"| - | {bodies} | 16 |" in profile for bodies in ("mnist_png", "paper_jpeg"))
    assert "unknown stage: no-such-stage" in run.stdout
    assert run.returncode == 1


def test_a_stage_over_its_time_limit_is_stopped_and_reported(tmp_path):
    run = check(tmp_path, "tests", GPU_CHECK_TESTS_S="1")
    assert "== tests (at most 1 s)" in run.stdout and "== tests: exit 124 (over its 1 s limit)" in run.stdout
    assert run.returncode == 1
    bad = check(tmp_path, "--limit", "tests=soon")
    assert bad.returncode == 2 and "STAGE=SECONDS" in bad.stderr
