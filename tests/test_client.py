"""DigitClient and AsyncDigitClient over real sockets: against a free port, then against a real
TorchServe, directly and through a real gateway (nginx). Each test runs both clients
(tests/client_helpers.py)."""

from __future__ import annotations

import io
import json
import shutil
import threading
import time

import numpy as np
import pytest
import requests
from PIL import Image

from harness.local_server import free_port
from harness.samples import not_one_digit_samples
from mnist_digit_client import (
    REQUEST_ID_HEADER,
    AuthorizationFailed,
    DeadlineExceeded,
    DigitClient,
    NoDigit,
    NotADigit,
    NotOneDigit,
    RequestRejected,
    ServiceUnreachable,
    SeveralDigits,
    encode_image,
)
from ops.tsctl import rotate
from tests.client_helpers import KINDS, Gateway, make_client
from tests.conftest import FIXTURES, png_bytes

SEVEN = FIXTURES / "seven.png"


# -- no TorchServe needed


def test_images_are_sent_as_file_bytes_or_png():
    assert encode_image(SEVEN) == encode_image(str(SEVEN)) == SEVEN.read_bytes() == encode_image(SEVEN.read_bytes())
    pixels = np.arange(28 * 28, dtype=np.uint8).reshape(28, 28)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(encode_image(pixels)))), pixels)
    as_floats = np.asarray(Image.open(io.BytesIO(encode_image(pixels / 255.0))))
    assert np.array_equal(as_floats, pixels)
    with pytest.raises(TypeError):
        encode_image(42)


@pytest.mark.parametrize("kind", KINDS)
def test_an_unreachable_server_is_retried_until_the_deadline(kind):
    started = time.monotonic()
    with make_client(kind, f"http://127.0.0.1:{free_port()}", timeout=2, retries=0, deadline=3.0) as client:
        with pytest.raises(DeadlineExceeded) as caught:
            client.predict(SEVEN)
    assert caught.value.attempts > 5 and isinstance(caught.value.last, ServiceUnreachable)
    assert caught.value.status is None and 1.5 < time.monotonic() - started < 4


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


# -- against a real TorchServe


@pytest.fixture(params=KINDS)
def client(request, server):
    with make_client(request.param, server.inference, token_file=server.root / "key_file.json", timeout=10) as client:
        yield client


@pytest.mark.integration
@pytest.mark.parametrize("route", ["torchserve", "v1"])
@pytest.mark.parametrize("kind", KINDS)
def test_predict_over_each_route(server, kind, route, model_version):
    with make_client(kind, server.inference, token_file=server.root / "key_file.json", route=route) as client:
        answer = client.predict(SEVEN)
        assert answer.digit == 7 and answer.model_version == model_version
        with pytest.raises(RequestRejected) as caught:
            client.predict(b"plain text")
    assert caught.value.status == 415 and caught.value.attempts == 1


@pytest.mark.integration
@pytest.mark.parametrize("kind", KINDS)
def test_predict_over_the_v2_route(server, kind, model_version):
    """The Open Inference Protocol route end to end: needs the handler's v2 support."""
    with make_client(kind, server.inference, token_file=server.root / "key_file.json", route="v2") as client:
        answer = client.predict(SEVEN)
        assert answer.digit == 7 and answer.confidence == max(answer.probabilities) and len(answer.probabilities) == 10
        assert answer.model_version == model_version
        with pytest.raises(RequestRejected) as caught:
            client.predict(b"plain text")
    assert caught.value.status == caught.value.code == 415 and caught.value.attempts == 1


@pytest.mark.integration
@pytest.mark.parametrize("route", ["torchserve", "v1", "v2"])
@pytest.mark.parametrize("kind", KINDS)
def test_what_is_not_one_digit_comes_as_the_error_of_its_reason(server, kind, route):
    """The 422's reason as a typed outcome over each route: a class per reason, and `reason`."""
    expected = {"letter": NotADigit, "doodle": NotADigit, "several_digits": SeveralDigits}
    with make_client(kind, server.inference, token_file=server.root / "key_file.json", route=route) as client:
        for name, (data, reason) in not_one_digit_samples().items():
            with pytest.raises(NotOneDigit) as caught:
                client.predict(data)
            error = caught.value
            assert type(error) is expected[name] and error.reason == reason and error.status == 422
            assert error.attempts == 1 and error.body() == {"code": 422, "reason": reason, "error": error.error}
        with pytest.raises(NoDigit):
            client.predict(np.zeros((28, 28), np.uint8))


