"""Turn what clients send into what the network was trained on: the one preprocessing implementation.

Used by the TorchServe handler, the evaluation and the tests. The path of one image:

    request payload --decode--> PIL image --to_grayscale--> (H, W) float in [0, 1]
    --mnist_like--> (28, 28) light digit on black, longer side 20 px, centre of mass centred
    --normalize--> network input

MNIST itself was made this way (NIST digits scaled into a 20x20 box, anti-aliased, then
centred by centre of mass in 28x28), so real photos and canvas drawings land in the same space.
"""
from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import re
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError

from handler.errors import BadRequest, InputError, NoDigitFound, PayloadTooLarge, UnsupportedMediaType

MEAN, STD = 0.5, 0.5  # the card's normalization, shared with training
SIDE, BOX = 28, 20  # MNIST canvas and the box its digits are scaled into
# A 12 MP phone photo is 4000x3000; anything larger is refused before it is decoded.
# Pillow's own decompression-bomb guard (Image.MAX_IMAGE_PIXELS) stays on as a second line.
MAX_PIXELS = 4096 * 4096
MAX_INSTANCES = 64  # images in one JSON "instances" request
WORK_SIDE = 160  # large photos are reduced to this before the per-pixel work (a 60 px digit in a
# 400 px photo keeps 24 px, more than the 20 it ends at)
# Noise is judged on the background (pixels over 2 px away from any stroke): a share above
# NOISE_SHARE of it off the background level by over NOISE_DELTA. Clean MNIST scores exactly 0.
NOISE_DELTA, NOISE_SHARE = 0.15, 0.02
INK = 0.25  # after contrast stretching, pixels above this set the bounding box (faint grain does not)
# MNIST's mean centre of mass in (row, col) index coordinates: 14.00, 14.01 on the training set.
MNIST_CENTRE = (14.0, 14.0)
_DATA_URL = re.compile(rb"^\s*data:[\w.+/-]*(;[\w=.-]+)*;base64,", re.IGNORECASE)


