"""Uploads -> lines of light ink on black: the number reader's decoding and cleaning.

Decoding and cleaning are the digit model's (handler/preprocess/: decode, light_ink), at a larger
working size: a line of up to 12 digits keeps about 40 px a digit at LINE_SIDE, where the digit
model reduces photos to 160 px. Each line remembers how many upload pixels a working pixel is, so
that the digits' boxes are answered in the upload's pixels (after its EXIF rotation).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from handler.preprocess.decode import decode_image, in_unit_range, plain_png, to_grayscale
from handler.preprocess.device_jpeg import reduced
from handler.preprocess.kernels import by_shape, from_levels
from handler.preprocess.mnistify import light_ink

LINE_SIDE = 512  # the longer side of a line's working image
_ORIENTATION = 0x0112  # EXIF: values 5 to 8 turn the image a quarter
_QUARTER_TURNS = (5, 6, 7, 8)


@dataclass
class Line:
    """One decoded upload: (H, W) grey (uint8 levels or float in [0, 1], either polarity) and how
    many upload pixels one of its pixels is, across and down."""

    gray: np.ndarray
    scale: tuple[float, float] = (1.0, 1.0)


def decode_line(data: bytes) -> Line:
    """Image file bytes -> its Line, at most LINE_SIDE a side; raises decode's InputErrors."""
    pixels = plain_png(data, LINE_SIDE)
    if pixels is not None:
        return Line(pixels)
    image = decode_image(data, LINE_SIDE)
    width, height = _upright_size(data, image)
    gray = to_grayscale(image, LINE_SIDE)
    return Line(gray, (width / gray.shape[1], height / gray.shape[0]))


def _upright_size(data: bytes, image: Image.Image) -> tuple[int, int]:
    """The upload's width and height after its EXIF rotation. A JPEG or HEIF decoded at a reduced
    size (decode_image's draft: DCT scaling, a thumbnail) has its header read again for them."""
    width, height = Image.open(io.BytesIO(data)).size if image.format in ("JPEG", "HEIF") else image.size
    try:
        turned = image.getexif().get(_ORIENTATION, 1) in _QUARTER_TURNS
    except (OSError, SyntaxError, ValueError, KeyError, TypeError):
        turned = False  # as to_grayscale: a broken EXIF block only loses the rotation
    return (height, width) if turned else (width, height)


def as_line(item: Line | np.ndarray) -> Line:
    """A payload's image as a Line: pixels sent as numbers (v1 arrays, v2 tensors) are reduced to
    LINE_SIDE as files are."""
    if isinstance(item, Line):
        return item
    h, w = item.shape
    if max(h, w) <= LINE_SIDE:
        return Line(item)
    small = reduced(torch.from_numpy(in_unit_range(item).astype(np.float32))[None], LINE_SIDE)[0]
    return Line(small.numpy(), (w / small.shape[1], h / small.shape[0]))


@dataclass
class LineInk:
    """A line cleaned: its (H, W) float32 light ink on black and, where noise was filtered out of
    it, the same before that filtering, as the digit model keeps an unfiltered candidate view
    (mnistify): the network, trained on noisy digits, often reads a noisy digit better as it came."""

    cleaned: np.ndarray
    unfiltered: np.ndarray | None = None


def cleaned_lines(lines: list[Line]) -> list[LineInk | None]:
    """Per line, its ink cleaned as the digit model cleans images (mnistify.light_ink: polarity,
    background, contrast, noise), None where it is blank. Lines of one size are cleaned as one
    stack."""
    out: list[LineInk | None] = [None] * len(lines)
    for indices in by_shape([line.gray for line in lines]):
        grays = [lines[i].gray for i in indices]
        if all(g.dtype == np.uint8 for g in grays):  # plain PNGs' levels, divided as the digit model does
            stack = from_levels(torch.from_numpy(np.stack(grays)))
        else:
            stack = torch.from_numpy(np.stack([in_unit_range(g) for g in grays]).astype(np.float32))
        with torch.inference_mode():
            ink, blank, unfiltered = light_ink(stack)[1:4]
        noisy = {} if unfiltered is None else dict(zip(unfiltered[0].tolist(), unfiltered[1].numpy()))
        for k, (i, image, is_blank) in enumerate(zip(indices, ink.numpy(), blank.tolist())):
            out[i] = None if is_blank else LineInk(image, noisy.get(k))
    return out
