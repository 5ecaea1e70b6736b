"""The number model's answers in each protocol (handler/answers.py writes the digit model's).

- "torchserve": {"number": "4096", "confidence": 0.97, "digits": [{"digit": 4, "confidence": 0.99,
  "box": [x, y, width, height]}, ...]}, the digits left to right, boxes in the upload's pixels;
- "v1": {"predictions": [answer, ...]}, one per image;
- "v2": per image "number" (BYTES), "confidence" (FP32) and "length" (INT64: its digits), and per
  digit of all of them, in order, "digit" (INT64), "digit_confidence" (FP32) and "box" (INT64, 4 each).
Errors are answered as the digit model's (answers.error_answer).
"""

from __future__ import annotations

from handler.answers import prediction_answer, v2_answer
from handler.number.reader import NUMBER_OUTPUTS, Reading
from handler.preprocess.envelopes import Envelope

_TYPES = dict(zip(NUMBER_OUTPUTS, ("BYTES", "FP32", "INT64", "INT64", "FP32", "INT64")))
# The model's output tensors, as its v2 metadata gives them.
NUMBER_METADATA = [
    {"name": name, "datatype": _TYPES[name], "shape": [-1, 4] if name == "box" else [-1]} for name in NUMBER_OUTPUTS
]


def reading_answer(reading: Reading) -> dict:
    return {
        "number": reading.number,
        "confidence": round(reading.confidence, 6),
        "digits": [
            {"digit": d, "confidence": c, "box": box}
            for d, c, box in zip(reading.digits, reading.confidences, reading.boxes)
        ],
    }


def number_answer(envelope: Envelope, readings: list[Reading], model: tuple[str, str]) -> str:
    """The JSON answer to a request whose images were read; `model` is (name, version)."""
    if envelope.protocol != "v2":
        return prediction_answer(envelope, [reading_answer(r) for r in readings], model)
    digits = [d for r in readings for d in r.digits]
    columns = {
        "number": [r.number for r in readings],
        "confidence": [round(r.confidence, 6) for r in readings],
        "length": [len(r.digits) for r in readings],
        "digit": digits,
        "digit_confidence": [c for r in readings for c in r.confidences],
        "box": [v for r in readings for box in r.boxes for v in box],
    }
    shapes = {name: [len(readings)] for name in ("number", "confidence", "length")}
    shapes |= {"digit": [len(digits)], "digit_confidence": [len(digits)], "box": [len(digits), 4]}
    return v2_answer(envelope, model, {name: (_TYPES[name], shapes[name], columns[name]) for name in NUMBER_OUTPUTS})