logger = logging.getLogger(__name__)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] images -> the network's input range (the card's mean 0.5 / std 0.5)."""
    return (x - MEAN) / STD


# ---------------------------------------------------------------- requests -> images

@dataclass
class RequestBatch:
    """A TorchServe batch decoded request by request: one bad request never spoils the others."""

    images: list[np.ndarray] = field(default_factory=list)  # (28, 28) images of all requests, in order
    rows: list[slice | InputError] = field(default_factory=list)  # per request: its images, or why none
    instances: list[bool] = field(default_factory=list)  # per request: answer {"predictions": [...]}

    def add(self, images: list[np.ndarray], instances: bool) -> None:
        self.rows.append(slice(len(self.images), len(self.images) + len(images)))
        self.images.extend(images)
        self.instances.append(instances)

    def reject(self, error: InputError) -> None:
        self.rows.append(error)
        self.instances.append(False)


def decode_batch(requests: list[dict]) -> RequestBatch:
    batch = RequestBatch()
    for request in requests:
        try:
            batch.add(*request_images(request))
        except InputError as error:
            batch.reject(error)
        except Exception as error:  # decoders can raise anything on hostile bytes
            logger.warning("unreadable input", exc_info=True)
            batch.reject(BadRequest("unreadable", f"the input could not be read ({type(error).__name__})"))
    return batch


def request_images(request: dict) -> tuple[list[np.ndarray], bool]:
    """One TorchServe request -> its (28, 28) float images and whether it was an "instances" batch.

    TorchServe gives each request as {parameter name: value}: "body" for a raw body, the field
    name for multipart uploads; JSON bodies arrive already parsed when sent as application/json.
    """
    payload = _pick_payload(request)
    if isinstance(payload, str):
        payload = payload.encode()
    if isinstance(payload, (bytes, bytearray)) and payload.lstrip()[:1] in (b"{", b"["):
        payload = _parse_json(payload)
    if isinstance(payload, (dict, list)):
        return _json_images(payload)
    if not isinstance(payload, (bytes, bytearray)):  # a JSON scalar, parsed by TorchServe
        raise BadRequest("bad_json", f"a JSON {type(payload).__name__} is not an image")
    return [preprocess_bytes(_maybe_base64(bytes(payload)))], False


def _pick_payload(request: dict) -> Any:
    if not isinstance(request, dict) or not request:
        raise BadRequest("empty", "the request has no body")
    for key in ("data", "body", "file", "image"):
        if key in request:
            return request[key]
    return next(iter(request.values()))


def _parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadRequest("bad_json", f"the body is not valid JSON: {e}") from None


def _json_images(payload: Any) -> tuple[list[np.ndarray], bool]:
    if isinstance(payload, dict) and "instances" in payload:
        instances = payload["instances"]
        if not isinstance(instances, list) or not 0 < len(instances) <= MAX_INSTANCES:
            raise BadRequest("bad_json", f'"instances" must be a list of 1 to {MAX_INSTANCES} images')
        return [_instance_image(item) for item in instances], True
    if isinstance(payload, dict) and isinstance(payload.get("data"), str):
        return [preprocess_bytes(_decode_base64(payload["data"].encode()))], False
    raise BadRequest("bad_json", 'JSON bodies are {"data": "<base64 image>"} or {"instances": [...]}')


def _instance_image(item: Any) -> np.ndarray:
    """An "instances" entry: a 2-D array of pixel values (0-1 or 0-255) or {"b64": "<image>"}."""
    encoded = item.get("b64", item.get("data")) if isinstance(item, dict) else None
    if isinstance(encoded, str):
        return preprocess_bytes(_decode_base64(encoded.encode()))
    try:
        pixels = np.asarray(item, dtype=np.float32)
    except (TypeError, ValueError):
        raise BadRequest("bad_json", "an instance must be a 2-D array of numbers") from None
    if pixels.ndim == 3 and 1 in (pixels.shape[0], pixels.shape[-1]):
        pixels = pixels.reshape(pixels.shape[1:] if pixels.shape[0] == 1 else pixels.shape[:-1])
    if pixels.ndim != 2:
        raise BadRequest("bad_json", f"an instance must be a 2-D array, got shape {list(pixels.shape)}")
    if 0 in pixels.shape:
        raise BadRequest("zero_size", f"an instance has no pixels (shape {list(pixels.shape)})")
    if pixels.size > MAX_PIXELS:
        raise PayloadTooLarge("too_many_pixels", f"an instance has more than {MAX_PIXELS} pixels")
    if not np.isfinite(pixels).all() or pixels.min() < 0 or pixels.max() > 255:
        raise BadRequest("bad_json", "pixel values must be finite numbers in 0-1 or 0-255")
    return mnist_like(pixels / 255 if pixels.max() > 1 else pixels)


def _maybe_base64(data: bytes) -> bytes:
    """Raw image bytes pass through; a base64 text or data URL body is decoded."""
    if not data:
        raise BadRequest("empty", "the request body is empty")
    if _DATA_URL.match(data[:256]):
        return _decode_base64(data)
    if _looks_like_base64(data):
        try:
            return _decode_base64(data)
        except BadRequest:
            raise UnsupportedMediaType("not_an_image", "the body is neither an image nor base64 of one") from None
    return data


def _looks_like_base64(data: bytes) -> bool:
    head = data[:64].strip()
    return bool(head) and re.fullmatch(rb"[A-Za-z0-9+/=_\-\r\n]+", head) is not None


def _decode_base64(text: bytes) -> bytes:
    match = _DATA_URL.match(text[:256])
    if match:
        text = text[match.end():]
    try:
        # validate=True rejects stray characters instead of silently skipping them.
        return base64.b64decode(b"".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("bad_base64", "the body is not valid base64") from None


# ---------------------------------------------------------------- bytes -> image

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
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
        raise BadRequest("truncated", f"the image data is truncated or corrupt: {e}") from None
    return image


def to_grayscale(image: Image.Image) -> np.ndarray:
    """Any mode -> (H, W) float32 in [0, 1]; EXIF rotation applied, transparency composited."""
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
    return np.asarray(image.convert("L"), dtype=np.float32) / 255


def _composite(rgba: np.ndarray) -> np.ndarray:
    """(H, W, 4) -> (H, W): onto white for dark strokes (the usual canvas), onto black for light ones."""
    luminance = rgba[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    alpha = rgba[..., 3]
    visible = alpha > 0.5
    light_strokes = visible.any() and luminance[visible].mean() > 0.5
    background = 0.0 if light_strokes else 1.0
    return alpha * luminance + (1 - alpha) * background


# ---------------------------------------------------------------- grayscale -> MNIST

def mnist_like(gray: np.ndarray, denoise_noisy: bool = True) -> np.ndarray:
    """(H, W) grayscale of either polarity -> (28, 28) float32 as MNIST digits look.

    `denoise_noisy=False` skips the noise step; the evaluation uses it to measure what it buys.
    """
    gray = gray.astype(np.float32, copy=False)
    if _border_level(gray) > 0.5:
        gray = 1 - gray  # dark ink on light paper -> light digit on black
    gray = _stretch(gray - background_map(gray))  # uneven light, grey paper, faint pens -> 0..1
    if denoise_noisy and is_noisy(gray):
        gray = _stretch(denoise(gray))
    if _already_mnist(gray):
        return gray
    return _fit_and_centre(gray)


def _stretch(gray: np.ndarray) -> np.ndarray:
    """Black background, brightest stroke at 1."""
    gray = np.clip(gray, 0, None)
    top = float(gray.max())
    if top < 0.1:
        raise NoDigitFound("blank", "no digit found: the image is blank or has no contrast")
    return np.clip(gray / top, 0, 1).astype(np.float32)


def _already_mnist(gray: np.ndarray) -> bool:
    """28x28, digit about 20 px, centre of mass within 1 px of MNIST's: resampling would only blur."""
    if gray.shape != (SIDE, SIDE):
        return False
    rows, cols = np.nonzero(gray > INK)
    size = max(rows.max() - rows.min(), cols.max() - cols.min()) + 1
    cy, cx = _centre_of_mass(gray)
    return 0.9 * BOX <= size <= 1.1 * BOX and abs(cy - MNIST_CENTRE[0]) <= 1 and abs(cx - MNIST_CENTRE[1]) <= 1


