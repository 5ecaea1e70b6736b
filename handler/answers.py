"""Answer bodies in each protocol a request can speak (handler/preprocess/envelopes.py, Envelope).

A prediction is {"digit", "confidence", "probabilities"}; an explanation is a prediction with
"view" and "attributions" (handler/explanations.py); an error carries its HTTP status.
- "torchserve": the prediction or explanation itself; errors {"code", "error"}, and for an upload
  that is not one digit {"code": 422, "reason", "error"} (handler/errors.py, NotOneDigit).
- "v1" (KServe v1): {"predictions": [prediction, ...]} or {"explanations": [explanation, ...]};
  errors as "torchserve"'s.
- "v2" (Open Inference Protocol): {"id", "model_name", "model_version", "outputs": [tensors]},
  an explanation's with the tensors view and attributions (N, 28, 28);
  errors {"error"} (the status is the code), plus "reason" where the 422 has one. TorchServe
  0.12's gRPC frontend reads every answer as a ModelInferResponse and drops the status, so over
  gRPC an error is a response too: outputs "code" (INT64), "error" (BYTES) and, where there is
  one, "reason" (BYTES) in place of the digit's (docs/api.md).
"""

from __future__ import annotations

import functools
import json

import numpy as np

from handler.errors import RequestError
from handler.preprocess.envelopes import Envelope
from handler.preprocess.open_inference import DATATYPES, OUTPUTS

_OUTPUT_TYPES = {
    "digit": "INT64",
    "confidence": "FP32",
    "probabilities": "FP32",
    "view": "FP32",  # view and attributions: explanations only
    "attributions": "FP32",
}


def prediction_answer(envelope: Envelope, predictions: list[dict], model: tuple[str, str]) -> str:
    """The JSON answer to a request whose images were read; `model` is (name, version)."""
    return _in_protocol(envelope, predictions, model, "predictions", _v2_prediction)


def _in_protocol(envelope: Envelope, rows: list[dict], model: tuple[str, str], v1_key: str, v2) -> str:
    """`rows` (one per image) as the request's protocol answers them: v2 through `v2`, v1 under
    `v1_key`, TorchServe's own route the one image's row."""
    if envelope.protocol == "v2":
        return v2(envelope, rows, model)
    if envelope.protocol == "v1":
        return json.dumps({v1_key: rows})
    return json.dumps(rows[0])


def _v2_prediction(envelope: Envelope, predictions: list[dict], model: tuple[str, str]) -> str:
    """The v2 response, written piece by piece: the same JSON as json.dumps of the whole, for less
    of the worker's CPU (the v2 route is held to the raw-bytes route's throughput). The three
    columns are encoded in one call; holding only numbers, they split at "], [" unambiguously."""
    count = len(predictions)
    columns = json.dumps(
        [
            [p["digit"] for p in predictions],
            [p["confidence"] for p in predictions],
            [x for p in predictions for x in p["probabilities"]],
        ]
    )[2:-2].split("], [")
    data = dict(zip(OUTPUTS, columns))  # OUTPUTS: digit, confidence, probabilities
    shapes = {"digit": f"[{count}]", "confidence": f"[{count}]", "probabilities": f"[{count}, 10]"}
    tensors = [_TENSOR % (name, _OUTPUT_TYPES[name], shapes[name], data[name]) for name in envelope.v2.outputs]
    return _v2_response(envelope.v2.id, model, tensors)


_TENSOR = '{"name": "%s", "datatype": "%s", "shape": %s, "data": [%s]}'


def v2_answer(envelope: Envelope, model: tuple[str, str], tensors: dict[str, tuple[str, list[int], list]]) -> str:
    """A v2 response of the tensors the request asked for (its "outputs"), in its order: `tensors`
    maps each name to (datatype, shape, flat data); for answers other than a prediction's."""
    written = [
        _TENSOR % (name, datatype, json.dumps(shape), json.dumps(data)[1:-1])
        for name, (datatype, shape, data) in tensors.items()
        if name in envelope.v2.outputs
    ]
    return _v2_response(envelope.v2.id, model, written)


