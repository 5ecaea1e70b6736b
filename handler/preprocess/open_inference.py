"""Open Inference Protocol (KServe v2) inference requests -> decoded grayscale images.

One input tensor, whatever its name (the metadata calls it "image"):
- BYTES: one encoded image file per element, any shape; in JSON each element is base64 text (or a
  data URL), in Triton's binary-data extension the file's bytes (a 4-byte little-endian length,
  then the bytes);
- UINT8 (0-255) or FP32 (0-1, or 0-255 when any value is over 1) pixels of shape [N, H, W] or
  [N, 1, H, W], row-major, as JSON numbers or raw little-endian bytes.
Optional: "id" (passed back), "outputs" (which of digit, confidence and probabilities to answer;
on the explain route also view and attributions, handler/explanations.py).

TorchServe's gRPC frontend turns a gRPC ModelInferRequest into this JSON (BYTES base64-encoded,
numbers from the typed contents) and sends no HTTP headers with it, which is how its answer's
form is told apart (handler/answers.py).
"""

from __future__ import annotations

import binascii
import json
import math
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from handler.errors import BadRequest
from handler.preprocess.arrays import MAX_INSTANCES, pixel_image

OUTPUTS = ("digit", "confidence", "probabilities")  # every answer's tensors, in this order
EXPLANATION_OUTPUTS = (*OUTPUTS, "view", "attributions")  # an explanation's: (N, 28, 28) each
DATATYPES = {"BYTES": None, "UINT8": np.dtype("<u1"), "FP32": np.dtype("<f4")}  # pixels' wire dtype
# Triton's binary-data extension: the body is this many bytes of JSON, then the binary tensors.
BINARY_HEADER = "inference-header-content-length"
# TorchServe's REST frontend adds this header to every request it hands a worker: "True" from its
# explanation routes (/explanations/{model}, /v1/models/{model}:explain, /v2/models/{model}/explain),
# "False" from the others. Its gRPC frontends add none.
EXPLAIN_HEADER = "explain"


@dataclass(frozen=True)
class InferRequest:
    """What an answer needs of the request: its id, the outputs asked for, how it came."""

    id: str | None = None
    outputs: tuple[str, ...] = OUTPUTS
    grpc: bool = False
    explain: bool = False  # from an explanation route: the answer is an explanation


def is_binary(headers: Mapping[str, str]) -> bool:
    return BINARY_HEADER in headers


def is_explanation(headers: Mapping[str, str]) -> bool:
    """Whether TorchServe's frontend marked the request as one to an explanation route."""
    return headers.get(EXPLAIN_HEADER) == "True"


def lowercased_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """A request's headers with lowercased names. The frontend's own `explain` header
    (EXPLAIN_HEADER, spelled so) wins over a client's `Explain` in another case, which TorchServe
    passes on beside it: a client cannot turn a prediction into an explanation or back."""
    lowered = {k.lower(): v for k, v in headers.items()}
    if EXPLAIN_HEADER in headers:
        lowered[EXPLAIN_HEADER] = headers[EXPLAIN_HEADER]
    return lowered


def parse_infer_request(document: dict, headers: Mapping[str, str], known: tuple[str, ...] = OUTPUTS) -> InferRequest:
    """The answer's side of a v2 request; read, never refused, before its tensors, so that any error
    of the request is answered in the protocol's form (v2_images checks "outputs"). `headers`
    are lowercased; `known`: the outputs the request may name (the digit model's OUTPUTS, on an
    explanation route EXPLANATION_OUTPUTS)."""
    grpc, explain = EXPLAIN_HEADER not in headers, is_explanation(headers)
    request_id = document.get("id")
    request_id = request_id if isinstance(request_id, str) else ("" if grpc else None)
    try:
        outputs = _requested_outputs(document.get("outputs"), known)
    except BadRequest:
        outputs = known
    return InferRequest(request_id, outputs, grpc, explain)


def split_binary(body: bytes, headers: Mapping[str, str]) -> tuple[dict, bytes]:
    """A binary-data extension body -> (its JSON header, the binary tensors after it)."""
    try:
        length = int(headers[BINARY_HEADER])
    except ValueError:
        raise BadRequest("bad_v2", f"{BINARY_HEADER} is not a number") from None
    if not 0 < length <= len(body):
        raise BadRequest("bad_v2", f"{BINARY_HEADER} {length} is outside the {len(body)}-byte body")
    try:
        document = json.loads(body[:length])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadRequest("bad_v2", f"the inference header is not valid JSON: {e}") from None
    if not isinstance(document, dict):
        raise BadRequest("bad_v2", "the inference header is not a JSON object")
    return document, body[length:]


def v2_images(document: dict, binary: bytes, decode: Callable[[bytes], Any], known: tuple[str, ...] = OUTPUTS) -> list:
    """The request's one input tensor -> its images: decoded files (BYTES) or (H, W) pixels in [0, 1].
    `known`: the outputs the request may name (as parse_infer_request's)."""
    if "outputs" in document:
        _requested_outputs(document["outputs"], known)
    tensor = _the_input(document.get("inputs"))
    data = tensor.get("data")
    if tensor.get("shape") == [1] and tensor.get("datatype") == "BYTES" and "parameters" not in tensor:
        if isinstance(data, list) and len(data) == 1 and isinstance(data[0], str):  # most requests: one file
            return [decode(_base64(data[0]))]
    datatype, shape = tensor.get("datatype"), _shape(tensor.get("shape"))
    if datatype not in DATATYPES:
        raise BadRequest("bad_v2", f"datatype {datatype!r} is not one of {', '.join(DATATYPES)}")
    size = _binary_size(tensor, len(binary))
    if datatype == "BYTES":
        files = _split_files(binary[:size]) if size is not None else _base64_files(tensor)
        _check_count(len(files), shape)
        return [decode(data) for data in files]
    return _pixel_images(tensor, binary[:size] if size is not None else None, DATATYPES[datatype], shape)


