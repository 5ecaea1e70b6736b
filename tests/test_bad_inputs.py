"""Every bad-input kind, in-process: its status and reason."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from handler.errors import BadRequest, InputError, NoDigitFound, NotOneDigit, PayloadTooLarge, UnsupportedMediaType
from harness.bad_inputs import BAD_BODIES, png_header
from synthetic.families import encode_image as encode
from tests.conftest import png_bytes
from tests.preprocess_helpers import request_images


def rejected(request: dict) -> InputError:
    with pytest.raises(InputError) as info:
        request_images(request)
    error = info.value
    reason = {"reason": error.reason} if isinstance(error, NotOneDigit) else {}  # 422s name theirs
    assert error.body() == {"code": error.status, **reason, "error": error.message}
    return error


@pytest.mark.parametrize(
    "request_,kind,status,reason",
    [
        ({"body": b""}, BadRequest, 400, "empty"),
        ({}, BadRequest, 400, "empty"),
        ({"body": b"\x00\x01binary junk \xff" * 10}, UnsupportedMediaType, 415, "not_an_image"),
        ({"body": b"this is not an image"}, UnsupportedMediaType, 415, "not_an_image"),
        ({"body": png_header(0, 10)}, BadRequest, 400, "zero_size"),
        ({"body": {"instances": [[[]]]}}, BadRequest, 400, "zero_size"),
        ({"body": png_header(5000, 4000)}, PayloadTooLarge, 413, "too_many_pixels"),
        ({"body": png_header(50000, 50000)}, PayloadTooLarge, 413, "too_many_pixels"),
        ({"body": b"data:image/png;base64,@@@@"}, BadRequest, 400, "bad_base64"),
        ({"body": {"data": "not base64!"}}, BadRequest, 400, "bad_base64"),
        ({"body": b'{"data": '}, BadRequest, 400, "bad_json"),
        ({"body": {"image": 3}}, BadRequest, 400, "bad_json"),
        ({"body": {"instances": "nope"}}, BadRequest, 400, "bad_json"),
        ({"body": {"instances": []}}, BadRequest, 400, "bad_json"),
        ({"body": {"instances": [[1, 2, 3]]}}, BadRequest, 400, "bad_json"),
        ({"body": {"instances": [[["a"]]]}}, BadRequest, 400, "bad_json"),
        ({"body": {"instances": [[[1e9, 2]]]}}, BadRequest, 400, "bad_json"),
        ({"body": [1, 2]}, BadRequest, 400, "bad_json"),
        ({"body": 1}, BadRequest, 400, "bad_json"),  # found by fuzzing: a JSON scalar raised TypeError
        ({"body": None}, BadRequest, 400, "bad_json"),
        ({"body": png_header(10000, 9000)}, PayloadTooLarge, 413, "too_many_pixels"),  # fuzzing: Pillow only warned
        ({"body": png_bytes(np.zeros((28, 28), np.uint8))}, NoDigitFound, 422, "no_digit"),
        ({"body": png_bytes(np.full((40, 40), 255, np.uint8))}, NoDigitFound, 422, "no_digit"),
    ],
)
def test_bad_input_kinds(request_, kind, status, reason):
    error = rejected(request_)
    assert type(error) is kind and error.status == status and error.reason == reason


def test_tiff_with_a_rational_strip_size_is_a_bad_request():
    """Found by fuzzing decode_batch: Pillow raised TypeError loading this TIFF."""
    body = (
        b"II*\x00\x08\x00\x00\x00\n\x00\x00\x01\x04\x00\x01\x00\x00\x00\x01\x00\x00\x00\x01\x01\x04\x00"
        b"\x01\x00\x00\x00\x01\x00\x00\x00\x02\x01\x03\x00\x01\x00\x00\x00 \x00\x00\x00\x03\x01\x03\x00\x01"
        b"\x00\x00\x00\x01\x00\x00\x00\x06\x01\x03\x00\x01\x00\x00\x00\x01\x00\x00\x00\x11\x01\x04\x00\x01"
        b"\x00\x00\x00\x86\x00\x00\x00\x16\x01\x05\x00\x01\x00\x00\x00\x01\x00\x00\x00\x17\x01\x04\x00\x01"
        b"\x00\x00\x00\x04\x00\x00\x00\x1c\x01\x03\x00\x01\x00\x00\x00\x01\x00\x00\x00S\x01\x03\x00\x01\x00"
        b"\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00 \x00\x00\x00"
    )
    error = rejected({"body": body})
    assert error.status == 400 and error.reason == "truncated"


@pytest.mark.parametrize("bad", BAD_BODIES, ids=lambda bad: bad.reason)
def test_the_bad_input_catalogue(bad):
    error = rejected({"body": bad.body})
    assert (error.status, error.reason) == (bad.status, bad.reason)


def test_truncated_image(digit):
    data = encode(Image.fromarray(digit).resize((200, 200)), "PNG")
    error = rejected({"body": data[: len(data) // 2]})
    assert error.status == 400 and error.reason == "truncated"
    jpeg = encode(Image.fromarray(digit).resize((200, 200)), "JPEG")
    assert rejected({"body": jpeg[:300]}).status == 400


def test_bomb_is_refused_before_decoding():
    import tracemalloc

    tracemalloc.start()
    rejected({"body": png_header(50000, 50000)})
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 5_000_000  # nowhere near the 2.5 GB the pixels would take
    assert Image.MAX_IMAGE_PIXELS is not None  # Pillow's own guard is still on
