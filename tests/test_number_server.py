"""The number model under the real TorchServe, beside the digit model, over HTTP."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from harness.bad_inputs import BAD_BODIES, number_bad_bodies, png_header
from harness.clients import predict_concurrently
from synthetic.families import encode_image
from synthetic.numbers import held_out_fonts, mnist_row, write_line

pytestmark = pytest.mark.integration

NUMBER = slice(4, 9)  # sample digits the network reads right (tests/test_numbers.py)
PREDICT, V1, V2 = "/predictions/number", "/v1/models/number:predict", "/v2/models/number/infer"


def handwritten(digits: np.ndarray) -> bytes:
    """Digits written side by side in dark ink on white paper, as a PNG."""
    ink = np.pad(write_line(digits, np.random.default_rng(7), 36, gap=(0.3, 0.6)), 12)
    return encode_image((255 - ink * 230).astype(np.uint8))


def printed(text: str) -> bytes:
    """`text` printed in a held-out font, dark grey on a light label, as a JPEG."""
    fonts = held_out_fonts()
    if not fonts:
        pytest.skip("no held-out fonts under /usr/share/fonts (make fonts)")
    font = ImageFont.truetype(str(fonts[0]), 48)
    left, top, right, bottom = font.getbbox(text)
    image = Image.new("L", (right - left + 40, bottom - top + 30), 235)
    ImageDraw.Draw(image).text((20 - left, 15 - top), text, fill=40, font=font)
    return encode_image(image, "JPEG", quality=85)


def assert_read(answer: dict, text: str, width: int, height: int) -> None:
    assert answer["number"] == text and [d["digit"] for d in answer["digits"]] == [int(c) for c in text]
    assert 0 < answer["confidence"] <= 1 and all(0 < d["confidence"] <= 1 for d in answer["digits"])
    boxes = [d["box"] for d in answer["digits"]]
    assert all(0 <= x and 0 <= y and w > 0 and h > 0 and x + w <= width and y + h <= height for x, y, w, h in boxes)
    assert all(a[0] + a[2] / 2 < b[0] + b[2] / 2 for a, b in zip(boxes, boxes[1:])), "left to right"


def test_a_printed_and_a_handwritten_number_are_read_with_their_boxes(server, mnist_sample):
    digits, labels = mnist_sample
    text = "".join(map(str, labels[NUMBER]))
    for body, content_type in ((handwritten(digits[NUMBER]), "image/png"), (printed("40961"), "image/jpeg")):
        expected = text if content_type == "image/png" else "40961"
        response = server.predict(body, content_type, path=PREDICT)
        assert response.status_code == 200, response.text[:300]
        assert response.headers["X-Model-Version"]
        width, height = Image.open(io.BytesIO(body)).size
        assert_read(response.json(), expected, width, height)


def test_bad_inputs_get_clear_4xx_answers_and_spare_the_rest_of_the_batch(server, mnist_sample):
    digits, labels = mnist_sample
    good = encode_image(mnist_row(digits[NUMBER]))
    text = "".join(map(str, labels[NUMBER]))
    # the digit model's catalogue, then a white page, 13 digits, two rows and a huge image's header
    bad = [(b.body, b.status, b.content_type) for b in BAD_BODIES + number_bad_bodies()]
    bodies = [good] * 8 + [body for body, _, _ in bad] + [good] * 8
    types = ["image/png"] * 8 + [kind for _, _, kind in bad] + ["image/png"] * 8
    responses = predict_concurrently(server, bodies, types, concurrency=16, path=PREDICT)
    answers = responses[:8] + responses[-8:]
    assert all(r.status_code == 200 and r.json()["number"] == text for r in answers)
    for (_, status, _), response in zip(bad, responses[8:-8]):
        assert response.status_code == status, response.text[:200]
        body = response.json()
        assert body.get("error") and body.get("code", status) == status
    assert "no digit" in responses[-12].json()["error"] and "12 digits" in responses[-11].json()["error"]
    assert "2 lines" in responses[-10].json()["error"]


def test_v1_and_v2_forms(server, mnist_sample):
    digits, labels = mnist_sample
    png = encode_image(mnist_row(digits[NUMBER]))
    text = "".join(map(str, labels[NUMBER]))
    b64 = base64.b64encode(png).decode()
    v1 = server.predict(json.dumps({"instances": [{"b64": b64}, {"b64": b64}]}).encode(), "application/json", path=V1)
    assert v1.status_code == 200 and [p["number"] for p in v1.json()["predictions"]] == [text, text]
    request = {"id": "r7", "inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": [b64]}]}
    v2 = server.predict(json.dumps(request).encode(), "application/json", path=V2)
    assert v2.status_code == 200, v2.text[:300]
    answer = v2.json()
    outputs = {o["name"]: o for o in answer["outputs"]}
    assert answer["id"] == "r7" and answer["model_name"] == "number"
    assert outputs["number"]["data"] == [text] and outputs["length"]["data"] == [len(text)]
    assert outputs["digit"]["data"] == [int(c) for c in text] and outputs["box"]["shape"] == [len(text), 4]
    blank = dict(request, inputs=[dict(request["inputs"][0], data=[base64.b64encode(png_header(5000, 5000)).decode()])])
    refused = server.predict(json.dumps(blank).encode(), "application/json", path=V2)
    assert refused.status_code == 413 and refused.json()["error"]


def test_the_digit_model_answers_as_before_beside_it(server, mnist_sample):
    digits, labels = mnist_sample
    response = server.predict(encode_image(digits[NUMBER][0]), "image/png")
    assert response.status_code == 200 and response.json()["digit"] == labels[NUMBER][0]
    assert set(response.json()) == {"digit", "confidence", "probabilities"}


def test_both_models_are_registered_and_described(server):
    from ops.tsctl import describe, registered

    key = server.keys()["management"]
    assert registered(server.management, key) == ["mnist", "number"]
    number = describe(server.management, key, "number")
    assert number["modelName"] == "number" and len(number["workers"]) >= 1


def test_the_explanation_routes_refuse_a_number_and_the_digit_model_still_explains(server, mnist_sample):
    digits, labels = mnist_sample
    png = encode_image(mnist_row(digits[NUMBER]))
    b64 = base64.b64encode(png).decode()
    v2 = {"id": "x1", "inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": [b64]}]}
    for path, body, kind in (
        ("/explanations/number", png, "image/png"),
        ("/v1/models/number:explain", json.dumps({"instances": [{"b64": b64}]}).encode(), "application/json"),
        ("/v2/models/number/explain", json.dumps(v2).encode(), "application/json"),
    ):
        response = server.predict(body, kind, path=path)
        assert response.status_code == 400 and "no explanations" in response.json()["error"], (path, response.text)
    read = server.predict(png, "image/png", path=PREDICT)
    assert read.status_code == 200 and read.json()["number"] == "".join(map(str, labels[NUMBER]))
    digit = server.predict(encode_image(digits[NUMBER][0]), "image/png", path="/explanations/mnist")
    assert digit.status_code == 200 and digit.json()["digit"] == labels[NUMBER][0] and "attributions" in digit.json()
