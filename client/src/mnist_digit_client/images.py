"""Request bodies from images: file bytes as they are, a path's contents, pixels as a PNG; and the
media type of an image file's bytes.

numpy and Pillow (the `images` extra) are imported only when pixels are passed.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

# bytes of an image file, the path of one, or pixels (H x W or H x W x 3/4; uint8, or floats in 0-1)
Image = bytes | bytearray | memoryview | str | os.PathLike[str] | Any


def encode_image(image: Image) -> bytes:
    """The file bytes of one image. A path is read synchronously: image files are small (the
    service refuses bodies over 25 MiB), so reading one does not hold an event loop for long."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image)
    if isinstance(image, (str, os.PathLike)):
        return Path(image).read_bytes()
    if hasattr(image, "__array__"):
        return _png(image)
    raise TypeError(f"expected image bytes, a path or a numpy array, not {type(image).__name__}")


# How the image files the service reads begin -> their media type
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF8", "image/gif"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
)
# HEIF and AVIF files: an "ftyp" box at byte 4 naming the file's brand
_BRANDS = {b"heic": "image/heic", b"heix": "image/heic", b"mif1": "image/heif", b"avif": "image/avif"}


def media_type(data: bytes) -> str | None:
    """The media type of an image file from its first bytes (PNG, JPEG, GIF, TIFF, WebP, HEIC,
    HEIF, AVIF), None for anything else."""
    for signature, kind in _SIGNATURES:
        if data.startswith(signature):
            return kind
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return _BRANDS.get(bytes(data[8:12])) if data[4:8] == b"ftyp" else None


def _png(pixels: Any) -> bytes:
    try:
        import numpy as np
        from PIL import Image as PILImage
    except ImportError as error:  # pragma: no cover - depends on the installation
        raise ImportError("pixel arrays need numpy and Pillow: pip install 'mnist-digit-client[images]'") from error

    array = np.asarray(pixels)
    if array.dtype != np.uint8:
        scale = 255.0 if array.size and float(array.max()) <= 1.0 else 1.0
        array = np.clip(np.rint(array.astype(np.float64) * scale), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    PILImage.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()
