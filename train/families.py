"""Input families generated from MNIST test digits: how clients really send digits.

Each generator takes a (28, 28) uint8 MNIST digit and a numpy Generator and returns the bytes a
client would upload. Used by the evaluation report, the tests and the benchmarks.
"""
from __future__ import annotations

import io
from typing import Callable

import numpy as np
from PIL import Image


def encode_image(image: np.ndarray | Image.Image, fmt: str = "PNG", **save) -> bytes:
    """An array or Pillow image as the bytes of an image file (PNG unless told): the one encoder of
    uploads for the evaluation, the tests and the benchmarks."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)


def clean(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    return encode_image(digit)


def gaussian_noise(digit: np.ndarray, rng: np.random.Generator, sigma: float = 0.3) -> bytes:
    x = digit / 255 + rng.normal(0, sigma, digit.shape)
    return encode_image(_to_uint8(x))


def salt_and_pepper(digit: np.ndarray, rng: np.random.Generator, share: float = 0.1) -> bytes:
    x = digit / 255
    u = rng.random(digit.shape)
    x = np.where(u < share / 2, 0.0, np.where(u > 1 - share / 2, 1.0, x))
    return encode_image(_to_uint8(x))


def blur(digit: np.ndarray, rng: np.random.Generator, sigma: float = 1.0) -> bytes:
    from PIL import ImageFilter

    return encode_image(Image.fromarray(digit).filter(ImageFilter.GaussianBlur(sigma)))


def speckle(digit: np.ndarray, rng: np.random.Generator, sigma: float = 0.5) -> bytes:
    """Multiplicative noise, x * (1 + n), plus faint additive grain (sensor speckle)."""
    x = digit / 255
    x = x * (1 + rng.normal(0, sigma, digit.shape)) + np.abs(rng.normal(0, 0.05, digit.shape))
    return encode_image(_to_uint8(x))


def paper_photo(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """Dark ink on off-white paper: 400x300 or 300x400, digit 60-220 px tall anywhere, uneven light, JPEG."""
    width, height = (400, 300) if rng.random() < 0.5 else (300, 400)
    size = int(rng.integers(60, min(width, height) - 40))
    ink = np.asarray(Image.fromarray(digit).resize((size, size), Image.BICUBIC), dtype=np.float32) / 255
    top, left = int(rng.integers(0, height - size)), int(rng.integers(0, width - size))
    coverage = np.zeros((height, width), dtype=np.float32)
    coverage[top:top + size, left:left + size] = np.clip(ink, 0, 1)

    paper = rng.uniform(0.75, 0.95)
    # A lighting gradient across the sheet and a little sensor noise.
    gy, gx = np.mgrid[0:height, 0:width] / max(width, height)
    light = 1 + rng.uniform(-0.12, 0.12) * gx + rng.uniform(-0.12, 0.12) * gy
    ink_level = rng.uniform(0.05, 0.3)
    gray = (paper * (1 - coverage) + ink_level * coverage) * light + rng.normal(0, 0.02, (height, width))
    tint = rng.uniform(0.9, 1.0, 3)  # warm or cool paper
    rgb = _to_uint8(gray[..., None] * tint)
    return encode_image(rgb, "JPEG", quality=int(rng.integers(40, 90)))


def canvas_export(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """A browser canvas toDataURL(): 280x280 RGBA, transparent background, strokes only in alpha."""
    side = 280
    size = int(rng.integers(140, 260))
    alpha = np.asarray(Image.fromarray(digit).resize((size, size), Image.BICUBIC), dtype=np.uint8)
    canvas = np.zeros((side, side, 4), dtype=np.uint8)
    top, left = (int(v) for v in rng.integers(0, side - size + 1, 2))
    color = rng.integers(0, 60, 3) if rng.random() < 0.8 else rng.integers(0, 256, 3)  # mostly dark pens
    canvas[top:top + size, left:left + size, :3] = color
    canvas[top:top + size, left:left + size, 3] = alpha
    return encode_image(canvas)


FAMILIES: dict[str, Callable[[np.ndarray, np.random.Generator], bytes]] = {
    "clean": clean,
    "gaussian_noise": gaussian_noise,
    "salt_and_pepper": salt_and_pepper,
    "blur": blur,
    "speckle": speckle,
    "paper_photo": paper_photo,
    "canvas_export": canvas_export,
}

# What each family is, for the report.
DESCRIPTIONS = {
    "clean": "MNIST test digit as an 8-bit PNG",
    "gaussian_noise": "additive Gaussian noise, sigma 0.3 of full scale",
    "salt_and_pepper": "10% of pixels set to black or white",
    "blur": "Gaussian blur, sigma 1 px",
    "speckle": "multiplicative noise x(1+n), n ~ N(0, 0.5), plus faint grain",
    "paper_photo": "dark ink on off-white paper, 400x300, 60-220 px digit anywhere, uneven light, JPEG q40-90",
    "canvas_export": "280x280 RGBA, transparent background, mostly dark (20% any colour) pen",
}


def generate(family: str, digits: np.ndarray, seed: int = 0) -> list[bytes]:
    """The family's upload bytes for each (28, 28) uint8 digit, reproducibly."""
    rng = np.random.default_rng(seed)
    return [FAMILIES[family](digit, rng) for digit in digits]
