"""Image file bytes -> (H, W) float32 grayscale in [0, 1], with Pillow: any format it reads, EXIF
rotation applied, transparency composited, bombs refused before decoding. The plain small PNGs
that most clients send take a shorter path (plain_png), to the same pixels; on a GPU worker, plain
JPEGs are decoded a batch at a time by nvJPEG (device_jpeg, decode_jpegs)."""

from __future__ import annotations

import io
import logging
import struct
import warnings
import zlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision.io import ImageReadMode, decode_jpeg

from handler.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from handler.preprocess.kernels import by_shape, from_levels

logger = logging.getLogger(__name__)

# A 12 MP phone photo is 4000x3000; anything larger is refused before it is decoded.
# Pillow's own decompression-bomb guard (Image.MAX_IMAGE_PIXELS) stays on as a second line.
MAX_PIXELS = 4096 * 4096
WORK_SIDE = 160  # large photos are reduced to this before the per-pixel work (a 60 px digit in a
# 400 px photo keeps 24 px, more than the 20 it ends at)


def decode_image(data: bytes, work_side: int = WORK_SIDE) -> Image.Image:
    """Decode any format Pillow reads (first frame of animations), refusing bombs before decoding;
    JPEGs at the least reduced size whose sides stay at or above `work_side`."""
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
        raise UnsupportedMediaType(
            "not_an_image", "the body is not an image Pillow can read (PNG, JPEG, ...)"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise BadRequest("truncated", f"the image header is corrupt: {e}") from None
    width, height = image.size
    if width <= 0 or height <= 0:
        raise BadRequest("zero_size", f"the image is {width}x{height} pixels")
    if width * height > MAX_PIXELS:
        raise PayloadTooLarge("too_many_pixels", f"the image is {width}x{height}: more than {MAX_PIXELS} pixels")
    if image.format == "JPEG":
        # Decode big photos at 1/2..1/8 scale, and colour ones as their luma channel only.
        image.draft("L" if image.mode in ("RGB", "YCbCr") else image.mode, (work_side, work_side))
    try:
        image.load()
    # TypeError: Pillow's TIFF reader on a rational where it expects an integer (found by fuzzing)
    except (OSError, SyntaxError, ValueError, EOFError, TypeError, Image.DecompressionBombError) as e:
        raise BadRequest("truncated", f"the image data is truncated or corrupt: {e}") from None
    return image


def to_grayscale(image: Image.Image, work_side: int = WORK_SIDE) -> np.ndarray:
    """Any mode -> (H, W) float32 in [0, 1]; EXIF rotation applied, transparency composited, the
    longer side reduced to `work_side`."""
    if image.format != "PNG" or "exif" in image.info:  # PNGs rarely carry EXIF; looking costs time
        try:
            image = ImageOps.exif_transpose(image)
        except (OSError, SyntaxError, ValueError, KeyError, TypeError, ZeroDivisionError):
            pass  # a broken EXIF block only loses the rotation, not the image
    if max(image.size) > work_side:
        image = image.copy()
        image.thumbnail((work_side, work_side), Image.BILINEAR)  # antialiased; keeps strokes, saves time
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        pixels = np.asarray(image, dtype=np.float32)
        if not np.isfinite(pixels).all():  # a float image (TIFF "F") can hold NaN or infinity
            raise BadRequest("not_finite", "the image has pixels that are not finite numbers (NaN or infinity)")
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
    return in_unit_range(decode_pixels(data))


def decode_pixels(data: bytes, work_side: int = WORK_SIDE) -> np.ndarray:
    """decode_gray, except that plain PNGs stay (H, W) uint8 levels: a batch's are divided by 255
    together (mnistify), which costs less than one division per small image. `work_side`: the
    longer side images are reduced to (the number reader's is larger, handler/number/)."""
    pixels = plain_png(data, work_side)
    return to_grayscale(decode_image(data, work_side), work_side) if pixels is None else pixels


def in_unit_range(pixels: np.ndarray) -> np.ndarray:
    """decode_pixels' (H, W) image -> float32 in [0, 1]: uint8 levels divided by 255."""
    return pixels.astype(np.float32) / 255 if pixels.dtype == np.uint8 else pixels


@dataclass
class DeviceJpeg:
    """A JPEG left for decoding with its batch on the worker's device (see device_jpeg)."""

    data: bytes


def pixels_or_device_jpeg(data: bytes) -> np.ndarray | DeviceJpeg:
    """decode_pixels, except that a plain JPEG is left for the device: a GPU worker's decoder."""
    return DeviceJpeg(data) if device_jpeg(data) else decode_pixels(data)


_ORIENTATION = 0x0112  # EXIF tag


def device_jpeg(data: bytes) -> bool:
    """Whether nvJPEG may decode these bytes: a baseline 8-bit grey or YCbCr JPEG, complete (it ends
    with EOI), within the pixel cap, not turned by EXIF, whose header Pillow reads. Everything else
    takes Pillow's path, which reads it or says what is wrong with it (the same 4xx as ever); the
    decoders of torchvision's family have crashed the process on broken files (pytorch/vision#3613,
    #6456), so only well-formed ones are handed to one."""
    if not (data.startswith(b"\xff\xd8\xff") and data.endswith(b"\xff\xd9")):
        return False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))  # the header only
            orientation = image.getexif().get(_ORIENTATION, 1)
    except Exception:  # whatever it is, Pillow's path reports it
        return False
    width, height = image.size
    return (
        image.format == "JPEG"
        and image.mode in ("L", "RGB")
        and 0 < width * height <= MAX_PIXELS
        and not image.info.get("progressive")
        and not image.info.get("progression")
        and getattr(image, "bits", 8) == 8
        and orientation == 1
    )


