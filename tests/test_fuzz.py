"""Property-based fuzzing of the whole request-decoding and preprocessing path.

The only acceptable outcomes for any request are (28, 28) images in [0, 1] or a typed InputError
(a 4xx): never another exception, a hang, or unbounded memory. CI runs a few thousand inputs
(`HYPOTHESIS_PROFILE=ci`, the default); `make fuzz` runs many more.
"""

from __future__ import annotations

import base64
import json
import struct
import tracemalloc
import zlib

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from handler import preprocess as P
from handler.errors import InputError
from harness.bad_inputs import BAD_BODIES, png_chunk
from harness.samples import sample_digits
from synthetic.families import encode_image as encode
from tests.fuzz_profiles import load_profile
from tests.preprocess_helpers import request_images

load_profile()

# Pillow imports most format plugins on first need; under tracemalloc that one-off import takes
# seconds and would trip the deadline of whichever example meets it first.
Image.init()
MEMORY_BOUND = 300 * 2**20  # bytes Python and numpy may hold while decoding one request
SEED_DIGIT = sample_digits()[0][0]


def check(request: dict, headers: dict | None = None) -> None:
    tracemalloc.start()
    try:
        images, _ = request_images(request, headers)
    except InputError as error:
        assert 400 <= error.status < 500 and error.message and error.reason
        return
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < MEMORY_BOUND, f"{peak / 2**20:.0f} MiB"
    assert images
    for image in images:
        assert image.shape == (28, 28) and image.dtype == np.float32
        assert np.isfinite(image).all() and image.min() >= 0 and image.max() <= 1


FORMATS = {
    "PNG": {},
    "JPEG": {"quality": 80},
    "GIF": {},
    "WEBP": {},
    "BMP": {},
    "TIFF": {},
    "HEIF": {"quality": 50},  # pillow-heif's writer, registered with its reader (handler/preprocess/decode.py)
    "AVIF": {"quality": 50, "speed": 10},
}
CAMERA_FORMATS = ("HEIF", "AVIF", "WEBP")  # containers whose headers are fuzzed on their own


@st.composite
def valid_images(draw, formats: tuple[str, ...] = tuple(FORMATS)) -> bytes:
    """Real encodings of a digit in odd modes and sizes, sometimes animated."""
    mode = draw(st.sampled_from(["L", "1", "RGB", "RGBA", "LA", "P", "PA", "CMYK", "I;16", "I", "F"]))
    fmt = draw(st.sampled_from(sorted(formats)))
    if mode in ("I", "F") and fmt != "TIFF":
        fmt = "TIFF"  # 32-bit modes: Pillow writes them only to TIFF
    side = draw(st.integers(1, 120))
    image = Image.fromarray(SEED_DIGIT).resize((side, draw(st.integers(1, 120))))
    if draw(st.booleans()):
        image = Image.fromarray(255 - np.asarray(image))
    try:
        image = image.convert(mode) if mode != "I;16" else Image.fromarray(np.asarray(image).astype(np.uint16) * 257)
        if fmt == "GIF" and draw(st.booleans()):
            frames = [image.convert("P"), Image.fromarray(255 - SEED_DIGIT).convert("P")]
            return encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
        return encode(image, fmt, **FORMATS[fmt])
    except (OSError, ValueError, KeyError):
        return encode(image.convert("RGB"), "PNG")  # this format cannot hold this mode


@st.composite
def mutated(draw, source, within: int | None = None) -> bytes:
    """`source`'s bytes with 1-8 flips, cuts, insertions or overwrites, in its first `within` bytes
    if given (a container's header)."""
    data = bytearray(draw(source))
    for _ in range(draw(st.integers(1, 8))):
        action = draw(st.sampled_from(["flip", "cut", "insert", "overwrite"]))
        at = draw(st.integers(0, max(0, min(len(data), within or len(data)) - 1)))
        if action == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif action == "cut":
            del data[at : at + draw(st.integers(1, 64))]
        elif action == "insert":
            data[at:at] = draw(st.binary(max_size=32))
        else:
            patch = draw(st.binary(min_size=1, max_size=8))
            data[at : at + len(patch)] = patch
    return bytes(data)