def explanation_answer(envelope: Envelope, explanations: list[dict], model: tuple[str, str]) -> str:
    """The JSON answer to an explanation request; each explanation is a prediction with "view" and
    "attributions", 28 rows of 28 floats each."""
    return _in_protocol(envelope, explanations, model, "explanations", _v2_explanation)


def _v2_explanation(envelope: Envelope, explanations: list[dict], model: tuple[str, str]) -> str:
    """Every output flattened row-major, as the v2 protocol sends tensors."""
    count = len(explanations)
    columns = {
        "digit": ([count], [e["digit"] for e in explanations]),
        "confidence": ([count], [e["confidence"] for e in explanations]),
        "probabilities": ([count, 10], [p for e in explanations for p in e["probabilities"]]),
        **{
            name: ([count, 28, 28], [x for e in explanations for row in e[name] for x in row])
            for name in ("view", "attributions")
        },
    }
    return v2_answer(envelope, model, {name: (_OUTPUT_TYPES[name], *column) for name, column in columns.items()})


def _v2_response(request_id: str | None, model: tuple[str, str], tensors: list[str]) -> str:
    """`{"id": ..., "model_name": ..., "model_version": ..., "outputs": [tensors]}`, each tensor
    written with _TENSOR (no id when none was sent)."""
    head = f'"id": {json.dumps(request_id)}, ' if request_id is not None else ""
    return f"{{{head}{_model_fields(model)}" + ", ".join(tensors) + "]}"


@functools.cache
def _model_fields(model: tuple[str, str]) -> str:
    return f'"model_name": {json.dumps(model[0])}, "model_version": {json.dumps(model[1])}, "outputs": ['


def error_answer(envelope: Envelope, error: RequestError, model: tuple[str, str]) -> str:
    """The JSON answer to a request refused (4xx) or failed by us (5xx), in its protocol's form; a
    422 for an upload that is not one digit also names its reason (NotOneDigit)."""
    body = error.body()
    if envelope.protocol != "v2":
        return json.dumps(body)
    reason = body.get("reason")
    if envelope.v2.grpc:
        tensors = [_TENSOR % ("code", "INT64", "[1]", error.status), _bytes_tensor("error", error.message)]
        return _v2_response(envelope.v2.id, model, tensors + ([_bytes_tensor("reason", reason)] if reason else []))
    return json.dumps({"error": error.message, **({"reason": reason} if reason else {})})


def _bytes_tensor(name: str, text: str) -> str:
    return _TENSOR % (name, "BYTES", "[1]", json.dumps(text))


def model_metadata(model: tuple[str, str], outputs: list[dict] | None = None) -> dict:
    """The Open Inference Protocol's model metadata: TorchServe answers it as the customized
    metadata of `GET /models/mnist?customized=true` (its v2 REST routes have no metadata route).
    `outputs`: the model's output tensors, {"name", "datatype", "shape"} each (default: the digit's)."""
    name, version = model
    return {
        "name": name,
        "versions": [version],
        "platform": "pytorch_torchserve",
        "inputs": [{"name": "image", "datatype": "BYTES", "shape": [-1]}],
        "outputs": outputs
        or [
            {"name": n, "datatype": _OUTPUT_TYPES[n], "shape": [-1, 10] if n == "probabilities" else [-1]}
            for n in OUTPUTS
        ],
        "parameters": {
            "input": "any name; BYTES: one image file per element (base64 in JSON); "
            f"{' or '.join(t for t in DATATYPES if t != 'BYTES')}: pixels [N, H, W] or [N, 1, H, W]",
        },
    }


def predictions_of(probabilities) -> list[dict]:
    """(N, 10) float32 probabilities on the CPU -> per row its answer: the first most probable
    digit, and the probabilities rounded to 6 places. Rounded for the whole batch in float64,
    where a float32 times 1e6 is exact, so each is what Python's round(p, 6) gives
    (tests/test_handler.py) for a fraction of its cost; numpy, whose calls cost less than
    torch's on a batch of one."""
    p = probabilities.numpy()
    return [
        {"digit": digit, "confidence": row[digit], "probabilities": row}
        for digit, row in zip(p.argmax(1).tolist(), np.round(p.astype(np.float64), 6).tolist())
    ]