def _requested_outputs(requested: Any, known: tuple[str, ...] = OUTPUTS) -> tuple[str, ...]:
    if requested is None:
        return known
    if not isinstance(requested, list):
        requested = [requested]
    names = [o.get("name") if isinstance(o, dict) else None for o in requested]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise BadRequest("bad_v2", f'"outputs" must name some of {", ".join(known)}; got {unknown or "none"}')
    return tuple(n for n in known if n in names)


def _the_input(inputs: Any) -> dict:
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise BadRequest("bad_v2", '"inputs" must be a list of one tensor: {"name", "datatype", "shape", "data"}')
    return inputs[0]


def _shape(shape: Any) -> list[int]:
    if not isinstance(shape, list) or not shape or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise BadRequest("bad_v2", f'"shape" must be a list of non-negative integers, got {shape!r}')
    return shape


def _binary_size(tensor: dict, available: int) -> int | None:
    """Bytes of this tensor in the binary section, None when its data is in the JSON."""
    parameters = tensor.get("parameters")
    size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
    if size is None:
        return None
    if not isinstance(size, int) or not 0 <= size <= available:
        raise BadRequest("bad_v2", f"binary_data_size {size!r} is outside the {available} bytes sent")
    if "data" in tensor:
        raise BadRequest("bad_v2", 'a tensor has both "data" and binary_data_size')
    return size


def _check_count(count: int, shape: list[int]) -> None:
    if count != (elements := math.prod(shape)):
        raise BadRequest("bad_v2", f"shape {shape} holds {elements} elements, the data {count}")
    if not 0 < count <= MAX_INSTANCES:
        raise BadRequest("bad_v2", f"a request holds 1 to {MAX_INSTANCES} images, not {count}")


def _base64_files(tensor: dict) -> list[bytes]:
    data = tensor.get("data")
    if data is None:
        raise BadRequest("bad_v2", 'the input has no "data" (nor binary_data_size)')
    elements = data if isinstance(data, list) else [data]
    if not all(isinstance(e, str) for e in elements):  # nested lists: flattened, row-major
        elements = np.asarray(data, dtype=object).reshape(-1).tolist() if isinstance(data, list) else elements
    if not all(isinstance(e, str) for e in elements):
        raise BadRequest("bad_v2", "BYTES elements in JSON are base64 text, one image file each")
    return [_base64(e) for e in elements]


def _base64(text: str) -> bytes:
    if text.startswith("data:"):
        text = text.partition(",")[2]
    # strict: a stray character is an error, not skipped; whitespace (line breaks) is taken out first
    for attempt in (text, "".join(text.split())):
        try:
            return binascii.a2b_base64(attempt, strict_mode=True)
        except (binascii.Error, ValueError):
            pass
    raise BadRequest("bad_base64", "a BYTES element is not valid base64")


def _split_files(raw: bytes) -> list[bytes]:
    """Triton's binary BYTES: per element a 4-byte little-endian length, then that many bytes."""
    files, at = [], 0
    while at < len(raw):
        if at + 4 > len(raw) or len(files) >= MAX_INSTANCES:
            raise BadRequest("bad_v2", f"the binary BYTES data is not 1 to {MAX_INSTANCES} length-prefixed elements")
        (length,) = struct.unpack_from("<I", raw, at)
        files.append(raw[at + 4 : at + 4 + length])
        if len(files[-1]) != length:
            raise BadRequest("bad_v2", "a binary BYTES element is shorter than its length prefix")
        at += 4 + length
    return files


def _pixel_images(tensor: dict, raw: bytes | None, dtype: np.dtype, shape: list[int]) -> list[np.ndarray]:
    if len(shape) not in (3, 4) or (len(shape) == 4 and shape[1] != 1):
        raise BadRequest("bad_v2", f"pixel tensors are [N, H, W] or [N, 1, H, W], not {shape}")
    count = shape[0]
    if not 0 < count <= MAX_INSTANCES:
        raise BadRequest("bad_v2", f"a request holds 1 to {MAX_INSTANCES} images, not {count}")
    height, width = shape[-2:]
    pixels = _tensor_data(tensor, raw, dtype)
    if pixels.size != count * height * width:
        raise BadRequest("bad_v2", f"shape {shape} holds {count * height * width} values, the data {pixels.size}")
    scale = 255.0 if dtype.kind == "u" else None  # UINT8 is 0-255; FP32 says so by its values
    return [pixel_image(p, scale) for p in pixels.reshape(count, height, width)]


def _tensor_data(tensor: dict, raw: bytes | None, dtype: np.dtype) -> np.ndarray:
    if raw is not None:
        if len(raw) % dtype.itemsize:
            raise BadRequest("bad_v2", f"{len(raw)} bytes are not a whole number of {dtype.name} values")
        return np.frombuffer(raw, dtype=dtype).astype(np.float32)
    data = tensor.get("data")
    if data is None:
        raise BadRequest("bad_v2", 'the input has no "data" (nor binary_data_size)')
    try:
        values = np.asarray(data, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise BadRequest("bad_v2", f"{tensor.get('datatype')} data must be a (nested) list of numbers") from None
    if dtype.kind == "u" and (values != np.round(values)).any():
        raise BadRequest("bad_v2", "UINT8 data must be whole numbers in 0-255")
    return values.astype(np.float32)
