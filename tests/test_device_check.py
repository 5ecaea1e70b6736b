"""benchmarks/device_check.sh, the GPU machine's one command, on this host: its stages run and report."""
from __future__ import annotations

import os
import subprocess

from ops.paths import ROOT


def test_device_check_runs_its_stages_and_fails_on_an_unknown_one(tmp_path):
    run = subprocess.run(["bash", "benchmarks/device_check.sh", "tests", "profile", "no-such-stage"], cwd=ROOT,
                         env={**os.environ, "OUT": str(tmp_path)}, capture_output=True, text=True, timeout=300)
    log = (tmp_path / "device-check.log").read_text()
    assert any(line.startswith("torch ") and " cuda " in line for line in log.splitlines())  # whether CUDA answers
    assert "== gpu-tests: exit 0" in log  # without CUDA every gpu test is skipped, none fails
    assert "== profile: exit 0" in log
    profile = (tmp_path / "batch-profile.md").read_text()  # batch-profile-gpu.md on the device
    assert all(f"| - | {bodies} | 16 |" in profile for bodies in ("mnist_png", "paper_jpeg"))
    assert "unknown stage: no-such-stage" in run.stdout
    assert run.returncode == 1
