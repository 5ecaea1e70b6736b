"""model-config.yaml as the tests and benchmarks read it: what they expect of the server (batch
size, delay, workers) comes from the file the archive packs, never from literals."""

from __future__ import annotations

import yaml

from ops.paths import ROOT

MODEL_CONFIG = ROOT / "model-config.yaml"


def model_config() -> dict:
    return yaml.safe_load(MODEL_CONFIG.read_text())
