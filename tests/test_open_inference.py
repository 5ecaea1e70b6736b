"""The Open Inference Protocol (v2) in the handler, without a server: what each input form reads,
the answer's tensors, the errors, and the same digits as the raw-bytes route."""

from __future__ import annotations

import base64
import json
import struct

import numpy as np
import pytest

from handler.preprocess.arrays import MAX_INSTANCES
from tests.conftest import FIXTURES, png_bytes

SEVEN = (FIXTURES / "seven.png").read_bytes()
REST = {"explain": "False"}  # TorchServe's REST frontend adds it to every request; its gRPC one does not


def v2_body(datatype: str, shape: list[int], data, **extra) -> dict:
    return {"inputs": [{"name": "image", "datatype": datatype, "shape": shape, "data": data}], **extra}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def handle(handler_and_context, bodies: list, headers: list[dict] | None = None) -> tuple[list, dict]:
    """Answers (parsed JSON) and statuses of one batch of requests."""
    handler, context = handler_and_context
    context.statuses.clear()
    for i in range(len(bodies)):
        context.request_headers[i] = (headers or [REST] * len(bodies))[i]
    answers = handler.handle([{"body": b} for b in bodies], context)
    return [json.loads(a) for a in answers], dict(context.statuses)


def outputs(answer: dict) -> dict[str, np.ndarray]:
    return {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in answer["outputs"]}


def test_bytes_uint8_and_fp32_inputs_read_the_same_digits(handler_and_context, mnist_sample, model_version):
    digits, labels = mnist_sample
    four = digits[:4]
    bodies = [
        v2_body("BYTES", [4], [b64(png_bytes(d)) for d in four], id="png"),
        v2_body("UINT8", [4, 28, 28], four.reshape(-1).tolist(), id="uint8"),
        v2_body("FP32", [4, 1, 28, 28], (four / 255.0).astype(np.float32).reshape(-1).tolist()),
        v2_body("BYTES", [2, 2], [f"data:image/png;base64,{b64(png_bytes(d))}" for d in four]),
    ]
    answers, statuses = handle(handler_and_context, bodies)
    assert not statuses
    for answer in answers:
        tensors = outputs(answer)
        assert tensors["digit"].tolist() == labels[:4].tolist()
        assert tensors["confidence"].shape == (4,) and tensors["probabilities"].shape == (4, 10)
        assert answer["model_name"] == "mnist" and answer["model_version"] == model_version
    assert [a.get("id") for a in answers] == ["png", "uint8", None, None]
    assert [o["datatype"] for o in answers[0]["outputs"]] == ["INT64", "FP32", "FP32"]


def test_the_answer_matches_the_raw_bytes_route(handler_and_context):
    (v2, raw), _ = handle(handler_and_context, [v2_body("BYTES", [1], [b64(SEVEN)]), SEVEN])
    tensors = outputs(v2)
    assert tensors["digit"][0] == raw["digit"] == 7
    assert tensors["confidence"][0] == raw["confidence"]
    assert tensors["probabilities"][0].tolist() == raw["probabilities"]


