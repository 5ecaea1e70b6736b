"""Image file bytes -> (H, W) float32 grayscale in [0, 1], with Pillow: any format it reads, HEIF
(HEIC, what iPhones save) through pillow-heif, EXIF rotation applied, transparency composited,
bombs refused before decoding. Large JPEG and HEIF photos are decoded at reduced scale
(reduce_on_load), so a 50 MP photo costs little more than a small one. The plain small PNGs that
most clients send take a shorter path (plain_png), to the same pixels; on a GPU worker, plain
JPEGs are decoded a batch at a time on the device (device_jpeg.py)."""

from __future__ import annotations

import io
import logging
import struct
import warnings
import zlib
from collections.abc import Callable

import numpy as np
import pillow_heif
from PIL import AvifImagePlugin, Image, ImageOps, UnidentifiedImageError

from handler.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from handler.preprocess.isobmff import items_inside

logger = logging.getLogger(__name__)

# The pixels an image file may declare: 50 MP (a 50 MP sensor's 8160 x 6144 fits); more is refused
# from the header, before decoding. Pillow's own decompression-bomb guard (Image.MAX_IMAGE_PIXELS)
# stays on as a second line.
MAX_PIXELS = 8192 * 6144
# What decoding one image at full size may take at its peak, and so the pixels each format may have
# there (formats without a reduced decode, a HEIF without a large enough thumbnail, what a reduced
# decode comes down to): a worker decodes a batch's images one at a time, so that 8 large uploads at
# once stay within the memory goal (docs/preprocessing.md, "1. Decode"; reports/camera.md). Bytes per
# pixel at that peak, measured: Pillow's image (4 for RGB, 8 while an RGBA one is reduced) and the
# decoder's own buffers (libwebp's and libavif's frames, libheif's planes).
FULL_DECODE_BYTES = 128 * 2**20
_BYTES_PER_PIXEL = {"WEBP": 16, "AVIF": 9, "HEIF": 9}
_OTHER_BYTES_PER_PIXEL = 8
# Every other format, pixel arrays and the device's JPEG decoder: 4096 x 4096
FULL_DECODE_PIXELS = FULL_DECODE_BYTES // _OTHER_BYTES_PER_PIXEL
WORK_SIDE = 160  # large photos are reduced to this before the per-pixel work (a 60 px digit in a
# 400 px photo keeps 24 px, more than the 20 it ends at)
# A HEIF is read from its smallest embedded thumbnail whose longer side is at least this, else in
# full: twice WORK_SIDE, so that the reduction to WORK_SIDE still averages the thumbnail's own coding
# noise, as JPEG's reduced decoding leaves 1-2x WORK_SIDE to reduce (a 320 x 240 thumbnail qualifies).
# At another working side (the number reader's), twice that.
HEIF_THUMBNAIL_SIDE = 2 * WORK_SIDE
# ISO base media files (HEIF, AVIF) start with an "ftyp" box naming these brands: one that Pillow
# cannot open is a broken image (400), not something other than an image (415).
_ISO_IMAGE_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif", b"avis"}

# HEIF files open through Image.open from here on. One decoder thread, as torch has one: workers,
# not threads, use the cores (handler/settings.py); depth maps and auxiliary images are never read.
pillow_heif.register_heif_opener(decode_threads=1, depth_images=False, aux_images=False)
AvifImagePlugin.DEFAULT_MAX_THREADS = 1


def decode_image(data: bytes, work_side: int = WORK_SIDE) -> Image.Image:
    """Decode any format Pillow reads (first frame of animations), refusing bombs before decoding;
    large JPEG and HEIF photos at reduced scale (reduce_on_load), down to about `work_side`."""
    if not data:
        raise BadRequest("empty", "the image is empty")
    image = _open(data)
    width, height = image.size
    if width <= 0 or height <= 0:
        raise BadRequest("zero_size", f"the image is {width}x{height} pixels")
    if width * height > MAX_PIXELS:
        raise PayloadTooLarge("too_many_pixels", f"the image is {width}x{height}: more than {MAX_PIXELS} pixels")
    if image.format == "HEIF" and not items_inside(data):  # libheif would decode what is there
        raise BadRequest("truncated", "the HEIF file is truncated: its items' data runs past its end")
    _decoding(lambda: reduce_on_load(image, work_side))  # the thumbnail a HEIF's draft picks is decoded here
    if image.width * image.height > (limit := full_decode_pixels(image.format)):
        thumbnail = _heif_thumbnail_side(work_side)
        raise PayloadTooLarge(
            "too_many_pixels",
            f"the {image.format} image is {width}x{height}: more than the {limit} pixels its format may have "
            f"decoded at full size (every format but JPEG, and HEIF without a thumbnail of {thumbnail} px)",
        )
    _decoding(image.load)
    return image


