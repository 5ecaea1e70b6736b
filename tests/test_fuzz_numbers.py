"""Property-based fuzzing of the number model's path past decoding: lines, segmentation, the line
reader and the answers, on drawn uploads (strokes, specks, rules and boxes, digits anywhere and
at any size, rows of up to 20 digits, flat and noisy grounds) in batches.

Every upload must be read or refused as the client's (4xx), never fail as ours (a 500), and a
reading must be an answer a caller can use: 1 to MAX_DIGITS digits, probabilities in [0, 1], every
box inside the upload, digits left to right. tests/test_fuzz.py fuzzes the decoding itself; the
profiles of tests/fuzz_profiles.py apply here, with a fifth of the examples (each is a batch
through both networks).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from handler.errors import RequestError
from handler.number.candidates import MAX_DIGITS
from handler.number.reader import Reading
from harness.inprocess import load_handler
from harness.samples import sample_digits
from synthetic.families import encode_image
from tests.fuzz_profiles import load_profile
from train.evaluate_numbers import read_batch

EXAMPLES = max(4, load_profile().max_examples // 5)
DIGITS = sample_digits()[0]


@pytest.fixture(scope="module")
def number_handler():
    handler, _ = load_handler(model_name="number", metrics_flush_seconds=0)
    return handler


def _strokes(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """1-40 polylines anywhere, of any grey from 60 and 1-7 px wide."""
    image = Image.new("L", (width, height))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(1, 40))):
        points = [tuple(int(v) for v in rng.integers(0, (width, height))) for _ in range(int(rng.integers(2, 6)))]
        draw.line(points, fill=int(rng.integers(60, 256)), width=int(rng.integers(1, 8)))
    return np.asarray(image)


def _scattered_digits(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """1-30 digits anywhere, at any size, overlapping each other and the edges."""
    height, width = max(height, 10), max(width, 10)
    out = np.zeros((height, width), np.uint8)
    for _ in range(int(rng.integers(1, 31))):
        side = int(rng.integers(3, min(height, width) + 1))
        digit = np.asarray(Image.fromarray(DIGITS[int(rng.integers(len(DIGITS)))]).resize((side, side)))
        top, left = int(rng.integers(-side // 2, height)), int(rng.integers(-side // 2, width))
        rows, cols = slice(max(0, top), min(height, top + side)), slice(max(0, left), min(width, left + side))
        inside = digit[rows.start - top : rows.stop - top, cols.start - left : cols.stop - left]
        out[rows, cols] = np.maximum(out[rows, cols], inside)
    return out


def _row(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """1-20 digits side by side, sometimes crossed by a rule or a bar, in boxes, or twice one above
    the other."""
    row = np.concatenate([DIGITS[int(i)] for i in rng.integers(0, len(DIGITS), int(rng.integers(1, 21)))], 1)
    if rng.random() < 0.3:
        row[int(rng.integers(28))] = 255
    if rng.random() < 0.3:
        row[:, int(rng.integers(row.shape[1]))] = 255
    if rng.random() < 0.2:
        row[:, ::28], row[[0, -1]] = 255, 255
    if rng.random() < 0.2:
        row = np.concatenate([row, row])
    return np.pad(row, int(rng.integers(0, 30)))


def _ground(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Flat, nearly flat, a ramp, grey noise, specks, a checkerboard, rules on a grid, or a blob."""
    kind = int(rng.integers(8))
    if kind == 0:
        return np.full((height, width), int(rng.integers(256)), np.uint8)
    if kind == 1:
        out = np.full((height, width), int(rng.integers(256)), np.uint8)
        out.flat[int(rng.integers(out.size))] ^= 255
        return out
    if kind == 2:
        return np.repeat(np.linspace(0, 255, width)[None].astype(np.uint8), height, 0)
    if kind == 3:
        return rng.integers(0, 256, (height, width)).astype(np.uint8)
    if kind == 4:
        return ((rng.random((height, width)) < rng.choice([0.001, 0.01, 0.1, 0.5])) * 255).astype(np.uint8)
    if kind == 5:
        cell = int(rng.integers(1, 20))
        return ((np.indices((height, width)) // cell).sum(0) % 2 * 255).astype(np.uint8)
    if kind == 6:
        out = np.zeros((height, width), np.uint8)
        out[:: int(rng.integers(1, 40))], out[:, :: int(rng.integers(1, 60))] = 255, 255
        return out
    out = np.zeros((height, width), np.uint8)
    out[height // 4 : 3 * height // 4 + 1, width // 4 : 3 * width // 4 + 1] = 255
    out[rng.random((height, width)) < 0.2] = 0
    return out


MAKERS = (_strokes, _scattered_digits, _row, _ground)


@st.composite
def uploads(draw) -> tuple[bytes, tuple[int, int]]:
    """One drawn picture as a PNG (grey, RGB or grey and alpha; light on dark or inverted), and its
    (height, width)."""
    make = draw(st.sampled_from(MAKERS))
    height = draw(st.integers(1, 40) | st.integers(20, 400))
    width = draw(st.integers(1, 60) | st.integers(40, 3000))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    pixels = make(rng, height, width)
    if draw(st.booleans()):
        pixels = 255 - pixels
    image = Image.fromarray(pixels).convert(draw(st.sampled_from(["L", "RGB", "LA"])))
    return encode_image(image), pixels.shape


@settings(max_examples=EXAMPLES)
@given(st.lists(uploads(), min_size=1, max_size=6))
def test_every_upload_is_read_or_refused_as_the_clients(number_handler, drawn):
    h = number_handler
    bodies = [body for body, _ in drawn]
    answers = read_batch(h.model, bodies, h.calibration, h.number_calibration, h.line_model)
    for (_, (height, width)), answer in zip(drawn, answers):
        if isinstance(answer, RequestError):
            assert 400 <= answer.status < 500 and answer.reason and answer.message, answer
            continue
        assert isinstance(answer, Reading)
        assert 1 <= len(answer.digits) <= MAX_DIGITS
        assert len(answer.confidences) == len(answer.boxes) == len(answer.digits)
        assert 0 <= answer.confidence <= 1 and all(0 <= c <= 1 for c in answer.confidences)
        for x, y, w, box_height in answer.boxes:
            assert x >= 0 and y >= 0 and w >= 1 and box_height >= 1, answer.boxes
            assert x + w <= width and y + box_height <= height, (answer.boxes, (height, width))
        lefts = [x for x, *_ in answer.boxes]
        assert lefts == sorted(lefts), answer.boxes
