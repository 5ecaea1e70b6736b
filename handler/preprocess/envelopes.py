"""Request payloads -> decoded grayscale images: raw bodies, multipart fields, base64 and data URLs,
JSON {"data": ...} and {"instances": [...]} (arrays of pixels or base64 images)."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from typing import Any

import numpy as np

from handler.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from handler.preprocess.decode import MAX_PIXELS, decode_gray

MAX_INSTANCES = 64  # images in one JSON "instances" request
# PNG and JPEG files start with bytes that no JSON, base64 or data URL text can.
_BINARY_IMAGES = (b"\x89PNG", b"\xff\xd8\xff")
_DATA_URL = re.compile(rb"^\s*data:[\w.+/-]*(;[\w=.-]+)*;base64,", re.IGNORECASE)


def request_grays(request: dict, decode: Callable[[bytes], Any] = decode_gray) -> tuple[list, bool]:
    """One TorchServe request -> its decoded (H, W) grayscale images, and whether it was "instances".
    `decode` reads each image file in it (the handler's: decode.decode_pixels, or
    decode.pixels_or_device_jpeg, which leaves JPEGs for the device).

    TorchServe gives each request as {parameter name: value}: "body" for a raw body, the field
    name for multipart uploads; JSON bodies arrive already parsed when sent as application/json.
    """
    payload = _pick_payload(request)
    if isinstance(payload, (bytes, bytearray)) and payload.startswith(_BINARY_IMAGES):  # most requests
        return [decode(bytes(payload))], False
    if isinstance(payload, str):
        payload = payload.encode()
    if isinstance(payload, (bytes, bytearray)) and payload.lstrip()[:1] in (b"{", b"["):
        payload = _parse_json(payload)
    if isinstance(payload, (dict, list)):
        return _json_images(payload, decode)
    if not isinstance(payload, (bytes, bytearray)):  # a JSON scalar, parsed by TorchServe
        raise BadRequest("bad_json", f"a JSON {type(payload).__name__} is not an image")
    return [decode(_maybe_base64(bytes(payload)))], False


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


def _json_images(payload: Any, decode: Callable[[bytes], Any]) -> tuple[list, bool]:
    if isinstance(payload, dict) and "instances" in payload:
        instances = payload["instances"]
        if not isinstance(instances, list) or not 0 < len(instances) <= MAX_INSTANCES:
            raise BadRequest("bad_json", f'"instances" must be a list of 1 to {MAX_INSTANCES} images')
        return [_instance_image(item, decode) for item in instances], True
    if isinstance(payload, dict) and isinstance(payload.get("data"), str):
        return [decode(_decode_base64(payload["data"].encode()))], False
    raise BadRequest("bad_json", 'JSON bodies are {"data": "<base64 image>"} or {"instances": [...]}')


def _instance_image(item: Any, decode: Callable[[bytes], Any]) -> Any:
    """An "instances" entry: a 2-D array of pixel values (0-1 or 0-255) or {"b64": "<image>"}."""
    encoded = item.get("b64", item.get("data")) if isinstance(item, dict) else None
    if isinstance(encoded, str):
        return decode(_decode_base64(encoded.encode()))
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
    return pixels / 255 if pixels.max() > 1 else pixels


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
        text = text[match.end() :]
    try:
        # validate=True rejects stray characters instead of silently skipping them.
        return base64.b64decode(b"".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("bad_base64", "the body is not valid base64") from None
