"""Answer bodies in each protocol a request can speak (handler/preprocess/envelopes.py, Envelope).

A prediction is {"digit", "confidence", "probabilities"}; an error carries its HTTP status.
- "torchserve": the prediction itself; errors {"code", "error"}.
- "v1" (KServe v1): {"predictions": [prediction, ...]}; errors {"code", "error"}.
- "v2" (Open Inference Protocol): {"id", "model_name", "model_version", "outputs": [tensors]};
  errors {"error"} (the status is the code). TorchServe 0.12's gRPC frontend reads every answer
  as a ModelInferResponse and drops the status, so over gRPC an error is a response too: outputs
  "code" (INT64) and "error" (BYTES) in place of the digit's (docs/api.md).
"""

from __future__ import annotations

import json

from handler.errors import RequestError
from handler.preprocess.envelopes import Envelope
from handler.preprocess.open_inference import DATATYPES, OUTPUTS

_OUTPUT_TYPES = {"digit": "INT64", "confidence": "FP32", "probabilities": "FP32"}


def prediction_answer(envelope: Envelope, predictions: list[dict], model: tuple[str, str]) -> str:
    """The JSON answer to a request whose images were read; `model` is (name, version)."""
    if envelope.protocol == "v2":
        outputs = {
            "digit": [p["digit"] for p in predictions],
            "confidence": [p["confidence"] for p in predictions],
            "probabilities": [x for p in predictions for x in p["probabilities"]],
        }
        count = len(predictions)
        shapes = {"digit": [count], "confidence": [count], "probabilities": [count, 10]}
        tensors = [_tensor(name, _OUTPUT_TYPES[name], shapes[name], outputs[name]) for name in envelope.v2.outputs]
        return json.dumps(_v2_response(envelope, model, tensors))
    if envelope.protocol == "v1":
        return json.dumps({"predictions": predictions})
    return json.dumps(predictions[0])


def error_answer(envelope: Envelope, error: RequestError, model: tuple[str, str]) -> str:
    """The JSON answer to a request refused (4xx) or failed by us (5xx), in its protocol's form."""
    if envelope.protocol != "v2":
        return json.dumps(error.body())
    if envelope.v2.grpc:
        tensors = [_tensor("code", "INT64", [1], [error.status]), _tensor("error", "BYTES", [1], [error.message])]
        return json.dumps(_v2_response(envelope, model, tensors))
    return json.dumps({"error": error.message})


def model_metadata(model: tuple[str, str]) -> dict:
    """The Open Inference Protocol's model metadata: TorchServe answers it as the customized
    metadata of `GET /models/mnist?customized=true` (its v2 REST routes have no metadata route)."""
    name, version = model
    return {
        "name": name,
        "versions": [version],
        "platform": "pytorch_torchserve",
        "inputs": [{"name": "image", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [
            {"name": n, "datatype": _OUTPUT_TYPES[n], "shape": [-1, 10] if n == "probabilities" else [-1]}
            for n in OUTPUTS
        ],
        "parameters": {
            "input": "any name; BYTES: one image file per element (base64 in JSON); "
            f"{' or '.join(t for t in DATATYPES if t != 'BYTES')}: pixels [N, H, W] or [N, 1, H, W]",
        },
    }


def _tensor(name: str, datatype: str, shape: list[int], data: list) -> dict:
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


def _v2_response(envelope: Envelope, model: tuple[str, str], outputs: list[dict]) -> dict:
    response = {"id": envelope.v2.id} if envelope.v2.id is not None else {}
    return {**response, "model_name": model[0], "model_version": model[1], "outputs": outputs}