def decode_jpegs(jpegs: list[bytes], device: torch.device | str) -> list[torch.Tensor | None]:
    """JPEGs that device_jpeg let through -> (H, W) float32 grayscale on `device` (their luma, as
    Pillow's path reads them), reduced to WORK_SIDE as that path does; all None should the device's
    decoder refuse the batch (the caller then takes Pillow's path for each)."""
    encoded = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in jpegs]
    try:
        images = decode_jpeg(encoded, mode=ImageReadMode.GRAY, device=device)  # (1, H, W) uint8 each
    except RuntimeError:
        logger.warning("the device's JPEG decoder refused a batch; decoding it with Pillow", exc_info=True)
        return [None] * len(jpegs)
    out: list[torch.Tensor | None] = [None] * len(images)
    for indices in by_shape(images):  # a phone's photos share a size: one call per step for them all
        stack = from_levels(torch.stack([images[i][0] for i in indices]))  # (n, H, W)
        for i, gray in zip(indices, reduced(stack).unbind(0)):
            out[i] = gray
    return out


def reduced(grays: torch.Tensor, side: int = WORK_SIDE) -> torch.Tensor:
    """(N, H, W) -> the same, the longer side at most `side`: antialiased bilinear, rounded to 8
    bits, as Pillow's thumbnail gives it."""
    h, w = grays.shape[1:]
    if max(h, w) <= side:
        return grays
    scale = side / max(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    small = F.interpolate(grays[:, None], size=size, mode="bilinear", align_corners=False, antialias=True)
    return from_levels(torch.round(small[:, 0].clamp(0, 1) * 255))


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_GREY, _RGB = 0, 2  # PNG colour types


def plain_png(data: bytes, max_side: int = WORK_SIDE) -> np.ndarray | None:
    """A small, plain, well-formed PNG decoded to (H, W) uint8 levels, or None for every other
    input: Pillow's path reads those or says what is wrong with them. The rows go straight to
    Pillow's PNG row decoder (`Image.frombytes(..., "zip")`: inflate and undo each row's filter),
    RGB ones through Pillow's own conversion to "L", so the pixels are those of Pillow's path
    (tests/test_preprocess.py) without its per-image Python (opening, plugin lookup, chunk reading):
    about 15 against 40 us on an MNIST PNG, less than torchvision's libpng took.

    Plain: 8-bit grey or RGB, not interlaced, at most `max_side` a side, chunks IHDR, IDAT..., IEND
    and nothing else. Well-formed: every CRC right, the zlib stream complete with its checksum, of
    exactly the rows IHDR declares, each with a valid filter byte; anything else takes the path
    that reports it.
    """
    chunks = _png_chunks(data)  # ending with IEND
    if chunks is None or chunks[0][0] != b"IHDR" or {kind for kind, _ in chunks[1:-1]} != {b"IDAT"}:
        return None
    header, idat = chunks[0][1], b"".join(body for _, body in chunks[1:-1])
    if len(header) != 13:
        return None
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", header)
    if (depth, compression, filtering, interlace) != (8, 0, 0, 0) or colour not in (_GREY, _RGB):
        return None
    if not (0 < width <= max_side and 0 < height <= max_side):
        return None
    row = 1 + width * (3 if colour == _RGB else 1)  # filter byte + samples
    stream = zlib.decompressobj()
    try:
        rows = stream.decompress(idat, row * height + 1)
    except zlib.error:
        return None
    if not stream.eof or stream.unused_data or len(rows) != row * height or max(rows[::row]) > 4:
        return None
    return _inflated_rows(idat, "RGB" if colour == _RGB else "L", width, height)


def _inflated_rows(idat: bytes, mode: str, width: int, height: int) -> np.ndarray | None:
    """IDAT -> (H, W) uint8 levels through Pillow's own row decoder (Image.frombytes' "zip"
    decoder: inflate and undo each row's filter) and "L" conversion; None should the decoder not
    finish cleanly."""
    try:
        image = Image.frombytes(mode, (width, height), idat, "zip", mode)
    except (ValueError, OSError):
        return None
    return np.asarray(image if mode == "L" else image.convert("L"))


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]] | None:
    """(type, payload) of every chunk up to IEND, or None unless the signature, every length and
    CRC are right and IEND ends the data."""
    if not data.startswith(PNG_SIGNATURE):
        return None
    chunks, pos = [], len(PNG_SIGNATURE)
    while pos + 12 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        end = pos + 12 + length
        if end > len(data) or zlib.crc32(data[pos + 4 : end - 4]) != struct.unpack_from(">I", data, end - 4)[0]:
            return None
        chunks.append((kind, data[pos + 8 : end - 4]))
        pos = end
        if kind == b"IEND":
            return chunks if pos == len(data) else None
    return None
