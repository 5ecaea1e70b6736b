"""DigitClient and `python -m client`: the parts that need no server, then against a real TorchServe."""

from __future__ import annotations

import io
import json
import random
import subprocess
import sys

import numpy as np
import pytest
import requests
from PIL import Image

from client import (
    AuthorizationFailed,
    DeadlineExceeded,
    DigitClient,
    Overloaded,
    Prediction,
    RequestRejected,
    RetryPolicy,
    ServerFault,
    ServiceUnreachable,
    encode_image,
)
from client.core import REQUEST_ID_HEADER
from client.errors import error_for
from harness.local_server import free_port
from ops.tsctl import rotate
from tests.conftest import FIXTURES, ROOT, png_bytes

SEVEN = FIXTURES / "seven.png"


# -- no server needed


def test_prediction_from_the_service_answer():
    answer = {"digit": 7, "confidence": 0.95, "probabilities": [0.005] * 9 + [0.95]}
    assert Prediction.from_answer(answer) == Prediction(7, 0.95, tuple(answer["probabilities"]))
    with pytest.raises(ServerFault):
        Prediction.from_answer({"predictions": []})


def test_images_are_sent_as_file_bytes_or_png():
    assert encode_image(SEVEN) == encode_image(str(SEVEN)) == SEVEN.read_bytes() == encode_image(SEVEN.read_bytes())
    pixels = np.arange(28 * 28, dtype=np.uint8).reshape(28, 28)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(encode_image(pixels)))), pixels)
    as_floats = np.asarray(Image.open(io.BytesIO(encode_image(pixels / 255.0))))
    assert np.array_equal(as_floats, pixels)
    with pytest.raises(TypeError):
        encode_image(42)


