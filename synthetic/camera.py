"""Phone photos of a handwritten digit on paper, as a phone saves them: tens of megapixels, a JPEG
at quality 90 or a HEIC (HEVC in a grid of 512 px tiles, with a 320 px thumbnail), the pixels
stored as the sensor lay (landscape) and EXIF orientation 6 to show them upright. For the camera
benchmark (benchmarks/camera.py) and the tests; generated when needed, never stored.
"""

from __future__ import annotations

import io

import numpy as np
import pillow_heif
from PIL import Image

ORIENTATION = 6  # EXIF: shown turned 90 degrees clockwise, as a phone held upright records it
_ORIENTATION_TAG = 0x0112
_BAND = 512  # rows made at a time: the float work of a 48 MP photo stays near 12 MB an array
_NOISE = 3.0  # sensor noise, standard deviation in levels of 255
HEIC_TILE = 512  # the HEIC's grid tiles, as phones write them
HEIC_THUMBNAIL = 320  # and its thumbnail's longer side


def paper_photo(digit: np.ndarray, width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """A (28, 28) uint8 MNIST digit (light on black) -> a width x height RGB photo: the digit drawn a
    third to a half of the shorter side tall in dark ink on off-white paper, anywhere, under uneven
    light (a gradient and a vignette), with sensor noise."""
    size = int(min(width, height) * rng.uniform(0.33, 0.5))
    ink = np.asarray(Image.fromarray(digit).resize((size, size), Image.BICUBIC), dtype=np.float32) / 255
    top, left = int(rng.integers(0, height - size)), int(rng.integers(0, width - size))
    paper, ink_level = rng.uniform(0.78, 0.92) * 255, rng.uniform(0.08, 0.25) * 255
    slope_x, slope_y, vignette = rng.uniform(-0.15, 0.15), rng.uniform(-0.15, 0.15), rng.uniform(0.1, 0.25)
    x = np.linspace(-1, 1, width, dtype=np.float32)
    y = np.linspace(-1, 1, height, dtype=np.float32)
    gray = np.empty((height, width), np.uint8)
    for start in range(0, height, _BAND):
        stop = min(start + _BAND, height)
        level = np.full((stop - start, width), paper, np.float32)
        r0, r1 = max(start, top), min(stop, top + size)
        if r0 < r1:
            level[r0 - start : r1 - start, left : left + size] -= (paper - ink_level) * ink[r0 - top : r1 - top]
        level *= (
            1
            + slope_x * x
            - vignette * x * x / 2
            + (slope_y * y[start:stop] - vignette * y[start:stop] ** 2 / 2)[:, None]
        )
        level += rng.standard_normal(level.shape, dtype=np.float32) * _NOISE
        np.clip(level, 0, 255, out=level)
        gray[start:stop] = level
    tint = rng.uniform(0.9, 1.0, 3)  # warm or cool paper: each channel a scaled copy of the grey
    image = Image.fromarray(gray)
    return Image.merge("RGB", [image.point([round(v * t) for v in range(256)]) for t in tint])


def sensor_photo(digit: np.ndarray, width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """paper_photo as the sensor of a phone held upright records a (width x height) portrait shot:
    height x width, landscape, the digit turned a quarter anticlockwise; EXIF ORIENTATION turns it
    upright."""
    return paper_photo(np.rot90(digit), height, width, rng)


def orientation_exif() -> bytes:
    """An EXIF block holding ORIENTATION, as a phone writes it into every photo."""
    exif = Image.Exif()
    exif[_ORIENTATION_TAG] = ORIENTATION
    return exif.tobytes()


def phone_jpeg(photo: Image.Image, quality: int = 90) -> bytes:
    """A sensor_photo -> a JPEG with EXIF orientation, as a phone's camera saves it."""
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=quality, exif=orientation_exif())
    return buffer.getvalue()


def phone_heic(photo: Image.Image, quality: int = 80, thumbnails: tuple[int, ...] = (HEIC_THUMBNAIL,)) -> bytes:
    """A sensor_photo -> a HEIC with EXIF orientation (which pillow-heif also writes as the HEIF
    rotation that libheif applies), HEVC in a grid of tiles, and thumbnails of these longer sides, as
    phones save them; x265's fastest preset, which changes the file's size, not its structure."""
    buffer = io.BytesIO()
    pillow_heif.from_pillow(photo).save(
        buffer,
        quality=quality,
        exif=orientation_exif(),
        tile_size=HEIC_TILE,
        thumbnails=list(thumbnails),
        enc_params={"preset": "ultrafast"},
    )
    return buffer.getvalue()
