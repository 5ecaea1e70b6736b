"""Uploads that are not one digit, through a real TorchServe: a letter, a doodle and several digits
each get a 422 with their reason, in the service's own form, KServe v1 and the Open Inference
Protocol, amid good digits in the same batches that are still answered (over gRPC:
tests/test_grpc.py), and on the explanation routes as on the prediction routes."""

from __future__ import annotations

import base64
import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from harness.clients import answered_digit
from harness.samples import not_one_digit_samples
from tests.conftest import png_bytes
from tests.test_server import metric, settle_metrics, wait_for_metric

pytestmark = pytest.mark.integration
V1, V2 = "/v1/models/mnist:predict", "/v2/models/mnist/infer"
EXPLAIN_ROUTES = {
    "torchserve": "/explanations/mnist",
    "v1": "/v1/models/mnist:explain",
    "v2": "/v2/models/mnist/explain",
}


def request_in(protocol: str, image: bytes, request_id: str) -> tuple[bytes, str, str]:
    """(body, content type, path) of one image in `protocol`."""
    b64 = base64.b64encode(image).decode()
    if protocol == "v1":
        return json.dumps({"instances": [{"b64": b64}]}).encode(), "application/json", V1
    if protocol == "v2":
        tensor = {"name": "image", "datatype": "BYTES", "shape": [1], "data": [b64]}
        return json.dumps({"id": request_id, "inputs": [tensor]}).encode(), "application/json", V2
    return image, "application/octet-stream", ""


def reason_of(protocol: str, answer: dict) -> tuple[int | None, str | None]:
    """(the code the body names, the reason) of a refusal in `protocol`'s form; v2 names no code."""
    if protocol == "v2":
        assert set(answer) == {"error", "reason"}, answer
        return None, answer["reason"]
    assert set(answer) == {"code", "reason", "error"}, answer
    return answer["code"], answer["reason"]


def test_each_protocol_refuses_what_is_not_one_digit_and_answers_the_digits_beside_it(server, mnist_sample):
    images, labels = mnist_sample
    samples = not_one_digit_samples()
    settle_metrics()
    before = {reason: metric(server, "RejectedInputs", Reason=reason) for reason in ("not_a_digit", "several_digits")}
    jobs = []  # (protocol, body, content type, path, expected digit or reason)
    for round_ in range(3):
        for protocol in ("torchserve", "v1", "v2"):
            for name, (data, reason) in samples.items():
                jobs.append((protocol, *request_in(protocol, data, f"{name}-{round_}"), reason))
            for i in range(round_ * 6, round_ * 6 + 6):
                jobs.append((protocol, *request_in(protocol, png_bytes(images[i]), f"d{i}"), int(labels[i])))
    with ThreadPoolExecutor(24) as pool:  # concurrent: good and refused requests share batches
        responses = list(pool.map(lambda job: server.predict(job[1], job[2], path=job[3]), jobs))
    refused = {"not_a_digit": 0, "several_digits": 0}
    for (protocol, *_, expected), response in zip(jobs, responses):
        if isinstance(expected, int):
            answer = response.json()
            digit = answer["predictions"][0]["digit"] if protocol == "v1" else answered_digit(response)
            assert response.status_code == 200 and digit == expected, (protocol, response.text)
            continue
        assert response.status_code == 422, (protocol, expected, response.status_code, response.text)
        code, reason = reason_of(protocol, response.json())
        assert reason == expected and code in (None, 422)
        assert response.headers["X-Model-Version"]
        refused[reason] += 1
    assert refused == {"not_a_digit": 18, "several_digits": 9}
    for reason, count in refused.items():
        assert (
            wait_for_metric(server, "RejectedInputs", before[reason] + count, Reason=reason) - before[reason] == count
        )


def test_several_digits_says_the_service_reads_one_digit_per_image(server):
    data, _ = not_one_digit_samples()["several_digits"]
    answer = server.predict(data).json()
    assert answer["reason"] == "several_digits" and "one digit per image" in answer["error"]


def test_a_request_with_one_letter_among_its_instances_is_refused_whole(server, mnist_sample):
    """As with any bad image of a multi-image request: the request's answer is its refusal."""
    letter, _ = not_one_digit_samples()["letter"]
    instances = [
        {"b64": base64.b64encode(png_bytes(mnist_sample[0][0])).decode()},
        {"b64": base64.b64encode(letter).decode()},
    ]
    response = server.predict(json.dumps({"instances": instances}).encode(), "application/json", path=V1)
    assert response.status_code == 422 and response.json()["reason"] == "not_a_digit"


def test_the_explanation_routes_refuse_what_is_not_one_digit_as_the_prediction_routes_do(server, mnist_sample):
    """No explanation of a digit the service would not answer: the same 422 and reason, and a
    digit explained beside it in the same batches."""
    digit = png_bytes(mnist_sample[0][0])
    jobs = []  # (protocol, body, content type, prediction path, the reason or None)
    for protocol in ("torchserve", "v1", "v2"):
        for name, (data, reason) in [*not_one_digit_samples().items(), ("digit", (digit, None))]:
            jobs.append((protocol, *request_in(protocol, data, name), reason))
    with ThreadPoolExecutor(len(jobs)) as pool:
        explained = list(pool.map(lambda j: server.predict(j[1], j[2], path=EXPLAIN_ROUTES[j[0]]), jobs))
    for (protocol, body, content_type, path, reason), explanation in zip(jobs, explained):
        if reason is None:
            assert explanation.status_code == 200 and "attributions" in explanation.text, explanation.text
            continue
        prediction = server.predict(body, content_type, path=path)
        assert explanation.status_code == prediction.status_code == 422, (protocol, reason, explanation.text)
        assert explanation.json() == prediction.json() and reason_of(protocol, explanation.json())[1] == reason
