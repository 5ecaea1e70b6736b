"""The handler's typed settings, and the defaults that several files state agreeing."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from handler.settings import HandlerSettings, SettingsError
from ops import host_settings
from ops.paths import ROOT


def _model_config() -> dict:
    return yaml.safe_load((ROOT / "model-config.yaml").read_text())


def test_model_configs_handler_section_is_read_whole():
    section = _model_config()["handler"]
    settings = HandlerSettings.from_config(section)
    assert {name: getattr(settings, name) for name in section} == section


def test_no_section_means_every_default():
    assert HandlerSettings.from_config(None) == HandlerSettings.from_config({}) == HandlerSettings()


def test_an_unknown_key_is_an_error_that_names_it_and_the_known_ones():
    with pytest.raises(SettingsError, match=r"unknown setting\(s\) 'low_confidnce'.*known: .*low_confidence"):
        HandlerSettings.from_config({"low_confidnce": 0.5})


@pytest.mark.parametrize(
    "key, value",
    [
        ("torch_threads", "2"),
        ("torch_threads", True),
        ("torch_threads", 1.5),
        ("low_confidence", "high"),
        ("buffered_socket", 1),
        ("cuda_sync", "sleep"),
        ("tta_below", [0.5]),
        ("torch_threads", 0),
        ("metrics_flush_seconds", -1),
    ],
)
def test_a_wrong_value_is_an_error_that_names_the_setting(key, value):
    with pytest.raises(SettingsError, match=f"handler.{key}"):
        HandlerSettings.from_config({key: value})


def test_numbers_and_nulls_where_the_type_allows_them():
    settings = HandlerSettings.from_config({"low_confidence": 1, "tta_below": None, "metrics_flush_seconds": 0})
    assert settings.low_confidence == 1 and settings.tta_below is None


def test_settings_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        HandlerSettings().torch_threads = 2


def test_a_worker_with_a_misspelled_setting_does_not_start():
    from harness.inprocess import load_handler

    with pytest.raises(SettingsError, match="'bufered_socket'"):
        load_handler(bufered_socket=False)


def test_batching_defaults_agree_across_the_files_that_state_them():
    """The archive's model-config.yaml and the host settings that override it at start
    (ops/host_settings.py)."""
    config = _model_config()
    assert config["batchSize"] == host_settings.BATCH_SIZE
    assert config["maxBatchDelay"] == host_settings.CPU_BATCH_DELAY_MS
    assert config["responseTimeout"] == host_settings.RESPONSE_TIMEOUT_S
    assert config["startupTimeout"] == host_settings.STARTUP_TIMEOUT_S
    assert config["minWorkers"] == host_settings.workers_for(cpus=2, gpus=0)


def test_the_confidence_lines_agree_across_the_files_that_state_them():
    """low_confidence, a calibrated probability of being right (the LowConfidencePredictions metric
    and the evaluation's "confident" answers), and tta_below, on the network's own probability:
    their defaults, model-config.yaml and the operations guide's table."""
    from handler.inference import TTA_BELOW
    from train.calibrate import CONFIDENT

    config, defaults = _model_config()["handler"], HandlerSettings()
    assert config["low_confidence"] == defaults.low_confidence == CONFIDENT
    assert config["tta_below"] == defaults.tta_below == TTA_BELOW
    table = (ROOT / "docs" / "operations.md").read_text()
    assert f"| `low_confidence` | {defaults.low_confidence:g} |" in table
    assert f"| `tta_below` | {TTA_BELOW:g} |" in table
    # the LowConfidencePredictions alert and its dashboard panel name the line they count under
    monitoring = ROOT / "deploy" / "monitoring"
    assert f"under low_confidence ({defaults.low_confidence:g}" in (monitoring / "prometheusrule.yaml").read_text()
    assert f"under low_confidence, {defaults.low_confidence:g}," in (monitoring / "dashboard.json").read_text()


@pytest.mark.parametrize("value", [0, -0.5, 1.5])
def test_low_confidence_is_a_probability(value):
    with pytest.raises(SettingsError, match="handler.low_confidence"):
        HandlerSettings.from_config({"low_confidence": value})
