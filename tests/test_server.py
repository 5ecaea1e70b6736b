"""Integration tests: the built archive under a real TorchServe, over HTTP."""

from __future__ import annotations

import base64
import re
import threading
import time

import numpy as np
import pytest
import requests

from harness.bad_inputs import BAD_BODIES
from harness.clients import count_right, predict_concurrently
from harness.settings import model_config
from ops.polling import wait_until
from ops.tsctl import describe, rotate, scale
from synthetic.families import generate
from tests.conftest import png_bytes

pytestmark = pytest.mark.integration


def metric(server, name: str, **labels) -> float:
    """Sum of a Prometheus sample over the series matching `labels`."""
    text = requests.get(f"{server.metrics}/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{name}{{(.*)}} ([0-9.eE+-]+)$", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            total += float(match.group(2))
    return total


def settle_metrics() -> None:
    """Let earlier requests' metrics leave the workers (they flush once a second) before a baseline."""
    time.sleep(float(model_config()["handler"]["metrics_flush_seconds"]) + 0.5)


def wait_for_metric(server, name: str, expected: float, seconds: float = 20, **labels) -> float:
    """The metric once it reaches `expected` (handler counters are flushed every second), or as it is."""

    def reached() -> tuple[float] | None:
        value = metric(server, name, **labels)
        return (value,) if value >= expected else None

    try:
        return wait_until(reached, seconds, 0.25, f"{name} to reach {expected}")[0]
    except TimeoutError:
        return metric(server, name, **labels)


def test_ping_is_healthy(server):
    response = requests.get(f"{server.inference}/ping", headers=server.headers(), timeout=10)
    assert response.status_code == 200 and response.json()["status"] == "Healthy"


def test_real_mnist_test_digits(server, mnist_sample):
    images, labels = mnist_sample
    responses = predict_concurrently(server, [png_bytes(p) for p in images], content_type="image/png")
    assert all(r.status_code == 200 for r in responses)
    answers = [r.json() for r in responses]
    assert count_right(responses, labels) >= 98
    assert all(len(a["probabilities"]) == 10 and 0 <= a["confidence"] <= 1 for a in answers)


def test_the_readme_curl(server):
    """`curl -H "Authorization: Bearer <key>" -T digit.png .../predictions/mnist` (a PUT, no content type)."""
    from tests.conftest import FIXTURES

    response = requests.put(
        server.predictions, headers=server.headers(), timeout=30, data=(FIXTURES / "seven.png").read_bytes()
    )
    assert response.status_code == 200 and response.json()["digit"] == 7


def test_concurrent_requests_are_batched_and_each_caller_gets_its_own_answer(server, mnist_sample):
    images, labels = mnist_sample
    settle_metrics()
    batches_before = metric(server, "DigitBatchSize_count")
    singles_before = metric(server, "DigitBatchSize_bucket", le="1.0")
    images_before = metric(server, "DigitBatchSize_sum")
    bodies = [png_bytes(p) for p in images] * 2
    responses = predict_concurrently(server, bodies, concurrency=48)
    digits = np.array([r.json()["digit"] for r in responses])
    assert np.mean(digits == np.tile(labels, 2)) >= 0.98
    # The same image always gets the same answer, whichever batch it landed in.
    assert np.array_equal(digits[:100], digits[100:])
    # every image observed once the workers have flushed (once a second)
    assert wait_for_metric(server, "DigitBatchSize_sum", images_before + len(bodies)) == images_before + len(bodies)
    batches = metric(server, "DigitBatchSize_count") - batches_before
    singles = metric(server, "DigitBatchSize_bucket", le="1.0") - singles_before
    assert batches < len(bodies), "every request was served alone"
    assert batches - singles >= 1, "no batch held more than one request"


def test_paper_photos_and_canvas_exports(server, mnist_sample):
    images, labels = mnist_sample
    for family in ("paper_photo", "canvas_export"):
        uploads = generate(family, images[:40], seed=11)
        responses = predict_concurrently(server, uploads)
        right = count_right(responses, labels[:40])
        assert right >= 38, f"{family}: {right}/40"


def test_request_encodings(server, mnist_sample):
    images, labels = mnist_sample
    png = png_bytes(images[3])
    b64 = base64.b64encode(png).decode()
    headers = server.headers()
    url = server.predictions
    answers = [
        requests.post(url, files={"file": ("digit.png", png, "image/png")}, headers=headers, timeout=30),
        requests.post(url, json={"data": b64}, headers=headers, timeout=30),
        requests.post(
            url, data=f"data:image/png;base64,{b64}", timeout=30, headers={**headers, "Content-Type": "text/plain"}
        ),
        server.predict(b64.encode(), content_type="application/octet-stream"),
    ]
    for response in answers:
        assert response.status_code == 200, response.text
        assert response.json()["digit"] == labels[3]
    batch = requests.post(
        url, json={"instances": [images[0].tolist(), images[1].tolist()]}, headers=headers, timeout=30
    )
    assert [p["digit"] for p in batch.json()["predictions"]] == list(labels[:2])


def test_mixed_good_and_bad_requests_in_the_same_batches(server, mnist_sample):
    images, labels = mnist_sample
    pids_before = sorted(server.worker_pids())
    settle_metrics()
    rejected_before = metric(server, "RejectedInputs")

    jobs = []  # (body, content type, expected status, expected digit or reason)
    for i in range(40):
        jobs.append((png_bytes(images[i]), "image/png", 200, int(labels[i])))
        bad = BAD_BODIES[i % len(BAD_BODIES)]
        jobs.append((bad.body, bad.content_type, bad.status, bad.reason))
    responses = predict_concurrently(server, [job[0] for job in jobs], [job[1] for job in jobs], concurrency=32)

    wrong = 0
    for (_, _, status, expected), response in zip(jobs, responses):
        assert response.status_code == status, (expected, response.status_code, response.text)
        answer = response.json()
        if status == 200:
            wrong += answer["digit"] != expected
        else:
            assert answer.get("code", status) == status and answer["error"]  # v2 errors carry no "code"
    assert wrong <= 1
    assert wait_for_metric(server, "RejectedInputs", rejected_before + 40) - rejected_before == 40
    assert sorted(server.worker_pids()) == pids_before, "a worker restarted"


def test_describe(server):
    model = describe(server.management, server.keys()["management"])
    config = model_config()
    assert model["modelName"] == "mnist" and model["batchSize"] == config["batchSize"]
    assert model["maxBatchDelay"] == config["maxBatchDelay"]
    assert model["minWorkers"] == config["minWorkers"] and len(model["workers"]) == config["minWorkers"]
    assert all(w["status"] == "READY" and w["gpu"] is False for w in model["workers"])


def test_scale_1_3_1_while_serving(server, mnist_sample):
    """Requests keep being answered at every worker count.

    TorchServe 0.12 kills a scaled-down worker at once and drops the batch it was running
    (pytorch/serve#1101): those callers get no answer or a 5xx. Predictions are idempotent, so
    the documented client policy is a timeout and one retry; with it, every request succeeds.
    """
    images, labels = mnist_sample
    key = server.keys()["management"]
    stop, results, retried = threading.Event(), [], []

    def traffic():
        i = 0
        while not stop.is_set():
            body = png_bytes(images[i % 100])
            try:
                r = server.predict(body, timeout=5)
                lost = r.status_code >= 500
            except requests.Timeout:
                lost = True
            if lost:
                retried.append(i)
                r = server.predict(body, timeout=5)
            results.append((r.status_code, r.json().get("digit") == labels[i % 100]))
            i += 1

    def answered_more(count: int, timeout: float = 30) -> bool:
        target = len(results) + count
        try:
            return wait_until(lambda: len(results) >= target, timeout, 0.05, f"{count} more answers")
        except TimeoutError:
            return False

    thread = threading.Thread(target=traffic)
    thread.start()
    try:
        for workers in (1, 3, 1):
            scale(server.management, key, workers)
            model = describe(server.management, key)
            assert model["minWorkers"] == workers
            assert [w["status"] for w in model["workers"]] == ["READY"] * workers
            assert answered_more(20), f"requests stalled at {workers} workers"
    finally:
        stop.set()
        thread.join(timeout=60)
        scale(server.management, key, model_config()["minWorkers"])
    assert all(status == 200 for status, _ in results)
    assert sum(ok for _, ok in results) >= 0.97 * len(results)
    assert len(retried) <= 4, f"{len(retried)} requests lost while scaling (2 scale-downs)"


def test_metrics_move_with_known_requests(server, mnist_sample):
    images, labels = mnist_sample
    sevens = [p for p, y in zip(images, labels) if y == 7][:5]
    settle_metrics()
    before = metric(server, "DigitPredictions", Digit="7")
    empty_before = metric(server, "RejectedInputs", Reason="empty")
    ok_before = metric(server, "ts_inference_requests_total", model_name="mnist")
    for p in sevens:
        assert server.predict(png_bytes(p)).json()["digit"] == 7
    for _ in range(3):
        assert server.predict(b"").status_code == 400
    assert wait_for_metric(server, "DigitPredictions", before + len(sevens), Digit="7") - before == len(sevens)
    assert wait_for_metric(server, "RejectedInputs", empty_before + 3, Reason="empty") - empty_before == 3
    assert metric(server, "ts_inference_requests_total", model_name="mnist") - ok_before == len(sevens) + 3
    text = requests.get(f"{server.metrics}/metrics", timeout=10).text
    for name in (
        'PreprocessTime_bucket{ModelName="mnist",le="0.1"',  # the handler's buckets, not TorchServe's
        'DigitBatchSize_bucket{ModelName="mnist",le="16.0"',
        "BatchTime_sum",
        "WorkerAliveSeconds",
        "HandlerTime",
        "PredictionTime",
        "ts_queue_latency_microseconds",
    ):
        assert name in text


def test_token_authorization(server):
    url = server.predictions
    body = png_bytes(np.eye(28, dtype=np.uint8) * 255)
    keys = server.keys()
    for headers in ({}, {"Authorization": "Bearer wrong-key"}, {"Authorization": f"Bearer {keys['management']}"}):
        r = requests.post(url, data=body, headers=headers, timeout=10)
        assert r.status_code in (400, 401, 403), r.status_code
        assert "Token Authorization failed" in r.text
    for path in ("/models", "/models/mnist"):
        for headers in ({}, {"Authorization": f"Bearer {keys['inference']}"}):
            r = requests.get(f"{server.management}{path}", headers=headers, timeout=10)
            assert r.status_code in (400, 401, 403) and "Token Authorization failed" in r.text
    assert requests.get(f"{server.management}/models", headers=server.headers("management"), timeout=10).ok
    assert requests.get(f"{server.inference}/ping", headers=server.headers(), timeout=10).ok


def test_key_rotation(server):
    old = server.keys()["inference"]
    rotate(server.management, server.keys()["API"], "inference")
    new = server.keys()["inference"]
    assert new != old
    ping = f"{server.inference}/ping"
    assert requests.get(ping, headers={"Authorization": f"Bearer {old}"}, timeout=10).status_code == 400
    assert requests.get(ping, headers={"Authorization": f"Bearer {new}"}, timeout=10).status_code == 200
    assert (
        requests.get(ping, headers={"Authorization": f"Bearer {server.keys()['API']}"}, timeout=10).status_code == 400
    )


def test_model_api_is_off(server):
    """No registering over HTTP at all, let alone from a remote URL (CVE-2023-43654)."""
    r = requests.post(
        f"{server.management}/models",
        params={"url": "http://127.0.0.1:9/evil.mar"},
        headers=server.headers("management"),
        timeout=10,
    )
    assert r.status_code == 405, r.text
    r = requests.delete(f"{server.management}/models/mnist", headers=server.headers("management"), timeout=10)
    assert r.status_code == 405, r.text
    assert server.predict(png_bytes(np.eye(28, dtype=np.uint8) * 255)).status_code == 200