def test_binary_data_extension(handler_and_context, mnist_sample):
    """Triton's binary-data extension, as tritonclient and KServe's client send it."""
    digits, labels = mnist_sample
    files = struct.pack("<I", len(SEVEN)) + SEVEN
    pixels = digits[:2].tobytes()
    header = {
        "inputs": [{"name": "x", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": len(files)}}]
    }
    header_u8 = {
        "inputs": [{"name": "x", "datatype": "UINT8", "shape": [2, 28, 28], "parameters": {"binary_data_size": 1568}}]
    }
    bodies, headers = [], []
    for document, tail in ((header, files), (header_u8, pixels)):
        head = json.dumps(document).encode()
        bodies.append(head + tail)
        headers.append({**REST, "Inference-Header-Content-Length": str(len(head))})
    answers, statuses = handle(handler_and_context, bodies, headers)
    assert not statuses
    assert outputs(answers[0])["digit"].tolist() == [7]
    assert outputs(answers[1])["digit"].tolist() == labels[:2].tolist()


def test_requested_outputs_only(handler_and_context):
    body = v2_body("BYTES", [1], [b64(SEVEN)], outputs=[{"name": "probabilities"}, {"name": "digit"}])
    (answer,), _ = handle(handler_and_context, [body])
    assert [o["name"] for o in answer["outputs"]] == ["digit", "probabilities"]


BAD = [
    (v2_body("INT8", [1], [1]), 400, "datatype 'INT8'"),
    (v2_body("BYTES", [2], [b64(SEVEN)]), 400, "shape [2] holds 2 elements, the data 1"),
    (v2_body("UINT8", [1, 28], [0] * 28), 400, "[N, H, W] or [N, 1, H, W]"),
    (v2_body("UINT8", [1, 28, 28], [0] * 700), 400, "holds 784 values, the data 700"),
    (v2_body("UINT8", [1, 2, 28, 28], [0] * 1568), 400, "[N, H, W] or [N, 1, H, W]"),
    (v2_body("UINT8", [1, 2, 2], [0, 1, 2, 300]), 400, "0-255"),
    (v2_body("UINT8", [1, 2, 2], [0, 1, 2, 2.5]), 400, "whole numbers"),
    (v2_body("FP32", [1, 2, 2], ["a", 1, 2, 3]), 400, "list of numbers"),
    (v2_body("BYTES", [1], ["not base64!"]), 400, "base64"),
    (v2_body("BYTES", [1], [b64(b"not an image")]), 415, "not an image"),
    (v2_body("BYTES", [1], [b64(png_bytes(np.zeros((28, 28), np.uint8)))]), 422, "no digit"),
    (v2_body("BYTES", [MAX_INSTANCES + 1], [b64(SEVEN)] * (MAX_INSTANCES + 1)), 400, f"1 to {MAX_INSTANCES} images"),
    (v2_body("BYTES", "1", [b64(SEVEN)]), 400, '"shape"'),
    ({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1]}]}, 400, 'no "data"'),
    ({"inputs": []}, 400, "list of one tensor"),
    ({"inputs": [v2_body("BYTES", [1], [b64(SEVEN)])["inputs"][0]] * 2}, 400, "list of one tensor"),
    (v2_body("BYTES", [1], [b64(SEVEN)], outputs=[{"name": "digits"}]), 400, '"outputs"'),
]


@pytest.mark.parametrize(("body", "status", "message"), BAD, ids=[m for _, _, m in BAD])
def test_malformed_requests_get_a_4xx_in_the_protocols_form(handler_and_context, body, status, message):
    """A bad request is answered {"error": ...} with its status; the good request beside it in
    the same batch is answered as if alone."""
    answers, statuses = handle(handler_and_context, [v2_body("BYTES", [1], [b64(SEVEN)]), body])
    assert statuses.keys() == {1} and statuses[1][0] == status
    assert list(answers[1]) == ["error", "reason"] if status == 422 else ["error"]  # a 422 names its reason
    assert message in answers[1]["error"]
    assert outputs(answers[0])["digit"].tolist() == [7]


def test_over_grpc_an_error_is_a_response(handler_and_context, model_version):
    """TorchServe's gRPC frontend drops per-request statuses and reads every answer as a
    ModelInferResponse (id, model_name, model_version, outputs): errors come as outputs."""
    body = {"id": "g1", "model_name": "mnist", **v2_body("BYTES", [1], [b64(b"junk")])}
    (answer,), statuses = handle(handler_and_context, [body], [{}])
    assert statuses[0][0] == 415
    assert answer["id"] == "g1" and answer["model_version"] == model_version
    tensors = outputs(answer)
    assert tensors["code"].tolist() == [415] and "not an image" in tensors["error"][0]


def test_model_metadata_is_the_describe_answer(handler_and_context, model_version):
    """`GET /models/mnist?customized=true` asks the handler with a describe header."""
    (metadata,), _ = handle(handler_and_context, [b""], [{"describe": "True"}])
    assert metadata["name"] == "mnist" and metadata["versions"] == [model_version]
    assert [o["name"] for o in metadata["outputs"]] == ["digit", "confidence", "probabilities"]
    assert metadata["inputs"][0]["datatype"] == "BYTES"