@pytest.mark.integration
def test_predict_bytes_paths_and_pixels(client, mnist_sample):
    assert client.predict(SEVEN).digit == 7
    assert client.predict(FIXTURES / "paper_seven.jpg").digit == 7
    answer = client.predict((FIXTURES / "canvas_seven.png").read_bytes())
    assert answer.digit == 7 and answer.confidence == max(answer.probabilities) and len(answer.probabilities) == 10
    images, labels = mnist_sample
    assert client.predict(images[0]).digit == labels[0]


@pytest.mark.integration
def test_predict_many_keeps_order_and_reports_each_failure_in_place(client, mnist_sample, tmp_path):
    images, labels = mnist_sample
    results = client.predict_many([*images, b"not an image", *images[:5], tmp_path / "missing.png"], concurrency=16)
    digits = [r.digit for r in results[:100]]
    assert sum(d == y for d, y in zip(digits, labels)) >= 98
    assert isinstance(results[100], RequestRejected) and results[100].code == 415
    assert [r.digit for r in results[101:106]] == digits[:5]
    assert "cannot read the image" in str(results[106])


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


@pytest.mark.integration
def test_a_4xx_is_never_retried(client):
    for body, status in [(b"", 400), (b"plain text", 415), (np.zeros((28, 28), np.uint8), 422)]:
        with pytest.raises(RequestRejected) as caught:
            client.predict(body)
        assert caught.value.status == caught.value.code == status and caught.value.error
        assert caught.value.attempts == 1
    assert client.retried == 0


@pytest.mark.integration
@pytest.mark.parametrize("kind", KINDS)
def test_the_auth_hook_can_carry_the_key_and_a_wrong_one_is_refused(server, kind):
    bearer = {"Authorization": f"Bearer {server.keys()['inference']}"}
    with make_client(kind, server.inference, auth=lambda: bearer) as client:
        assert client.predict(SEVEN).digit == 7
    with make_client(kind, server.inference, headers={"Authorization": "Bearer not-the-key"}, retries=3) as client:
        with pytest.raises(AuthorizationFailed) as caught:
            client.predict(SEVEN)
    assert (
        caught.value.status == 400 and caught.value.attempts == 1 and "Token Authorization failed" in str(caught.value)
    )


@pytest.fixture()
def gateway(server, tmp_path):
    """nginx in front of the service, wanting its own header and holding the service's key."""
    if not shutil.which("nginx"):
        pytest.skip("nginx is missing: `make gateway` installs it (as root)")
    gateway = Gateway(server, tmp_path, required={"X-Gateway": "yes"})
    yield gateway
    gateway.stop()


@pytest.mark.integration
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("route", ["torchserve", "v1", "v2"])
def test_each_route_through_a_gateway_that_wants_its_own_headers_and_no_key(gateway, kind, route):
    with make_client(kind, gateway.url, route=route, headers={"X-Gateway": "yes"}) as client:
        assert client.predict(SEVEN).digit == 7 and client.health() == {"status": "Healthy"}
    first = gateway.seen()[0]
    assert first["path"].startswith({"torchserve": "/predictions/", "v1": "/v1/models/", "v2": "/v2/models/"}[route])
    assert first["authorization"] == "" and first["x_gateway"] == "yes"  # no key from the client: keyless use
    with make_client(kind, gateway.url, route=route, auth=lambda: {"X-Gateway": "no"}) as client:
        with pytest.raises(AuthorizationFailed) as caught:
            client.predict(SEVEN)
    assert caught.value.status == caught.value.code == 401 and caught.value.attempts == 1


@pytest.mark.integration
@pytest.mark.parametrize("kind", KINDS)
def test_requests_sent_while_the_gateway_is_down_are_answered_once_it_is_up(server, tmp_path, kind):
    if not shutil.which("nginx"):
        pytest.skip("nginx is missing: `make gateway` installs it (as root)")
    port, gateways = free_port(), []
    threading.Timer(3.0, lambda: gateways.append(Gateway(server, tmp_path, port))).start()
    try:
        with make_client(kind, f"http://127.0.0.1:{port}") as client:  # the default settings
            assert [r.digit for r in client.predict_many([SEVEN] * 4, concurrency=4)] == [7] * 4
    finally:
        for gateway in gateways:
            gateway.stop()
    assert len(gateways[0].seen()) == 4


@pytest.mark.integration
def test_a_rotated_key_is_reread_from_the_key_file(server, client):
    assert client.predict(SEVEN).digit == 7
    old = server.keys()["inference"]
    rotate(server.management, server.keys()["API"], "inference")
    assert server.keys()["inference"] != old
    answer = client.predict(SEVEN)  # refused with the old key, then sent again with the new one
    assert answer.digit == 7 and client.retried == 0
