"""The client's sans-IO parts, shared by DigitClient and AsyncDigitClient: routes, reading answers,
the retry and deadline decisions. No server, no sockets, no sleeping."""

from __future__ import annotations

import base64
import json
import random

import pytest

from mnist_digit_client import (
    MODEL_VERSION_HEADER,
    REQUEST_ID_HEADER,
    ROUTES,
    AuthorizationFailed,
    DeadlineExceeded,
    DigitClient,
    Explanation,
    Overloaded,
    Prediction,
    RequestRejected,
    RetryPolicy,
    ServerFault,
    ServiceUnreachable,
)
from mnist_digit_client.calls import Call, interpret
from mnist_digit_client.errors import error_for

PROBABILITIES = [0.01] * 7 + [0.91] + [0.01] * 2
PREDICTION = Prediction(7, 0.91, tuple(PROBABILITIES))


def answer_for(path: str, body: bytes) -> dict:
    """The service's answer of the digit 7 on each route, as the parts under test read it."""
    prediction = {"digit": 7, "confidence": 0.91, "probabilities": PROBABILITIES}
    if path.endswith(":predict"):
        return {"predictions": [prediction]}
    if path.endswith("/infer"):
        outputs = [
            {"name": "probabilities", "datatype": "FP32", "shape": [1, 10], "data": PROBABILITIES},
            {"name": "digit", "datatype": "INT64", "shape": [1], "data": [7]},
            {"name": "confidence", "datatype": "FP32", "shape": [1], "data": [0.91]},
        ]
        return {"id": json.loads(body)["id"], "model_name": "mnist", "model_version": "1.0", "outputs": outputs}
    return prediction


IMAGE = b"\x89PNG not really"


def ok(answer: dict, request_id: str | None = None) -> tuple[int, dict, bytes]:
    return 200, {REQUEST_ID_HEADER: request_id} if request_id else {}, json.dumps(answer).encode()


class Clock:
    """Time that moves only when a test sleeps or an attempt spends it."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run(call: Call, clock: Clock, outcomes, attempt_seconds: float = 0.001):
    """Drive `call` as a client does, with outcome(attempt) for each attempt; time is the fake clock's."""
    while True:
        attempt = call.attempt()
        clock.now += attempt_seconds
        if call.settle(outcomes(attempt)):
            return call.result
        clock.now += call.pause


def predict_call(client: DigitClient, clock: Clock, image: bytes = IMAGE) -> Call:
    return Call(client, client._predict_request(image), clock)


@pytest.fixture()
def client():
    return DigitClient("http://digits.invalid", token="key", retries=2, deadline=30)


# -- answers


def test_prediction_from_the_service_answer():
    answer = {"digit": 7, "confidence": 0.95, "probabilities": [0.005] * 9 + [0.95]}
    assert Prediction.from_answer(answer) == Prediction(7, 0.95, tuple(answer["probabilities"]))
    with pytest.raises(ServerFault):
        Prediction.from_answer({"predictions": []})


@pytest.mark.parametrize("route", ["torchserve", "v1", "v2"])
def test_each_route_reads_its_answer(route):
    body = ROUTES[route].body(IMAGE, "id-1")
    answer = answer_for(ROUTES[route].url("", "mnist"), body)
    assert interpret(*ok(answer, "id-1"), "id-1", ROUTES[route].read) == PREDICTION


VIEW = [[round((r * 28 + c) / 784, 4) for c in range(28)] for r in range(28)]
ATTRIBUTIONS = [[0.001 * (c - r) for c in range(28)] for r in range(28)]


def explanation_for(path: str, body: bytes) -> dict:
    """The service's explanation of the digit 7 on each route's explanation URL."""
    explanation = {"digit": 7, "confidence": 0.91, "probabilities": PROBABILITIES, "view": VIEW}
    explanation["attributions"] = ATTRIBUTIONS
    if path.endswith(":explain"):
        return {"explanations": [explanation]}
    if path.endswith("/explain"):
        answer = answer_for("/infer", body)
        answer["outputs"] += [
            {"name": name, "datatype": "FP32", "shape": [1, 28, 28], "data": [x for row in grid for x in row]}
            for name, grid in (("attributions", ATTRIBUTIONS), ("view", VIEW))
        ]
        return answer
    return explanation


@pytest.mark.parametrize("route", ["torchserve", "v1", "v2"])
def test_each_route_reads_its_explanation(route):
    body = ROUTES[route].body(IMAGE, "id-1")
    answer = explanation_for(ROUTES[route].explain_url("", "mnist"), body)
    explanation = interpret(*ok(answer, "id-1"), "id-1", ROUTES[route].read_explanation)
    assert isinstance(explanation, Explanation) and explanation.prediction == PREDICTION
    assert explanation.view == tuple(map(tuple, VIEW)) and explanation.attributions == tuple(map(tuple, ATTRIBUTIONS))


