"""The protocols a prediction or an explanation can be asked over. Each route is a small object:
its URLs, how it encodes one image file, and how it reads the answer into a Prediction (the digit
model's), an Explanation (the digit model's) or a NumberReading (the number model's).

    torchserve  POST {url}/predictions/{model}     the file's bytes             {"digit", "confidence", "probabilities"}
    v1          POST {url}/v1/models/{model}:predict  {"instances": [{"b64"}]}  {"predictions": [{...}]}
    v2          POST {url}/v2/models/{model}/infer    Open Inference Protocol   {"id", "outputs": [...]}

Explanations: the same bodies to /explanations/{model}, /v1/models/{model}:explain ({"explanations":
[{...}]}) and /v2/models/{model}/explain (outputs view and attributions besides the prediction's).
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


# An explanation's view and attributions: 28 rows of 28 floats
Grid = tuple[tuple[float, ...], ...]
SIDE = 28


@dataclass(frozen=True)
class Explanation:
    """A prediction and what it was read from: the 28x28 view the network read (light digit on
    black, in [0, 1]) and each pixel's attribution, its share of the answered digit's logit's rise
    from a blank view (integrated gradients: positive for the digit, negative against, 0 off the ink)."""

    digit: int
    confidence: float
    probabilities: tuple[float, ...]
    view: Grid
    attributions: Grid
    model_version: str | None = field(default=None, compare=False)

    @property
    def prediction(self) -> Prediction:
        return Prediction(self.digit, self.confidence, self.probabilities, self.model_version)

    @classmethod
    def from_answer(cls, answer: Any, model_version: str | None = None) -> Explanation:
        p = Prediction.from_answer(answer, model_version)
        try:
            view, attributions = _grid(answer["view"]), _grid(answer["attributions"])
        except (KeyError, TypeError, ValueError):
            raise not_a_prediction(answer, "an explanation") from None
        return cls(p.digit, p.confidence, p.probabilities, view, attributions, model_version)


def _grid(rows: Any) -> Grid:
    """28 rows of 28 numbers, or the same 784 numbers flat (a v2 tensor's data)."""
    if isinstance(rows, list) and len(rows) == SIDE * SIDE:
        rows = [rows[i : i + SIDE] for i in range(0, SIDE * SIDE, SIDE)]
    grid = tuple(tuple(float(x) for x in row) for row in rows)
    if len(grid) != SIDE or any(len(row) != SIDE for row in grid):
        raise ValueError("not 28 x 28")
    return grid


class Route:
    """How one protocol asks for a prediction or an explanation. This base is TorchServe's own
    inference API (the file's bytes in, one prediction or explanation object out); the other
    routes override its parts."""

    name = "torchserve"
    content_type = "application/octet-stream"

    def url(self, base: str, model: str) -> str:
        return f"{base}/predictions/{model}"

    def explain_url(self, base: str, model: str) -> str:
        return f"{base}/explanations/{model}"

    def body(self, image: bytes, request_id: str) -> bytes:
        return image

    def body_type(self, image: bytes) -> str:
        """The body's Content-Type: here the file's own media type (image/heic, image/avif, ...),
        `content_type` where its bytes do not tell it. A route whose body is not the file says its own."""
        return media_type(image) or self.content_type

    def read(self, answer: JSON, request_id: str) -> Prediction:
        return Prediction.from_answer(answer)

    def read_explanation(self, answer: JSON, request_id: str) -> Explanation:
        return Explanation.from_answer(answer)

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

    def explain_url(self, base: str, model: str) -> str:
        return f"{base}/v1/models/{model}:explain"

    def body(self, image: bytes, request_id: str) -> bytes:
        return json.dumps({"instances": [{"b64": _b64(image)}]}).encode()

    def body_type(self, image: bytes) -> str:
        return self.content_type

    def read(self, answer: JSON, request_id: str) -> Prediction:
        return Prediction.from_answer(_only(answer, "predictions"))

    def read_explanation(self, answer: JSON, request_id: str) -> Explanation:
        return Explanation.from_answer(_only(answer, "explanations"))

    def read_number(self, answer: JSON, request_id: str) -> NumberReading:
        return NumberReading.from_answer(_only(answer, "predictions"))


def _only(answer: JSON, key: str) -> Any:
    """The one element of a v1 answer's list under `key` ("predictions" or "explanations")."""
    items = answer.get(key)
    if not isinstance(items, list) or len(items) != 1:
        raise not_a_prediction(answer, "a prediction" if key == "predictions" else "an explanation")
    return items[0]


class OpenInferenceV2(Route):
    """The Open Inference Protocol (KServe v2): one BYTES input named "image", outputs "digit",
    "confidence" and "probabilities" found by name. The body carries the request ID; an answer
    with another "id" is another request's."""

    name = "v2"
    content_type = "application/json"

    def url(self, base: str, model: str) -> str:
        return f"{base}/v2/models/{model}/infer"

    def explain_url(self, base: str, model: str) -> str:
        return f"{base}/v2/models/{model}/explain"

    def body(self, image: bytes, request_id: str) -> bytes:
        tensor = {"name": "image", "datatype": "BYTES", "shape": [1], "data": [_b64(image)]}
        return json.dumps({"id": request_id, "inputs": [tensor]}).encode()

    def body_type(self, image: bytes) -> str:
        return self.content_type

    def read(self, answer: JSON, request_id: str) -> Prediction:
        return Prediction.from_answer(*self._fields(answer, request_id))

    def read_explanation(self, answer: JSON, request_id: str) -> Explanation:
        return Explanation.from_answer(*self._fields(answer, request_id))

    def _fields(self, answer: JSON, request_id: str) -> tuple[JSON, str | None]:
        """The answer's one image as the service's own answer reads it (each output by name, a
        digit's first element), and its model_version."""
        data = self._outputs(answer, request_id)
        try:
            fields = {"digit": data.pop("digit")[0], "confidence": data.pop("confidence")[0], **data}
        except (KeyError, TypeError, IndexError):
            raise not_a_prediction(answer) from None
        return fields, _model_version(answer)

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
        return NumberReading.from_answer(reading, _model_version(answer))

    @staticmethod
    def _outputs(answer: JSON, request_id: str) -> dict[Any, Any]:
        """The answer's output tensors' data by name; another request's answer is refused."""
        if answer.get("id", request_id) != request_id:
            raise another_request(f"v2 id {answer['id']!r}")
        outputs = answer["outputs"] if isinstance(answer.get("outputs"), list) else []
        return {o.get("name"): o.get("data") for o in outputs if isinstance(o, dict)}


def _model_version(answer: JSON) -> str | None:
    version = answer.get("model_version")
    return version if isinstance(version, str) else None


ROUTES: dict[str, Route] = {route.name: route for route in (Route(), KServeV1(), OpenInferenceV2())}


def route_for(route: str | Route) -> Route:
    """The route named "torchserve", "v1" or "v2", or a Route object as it is."""
    if isinstance(route, Route):
        return route
    try:
        return ROUTES[route]
    except KeyError:
        raise ValueError(f"unknown route {route!r}: one of {', '.join(ROUTES)}") from None
