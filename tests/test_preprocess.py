"""The preprocessing path, in-process: every input format, every bad-input kind."""
from __future__ import annotations

import base64
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from handler import preprocess as P
from handler.errors import BadRequest, InputError, NoDigitFound, PayloadTooLarge, UnsupportedMediaType
from harness.bad_inputs import BAD_BODIES, png_header
from synthetic.families import FAMILIES, generate
from synthetic.families import encode_image as encode
from synthetic.fonts import fonts_available
from tests.conftest import png_bytes


@pytest.fixture(scope="module")
def digit(mnist_sample) -> np.ndarray:
    return mnist_sample[0][0]  # (28, 28) uint8, light on black


@pytest.fixture(scope="module")
def reference(digit) -> np.ndarray:
    return P.preprocess_bytes(png_bytes(digit))


def similar(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def one(request: dict) -> np.ndarray:
    images, instances = P.request_images(request)
    assert len(images) == 1 and not instances
    return images[0]


# ---------------------------------------------------------------- clean MNIST

def test_clean_mnist_passes_through_unchanged(mnist_sample):
    """Same pixels, at most a contrast stretch of a few 1/255 (digits whose brightest pixel is < 255).

    On the full test set 9,987 of 10,000 digits pass like this; the rest (digits under 18 px
    or over 1 px off-centre) are re-fitted as MNIST's own procedure would.
    """
    images, _ = mnist_sample
    diffs = []
    for pixels in images:
        out = P.preprocess_bytes(png_bytes(pixels))
        assert out.shape == (28, 28) and out.dtype == np.float32
        diffs.append(np.abs(out - pixels / 255).max())
    assert sum(d > 0.02 for d in diffs) <= 1


# ---------------------------------------------------------------- formats and modes

@pytest.mark.parametrize("fmt,save", [
    ("PNG", {}), ("JPEG", {"quality": 95}), ("BMP", {}), ("GIF", {}), ("WEBP", {"lossless": True}),
    ("TIFF", {}), ("PPM", {}),
])
def test_every_pillow_format(digit, reference, fmt, save):
    assert similar(P.preprocess_bytes(encode(Image.fromarray(digit), fmt, **save)), reference) > 0.95


@pytest.mark.parametrize("mode", ["L", "RGB"])
@pytest.mark.parametrize("size", [(28, 28), (1, 1), (160, 3), (37, 91)])
@pytest.mark.parametrize("save", [{}, {"optimize": True}, {"compress_level": 0}])
def test_plain_png_short_road_gives_pillows_pixels(mode, size, save):
    from handler.preprocess.decode import plain_png

    rng = np.random.default_rng(size[0] * size[1])
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    data = encode(Image.fromarray(pixels).convert(mode), "PNG", **save)
    short, pillow = plain_png(data), P.to_grayscale(P.decode_image(data))
    assert short is not None and short.dtype == np.uint8 and np.array_equal(short / np.float32(255), pillow)
    assert P.decode_gray(data).dtype == pillow.dtype and np.array_equal(P.decode_gray(data), pillow)


def test_other_pngs_take_pillows_road(digit):
    from handler.preprocess.decode import plain_png

    image = Image.fromarray(digit)
    transparent = image.convert("RGB")
    transparent.info["transparency"] = (0, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate
    for data in (encode(image.convert("P"), "PNG"), encode(image.convert("RGBA"), "PNG"),
                 encode(image.convert("LA"), "PNG"), encode(Image.fromarray(digit.astype(np.uint16) * 257), "PNG"),
                 encode(transparent, "PNG", transparency=(0, 0, 0)), encode(image, "PNG", exif=exif),
                 encode(image.resize((161, 161)), "PNG"), encode(image, "JPEG"),
                 encode(image.resize((100, 100)), "PNG")[:200]):
        assert plain_png(data) is None


def test_animated_gif_uses_first_frame(digit, reference):
    frames = [Image.fromarray(digit), Image.fromarray(255 - digit)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert similar(P.preprocess_bytes(data), reference) > 0.95


@pytest.mark.parametrize("mode", ["RGB", "CMYK", "1", "P", "I;16", "I", "F", "LA", "YCbCr"])
def test_every_mode(digit, reference, mode):
    image = Image.fromarray(digit)
    if mode == "I;16":
        image = Image.fromarray(digit.astype(np.uint16) * 257)
        data = encode(image, "PNG")
    elif mode in ("I", "F"):
        data = encode(image.convert(mode), "TIFF")
    elif mode == "CMYK":
        data = encode(image.convert("RGB").convert("CMYK"), "JPEG", quality=95)
    elif mode == "YCbCr":
        data = encode(image.convert("RGB").convert("YCbCr"), "JPEG", quality=95)
    else:
        data = encode(image.convert(mode), "PNG")
    threshold = 0.85 if mode == "1" else 0.95  # 1-bit loses the anti-aliasing
    assert similar(P.preprocess_bytes(data), reference) > threshold


def test_dark_ink_on_light_paper_is_inverted(digit, reference):
    assert similar(P.preprocess_bytes(png_bytes(255 - digit)), reference) > 0.95


def test_rgba_canvas_is_composited_for_dark_and_light_pens(digit, reference):
    for pen in ((0, 0, 0), (255, 255, 255), (200, 30, 30)):
        rgba = np.zeros((28, 28, 4), np.uint8)
        rgba[..., :3] = pen
        rgba[..., 3] = digit
        assert similar(P.preprocess_bytes(png_bytes(rgba)), reference) > 0.95


def test_palette_with_transparency(digit, reference):
    image = Image.fromarray(255 - digit).convert("P")
    image.info["transparency"] = 255  # the white paper is transparent
    assert similar(P.preprocess_bytes(encode(image, "PNG", transparency=255)), reference) > 0.9


def test_exif_orientation_is_applied(digit, reference):
    rotated = Image.fromarray(digit).rotate(90, expand=True)  # stored sideways...
    exif = Image.Exif()
    exif[0x0112] = 6  # ...with "rotate 90 CW to display"
    data = encode(rotated, "JPEG", quality=95, exif=exif)
    assert similar(P.preprocess_bytes(data), reference) > 0.9


def test_large_off_centre_photo_is_cropped_scaled_and_centred(digit, reference):
    paper = np.full((300, 400), 230, np.uint8)
    ink = np.asarray(Image.fromarray(255 - digit).resize((120, 120), Image.BICUBIC))
    paper[20:140, 250:370] = np.minimum(paper[20:140, 250:370], ink)
    out = P.preprocess_bytes(encode(Image.fromarray(paper), "JPEG", quality=70))
    assert similar(out, reference) > 0.7  # resampled twice: same shape, softer strokes
    rows, cols = np.nonzero(out > 0.25)
    assert max(np.ptp(rows), np.ptp(cols)) + 1 in (19, 20, 21)
    cy, cx = (np.array(np.nonzero(out)) * out[out > 0]).sum(1) / out.sum()
    assert abs(cy - 14) < 1.5 and abs(cx - 14) < 1.5


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_generated_families_decode(mnist_sample, family):
    if family == "printed" and not fonts_available():
        pytest.skip("no fonts under /usr/share/fonts (make setup installs them with apt as root)")
    images, labels = mnist_sample
    for data in generate(family, images[:5], seed=1, labels=labels[:5]):
        out = P.preprocess_bytes(data)
        assert out.shape == (28, 28) and 0 <= out.min() and out.max() <= 1


def test_noise_is_detected_only_on_noisy_inputs(mnist_sample):
    images = mnist_sample[0][:20]
    for pixels in images:
        assert not P.is_noisy(pixels / 255)
    for data in generate("salt_and_pepper", images, seed=0) + generate("gaussian_noise", images, seed=0):
        assert P.is_noisy(P.to_grayscale(P.decode_image(data)))


# ---------------------------------------------------------------- request encodings

def test_raw_body_base64_and_data_url(digit, reference):
    data = png_bytes(digit)
    b64 = base64.b64encode(data)
    for request in ({"body": data}, {"body": bytearray(data)}, {"body": b64}, {"data": b64 + b"\n"},
                    {"body": b"data:image/png;base64," + b64}, {"body": b64.decode()}):
        assert np.array_equal(one(request), reference)


def test_multipart_field_names(digit, reference):
    assert np.array_equal(one({"file": png_bytes(digit)}), reference)
    assert np.array_equal(one({"anything": png_bytes(digit)}), reference)


def test_json_data_parsed_or_raw(digit, reference):
    b64 = base64.b64encode(png_bytes(digit)).decode()
    assert np.array_equal(one({"body": {"data": b64}}), reference)  # TorchServe parsed it
    assert np.array_equal(one({"body": json.dumps({"data": b64}).encode()}), reference)
    assert np.array_equal(one({"body": {"data": "data:image/png;base64," + b64}}), reference)


def test_instances_arrays_and_b64(digit, reference):
    b64 = base64.b64encode(png_bytes(digit)).decode()
    payload = {"instances": [digit.tolist(), (digit / 255).tolist(), [digit.tolist()], {"b64": b64}]}
    images, instances = P.request_images({"body": payload})
    assert instances and len(images) == 4
    for image in images:
        assert similar(image, reference) > 0.99


def test_decode_batch_isolates_bad_requests(digit):
    batch = P.decode_batch([{"body": png_bytes(digit)}, {"body": b""}, {"body": {"instances": [digit.tolist()] * 3}}])
    assert len(batch.images) == 4
    assert batch.outcomes[0] == slice(0, 1) and batch.outcomes[2] == slice(1, 4)
    assert isinstance(batch.outcomes[1], BadRequest) and batch.instances == [False, False, True]


def test_a_batch_is_preprocessed_as_each_image_alone(mnist_sample):
    """decode_batch brings same-sized images to MNIST form together, in one stack per size; the
    readings are, image by image, exactly what the image alone gives."""
    images, _ = mnist_sample
    bodies = [png_bytes(p) for p in images[:6]]
    for family in ("gaussian_noise", "salt_and_pepper", "paper_photo", "canvas_export"):
        bodies += generate(family, images[:3], seed=2)
    bodies.insert(3, png_bytes(np.zeros((28, 28), np.uint8)))  # blank, amid same-sized digits
    requests = [{"body": b} for b in bodies]
    requests.append({"body": {"instances": [images[0].tolist(), np.zeros((28, 28)).tolist()]}})
    batch = P.decode_batch(requests)
    assert [isinstance(r, NoDigitFound) for r in batch.outcomes] == [i in (3, len(bodies)) for i in range(len(requests))]
    for body, rows in zip(bodies, batch.outcomes):
        if not isinstance(rows, InputError):
            alone = P.readings_bytes(body)
            assert len(batch.images[rows.start]) == len(alone)
            assert all(np.array_equal(a, b) for a, b in zip(batch.images[rows.start], alone))


def test_light_ink_on_black_skips_polarity_and_background_with_the_same_readings(mnist_sample):
    """Stacks of MNIST-like images (light ink, at least half of each black) skip the polarity and
    background steps (mnistify._on_black); each image reads the same as in a stack that takes them
    (beside a grey-ground image), at the edges of the rule too."""
    from handler.preprocess import mnistify

    digits = [p / np.float32(255) for p in mnist_sample[0][:12]]
    near_black = np.where(digits[0] == 0, np.float32(0.0015), digits[0])  # level 0, not exactly 0

    def lit(count: int, side: int = 28) -> np.ndarray:  # `count` bright pixels (4 of 784: 99.49% black)
        image = np.zeros(side * side, np.float32)
        image[np.linspace(side, side * side - side, count).astype(int)] = 1
        return image.reshape(side, side)

    def black(image: np.ndarray, count: int) -> np.ndarray:  # its `count` darkest pixels black, the rest lit
        flat = image.ravel().copy()
        order = np.argsort(flat, kind="stable")
        flat[order[:count]], flat[order[count:]] = 0, np.maximum(flat[order[count:]], 0.2)
        return flat.reshape(image.shape)

    large = np.pad(digits[2], 36)  # 100 px: a background map, never the shortcut
    noisy = [P.decode_gray(b) for b in generate("gaussian_noise", mnist_sample[0][:2], seed=3)]
    cases = [(d, True) for d in digits] + [
        (near_black, True), (black(digits[1], 392), True), (black(digits[1], 391), False),
        (lit(4), True), (lit(3), False), (lit(0), False), (np.pad(digits[3], 16), True), (large, False),
    ] + [(n, False) for n in noisy]
    for image, shortcut in cases:
        assert mnistify._on_black(torch.from_numpy(image)[None]) == shortcut
        grey = np.full(image.shape, 0.5, np.float32)
        (alone, _), (error, _) = mnistify.mnist_like_many([image, image[::-1].copy()])
        (beside, _), (error2, _) = mnistify.mnist_like_many([image, grey])
        assert (alone is None) == (beside is None) and type(error) is type(error2)
        if alone is not None:
            assert len(alone) == len(beside) and all(torch.equal(a, b) for a, b in zip(alone, beside))


def test_decode_batch_answers_a_fault_of_ours_with_an_internal_error(digit, monkeypatch):
    """Past decoding the input is readable: an exception there is ours (500), not the client's."""
    from handler.errors import InternalError
    from handler.preprocess import mnistify

    def broken(x, *options):
        raise ValueError("injected fault")

    monkeypatch.setattr(mnistify, "_readings_stack", broken)
    batch = P.decode_batch([{"body": png_bytes(digit)}, {"body": b""}])
    assert isinstance(batch.outcomes[0], InternalError) and batch.outcomes[0].body() == {"code": 500, "error": "internal error"}
    assert isinstance(batch.outcomes[1], BadRequest) and batch.images == []


# ---------------------------------------------------------------- bad inputs: one test per kind

def rejected(request: dict) -> InputError:
    with pytest.raises(InputError) as info:
        P.request_images(request)
    assert info.value.body() == {"code": info.value.status, "error": info.value.message}
    return info.value


@pytest.mark.parametrize("request_,kind,status,reason", [
    ({"body": b""}, BadRequest, 400, "empty"),
    ({}, BadRequest, 400, "empty"),
    ({"body": b"\x00\x01binary junk \xff" * 10}, UnsupportedMediaType, 415, "not_an_image"),
    ({"body": b"this is not an image"}, UnsupportedMediaType, 415, "not_an_image"),
    ({"body": png_header(0, 10)}, BadRequest, 400, "zero_size"),
    ({"body": {"instances": [[[]]]}}, BadRequest, 400, "zero_size"),
    ({"body": png_header(5000, 4000)}, PayloadTooLarge, 413, "too_many_pixels"),
    ({"body": png_header(50000, 50000)}, PayloadTooLarge, 413, "too_many_pixels"),
    ({"body": b"data:image/png;base64,@@@@"}, BadRequest, 400, "bad_base64"),
    ({"body": {"data": "not base64!"}}, BadRequest, 400, "bad_base64"),
    ({"body": b'{"data": '}, BadRequest, 400, "bad_json"),
    ({"body": {"image": 3}}, BadRequest, 400, "bad_json"),
    ({"body": {"instances": "nope"}}, BadRequest, 400, "bad_json"),
    ({"body": {"instances": []}}, BadRequest, 400, "bad_json"),
    ({"body": {"instances": [[1, 2, 3]]}}, BadRequest, 400, "bad_json"),
    ({"body": {"instances": [[["a"]]]}}, BadRequest, 400, "bad_json"),
    ({"body": {"instances": [[[1e9, 2]]]}}, BadRequest, 400, "bad_json"),
    ({"body": [1, 2]}, BadRequest, 400, "bad_json"),
    ({"body": 1}, BadRequest, 400, "bad_json"),  # found by fuzzing: a JSON scalar raised TypeError
    ({"body": None}, BadRequest, 400, "bad_json"),
    ({"body": png_header(10000, 9000)}, PayloadTooLarge, 413, "too_many_pixels"),  # fuzzing: Pillow only warned
    ({"body": png_bytes(np.zeros((28, 28), np.uint8))}, NoDigitFound, 422, "blank"),
    ({"body": png_bytes(np.full((40, 40), 255, np.uint8))}, NoDigitFound, 422, "blank"),
])
def test_bad_input_kinds(request_, kind, status, reason):
    error = rejected(request_)
    assert type(error) is kind and error.status == status and error.reason == reason


def test_tiff_with_a_rational_strip_size_is_a_bad_request():
    """Found by fuzzing decode_batch: Pillow raised TypeError loading this TIFF."""
    body = (b"II*\x00\x08\x00\x00\x00\n\x00\x00\x01\x04\x00\x01\x00\x00\x00\x01\x00\x00\x00\x01\x01\x04\x00"
            b"\x01\x00\x00\x00\x01\x00\x00\x00\x02\x01\x03\x00\x01\x00\x00\x00 \x00\x00\x00\x03\x01\x03\x00\x01"
            b"\x00\x00\x00\x01\x00\x00\x00\x06\x01\x03\x00\x01\x00\x00\x00\x01\x00\x00\x00\x11\x01\x04\x00\x01"
            b"\x00\x00\x00\x86\x00\x00\x00\x16\x01\x05\x00\x01\x00\x00\x00\x01\x00\x00\x00\x17\x01\x04\x00\x01"
            b"\x00\x00\x00\x04\x00\x00\x00\x1c\x01\x03\x00\x01\x00\x00\x00\x01\x00\x00\x00S\x01\x03\x00\x01\x00"
            b"\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00 \x00\x00\x00")
    error = rejected({"body": body})
    assert error.status == 400 and error.reason == "truncated"


@pytest.mark.parametrize("bad", BAD_BODIES, ids=lambda bad: bad.reason)
def test_the_bad_input_catalogue(bad):
    error = rejected({"body": bad.body})
    assert (error.status, error.reason) == (bad.status, bad.reason)


def test_truncated_image(digit):
    data = encode(Image.fromarray(digit).resize((200, 200)), "PNG")
    error = rejected({"body": data[: len(data) // 2]})
    assert error.status == 400 and error.reason == "truncated"
    jpeg = encode(Image.fromarray(digit).resize((200, 200)), "JPEG")
    assert rejected({"body": jpeg[:300]}).status == 400


def test_bomb_is_refused_before_decoding():
    import tracemalloc

    tracemalloc.start()
    rejected({"body": png_header(50000, 50000)})
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 5_000_000  # nowhere near the 2.5 GB the pixels would take
    assert Image.MAX_IMAGE_PIXELS is not None  # Pillow's own guard is still on


def test_noise_levels_on_black_read_the_background_level_without_its_histogram(mnist_sample, monkeypatch):
    """On a black-ground stack (mnistify._on_black) the background's median is read as 0 without
    quantiles where at least half of each image's background is at level 0: the same noise levels
    as the full road, at the edge of the rule too; any image short of it sends the stack the full way."""
    from handler.preprocess import mnistify

    rng = np.random.default_rng(5)
    digits = np.stack(mnist_sample[0][:8]) / np.float32(255)  # (8, 28, 28)
    salted = np.where(rng.random(digits.shape) < 0.05, np.float32(1), digits)  # noisy: levels over 2%
    hazy = np.clip(digits + np.float32(0.08), 0, 1)  # background at level 20: the histogram decides
    edge = np.zeros((28, 28), np.float32)  # background: all but the stroke's 2 px surroundings
    edge[:, :3] = 1  # a bar on the left edge
    background = ~(np.arange(28) < 5)[None].repeat(28, 0)  # more than 2 px from the bar (columns 0-2)
    grey = np.flatnonzero(background)
    half = edge.copy()
    half.flat[grey[: len(grey) // 2]] = np.float32(10 / 255)  # exactly half the background at level 0
    under = half.copy()
    under.flat[grey[len(grey) // 2]] = np.float32(10 / 255)  # one pixel short of half
    calls = []
    monkeypatch.setattr(mnistify, "quantiles", lambda *a, **k: calls.append(1) or P.kernels.quantiles(*a, **k))
    for stack, shortcut in ((digits, True), (salted, True), (np.stack([half] * 2), True), (hazy, False),
                            (np.stack([half, under]), False), (np.concatenate([digits, hazy[:1]]), False)):
        x = torch.from_numpy(np.ascontiguousarray(stack, dtype=np.float32))
        calls.clear()
        fast = mnistify._noise_levels(x, on_black=True)
        assert bool(calls) != shortcut
        assert torch.equal(fast, mnistify._noise_levels(x))
    assert (mnistify._noise_levels(torch.from_numpy(salted)) > mnistify.NOISE_SHARE).all()


def test_noise_level_of_an_image_that_is_all_stroke():
    """Found by fuzzing: a tiny image that is all ink has no background to judge noise on."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert P.noise_level(np.ones((3, 3), np.float32)) == 0.0
        assert P.noise_level(np.ones((1, 1), np.float32)) == 0.0


# ---------------------------------------------------------------- readings (robustness)

def test_clean_mnist_gets_one_reading(mnist_sample):
    for pixels in mnist_sample[0][:20]:
        assert len(P.readings_bytes(png_bytes(pixels))) == 1


@pytest.mark.parametrize("ground", [0.3, 0.5, 0.65])
def test_light_digit_on_a_grey_ground_is_not_inverted(digit, reference, ground):
    """The border's median is over 0.5 on a bright grey ground; the ink is still the light side."""
    pixels = (ground + (1 - ground) * digit / 255) * 255
    out = P.preprocess_bytes(png_bytes(pixels.round().astype(np.uint8)))
    assert similar(out, reference) > 0.95


def test_dark_digit_on_a_grey_ground_is_inverted(digit, reference):
    pixels = 0.7 - 0.6 * digit / 255
    assert similar(P.preprocess_bytes(png_bytes((pixels * 255).round().astype(np.uint8))), reference) > 0.95


def test_a_bar_along_the_edge_gets_a_reading_without_it(digit, reference):
    """A scanner edge or ruler in the crop: one reading crops the digit alone."""
    pixels = digit.copy()
    pixels[:, :3] = 255  # a 3 px bar down the left edge, apart from the digit
    readings = P.readings_bytes(png_bytes(pixels))
    assert len(readings) >= 2
    assert max(similar(r, reference) for r in readings) > 0.9


def test_a_faint_digit_is_read_not_refused(digit, reference):
    """A digit 20 levels above a grey ground (faded pencil) is legible: no 422."""
    pixels = 120 + (20 * (digit / 255)).round()
    assert similar(P.preprocess_bytes(png_bytes(pixels.astype(np.uint8))), reference) > 0.9


def test_a_noisy_image_is_also_read_unfiltered(mnist_sample):
    """Thin strokes (outlines) can look like noise to the detector; the median filter would erase them."""
    data = generate("salt_and_pepper", mnist_sample[0][:1], seed=0)[0]
    assert P.is_noisy(P.decode_gray(data)) and len(P.readings_bytes(data)) >= 2


def test_a_thin_stroke_on_paper_is_read_not_refused():
    """A "1" of a few hundred dark pixels on a 400x300 page: too little ink for the polarity
    quantiles to see it, so both polarities are read, and the dark one finds the digit."""
    page = np.full((300, 400), 205, np.uint8)
    page[120:180, 200:203] = 90
    assert len(P.readings_bytes(png_bytes(page))) >= 1


# ---------------------------------------------------------------- the second look

class _Recorder(torch.nn.Module):
    """A stand-in network that records its inputs and answers uniform probabilities."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs = []

    def forward(self, x):
        self.inputs.append(x.clone())
        return torch.zeros(len(x), 10, device=x.device)


def _sure_and_unsure(n: int, unsure: list[int]) -> torch.Tensor:
    p = torch.zeros(n, 10)
    p[:, 3] = 1.0
    p[unsure] = torch.tensor([0.5, 0.4] + [0.0125] * 8)
    return p


def test_sure_answers_get_no_second_look():
    model = _Recorder()
    p = _sure_and_unsure(4, [])
    assert torch.equal(P.second_look(model, torch.rand(4, 1, 28, 28), p), p) and model.inputs == []


def test_unsure_answers_are_averaged_with_the_reading_turned_either_way():
    model = _Recorder()
    images = torch.zeros(3, 1, 28, 28)
    images[:, :, 4:24, 13:15] = 1  # a vertical stroke, symmetric left to right
    p = _sure_and_unsure(3, [1])
    out = P.second_look(model, images, p)
    assert torch.equal(out[[0, 2]], p[[0, 2]])
    assert torch.allclose(out[1], (p[1] + 2 * torch.full((10,), 0.1)) / 3)  # the recorder answers 0.1 each
    (turned,) = model.inputs
    assert turned.shape == (2, 1, 28, 28)
    assert not torch.allclose(turned[0], images[1]) and torch.allclose(turned[0].sum(), images[1].sum(), rtol=0.05)
    assert torch.allclose(turned[0], turned[1].flip(-1), atol=1e-5)  # +10 and -10 degrees mirror each other


def test_second_look_grids_are_the_turns_of_each_image():
    from handler.preprocess.batch import _TURNS, _turn_grids

    n = 3  # turned images are ordered turn by turn: n turned one way, then n the other
    grids = F.affine_grid(_TURNS.repeat_interleave(n, 0), [2 * n, 1, 28, 28], align_corners=False)
    assert torch.equal(_turn_grids(torch.device("cpu")).repeat_interleave(n, 0), grids)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_second_look_runs_on_the_images_device():
    model = _Recorder()
    out = P.second_look(model, torch.rand(2, 1, 28, 28, device="cuda"), _sure_and_unsure(2, [0]).cuda())
    assert out.is_cuda and model.inputs[0].is_cuda


# ---------------------------------------------------------------- JPEGs decoded on the device

def _jpeg(pixels: np.ndarray, **save) -> bytes:
    return encode(Image.fromarray(pixels), "JPEG", quality=90, **save)


def test_only_plain_whole_jpegs_are_left_for_the_device(digit):
    from handler.preprocess.decode import MAX_PIXELS, device_jpeg

    photo = np.repeat(255 - digit[:, :, None], 3, axis=2)
    plain = _jpeg(photo)
    assert device_jpeg(plain) and device_jpeg(_jpeg(255 - digit))
    assert not device_jpeg(_jpeg(photo, progressive=True))
    assert not device_jpeg(encode(Image.fromarray(photo).convert("CMYK"), "JPEG"))
    assert not device_jpeg(plain[:-200])  # truncated: no EOI
    exif = Image.Exif()
    exif[0x0112] = 6  # turned: Pillow's road applies the rotation
    assert not device_jpeg(_jpeg(photo, exif=exif.tobytes()))
    assert not device_jpeg(png_bytes(digit))
    side = int(MAX_PIXELS ** 0.5) + 1  # a header over the pixel cap: Pillow's road refuses it (413)
    big = plain.replace(b"\x00\x1c\x00\x1c", side.to_bytes(2, "big") * 2, 1)
    assert big != plain and not device_jpeg(big)


def test_the_device_jpeg_road_reads_photos_as_pillows_road_does(mnist_sample):
    """torchvision's decoder (nvJPEG on a GPU, libjpeg here) at full size, then reduced: pixels
    within a few levels of Pillow's reduced-size decoding, and nearly the same readings (the
    digits: reports/agreement.md, make agreement)."""
    from handler.preprocess.decode import decode_jpegs

    images, labels = mnist_sample
    photos = generate("paper_photo", images[:24], seed=3, labels=labels[:24])
    assert all(P.decode_image(p).format == "JPEG" for p in photos)
    on_device = decode_jpegs(photos, "cpu")
    for photo, pixels in zip(photos, on_device):
        reference = P.decode_gray(photo)
        assert pixels.shape == reference.shape
        assert np.abs(pixels.numpy() - reference).mean() < 4 / 255
    requests = [{"body": p} for p in photos]
    device_road = P.decode_batch(requests, "cpu", jpeg_on_device=True)
    pillow_road = P.decode_batch(requests, "cpu")
    assert all(isinstance(o, slice) for o in device_road.outcomes)
    same = [similar(a[0].numpy(), b[0].numpy()) for a, b in zip(device_road.images, pillow_road.images)]
    assert min(same) > 0.9, same  # the primary readings the network gets


def test_a_batch_the_device_decoder_refuses_takes_pillows_road(mnist_sample, monkeypatch):
    from handler.preprocess import decode

    def refuse(*args, **kwargs):
        raise RuntimeError("nvjpeg: NVJPEG_STATUS_BAD_JPEG")

    monkeypatch.setattr(decode, "decode_jpeg", refuse)
    images, labels = mnist_sample
    photos = generate("paper_photo", images[:3], seed=3, labels=labels[:3])
    broken = photos[0][:600] + bytes(400) + photos[0][1000:]  # whole header and EOI, damaged scan data
    batch = P.decode_batch([{"body": p} for p in photos + [broken]], "cpu", jpeg_on_device=True)
    assert [isinstance(o, slice) for o in batch.outcomes[:3]] == [True] * 3
    reference = P.decode_batch([{"body": p} for p in photos], "cpu")
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(batch.images, reference.images))
    assert isinstance(batch.outcomes[3], (slice, InputError))  # Pillow reads it or says what is wrong


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_readings_on_cuda_equal_those_on_the_cpu(mnist_sample):
    """Every family through the whole preprocessing on both devices: the same readings, bar
    float rounding (JPEGs here take Pillow's road on both, to compare the preprocessing alone;
    small images too are preprocessed on the GPU here, where the handler would use the CPU)."""
    images, labels = mnist_sample
    for family in FAMILIES:
        if family == "printed" and not fonts_available():
            continue
        requests = [{"body": u} for u in generate(family, images[:32], seed=1, labels=labels[:32])]
        cpu = P.decode_batch(requests, "cpu")
        gpu = P.decode_batch(requests, "cuda", jpeg_on_device=False, gpu_min_pixels=0)
        assert [type(o) for o in cpu.outcomes] == [type(o) for o in gpu.outcomes], family
        for a, b in zip(cpu.images, gpu.images):
            assert len(a) == len(b) and all(y.is_cuda for y in b), family
            assert max((x - y.cpu()).abs().max().item() for x, y in zip(a, b)) < 0.02, family


def test_on_an_accelerator_small_stacks_are_worked_on_on_the_cpu_and_moved_there_in_one_copy(mnist_sample,
                                                                                             monkeypatch):
    """The placement rule without a GPU: "meta" stands in for the accelerator (a stack worked on
    there would fail: it holds no data)."""
    from handler.preprocess import mnistify

    images, _ = mnist_sample
    grays = [d.astype(np.float32) / 255 for d in images[:6]]
    seen, work = [], mnistify._readings_stack
    monkeypatch.setattr(mnistify, "_readings_stack", lambda x, *a: seen.append(x.device.type) or work(x, *a))
    readings, errors = mnistify.mnist_like_many(grays, device="meta")
    assert seen == ["cpu"] and errors == [None] * 6
    assert all(r.device.type == "meta" and r.shape == (28, 28) for image in readings for r in image)
    cpu, _ = mnistify.mnist_like_many(grays)
    assert [len(r) for r in readings] == [len(r) for r in cpu]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_small_images_are_preprocessed_on_the_cpu_and_read_on_the_gpu(mnist_sample, monkeypatch):
    """MNIST-sized uploads are worked on on the CPU (mnistify.GPU_MIN_PIXELS), photos on the GPU;
    every reading ends on the GPU, equal to the CPU's."""
    from handler.preprocess import mnistify

    images, labels = mnist_sample
    requests = [{"body": png_bytes(d)} for d in images[:8]]
    requests += [{"body": p} for p in generate("paper_photo", images[8:12], seed=3, labels=labels[8:12])]
    stacks = []
    work = mnistify._readings_stack
    monkeypatch.setattr(mnistify, "_readings_stack",
                        lambda x, *a: stacks.append((x.shape[1:], x.device.type)) or work(x, *a))
    cpu = P.decode_batch(requests, "cpu")
    stacks.clear()
    gpu = P.decode_batch(requests, "cuda")
    assert all(r.is_cuda for readings in gpu.images for r in readings)
    assert all(torch.equal(a[0], b[0].cpu()) for a, b in zip(cpu.images[:8], gpu.images[:8]))
    assert {device for shape, device in stacks if shape == (28, 28)} == {"cpu"}
    assert {device for shape, device in stacks if shape[0] * shape[1] >= mnistify.GPU_MIN_PIXELS} == {"cuda"}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_jpegs_decoded_by_nvjpeg_read_as_pillows_road_does(mnist_sample):
    images, labels = mnist_sample
    requests = [{"body": p} for p in generate("paper_photo", images[:32], seed=3, labels=labels[:32])]
    gpu, cpu = P.decode_batch(requests, "cuda"), P.decode_batch(requests, "cpu")
    assert all(isinstance(o, slice) for o in gpu.outcomes)
    assert all(r[0].is_cuda for r in gpu.images)
    assert min(similar(a[0].cpu().numpy(), b[0].numpy()) for a, b in zip(gpu.images, cpu.images)) > 0.9


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_damaged_jpegs_on_cuda_answer_each_request_and_leave_the_device_usable(mnist_sample):
    """Whole headers and EOI, damaged scan data: they reach nvJPEG. Each request is answered (its
    digit, or a 4xx from Pillow's road), and the device still works afterwards."""
    images, labels = mnist_sample
    photo = generate("paper_photo", images[:1], seed=3, labels=labels[:1])[0]
    rng = np.random.default_rng(0)
    damaged = []
    for _ in range(40):
        data = bytearray(photo)
        at = rng.integers(700, len(data) - 300, size=8)
        data[at[0]:at[0] + 64] = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
        for i in at[1:]:
            data[i] ^= 0xFF
        damaged.append(bytes(data))
    batch = P.decode_batch([{"body": d} for d in damaged + [photo]], "cuda")
    assert all(isinstance(o, (slice, InputError)) for o in batch.outcomes)
    assert isinstance(batch.outcomes[-1], slice)
    assert torch.ones(2, device="cuda").sum().item() == 2