def test_backoff_doubles_with_jitter_up_to_a_ceiling():
    policy, rng = RetryPolicy(backoff=0.1, max_backoff=1.0), random.Random(0)
    for retry, ceiling in [(0, 0.1), (1, 0.2), (2, 0.4), (3, 0.8), (4, 1.0), (9, 1.0)]:
        delays = [policy.delay(retry, rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 100  # jittered, so callers failed together do not retry together


@pytest.mark.parametrize(
    "status, body, kind, retryable",
    [
        (
            503,
            {"code": 503, "type": "ServiceUnavailableException", "message": "Model mnist has no worker"},
            Overloaded,
            True,
        ),
        (500, {"code": 500, "type": "InternalServerException", "message": "Worker died."}, ServerFault, True),
        (415, {"code": 415, "error": "the body is not an image Pillow can read"}, RequestRejected, False),
        (
            400,
            {"code": 400, "type": "InvalidKeyException", "message": "Token Authorization failed"},
            AuthorizationFailed,
            False,
        ),
    ],
)
def test_errors_are_typed_and_carry_the_server_code_and_message(status, body, kind, retryable):
    error = error_for(status, body, json.dumps(body))
    assert type(error) is kind and error.retryable is retryable
    assert error.status == status and error.body() == {
        "code": body["code"],
        "error": body.get("error") or body["message"],
    }


def test_unreachable_server_is_retried_then_reported():
    client = DigitClient(f"http://127.0.0.1:{free_port()}", timeout=2, retries=2, deadline=60)
    with pytest.raises(ServiceUnreachable) as caught:
        client.predict(SEVEN)
    assert caught.value.attempts == 3 and client.retried == 2 and caught.value.status is None


def test_the_overall_deadline_stops_the_retries():
    client = DigitClient(f"http://127.0.0.1:{free_port()}", timeout=2, retries=1000, deadline=1.0)
    with pytest.raises(DeadlineExceeded) as caught:
        client.predict(SEVEN)
    assert 1 < caught.value.attempts < 1000 and isinstance(caught.value.last, ServiceUnreachable)


def test_an_answer_carrying_another_requests_id_is_retried(monkeypatch):
    """TorchServe 0.12 has handed a batch's answers to other requests when a worker was scaled
    down mid-batch; the echoed X-Client-Request-ID tells the client, which asks again."""
    client = DigitClient("http://digits.invalid", retries=2, deadline=60)
    sent = []

    def answer(method, url, data, headers, timeout):
        sent.append(headers[REQUEST_ID_HEADER])
        response = requests.Response()
        response.status_code = 200
        response._content = json.dumps({"digit": 7, "confidence": 0.9, "probabilities": [0.01] * 10}).encode()
        response.headers[REQUEST_ID_HEADER] = sent[-1] if len(sent) > 1 else "someone-else"
        return response

    monkeypatch.setattr(client._session, "request", answer)
    assert client.predict(SEVEN).digit == 7
    assert len(sent) == 2 and sent[0] != sent[1] and client.retried == 1


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "client", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_cli_without_a_key_file_is_a_usage_error(tmp_path):
    result = run_cli("health", "--token-file", str(tmp_path / "missing.json"))
    assert result.returncode == 2 and "--token-file" in result.stderr


# -- against a real TorchServe


@pytest.fixture()
def client(server):
    with DigitClient(server.inference, token_file=server.root / "key_file.json", timeout=10) as client:
        yield client


@pytest.mark.integration
def test_predict_bytes_paths_and_pixels(client, mnist_sample):
    assert client.predict(SEVEN).digit == 7
    assert client.predict(FIXTURES / "paper_seven.jpg").digit == 7
    answer = client.predict((FIXTURES / "canvas_seven.png").read_bytes())
    assert answer.digit == 7 and answer.confidence == max(answer.probabilities) and len(answer.probabilities) == 10
    images, labels = mnist_sample
    assert client.predict(images[0]).digit == labels[0]


@pytest.mark.integration
def test_predict_many_keeps_order_and_reports_each_failure_in_place(client, mnist_sample):
    images, labels = mnist_sample
    results = client.predict_many([*images, b"not an image", *images[:5]], concurrency=16)
    digits = [r.digit for r in results[:100]]
    assert sum(d == y for d, y in zip(digits, labels)) >= 98
    assert isinstance(results[100], RequestRejected) and results[100].code == 415
    assert [r.digit for r in results[101:]] == digits[:5]


@pytest.mark.integration
@pytest.mark.integration
def test_the_service_echoes_each_requests_id(server, mnist_sample):
    def send(body: bytes, request_id: str) -> requests.Response:
        headers = {**server.headers(), "Content-Type": "application/octet-stream", REQUEST_ID_HEADER: request_id}
        return requests.post(server.predictions, data=body, headers=headers, timeout=30)

    for request_id in ("a1", "b2"):
        response = send(png_bytes(mnist_sample[0][0]), request_id)
        assert response.status_code == 200 and response.headers.get(REQUEST_ID_HEADER) == request_id
    refused = send(np.zeros(5, np.uint8).tobytes(), "c3")  # not an image: 415, still its own answer
    assert refused.status_code == 415 and refused.headers.get(REQUEST_ID_HEADER) == "c3"


def test_a_4xx_is_never_retried(client):
    for body, status in [(b"", 400), (b"plain text", 415), (np.zeros((28, 28), np.uint8), 422)]:
        with pytest.raises(RequestRejected) as caught:
            client.predict(body)
        assert caught.value.status == caught.value.code == status and caught.value.error
        assert caught.value.attempts == 1
    assert client.retried == 0


@pytest.mark.integration
def test_a_refused_key_is_not_retried_without_a_key_file(server):
    client = DigitClient(server.inference, token="not-the-key", retries=3)
    with pytest.raises(AuthorizationFailed) as caught:
        client.predict(SEVEN)
    assert (
        caught.value.status == 400 and caught.value.attempts == 1 and "Token Authorization failed" in caught.value.error
    )


@pytest.mark.integration
def test_a_rotated_key_is_reread_from_the_key_file(server, client):
    assert client.predict(SEVEN).digit == 7
    old = server.keys()["inference"]
    rotate(server.management, server.keys()["API"], "inference")
    assert server.keys()["inference"] != old
    answer = client.predict(SEVEN)  # refused with the old key, then sent again with the new one
    assert answer.digit == 7 and client.retried == 0


@pytest.mark.integration
def test_cli_prints_one_line_per_file_and_fails_when_one_did(server, tmp_path):
    options = ["--url", server.inference, "--token-file", str(server.root / "key_file.json")]
    not_an_image = tmp_path / "notes.txt"
    not_an_image.write_text("not an image")
    files = [str(FIXTURES / name) for name in ("seven.png", "paper_seven.jpg", "canvas_seven.png")]

    ok = run_cli("predict", *files, *options)
    assert ok.returncode == 0, ok.stderr
    lines = [json.loads(line) for line in ok.stdout.splitlines()]
    assert sorted(line["file"] for line in lines) == sorted(files)
    assert all(line["digit"] == 7 and 0 < line["confidence"] <= 1 for line in lines)

    failed = run_cli("predict", files[0], str(not_an_image), *options, "--concurrency", "1")
    assert failed.returncode == 1
    lines = {line["file"]: line for line in map(json.loads, failed.stdout.splitlines())}
    assert lines[files[0]]["digit"] == 7
    assert lines[str(not_an_image)]["code"] == 415 and lines[str(not_an_image)]["error"]

    health = run_cli("health", *options)
    assert health.returncode == 0 and json.loads(health.stdout) == {"status": "Healthy"}
