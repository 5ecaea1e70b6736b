"""The catalogue of bad inputs the service must refuse with a 4xx: one list shared by the tests
(in-process and over HTTP), the fuzzer (as seeds) and `make soak`; and what the number model
refuses besides (number_bad_bodies)."""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image

from harness.samples import sample_digits
from synthetic.camera import phone_heic
from synthetic.families import encode_image
from synthetic.numbers import mnist_row


def png_chunk(kind: bytes, body: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_header(width: int, height: int) -> bytes:
    """A valid PNG header declaring a size, with no pixels behind it (a decompression bomb's shape)."""
    ihdr = struct.pack(">II", width, height) + bytes([8, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IEND", b"")


def jpeg_header(width: int, height: int) -> bytes:
    """A JPEG's markers up to its scan, declaring a size, with no scan data behind them."""
    jpeg = encode_image(np.zeros((16, 16), np.uint8), "JPEG")
    frame = jpeg.index(b"\xff\xc0") + 5  # baseline SOF: length (2), precision (1), height, width
    scan = jpeg.index(b"\xff\xda")
    header_end = scan + 2 + struct.unpack_from(">H", jpeg, scan + 2)[0]
    return jpeg[:frame] + struct.pack(">HH", height, width) + jpeg[frame + 4 : header_end]


@dataclass(frozen=True)
class BadBody:
    """A request body and what the service answers: its status and the RejectedInputs reason."""

    reason: str
    body: bytes
    status: int
    content_type: str = "application/octet-stream"


def _truncated_png() -> bytes:
    whole = encode_image(np.zeros((300, 300), np.uint8))
    return whole[: len(whole) // 2]


def _small_photo() -> Image.Image:
    return Image.fromarray(np.full((48, 64, 3), 200, np.uint8))


def _truncated_heic() -> bytes:
    """A phone's HEIC cut short: libheif reads its boxes, but its image's data runs past the end."""
    whole = phone_heic(_small_photo())
    return whole[: len(whole) * 2 // 3]


def _broken_heic_boxes() -> bytes:
    """A HEIC's "ftyp" box, then garbage where its "meta" box should be."""
    whole = phone_heic(_small_photo())
    return whole[:32] + bytes(range(256)) + whole[288:]


def _truncated_avif() -> bytes:
    whole = encode_image(_small_photo(), "AVIF", quality=50, speed=10)
    return whole[: len(whole) // 2]


def _not_finite_tiff() -> bytes:
    """A float TIFF (Pillow mode "F") of a digit with one NaN and one infinite pixel."""
    pixels = np.zeros((28, 28), np.float32)
    pixels[5:20, 10:14] = 200
    pixels[0, 0], pixels[3, 3] = np.nan, np.inf
    return encode_image(pixels, "TIFF")


BAD_BODIES = [
    BadBody("empty", b"", 400),
    BadBody("not_an_image", b"\x00\x01\x02 definitely not an image \xff\xfe" * 4, 415),
    BadBody("not_an_image", b"this is plain text, not an image", 415),
    BadBody("truncated", _truncated_png(), 400),
    BadBody("zero_size", png_header(0, 10), 400),
    BadBody("bad_base64", b"data:image/png;base64,@@not-base64@@", 400),
    BadBody("bad_json", b'{"instances": "nope"}', 400, "application/json"),
    # Open Inference Protocol requests: answered {"error": ...}, without "code"
    BadBody(
        "bad_v2",
        b'{"inputs": [{"name": "image", "datatype": "BOOL", "shape": [1], "data": [true]}]}',
        400,
        "application/json",
    ),
    BadBody(
        "bad_v2",
        b'{"inputs": [{"name": "image", "datatype": "UINT8", "shape": [1, 28, 28], "data": [0, 1]}]}',
        400,
        "application/json",
    ),
    BadBody("too_many_pixels", png_header(50000, 50000), 413),
    BadBody("too_many_pixels", jpeg_header(8193, 6144), 413),  # just over 50 MP
    BadBody("too_many_pixels", png_header(4097, 4096), 413),  # under 50 MP, but a PNG is decoded at full size
    BadBody("truncated", _truncated_heic(), 400),
    BadBody("truncated", _broken_heic_boxes(), 400),
    BadBody("truncated", _truncated_avif(), 400),
    BadBody("no_digit", encode_image(np.zeros((28, 28), np.uint8)), 422),
    BadBody("not_finite", _not_finite_tiff(), 400),
]


def number_bad_bodies() -> list[BadBody]:
    """Uploads the number model refuses besides BAD_BODIES: a white page, a row of 13 of the
    committed sample digits, two rows of them one above the other, a huge image's header."""
    digits, _ = sample_digits()
    two_rows = np.concatenate([mnist_row(digits[:4]), mnist_row(digits[4:8])])
    return [
        BadBody("no_digit", encode_image(np.full((60, 300), 255, np.uint8)), 422, "image/png"),
        BadBody("too_many_digits", encode_image(mnist_row(digits[:13])), 422, "image/png"),
        BadBody("several_lines", encode_image(two_rows), 422, "image/png"),
        BadBody("too_many_pixels", png_header(5000, 5000), 413, "image/png"),
    ]
