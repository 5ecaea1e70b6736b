"""Request payloads -> decoded grayscale images: raw bodies, multipart fields, base64 and data URLs,
JSON {"data": ...} and KServe v1 {"instances": [...]} (arrays of pixels or base64 images), and Open
Inference Protocol (v2) requests (open_inference.py). Each request also says how to answer it."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from handler.errors import BadRequest, UnsupportedMediaType
from handler.preprocess.arrays import MAX_INSTANCES, pixel_image
from handler.preprocess.decode import decode_gray
from handler.preprocess.open_inference import (
    EXPLANATION_OUTPUTS,
    OUTPUTS,
    InferRequest,
    is_binary,
    is_explanation,
    parse_infer_request,
    split_binary,
    v2_images,
)

# PNG and JPEG files start with bytes that no JSON, base64 or data URL text can; so do HEIF and AVIF
# files: the 4-byte length of their first box, "ftyp" (a few dozen bytes), starts with a zero byte.
_BINARY_IMAGES = (b"\x89PNG", b"\xff\xd8\xff")
_DATA_URL = re.compile(rb"^\s*data:[\w.+/-]*(;[\w=.-]+)*;base64,", re.IGNORECASE)


@dataclass(frozen=True)
class Envelope:
    """How a request is answered (handler/answers.py): "torchserve", one prediction (raw bodies,
    {"data": ...}); "v1", {"predictions": [...]}; "v2", the Open Inference Protocol's response,
    with what `v2` says of the request. `explain`: it came to an explanation route, and is
    answered with explanations (handler/explanations.py) in its protocol's form."""

    protocol: str = "torchserve"
    v2: InferRequest | None = None
    explain: bool = False


PLAIN, V1 = Envelope(), Envelope("v1")


def request_grays(
    request: dict, decode: Callable[[bytes], Any] = decode_gray, headers: Mapping[str, str] | None = None
) -> tuple[list, Envelope]:
    """One TorchServe request -> its decoded (H, W) grayscale images, and how to answer it.
    `decode` reads each image file in it (the handler's: decode.decode_pixels, or
    device_jpeg.pixels_or_device_jpeg, which leaves JPEGs for the device); `headers` are the request's,
    lowercased. Raises the request's InputError; open_request and payload_grays are its two steps,
    for a caller that answers errors in the request's protocol."""
    envelope, payload = open_request(request, headers or {})
    return payload_grays(envelope, payload, decode), envelope


def open_request(request: dict, headers: Mapping[str, str], outputs: tuple[str, ...] = OUTPUTS) -> tuple[Envelope, Any]:
    """Which protocol the request speaks, whether it asks for an explanation, and its payload: the
    image bytes (most requests), or its parsed JSON; for v2, (the JSON, the binary-data
    extension's tensors).

    TorchServe gives each request as {parameter name: value}: "body" for a raw body, the field
    name for multipart uploads; JSON bodies arrive already parsed when sent as application/json.
    `outputs`: the v2 output names of the model's predictions.
    """
    explain = is_explanation(headers)
    envelope, payload = _protocol_and_payload(request, headers, _known_outputs(outputs, explain))
    if explain:
        envelope = dataclasses.replace(envelope, explain=True)
    return envelope, payload


def _known_outputs(outputs: tuple[str, ...], explain: bool) -> tuple[str, ...]:
    """The v2 outputs a request may name: the model's predictions', or on an explanation route an
    explanation's (only the digit model explains; batch.decode_requests refuses the others')."""
    return EXPLANATION_OUTPUTS if explain else outputs


def _protocol_and_payload(request: dict, headers: Mapping[str, str], outputs: tuple[str, ...]) -> tuple[Envelope, Any]:
    payload = _pick_payload(request)
    if isinstance(payload, (bytes, bytearray)) and _binary_image(payload):  # most requests
        return PLAIN, payload
    if isinstance(payload, (bytes, bytearray)) and is_binary(headers):
        document, binary = split_binary(bytes(payload), headers)
        return Envelope("v2", parse_infer_request(document, headers, outputs)), (document, binary)
    if isinstance(payload, str):
        payload = payload.encode()
    if isinstance(payload, (bytes, bytearray)) and payload.lstrip()[:1] in (b"{", b"["):
        payload = _parse_json(payload)
    if isinstance(payload, dict) and "inputs" in payload:
        return Envelope("v2", parse_infer_request(payload, headers, outputs)), (payload, b"")
    if isinstance(payload, dict) and "instances" in payload:
        return V1, payload
    return PLAIN, payload


def payload_grays(
    envelope: Envelope, payload: Any, decode: Callable[[bytes], Any] = decode_gray, outputs: tuple[str, ...] = OUTPUTS
) -> list:
    """The images of a request that open_request read."""
    if envelope.protocol == "v2":
        return v2_images(*payload, decode, _known_outputs(outputs, envelope.explain))
    if envelope.protocol == "v1":
        return _instances(payload["instances"], decode)
    if isinstance(payload, (bytes, bytearray)) and _binary_image(payload):
        return [decode(bytes(payload))]
    if isinstance(payload, dict) and isinstance(payload.get("data"), str):
        return [decode(_decode_base64(payload["data"].encode()))]
    if isinstance(payload, (dict, list)):
        raise BadRequest(
            "bad_json", 'JSON bodies are {"data": "<base64 image>"}, {"instances": [...]} or {"inputs": [...]} (v2)'
        )
    if not isinstance(payload, (bytes, bytearray)):  # a JSON scalar, parsed by TorchServe
        raise BadRequest("bad_json", f"a JSON {type(payload).__name__} is not an image")
    return [decode(_maybe_base64(bytes(payload)))]


def _binary_image(payload: bytes | bytearray) -> bool:
    """Bytes that are an image file, not text: no copy or search of a large one is needed."""
    return payload.startswith(_BINARY_IMAGES) or (payload[:1] == b"\x00" and payload[4:8] == b"ftyp")


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


def _instances(instances: Any, decode: Callable[[bytes], Any]) -> list:
    if not isinstance(instances, list) or not 0 < len(instances) <= MAX_INSTANCES:
        raise BadRequest("bad_json", f'"instances" must be a list of 1 to {MAX_INSTANCES} images')
    return [_instance_image(item, decode) for item in instances]


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
    return pixel_image(pixels)


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