def test_an_answer_without_a_whole_explanation_is_a_fault():
    whole = {"digit": 7, "confidence": 0.91, "probabilities": PROBABILITIES, "view": VIEW, "attributions": ATTRIBUTIONS}
    for broken in (
        {**whole, "view": VIEW[:27]},
        {**whole, "attributions": None},
        {k: whole[k] for k in list(whole)[:3]},
    ):
        with pytest.raises(ServerFault, match="not an explanation"):
            Explanation.from_answer(broken)


@pytest.mark.parametrize("route", ["torchserve", "v1", "v2"])
def test_a_prediction_carries_the_model_that_gave_it(route):
    """X-Model-Version (any case); without it, what the v2 body says; never part of equality."""
    body = ROUTES[route].body(IMAGE, "id-1")
    answer = answer_for(ROUTES[route].url("", "mnist"), body)
    status, headers, payload = ok(answer, "id-1")
    versioned = interpret(
        status, {**headers, MODEL_VERSION_HEADER.lower(): "1.1.0+1ab8b1911977"}, payload, "id-1", ROUTES[route].read
    )
    assert versioned.model_version == "1.1.0+1ab8b1911977" and versioned == PREDICTION
    plain = interpret(status, headers, payload, "id-1", ROUTES[route].read)
    assert plain.model_version == ("1.0" if route == "v2" else None)


def test_routes_send_one_image_each_in_its_own_body():
    torchserve, v1, v2 = ROUTES["torchserve"], ROUTES["v1"], ROUTES["v2"]
    assert torchserve.body(IMAGE, "id-1") == IMAGE and torchserve.url("http://s", "m") == "http://s/predictions/m"
    assert json.loads(v1.body(IMAGE, "id-1")) == {"instances": [{"b64": base64.b64encode(IMAGE).decode()}]}
    assert v1.url("http://s", "m") == "http://s/v1/models/m:predict"
    assert json.loads(v2.body(IMAGE, "id-1")) == {
        "id": "id-1",
        "inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": [base64.b64encode(IMAGE).decode()]}],
    }
    assert v2.url("http://s", "m") == "http://s/v2/models/m/infer" and v2.content_type == "application/json"


