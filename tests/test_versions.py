"""The release's version from the VERSION file to the archive, its model_snapshot, the image's tags and
every answer's X-Model-Version (and v2 model_version), over HTTP against the real server."""

from __future__ import annotations

import base64
import json
import zipfile
from pathlib import Path

import pytest
import requests

from harness.local_server import LocalTorchServe
from ops.build_archive import build_archive
from ops.entrypoint import effective_properties
from ops.host_settings import HostSettings, model_snapshot
from ops.model_layout import build_layout
from ops.paths import ROOT
from ops.properties import read_properties
from ops.tsctl import describe
from ops.version import release_version
from tests.conftest import FIXTURES

SEVEN = (FIXTURES / "seven.png").read_bytes()
SETTINGS = HostSettings(cpus=2, gpus=0, workers=2, batch_delay_ms=5, source="host")


def snapshot_versions(props: dict[str, str]) -> list[str]:
    return list(json.loads(props["model_snapshot"])["models"]["mnist"])


def manifest_version(mar: Path) -> str:
    with zipfile.ZipFile(mar) as archive:
        return json.loads(archive.read("MAR-INF/MANIFEST.json"))["model"]["modelVersion"]


def test_the_release_version_names_the_archive_and_the_snapshot(model_store):
    assert (ROOT / "VERSION").read_text().strip() == release_version()
    assert manifest_version(model_store / "mnist.mar") == release_version()
    props = effective_properties(ROOT / "config.properties", SETTINGS, {})
    assert snapshot_versions(props) == [release_version()]


def test_the_kserve_layout_logs_to_stdout_and_carries_the_release(tmp_path):
    layout = build_layout(tmp_path / "kserve-store", "kserve")
    assert (layout / "config" / "log4j2.xml").read_text() == (ROOT / "log4j2-console.xml").read_text()
    props = read_properties(layout / "config" / "config.properties")
    assert snapshot_versions(props) == [manifest_version(layout / "model-store" / "mnist.mar")] == [release_version()]


@pytest.mark.integration
def test_every_answer_over_http_carries_the_model_version(server, model_version):
    seven = base64.b64encode(SEVEN).decode()
    v2_body = {"id": "v", "inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": [seven]}]}
    answers = {
        "torchserve": server.predict(SEVEN),
        "refused": server.predict(b"not an image"),
        "v1": server.predict(
            json.dumps({"instances": [{"b64": seven}]}).encode(), "application/json", path="/v1/models/mnist:predict"
        ),
        "v2": server.predict(json.dumps(v2_body).encode(), "application/json", path="/v2/models/mnist/infer"),
    }
    statuses = {name: answer.status_code for name, answer in answers.items()}
    assert statuses == {"torchserve": 200, "refused": 415, "v1": 200, "v2": 200}
    assert {name: answer.headers.get("X-Model-Version") for name, answer in answers.items()} == dict.fromkeys(
        answers, model_version
    )
    assert answers["v2"].json()["model_version"] == model_version
    assert set(answers["torchserve"].json()) == {"digit", "confidence", "probabilities"}


@pytest.mark.integration
def test_the_server_registers_the_release(server, model_version):
    model = describe(server.management, server.keys()["management"])
    assert model["modelVersion"] == release_version()
    customized = requests.get(
        f"{server.management}/models/mnist",
        params={"customized": "true"},
        headers=server.headers("management"),
        timeout=30,
    ).json()[0]
    assert customized["customizedMetadata"]["versions"] == [model_version]


@pytest.mark.integration
def test_a_snapshot_keyed_by_another_version_still_applies(tmp_path):
    """TorchServe 0.12 registers the archive's own version whatever the snapshot's key, so the image
    (or a KServe layout) serving a store built by another release still gets the host's settings."""
    store = tmp_path / "store"
    build_archive(store, version="0.9.0")
    settings = HostSettings(cpus=3, gpus=0, workers=3, batch_delay_ms=1, source="override")
    server = LocalTorchServe(store, overrides={"model_snapshot": model_snapshot(settings, ("mnist",))}).start()
    try:
        model = describe(server.management, server.keys()["management"])
        assert model["modelVersion"] == "0.9.0" and release_version() != "0.9.0"
        assert (model["minWorkers"], model["maxBatchDelay"], len(model["workers"])) == (3, 1, 3)
        assert server.predict(SEVEN).headers["X-Model-Version"].startswith("0.9.0+")
    finally:
        server.stop()
