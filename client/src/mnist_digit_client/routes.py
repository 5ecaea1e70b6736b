"""The protocols a prediction can be asked over. Each route is a small object: its URL, how it
encodes one image file, and how it reads the answer into a Prediction (the digit model's) or a
NumberReading (the number model's).

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


@dataclass(frozen=True)
class DigitRead:
    """One digit of a number: its value, its probability, and its box [x, y, width, height] in the
    image's pixels (after its EXIF rotation)."""

    digit: int
    confidence: float
    box: tuple[int, int, int, int]


@dataclass(frozen=True)
class NumberReading:
    """The number model's answer: its digits left to right, and the probability that all are right."""

    number: str
    confidence: float
    digits: tuple[DigitRead, ...]
    model_version: str | None = field(default=None, compare=False)  # as Prediction's

    @classmethod
    def from_answer(cls, answer: Any, model_version: str | None = None) -> NumberReading:
        try:
            digits = tuple(
                DigitRead(int(d["digit"]), float(d["confidence"]), tuple(int(v) for v in d["box"]))
                for d in answer["digits"]
            )
            return cls(str(answer["number"]), float(answer["confidence"]), digits, model_version)
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

    def read(self, answer: JSON, request_id: str) -> Prediction:
        return Prediction.from_answer(answer)

    def read_number(self, answer: JSON, request_id: str) -> NumberReading:
        return NumberReading.from_answer(answer)

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

    def read(self, answer: JSON, request_id: str) -> Prediction:
        return Prediction.from_answer(_the_prediction(answer))

    def read_number(self, answer: JSON, request_id: str) -> NumberReading:
        return NumberReading.from_answer(_the_prediction(answer))


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

    def read(self, answer: JSON, request_id: str) -> Prediction:
        data = self._outputs(answer, request_id)
        try:
            digit, confidence = data["digit"][0], data["confidence"][0]
        except (KeyError, TypeError, IndexError):
            raise not_a_prediction(answer) from None
        version = answer.get("model_version")
        return Prediction.from_answer(
            {"digit": digit, "confidence": confidence, "probabilities": data.get("probabilities")},
            version if isinstance(version, str) else None,
        )

    def read_number(self, answer: JSON, request_id: str) -> NumberReading:
        """One image's number: outputs "number", "confidence", and per digit "digit",
        "digit_confidence" and "box" (4 values each)."""
        data = self._outputs(answer, request_id)
        try:
            digits, confidences, boxes = data["digit"], data["digit_confidence"], data["box"]
            reading = {
                "number": data["number"][0],
                "confidence": data["confidence"][0],
                "digits": [
                    {"digit": d, "confidence": c, "box": boxes[4 * i : 4 * i + 4]}
                    for i, (d, c) in enumerate(zip(digits, confidences))
                ],
            }
        except (KeyError, TypeError, IndexError):
            raise not_a_prediction(answer) from None
        version = answer.get("model_version")
        return NumberReading.from_answer(reading, version if isinstance(version, str) else None)

    @staticmethod
    def _outputs(answer: JSON, request_id: str) -> dict[Any, Any]:
        """The answer's output tensors' data by name; another request's answer is refused."""
        if answer.get("id", request_id) != request_id:
            raise another_request(f"v2 id {answer['id']!r}")
        outputs = answer["outputs"] if isinstance(answer.get("outputs"), list) else []
        return {o.get("name"): o.get("data") for o in outputs if isinstance(o, dict)}


def _the_prediction(answer: JSON) -> Any:
    """The one entry of a v1 answer's "predictions"."""
    predictions = answer.get("predictions")
    if not isinstance(predictions, list) or len(predictions) != 1:
        raise not_a_prediction(answer)
    return predictions[0]


ROUTES: dict[str, Route] = {route.name: route for route in (Route(), KServeV1(), OpenInferenceV2())}


def route_for(route: str | Route) -> Route:
    """The route named "torchserve", "v1" or "v2", or a Route object as it is."""
    if isinstance(route, Route):
        return route
    try:
        return ROUTES[route]
    except KeyError:
        raise ValueError(f"unknown route {route!r}: one of {', '.join(ROUTES)}") from None
