"""Host-derived workers and batch delay, and the model_snapshot that carries them to TorchServe."""

from __future__ import annotations

import json

import pytest

from harness.local_server import LocalTorchServe
from ops.entrypoint import effective_properties, log_format, say
from ops.host_settings import (
    BATCH_SIZE,
    MODEL_NAMES,
    HostSettings,
    host_settings,
    model_snapshot,
    stored_models,
    workers_for,
)
from ops.paths import ROOT
from ops.tsctl import describe
from ops.version import release_version


@pytest.mark.parametrize(
    "cpus, gpus, workers", [(1, 0, 1), (2, 0, 2), (16, 0, 16), (16, 1, 8), (2, 1, 1), (4, 4, 4), (64, 8, 32)]
)
def test_workers_follow_cpus_and_gpus(cpus, gpus, workers):
    assert workers_for(cpus, gpus) == workers


def test_overrides_win_and_bad_values_are_refused():
    settings = host_settings({"WORKERS": "3", "BATCH_DELAY_MS": "0"})
    assert (settings.workers, settings.batch_delay_ms, settings.source) == (3, 0, "override")
    assert (host_settings({}).source, host_settings({}).batch_size) == ("host", BATCH_SIZE)
    larger = host_settings({"BATCH_SIZE": "64"})
    assert (larger.batch_size, larger.source) == (64, "override")
    assert json.loads(model_snapshot(larger))["models"]["mnist"][release_version()]["batchSize"] == 64
    for bad in ({"WORKERS": "0"}, {"WORKERS": "two"}, {"BATCH_DELAY_MS": "-1"}, {"BATCH_SIZE": "0"}):
        with pytest.raises(SystemExit):
            host_settings(bad)


def test_effective_config_carries_the_settings_and_the_auth_choice():
    settings = HostSettings(cpus=4, gpus=0, workers=4, batch_delay_ms=2, source="host")
    props = effective_properties(ROOT / "config.properties", settings, {"TOKEN_AUTH": "off"})
    version = json.loads(props["model_snapshot"])["models"]["mnist"][release_version()]
    assert (version["minWorkers"], version["maxWorkers"], version["maxBatchDelay"]) == (4, 4, 2)
    assert version["batchSize"] == BATCH_SIZE and version["marName"] == "mnist.mar"
    assert props["disable_token_authorization"] == "true"
    assert effective_properties(ROOT / "config.properties", settings, {})["disable_token_authorization"] == "false"
    with pytest.raises(SystemExit):
        effective_properties(ROOT / "config.properties", settings, {"TOKEN_AUTH": "maybe"})


def test_the_snapshot_registers_each_model_whose_archive_the_store_holds(tmp_path):
    settings = HostSettings(cpus=2, gpus=0, workers=2, batch_delay_ms=5, source="host")
    both = json.loads(model_snapshot(settings))
    assert sorted(both["models"]) == sorted(MODEL_NAMES) == ["mnist", "number"] and both["modelCount"] == 2
    assert both["models"]["number"][release_version()]["marName"] == "number.mar"
    assert stored_models(tmp_path) == ()
    (tmp_path / "mnist.mar").write_bytes(b"")
    assert stored_models(tmp_path) == ("mnist",)  # a store built before the number model
    props = effective_properties(ROOT / "config.properties", settings, {})
    assert set(json.loads(props["model_snapshot"])["models"]) == {"mnist", "number"}


def test_log_format_is_text_or_json_and_the_entry_points_line_follows_it(capsys):
    assert [log_format(env) for env in ({}, {"LOG_FORMAT": "JSON"}, {"LOG_FORMAT": "text"})] == ["text", "json", "text"]
    with pytest.raises(SystemExit):
        log_format({"LOG_FORMAT": "logfmt"})
    say('host: 2 CPUs "quoted"', json_lines=True)
    say("host: 2 CPUs", json_lines=False)
    as_json, as_text = capsys.readouterr().out.splitlines()
    entry = json.loads(as_json)
    assert entry["message"] == 'host: 2 CPUs "quoted"' and entry["logger"] == "ops.entrypoint"
    assert entry["time"].endswith("Z") and as_text == "host: 2 CPUs"


@pytest.mark.integration
def test_the_snapshot_overrides_the_archives_model_config(model_store):
    """The archive says 2 workers and 5 ms; a model_snapshot in config.properties must win."""
    settings = HostSettings(cpus=3, gpus=0, workers=3, batch_delay_ms=1, source="override")
    server = LocalTorchServe(model_store, overrides={"model_snapshot": model_snapshot(settings)}).start()
    try:
        model = describe(server.management, server.keys()["management"])
        assert (model["minWorkers"], model["maxWorkers"], model["maxBatchDelay"]) == (3, 3, 1)
        assert len(model["workers"]) == 3
        assert server.predict((ROOT / "tests" / "fixtures" / "seven.png").read_bytes()).json()["digit"] == 7
    finally:
        server.stop()