def full_decode_pixels(image_format: str | None) -> int:
    """The pixels an image of this format (Pillow's Image.format) may have when decoded at full size."""
    return FULL_DECODE_BYTES // _BYTES_PER_PIXEL.get(image_format or "", _OTHER_BYTES_PER_PIXEL)


def _decoding(step: Callable[[], object]) -> None:
    """A step that decodes the client's bytes: any failure of it is theirs (400)."""
    try:
        step()
    # TypeError: Pillow's TIFF reader on a rational where it expects an integer (found by fuzzing);
    # RuntimeError: Pillow's AVIF decoder on a broken frame
    except (OSError, SyntaxError, ValueError, EOFError, TypeError, RuntimeError, Image.DecompressionBombError) as e:
        raise BadRequest("truncated", f"the image data is truncated or corrupt: {e}") from None


def _open(data: bytes) -> Image.Image:
    """Image.open: the header only."""
    try:
        with warnings.catch_warnings():
            # Pillow only warns between 89 M and 179 M pixels; both are far over MAX_PIXELS.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise PayloadTooLarge("too_many_pixels", f"image refused: {e}") from None
    except UnidentifiedImageError:
        if data[:8] == b"\x89PNG\r\n\x1a\n" and (data[16:20] == bytes(4) or data[20:24] == bytes(4)):
            raise BadRequest("zero_size", "the PNG declares a width or height of 0") from None
        if data[4:8] == b"ftyp" and data[8:12] in _ISO_IMAGE_BRANDS:
            raise BadRequest("truncated", "the HEIF/AVIF file is truncated or corrupt") from None
        raise UnsupportedMediaType(
            "not_an_image", "the body is not an image Pillow can read (PNG, JPEG, ...)"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError, RuntimeError) as e:
        raise BadRequest("truncated", f"the image header is corrupt: {e}") from None


def reduce_on_load(image: Image.Image, work_side: int = WORK_SIDE) -> None:
    """Before load: have an opened JPEG or HEIF decode at reduced scale, as far as `work_side`
    allows. JPEG: libjpeg's DCT scaling (1/2 to 1/8) to at least `work_side` a side, colour ones as
    their luma only. HEIF: its smallest embedded thumbnail with a longer side of HEIF_THUMBNAIL_SIDE
    (at WORK_SIDE) or more (pillow-heif's draft; HEVC has no scaled decoding), else the full image."""
    if image.format == "JPEG":
        image.draft("L" if image.mode in ("RGB", "YCbCr") else image.mode, (work_side, work_side))
    elif image.format == "HEIF":
        side = _heif_thumbnail_side(work_side)
        image.draft(None, (side, 1) if image.width >= image.height else (1, side))


def _heif_thumbnail_side(work_side: int) -> int:
    return HEIF_THUMBNAIL_SIDE * work_side // WORK_SIDE


def to_grayscale(image: Image.Image, work_side: int = WORK_SIDE) -> np.ndarray:
    """Any mode -> (H, W) float32 in [0, 1]; EXIF rotation applied, transparency composited, the
    longer side reduced to `work_side`. The image itself is turned and reduced on the way
    (decode_image's, which nothing else holds): a full-size copy of a large one would double what
    it costs."""
    if image.format != "PNG" or "exif" in image.info:  # PNGs rarely carry EXIF; looking costs time
        try:
            ImageOps.exif_transpose(image, in_place=True)
        except (OSError, SyntaxError, ValueError, KeyError, TypeError, ZeroDivisionError):
            pass  # a broken EXIF block only loses the rotation, not the image
    if max(image.size) > work_side:
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