@st.composite
def declared_sizes(draw) -> bytes:
    """Headers declaring huge (or zero) dimensions with little or no pixel data behind them."""
    width = draw(st.one_of(st.integers(0, 70000), st.integers(0, 2**31 - 1)))
    height = draw(st.one_of(st.integers(0, 70000), st.integers(0, 2**31 - 1)))
    kind = draw(st.sampled_from(["png", "gif", "bmp"]))
    if kind == "png":
        ihdr = struct.pack(">II", width, height) + bytes([8, draw(st.sampled_from([0, 2, 3, 4, 6])), 0, 0, 0])
        idat = png_chunk(b"IDAT", zlib.compress(bytes(draw(st.integers(0, 4096)))))
        return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + idat + png_chunk(b"IEND", b"")
    if kind == "gif":
        w, h = width % 65536, height % 65536
        return (
            b"GIF89a"
            + struct.pack("<HH", w, h)
            + b"\x00\x00\x00"
            + b","
            + struct.pack("<HHHH", 0, 0, w, h)
            + b"\x00\x02\x02\x44\x01\x00;"
        )
    w, h = width % 2**31, height % 2**31
    return b"BM" + struct.pack("<IHHI", 54, 0, 0, 54) + struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, 0, 0, 0, 0, 0)


@st.composite
def well_framed_pngs(draw) -> bytes:
    """Small 8-bit grey or RGB PNGs whose framing is right (every CRC, one zlib stream) around
    content that may be wrong: stray filter bytes, rows too short or too long, a flipped byte in
    the compressed stream, odd IHDR fields. They reach the short path's checks (decode.plain_png),
    which decoded through torchvision's libpng once, where a failure mid-image crashed the process."""
    width, height, colour = draw(st.integers(1, 40)), draw(st.integers(1, 40)), draw(st.sampled_from([0, 2]))
    row = 1 + width * (3 if colour == 2 else 1)
    rows = bytearray(draw(st.binary(min_size=row * height, max_size=row * height)))
    for r in range(height):
        rows[r * row] %= 5
    data = bytearray(draw(mutated(st.just(bytes(rows))))) if draw(st.booleans()) else rows
    stream = bytearray(zlib.compress(bytes(data)))
    if draw(st.booleans()):
        stream[draw(st.integers(0, len(stream) - 1))] ^= 1 << draw(st.integers(0, 7))
    header = bytearray(struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0))
    if draw(st.integers(0, 4)) == 0:
        header[draw(st.integers(0, 12))] = draw(st.integers(0, 255))
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", bytes(header))
        + png_chunk(b"IDAT", bytes(stream))
        + png_chunk(b"IEND", b"")
    )


def _iso_and_webp_seeds() -> list[bytes]:
    """A small HEIC, AVIF and WebP (with EXIF, so its header is the extended one, VP8X) of a digit."""
    image = Image.fromarray(255 - SEED_DIGIT).resize((64, 48)).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6
    return [encode(image, fmt, exif=exif.tobytes(), **FORMATS[fmt]) for fmt in CAMERA_FORMATS]


CAMERA_SEEDS = _iso_and_webp_seeds()


@st.composite
def camera_declared_sizes(draw) -> bytes:
    """A real HEIC, AVIF or WebP whose header declares another size: every "ispe" box of the HEIF
    and AVIF (version and flags, then width and height, 32 bits each), the WebP's VP8X canvas
    (width - 1 and height - 1, 24 bits each, little-endian)."""
    data = bytearray(draw(st.sampled_from(CAMERA_SEEDS)))
    width, height = draw(st.integers(0, 2**32 - 1) | st.integers(0, 70000)), draw(st.integers(0, 70000))
    if data.startswith(b"RIFF"):
        at = data.index(b"VP8X") + 12
        data[at : at + 6] = ((width - 1) % 2**24).to_bytes(3, "little") + ((height - 1) % 2**24).to_bytes(3, "little")
        return bytes(data)
    at = data.find(b"ispe")
    while at >= 0:
        data[at + 8 : at + 16] = struct.pack(">II", width % 2**32, height)
        at = data.find(b"ispe", at + 4)
    return bytes(data)


catalogue = st.sampled_from([bad.body for bad in BAD_BODIES])  # the known bad inputs, as seeds

payloads = st.one_of(
    st.binary(max_size=2048),
    valid_images(),
    mutated(valid_images()),
    declared_sizes(),
    well_framed_pngs(),
    catalogue,
    mutated(catalogue),
    mutated(valid_images(CAMERA_FORMATS), within=600),
    camera_declared_sizes(),
)


@given(payloads)
def test_raw_bodies(body):
    check({"body": body})


