"""The protocols a prediction can be asked over. Each route is a small object: its URL, how it
encodes one image file, and how it reads the answer into a Prediction.

    torchserve  POST {url}/predictions/{model}     the file's bytes             {"digit", "confidence", "probabilities"}
    v1          POST {url}/v1/models/{model}:predict  {"instances": [{"b64"}]}  {"predictions": [{...}]}
    v2          POST {url}/v2/models/{model}/infer    Open Inference Protocol   {"id", "outputs": [...]}
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from mnist_digit_client.calls import JSON
from mnist_digit_client.errors import another_request, not_a_prediction
from mnist_digit_client.images import media_type


@dataclass(frozen=True)
class Prediction:
    digit: int
    confidence: float
    probabilities: tuple[float, ...]  # ten, one per digit
    # The model that answered: its X-Model-Version header ("1.1.0+1ab8b1911977"), else the v2 body's
    # model_version; None where neither came through. Not part of equality: the same digits are equal.
    model_version: str | None = field(default=None, compare=False)

    @classmethod
    def from_answer(cls, answer: Any, model_version: str | None = None) -> Prediction:
        try:
            return cls(
                int(answer["digit"]),
                float(answer["confidence"]),
                tuple(float(p) for p in answer["probabilities"]),
                model_version,
            )
        except (KeyError, TypeError, ValueError, IndexError):
            raise not_a_prediction(answer) from None


class Route:
    """How one protocol asks for a prediction. This base is TorchServe's own inference API (the
    file's bytes in, one prediction object out); the other routes override its parts."""

    name = "torchserve"
    content_type = "application/octet-stream"

    def url(self, base: str, model: str) -> str:
        return f"{base}/predictions/{model}"

    def body(self, image: bytes, request_id: str) -> bytes:
        return image

    def body_type(self, image: bytes) -> str:
        """The body's Content-Type: here the file's own media type (image/heic, image/avif, ...),
        `content_type` where its bytes do not tell it. A route whose body is not the file says its own."""
        return media_type(image) or self.content_type

    def read(self, answer: JSON, request_id: str) -> Prediction:
        return Prediction.from_answer(answer)

    def __repr__(self) -> str:
        return f"<route {self.name}>"


def _b64(image: bytes) -> str:
    return base64.b64encode(image).decode("ascii")


class KServeV1(Route):
    """KServe's v1 protocol: {"instances": [{"b64": ...}]} -> {"predictions": [one prediction]}."""

    name = "v1"
    content_type = "application/json"

    def url(self, base: str, model: str) -> str:
        return f"{base}/v1/models/{model}:predict"

    def body(self, image: bytes, request_id: str) -> bytes:
        return json.dumps({"instances": [{"b64": _b64(image)}]}).encode()

    def body_type(self, image: bytes) -> str:
        return self.content_type

    def read(self, answer: JSON, request_id: str) -> Prediction:
        predictions = answer.get("predictions")
        if not isinstance(predictions, list) or len(predictions) != 1:
            raise not_a_prediction(answer)
        return Prediction.from_answer(predictions[0])


class OpenInferenceV2(Route):
    """The Open Inference Protocol (KServe v2): one BYTES input named "image", outputs "digit",
    "confidence" and "probabilities" found by name. The body carries the request ID; an answer
    with another "id" is another request's."""

    name = "v2"
    content_type = "application/json"

    def url(self, base: str, model: str) -> str:
        return f"{base}/v2/models/{model}/infer"

    def body(self, image: bytes, request_id: str) -> bytes:
        tensor = {"name": "image", "datatype": "BYTES", "shape": [1], "data": [_b64(image)]}
        return json.dumps({"id": request_id, "inputs": [tensor]}).encode()

    def body_type(self, image: bytes) -> str:
        return self.content_type

    def read(self, answer: JSON, request_id: str) -> Prediction:
        if answer.get("id", request_id) != request_id:
            raise another_request(f"v2 id {answer['id']!r}")
        outputs = answer["outputs"] if isinstance(answer.get("outputs"), list) else []
        data: dict[Any, Any] = {o.get("name"): o.get("data") for o in outputs if isinstance(o, dict)}
        try:
            digit, confidence = data["digit"][0], data["confidence"][0]
        except (KeyError, TypeError, IndexError):
            raise not_a_prediction(answer) from None
        version = answer.get("model_version")
        return Prediction.from_answer(
            {"digit": digit, "confidence": confidence, "probabilities": data.get("probabilities")},
            version if isinstance(version, str) else None,
        )


ROUTES: dict[str, Route] = {route.name: route for route in (Route(), KServeV1(), OpenInferenceV2())}


def route_for(route: str | Route) -> Route:
    """The route named "torchserve", "v1" or "v2", or a Route object as it is."""
    if isinstance(route, Route):
        return route
    try:
        return ROUTES[route]
    except KeyError:
        raise ValueError(f"unknown route {route!r}: one of {', '.join(ROUTES)}") from None
