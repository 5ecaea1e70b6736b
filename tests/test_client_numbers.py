"""read_number in both clients and `mnist-digit number`: each route's answer read into a
NumberReading, then against the real TorchServe."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import numpy as np
import pytest

from harness.samples import not_one_digit_samples
from mnist_digit_client import AsyncDigitClient, DigitClient, DigitRead, NotADigit, NumberReading, RequestRejected
from mnist_digit_client.errors import ServerFault
from mnist_digit_client.routes import ROUTES
from synthetic.families import encode_image
from synthetic.numbers import mnist_row
from tests.conftest import ROOT

NUMBER = slice(4, 9)  # sample digits the network reads right (tests/test_numbers.py)
ANSWER = {
    "number": "41",
    "confidence": 0.9,
    "digits": [
        {"digit": 4, "confidence": 0.95, "box": [3, 4, 10, 20]},
        {"digit": 1, "confidence": 0.947368, "box": [20, 4, 4, 20]},
    ],
}
READING = NumberReading(
    "41", 0.9, (DigitRead(4, 0.95, (3, 4, 10, 20)), DigitRead(1, 0.947368, (20, 4, 4, 20))), "1.0+abc"
)


def test_every_route_reads_the_number_models_answer():
    v2 = {
        "id": "r",
        "model_version": "1.0+abc",
        "outputs": [
            {"name": "number", "datatype": "BYTES", "shape": [1], "data": ["41"]},
            {"name": "confidence", "datatype": "FP32", "shape": [1], "data": [0.9]},
            {"name": "length", "datatype": "INT64", "shape": [1], "data": [2]},
            {"name": "digit", "datatype": "INT64", "shape": [2], "data": [4, 1]},
            {"name": "digit_confidence", "datatype": "FP32", "shape": [2], "data": [0.95, 0.947368]},
            {"name": "box", "datatype": "INT64", "shape": [2, 4], "data": [3, 4, 10, 20, 20, 4, 4, 20]},
        ],
    }
    assert ROUTES["torchserve"].read_number(ANSWER, "r") == READING
    assert ROUTES["v1"].read_number({"predictions": [ANSWER]}, "r") == READING
    assert ROUTES["v2"].read_number(v2, "r") == READING and ROUTES["v2"].read_number(v2, "r").model_version == "1.0+abc"
    for route, wrong in (("torchserve", {"digit": 4}), ("v1", {"predictions": []}), ("v2", {"outputs": []})):
        with pytest.raises(ServerFault):
            ROUTES[route].read_number(wrong, "r")


@pytest.fixture(scope="module")
def number_png(mnist_sample) -> tuple[bytes, str]:
    digits, labels = mnist_sample
    return encode_image(mnist_row(digits[NUMBER])), "".join(map(str, labels[NUMBER]))


@pytest.mark.integration
@pytest.mark.parametrize("route", ["torchserve", "v1", "v2"])
def test_both_clients_read_a_number_over_each_route(server, number_png, route, number_model_version):
    png, text = number_png
    not_a_number, _ = not_one_digit_samples()["letter"]  # an A drawn by hand
    key_file = server.root / "key_file.json"
    with DigitClient(server.inference, token_file=key_file, route=route) as client:
        reading = client.read_number(png)
        with pytest.raises(RequestRejected) as refused:
            client.read_number(encode_image(np.zeros((30, 100), np.uint8)))  # no digit
        with pytest.raises(NotADigit) as letter:
            client.read_number(not_a_number)
    assert reading.number == text and [d.digit for d in reading.digits] == [int(c) for c in text]
    assert reading.model_version == number_model_version and all(len(d.box) == 4 for d in reading.digits)
    assert refused.value.status == 422 and "no digit" in refused.value.error
    assert letter.value.status == 422 and letter.value.reason == "not_a_digit"

    async def main():
        async with AsyncDigitClient(server.inference, token_file=key_file, route=route) as client:
            return await client.read_number(png)

    assert asyncio.run(main()) == reading


@pytest.mark.integration
def test_cli_number_prints_one_line_per_file(server, number_png, tmp_path):
    png, text = number_png
    (tmp_path / "number.png").write_bytes(png)
    (tmp_path / "notes.txt").write_text("not an image")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mnist_digit_client",
            "number",
            str(tmp_path / "number.png"),
            str(tmp_path / "notes.txt"),
        ]
        + ["--url", server.inference, "--token-file", str(server.root / "key_file.json")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = {json.loads(line)["file"].rsplit("/", 1)[1]: json.loads(line) for line in result.stdout.splitlines()}
    assert result.returncode == 1, result.stderr
    assert lines["number.png"]["number"] == text and len(lines["number.png"]["digits"]) == len(text)
    assert lines["notes.txt"]["code"] == 415