@pytest.mark.parametrize(
    "head, media_type",
    [
        (b"\x89PNG\r\n\x1a\n", "image/png"),
        (b"\xff\xd8\xff\xe0", "image/jpeg"),
        (b"\x00\x00\x00\x1cftypheic\x00\x00\x00\x00mif1heic", "image/heic"),
        (b"\x00\x00\x00\x20ftypavif\x00\x00\x00\x00avifmif1", "image/avif"),
        (b"RIFF\x10\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"something else", "application/octet-stream"),
    ],
)
def test_a_raw_upload_says_its_media_type_and_json_routes_say_json(head, media_type):
    for route, expected in (("torchserve", media_type), ("v1", "application/json"), ("v2", "application/json")):
        client = DigitClient("http://s", token=None, token_file=None, route=route)
        assert predict_call(client, Clock(), head).attempt().headers["Content-Type"] == expected


@pytest.mark.parametrize(
    "route, answer",
    [
        ("v1", {"predictions": []}),
        ("v1", {"predictions": [{"digit": 7}]}),
        ("v2", {"id": "id-1", "outputs": [{"name": "digit", "data": [7]}]}),
        ("v2", {"id": "id-1", "outputs": "none"}),
    ],
)
def test_an_answer_that_is_no_prediction_is_a_server_fault(route, answer):
    with pytest.raises(ServerFault) as caught:
        interpret(*ok(answer), "id-1", ROUTES[route].read)
    assert caught.value.status == 200 and caught.value.retryable


def test_a_v2_answer_with_another_id_or_another_echoed_id_is_another_requests():
    v2 = ROUTES["v2"]
    answer = answer_for("/v2/models/mnist/infer", v2.body(IMAGE, "someone-else"))
    with pytest.raises(ServerFault, match="another request"):
        interpret(*ok(answer), "id-1", v2.read)
    with pytest.raises(ServerFault, match="another request"):
        interpret(*ok(answer_for("/predictions/mnist", b""), "someone-else"), "id-1", ROUTES["torchserve"].read)


@pytest.mark.parametrize(
    "status, body, kind, retryable",
    [
        (503, {"code": 503, "type": "ServiceUnavailableException", "message": "no worker"}, Overloaded, True),
        (500, {"code": 500, "type": "InternalServerException", "message": "Worker died."}, ServerFault, True),
        (415, {"code": 415, "error": "the body is not an image Pillow can read"}, RequestRejected, False),
        (400, {"code": 400, "message": "Token Authorization failed"}, AuthorizationFailed, False),
        (422, {"error": "no digit in the image"}, RequestRejected, False),  # v2: the status is the code
    ],
)
def test_errors_are_typed_and_carry_the_server_code_and_message(status, body, kind, retryable):
    error = error_for(status, body, json.dumps(body))
    assert type(error) is kind and error.retryable is retryable
    assert error.status == status
    assert error.body() == {"code": body.get("code", status), "error": body.get("error") or body["message"]}


# -- retries and the deadline


def test_backoff_doubles_with_jitter_up_to_a_ceiling():
    policy, rng = RetryPolicy(backoff=0.1, max_backoff=1.0), random.Random(0)
    for retry, ceiling in [(0, 0.1), (1, 0.2), (2, 0.4), (3, 0.8), (4, 1.0), (9, 1.0)]:
        delays = [policy.delay(retry, rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 100  # jittered, so callers failed together do not retry together


def test_no_answer_is_retried_until_the_deadline_whatever_retries_says(client):
    clock = Clock()
    call = predict_call(client, clock)
    with pytest.raises(DeadlineExceeded) as caught:
        run(call, clock, lambda attempt: ServiceUnreachable("refused"))
    assert caught.value.attempts > 15 and isinstance(caught.value.last, ServiceUnreachable)
    assert 28 <= clock.now <= 30 and client.retried == caught.value.attempts - 1


def test_a_15_second_restart_loses_nothing_with_the_default_settings():
    client, clock = DigitClient("http://digits.invalid"), Clock()
    answer = ok(answer_for("/predictions/mnist", b""))
    result = run(
        predict_call(client, clock), clock, lambda attempt: answer if clock.now > 15 else ServiceUnreachable("")
    )
    assert result == PREDICTION and clock.now < 15 + RetryPolicy.max_backoff + 0.1


def test_a_5xx_is_retried_at_most_retries_times(client):
    clock, sent = Clock(), []
    with pytest.raises(Overloaded) as caught:
        run(predict_call(client, clock), clock, lambda attempt: sent.append(attempt) or error_for(503, None, "full"))
    assert caught.value.attempts == len(sent) == 3 and client.retried == 2
    assert len({attempt.request_id for attempt in sent}) == 3  # a fresh request ID per attempt


def test_no_answer_does_not_use_up_the_retries_of_5xx(client):
    clock = Clock()
    outcomes = iter([ServiceUnreachable("reset"), error_for(500, None, "")] * 2 + [ServiceUnreachable("")] * 5)
    answer = ok(answer_for("/predictions/mnist", b""))
    assert run(predict_call(client, clock), clock, lambda attempt: next(outcomes, answer)) == PREDICTION
    assert client.retried == 9


def test_a_4xx_ends_the_call_at_once(client):
    clock = Clock()
    with pytest.raises(RequestRejected) as caught:
        run(predict_call(client, clock), clock, lambda attempt: (415, {}, b'{"code": 415, "error": "not an image"}'))
    assert caught.value.attempts == 1 and client.retried == 0


def test_a_refused_key_is_reread_from_the_key_file_once(tmp_path):
    key_file = tmp_path / "key_file.json"
    key_file.write_text(json.dumps({"inference": {"key": "old"}}))
    client, clock, sent = DigitClient("http://digits.invalid", token_file=key_file), Clock(), []
    key_file.write_text(json.dumps({"inference": {"key": "new"}}))
    refused = (400, {}, b'{"code": 400, "message": "Token Authorization failed"}')
    with pytest.raises(AuthorizationFailed) as caught:
        run(
            predict_call(client, clock), clock, lambda attempt: sent.append(attempt.headers["Authorization"]) or refused
        )
    assert sent == ["Bearer old", "Bearer new"] and caught.value.attempts == 2 and client.retried == 0


# -- headers


def test_headers_and_the_auth_hook_go_with_every_attempt_and_win_over_the_key():
    tokens = iter(["t1", "t2"])
    client = DigitClient(
        "http://gw",
        token="ts-key",
        headers={"X-Gateway": "yes"},
        auth=lambda: {"authorization": f"Bearer {next(tokens)}"},
    )
    call = predict_call(client, Clock())
    first, second = call.attempt(), call.attempt()
    assert first.headers["X-Gateway"] == second.headers["X-Gateway"] == "yes"
    assert [a.headers["authorization"] for a in (first, second)] == ["Bearer t1", "Bearer t2"]
    assert (
        "Authorization" not in first.headers and first.headers[REQUEST_ID_HEADER] != second.headers[REQUEST_ID_HEADER]
    )
    assert "ts-key" not in repr(first)


def test_without_a_key_no_authorization_header_is_sent():
    headers = predict_call(DigitClient("http://s", token=None, token_file=None), Clock()).attempt().headers
    assert set(headers) == {"Content-Type", REQUEST_ID_HEADER}
