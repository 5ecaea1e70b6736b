"""Image file bytes -> (H, W) float32 grayscale in [0, 1], with Pillow: any format it reads, EXIF
rotation applied, transparency composited, bombs refused before decoding."""
from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from handler.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

# A 12 MP phone photo is 4000x3000; anything larger is refused before it is decoded.
# Pillow's own decompression-bomb guard (Image.MAX_IMAGE_PIXELS) stays on as a second line.
MAX_PIXELS = 4096 * 4096
WORK_SIDE = 160  # large photos are reduced to this before the per-pixel work (a 60 px digit in a
# 400 px photo keeps 24 px, more than the 20 it ends at)


def decode_image(data: bytes) -> Image.Image:
    """Decode any format Pillow reads (first frame of animations), refusing bombs before decoding."""
    if not data:
        raise BadRequest("empty", "the image is empty")
    try:
        with warnings.catch_warnings():
            # Pillow only warns between 89 M and 179 M pixels; both are far over MAX_PIXELS.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise PayloadTooLarge("too_many_pixels", f"image refused: {e}") from None
    except UnidentifiedImageError:
        if data[:8] == b"\x89PNG\r\n\x1a\n" and (data[16:20] == bytes(4) or data[20:24] == bytes(4)):
            raise BadRequest("zero_size", "the PNG declares a width or height of 0") from None
        raise UnsupportedMediaType("not_an_image", "the body is not an image Pillow can read (PNG, JPEG, ...)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise BadRequest("truncated", f"the image header is corrupt: {e}") from None
    width, height = image.size
    if width <= 0 or height <= 0:
        raise BadRequest("zero_size", f"the image is {width}x{height} pixels")
    if width * height > MAX_PIXELS:
        raise PayloadTooLarge("too_many_pixels", f"the image is {width}x{height}: more than {MAX_PIXELS} pixels")
    if image.format == "JPEG":
        # Decode big photos at 1/2..1/8 scale, and colour ones as their luma channel only.
        image.draft("L" if image.mode in ("RGB", "YCbCr") else image.mode, (WORK_SIDE, WORK_SIDE))
    try:
        image.load()
    # TypeError: Pillow's TIFF reader on a rational where it expects an integer (found by fuzzing)
    except (OSError, SyntaxError, ValueError, EOFError, TypeError, Image.DecompressionBombError) as e:
        raise BadRequest("truncated", f"the image data is truncated or corrupt: {e}") from None
    return image


def to_grayscale(image: Image.Image) -> np.ndarray:
    """Any mode -> (H, W) float32 in [0, 1]; EXIF rotation applied, transparency composited."""
    if image.format != "PNG" or "exif" in image.info:  # PNGs rarely carry EXIF; looking costs time
        try:
            image = ImageOps.exif_transpose(image)
        except (OSError, SyntaxError, ValueError, KeyError, TypeError, ZeroDivisionError):
            pass  # a broken EXIF block only loses the rotation, not the image
    if max(image.size) > WORK_SIDE:
        image = image.copy()
        image.thumbnail((WORK_SIDE, WORK_SIDE), Image.BILINEAR)  # antialiased; keeps strokes, saves time
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        pixels = np.asarray(image, dtype=np.float32)
        top = 65535.0 if pixels.max() > 255 else 255.0
        return np.clip(pixels / top, 0, 1)
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        return _composite(np.asarray(image.convert("RGBA"), dtype=np.float32) / 255)
    if image.mode not in ("L", "RGB"):
        image = image.convert("RGB")  # CMYK, YCbCr, P, 1, ...
    if image.mode != "L":
        image = image.convert("L")
    return np.asarray(image, dtype=np.float32) / 255


def _composite(rgba: np.ndarray) -> np.ndarray:
    """(H, W, 4) -> (H, W): onto white for dark strokes (the usual canvas), onto black for light ones."""
    luminance = rgba[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    alpha = rgba[..., 3]
    visible = alpha > 0.5
    light_strokes = visible.any() and luminance[visible].mean() > 0.5
    background = 0.0 if light_strokes else 1.0
    return alpha * luminance + (1 - alpha) * background


def decode_gray(data: bytes) -> np.ndarray:
    """Image file bytes -> (H, W) float32 grayscale in [0, 1]."""
    return to_grayscale(decode_image(data))
