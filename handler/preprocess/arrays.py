"""Pixels sent as numbers (KServe v1 "instances" arrays, Open Inference Protocol tensors) -> (H, W)
float32 images in [0, 1], checked as image files are; and how many images one request may hold."""

from __future__ import annotations

import numpy as np

from handler.errors import BadRequest, PayloadTooLarge
from handler.preprocess.decode import FULL_DECODE_PIXELS

MAX_INSTANCES = 64  # images in one request ("instances", or the elements of a v2 tensor)


def pixel_image(pixels: np.ndarray, scale: float | None = None) -> np.ndarray:
    """(H, W) numbers -> float32 in [0, 1]. `scale` is the values' full scale (255 for UINT8); None:
    0-1, or 0-255 when any value is over 1, as the v1 arrays have always been read."""
    if pixels.ndim != 2:
        raise BadRequest("bad_json", f"an image must be a 2-D array, got shape {list(pixels.shape)}")
    if 0 in pixels.shape:
        raise BadRequest("zero_size", f"an image has no pixels (shape {list(pixels.shape)})")
    if pixels.size > FULL_DECODE_PIXELS:  # pixels sent as numbers are at full size by nature
        raise PayloadTooLarge("too_many_pixels", f"an image has more than {FULL_DECODE_PIXELS} pixels")
    if not np.isfinite(pixels).all() or pixels.min() < 0 or pixels.max() > 255:
        raise BadRequest("bad_json", "pixel values must be finite numbers in 0-1 or 0-255")
    if scale is None:
        scale = 255.0 if pixels.max() > 1 else 1.0
    return pixels / scale if scale != 1.0 else pixels