@given(payloads, st.sampled_from(["raw", "data_url", "json", "json_url", "instance_b64"]))
def test_base64_and_json_wrappings(body, wrapping):
    b64 = base64.b64encode(body).decode()
    request = {
        "raw": {"body": b64.encode()},
        "data_url": {"body": f"data:image/png;base64,{b64}".encode()},
        "json": {"body": {"data": b64}},
        "json_url": {"body": json.dumps({"data": f"data:;base64,{b64}"}).encode()},
        "instance_b64": {"body": {"instances": [{"b64": b64}]}},
    }[wrapping]
    check(request)


@given(st.text(max_size=200).map(str.encode) | st.binary(max_size=200))
def test_bad_base64_and_text(text):
    check({"body": b"data:image/png;base64," + text})
    check({"body": {"data": text.decode("latin-1")}})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-300, 300) | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=60,
)


@given(json_values)
def test_arbitrary_json_documents(document):
    check({"body": document})
    check({"body": {"instances": document}})
    check({"body": json.dumps(document).encode()[:500]})


REST = {"explain": "False"}  # what TorchServe's REST frontend adds to every request
v2_datatypes = st.sampled_from(["BYTES", "UINT8", "FP32", "INT8", "FP16", "", None])
v2_shapes = st.lists(st.integers(-1, 70), max_size=4) | json_values


@st.composite
def v2_tensors(draw) -> dict:
    """An Open Inference Protocol input tensor: well-formed parts mixed with fuzzed ones."""
    datatype = draw(v2_datatypes)
    shape = draw(v2_shapes)
    if datatype == "BYTES":
        data = draw(st.lists(payloads.map(lambda b: base64.b64encode(b).decode()) | st.text(max_size=8), max_size=3))
    else:
        data = draw(st.lists(st.integers(-2, 300) | st.floats(allow_nan=True), max_size=3 * 28 * 28) | json_values)
    tensor = {"name": draw(st.text(max_size=6)), "datatype": datatype, "shape": shape, "data": data}
    return {k: v for k, v in tensor.items() if draw(st.booleans()) or k in ("datatype", "data")}


@given(st.lists(v2_tensors(), min_size=0, max_size=2), json_values, st.booleans())
def test_open_inference_requests(inputs, outputs, ask_outputs):
    document = {"id": "fuzz", "inputs": inputs, **({"outputs": outputs} if ask_outputs else {})}
    check({"body": document}, REST)
    check({"body": document}, {})  # as TorchServe's gRPC frontend sends it


@given(st.binary(max_size=300), st.integers(-5, 400), payloads)
def test_open_inference_binary_extension(header, length, tail):
    """Triton's binary-data extension: a JSON header of the announced length, then raw tensors."""
    tensor = {"name": "image", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": length}}
    document = {"inputs": [tensor]}
    good = json.dumps(document).encode()
    framed = struct.pack("<I", len(tail)) + tail
    check({"body": good + framed}, {**REST, "inference-header-content-length": str(len(good))})
    check({"body": header + framed}, {**REST, "inference-header-content-length": str(length)})


@given(st.integers(1, 40), st.integers(1, 40), st.sampled_from([1.0, 255.0, 1e6]), st.integers(0, 2**32 - 1))
def test_instances_arrays(height, width, scale, seed):
    pixels = np.random.default_rng(seed).random((height, width)) * scale
    check({"body": {"instances": [pixels.tolist()]}})


@given(st.dictionaries(st.text(max_size=12), st.binary(max_size=64) | valid_images(), max_size=3))
def test_multipart_like_requests(fields):
    check(fields)


@given(st.lists(payloads | json_values.map(lambda document: {"instances": document}), min_size=1, max_size=4))
def test_decode_batch(bodies):
    """What production calls: a batch of fuzzed requests, each answered on its own with MNIST-form
    images or a 4xx; a 500 (InternalError) here is a bug of ours that fuzzing found."""
    batch = P.decode_batch([{"body": body} for body in bodies])
    assert len(batch.outcomes) == len(bodies) == len(batch.envelopes)
    used = 0
    for row in batch.outcomes:
        if isinstance(row, slice):
            assert row.start == used and row.stop > row.start
            used = row.stop
        else:
            assert isinstance(row, InputError) and 400 <= row.status < 500, row
    assert used == len(batch.views)
    for views in batch.views:
        assert views, "an image with no view"
        for image in views:
            assert image.shape == (28, 28) and image.dtype == torch.float32
            assert torch.isfinite(image).all() and image.min() >= 0 and image.max() <= 1
