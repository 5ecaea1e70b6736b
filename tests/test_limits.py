"""A deliberately small deployment: one worker, no batching, a job queue of 4, model API on.

It shows the limits an operator relies on: a full queue answers 503 at once (no hang), the
server recovers, and even with the model API enabled nothing registers from a remote URL.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
import yaml

from harness.local_server import LocalTorchServe
from harness.settings import model_config
from ops.build_archive import build_archive
from tests.conftest import png_bytes

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def small_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("small")
    config = model_config()
    config.update(minWorkers=1, maxWorkers=1, batchSize=1, maxBatchDelay=1)
    (root / "model-config.yaml").write_text(yaml.safe_dump(config))
    store = root / "store"
    build_archive(store, config_file=root / "model-config.yaml")
    ts = LocalTorchServe(store, overrides={"job_queue_size": "4", "enable_model_api": "true"})
    ts.start()
    yield ts
    ts.stop()


def slow_image() -> bytes:
    """A 4000x4000 PNG of a digit: ~100 KB on the wire, tens of ms to decode."""
    pixels = np.zeros((4000, 4000), np.uint8)
    pixels[1000:3000, 1900:2100] = 255
    return png_bytes(pixels)


def test_full_queue_answers_503_fast_and_recovers(small_server):
    body = slow_image()
    with ThreadPoolExecutor(40) as pool:

        def timed(_):
            start = time.perf_counter()
            response = small_server.predict(body, timeout=120)
            return response.status_code, time.perf_counter() - start

        results = list(pool.map(timed, range(40)))
    codes = [code for code, _ in results]
    assert set(codes) <= {200, 503}, codes
    assert codes.count(503) >= 10 and codes.count(200) >= 4
    refusals = sorted(seconds for code, seconds in results if code == 503)
    slowest_success = max(seconds for code, seconds in results if code == 200)
    assert refusals[len(refusals) // 2] < slowest_success  # refused without waiting its turn
    # Recovered: the queue drains and single requests succeed again.
    assert small_server.predict(body, timeout=60).status_code == 200
    ping = requests.get(f"{small_server.inference}/ping", headers=small_server.headers(), timeout=10)
    assert ping.json()["status"] == "Healthy"


def test_remote_urls_are_refused_even_with_the_model_api_on(small_server):
    for url in ("http://127.0.0.1:9/evil.mar", "https://example.com/mnist.mar", "file:///etc/passwd"):
        r = requests.post(
            f"{small_server.management}/models",
            params={"url": url},
            headers=small_server.headers("management"),
            timeout=30,
        )
        assert r.status_code in (400, 403, 404), (url, r.status_code, r.text)
        assert "allowed" in r.text.lower() or "not found" in r.text.lower(), r.text
    models = requests.get(
        f"{small_server.management}/models", headers=small_server.headers("management"), timeout=10
    ).json()["models"]
    assert [m["modelName"] for m in models] == ["mnist"]