def _centre_of_mass(gray: np.ndarray) -> tuple[float, float]:
    mass = gray.sum()
    return (float(gray.sum(1) @ np.arange(gray.shape[0]) / mass),
            float(gray.sum(0) @ np.arange(gray.shape[1]) / mass))


def _border_level(gray: np.ndarray) -> float:
    margin = max(1, min(gray.shape) // 20)
    frame = np.concatenate([gray[:margin].ravel(), gray[-margin:].ravel(),
                            gray[:, :margin].ravel(), gray[:, -margin:].ravel()])
    return _quantile(frame, 0.5)


def _quantile(values: np.ndarray, q: float) -> float:
    """The q-quantile of [0, 1] values to 1/255, from a histogram: O(n) even when most values are
    equal (np.partition degrades badly on a background of exact zeros)."""
    counts = np.bincount((np.clip(values.ravel(), 0, 1) * 255 + 0.5).astype(np.uint8), minlength=256)
    return float(np.searchsorted(np.cumsum(counts), q * values.size) / 255)


def background_map(gray: np.ndarray, cell: int = WORK_SIDE // 4) -> np.ndarray:
    """Smooth background estimate: the 10th percentile of each 40 px cell, bilinearly upsampled.

    Strokes cover far less than 90% of a cell, so the percentile sees paper, not ink. Images under
    80 px (MNIST-sized) get one cell: a flat level, 0 for a clean digit.
    """
    h, w = gray.shape
    ny, nx = max(1, h // cell), max(1, w // cell)
    if ny == nx == 1:
        return np.float32(_quantile(gray, 0.1))
    ch, cw = h // ny, w // nx  # equal cells; the few leftover edge pixels are covered by upsampling
    cells = gray[:ny * ch, :nx * cw].reshape(ny, ch, nx, cw).transpose(0, 2, 1, 3).reshape(ny, nx, -1)
    levels = np.percentile(cells, 10, axis=-1).astype(np.float32)  # (ny, nx)
    return np.asarray(Image.fromarray(levels).resize((w, h), Image.BILINEAR), dtype=np.float32)


def _filtered(gray: np.ndarray, image_filter: ImageFilter.Filter) -> np.ndarray:
    """Apply one of Pillow's C filters to a [0, 1] float image via 8 bits (1/255 steps are plenty)."""
    image = Image.fromarray((np.clip(gray, 0, 1) * 255 + 0.5).astype(np.uint8))
    return np.asarray(image.filter(image_filter), dtype=np.float32) / 255


# Compare-exchange pairs of the 19-step median-of-9 network (Paeth; Devillard's opt_med9).
_MEDIAN9 = ((1, 2), (4, 5), (7, 8), (0, 1), (3, 4), (6, 7), (1, 2), (4, 5), (7, 8), (0, 3),
            (5, 8), (4, 7), (3, 6), (1, 4), (2, 5), (4, 7), (4, 2), (6, 4), (4, 2))


def _median3(gray: np.ndarray) -> np.ndarray:
    """3x3 median with edge replication: 38 vectorized min/max ops, ~7x faster than Pillow's."""
    h, w = gray.shape
    padded = np.pad(gray, 1, mode="edge")
    v = [padded[i:i + h, j:j + w] for i in range(3) for j in range(3)]
    for a, b in _MEDIAN9:
        v[a], v[b] = np.minimum(v[a], v[b]), np.maximum(v[a], v[b])
    return v[4]


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation by a (2r+1)^2 square, separably: rows, then columns."""
    h, w = mask.shape
    padded = np.pad(mask, radius)
    rows = np.zeros((h + 2 * radius, w), dtype=bool)
    for j in range(2 * radius + 1):
        rows |= padded[:, j:j + w]
    out = np.zeros((h, w), dtype=bool)
    for i in range(2 * radius + 1):
        out |= rows[i:i + h]
    return out


def noise_level(gray: np.ndarray) -> float:
    """Share of background pixels (over 2 px from any stroke) that stray from the background level."""
    # The median ignores salt, so isolated noise is not taken for a stroke.
    near_strokes = _dilate(_median3(gray) > 0.3, 2)
    background = gray[~near_strokes]
    if background.size == 0 or background.size < gray.size // 5:
        return 0.0
    return float((np.abs(background - _quantile(background, 0.5)) > NOISE_DELTA).mean())


def is_noisy(gray: np.ndarray) -> bool:
    return noise_level(gray) > NOISE_SHARE


def denoise(gray: np.ndarray) -> np.ndarray:
    """The card's blur and threshold, in a form that keeps strokes.

    A 3x3 median removes impulses, a Gaussian blur (sigma 0.8) averages what is left, and a soft
    threshold at the 65th percentile (background: a digit covers well under a third of its
    frame) takes away the noise floor but keeps the strokes' edges. A hard Otsu threshold cost
    2 points of accuracy on salt-and-pepper digits by cutting faint strokes (README).
    """
    smooth = _filtered(_median3(gray), ImageFilter.GaussianBlur(0.8))
    return np.clip(smooth - _quantile(smooth, 0.65), 0, None)


def _fit_and_centre(gray: np.ndarray) -> np.ndarray:
    """Crop the ink, scale the longer side to 20 px, paste with the centre of mass centred."""
    rows, cols = np.nonzero(gray > INK)
    digit = gray[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    scale = BOX / max(digit.shape)
    # Within 10% of the target size resampling would only blur (clean MNIST is already 20 px).
    if not 0.9 <= scale <= 1.1 or max(digit.shape) > SIDE:
        size = (max(1, round(digit.shape[1] * scale)), max(1, round(digit.shape[0] * scale)))
        digit = np.asarray(Image.fromarray(digit).resize(size, Image.BILINEAR), dtype=np.float32)
        digit = np.clip(digit, 0, 1)
    h, w = digit.shape
    cy, cx = _centre_of_mass(digit)
    top = int(np.clip(round(MNIST_CENTRE[0] - cy), 0, SIDE - h))
    left = int(np.clip(round(MNIST_CENTRE[1] - cx), 0, SIDE - w))
    canvas = np.zeros((SIDE, SIDE), dtype=np.float32)
    canvas[top:top + h, left:left + w] = digit
    return canvas


def to_batch(images: list[np.ndarray]) -> torch.Tensor:
    """(28, 28) images -> (N, 1, 28, 28) normalized network input."""
    return normalize(torch.from_numpy(np.stack(images)).unsqueeze(1))


def preprocess_bytes(data: bytes, denoise_noisy: bool = True) -> np.ndarray:
    """Image file bytes -> (28, 28): the path of a raw-body request, for evaluation and tests."""
    return mnist_like(to_grayscale(decode_image(data)), denoise_noisy)


__all__ = ["InputError", "MEAN", "STD", "RequestBatch", "decode_batch", "normalize", "request_images", "decode_image", "to_grayscale",
           "mnist_like", "preprocess_bytes", "to_batch"]
