"""The preprocessing path, in-process: every input format and mode."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from handler import preprocess as P
from synthetic.families import FAMILIES, generate
from synthetic.families import encode_image as encode
from synthetic.fonts import fonts_available
from tests.conftest import png_bytes
from tests.preprocess_helpers import is_noisy, primary_view, similar

# ---------------------------------------------------------------- clean MNIST


def test_clean_mnist_passes_through_unchanged(mnist_sample):
    """Same pixels, at most a contrast stretch of a few 1/255 (digits whose brightest pixel is < 255).

    On the full test set 9,987 of 10,000 digits pass like this; the rest (digits under 18 px
    or over 1 px off-centre) are re-fitted as MNIST's own procedure would.
    """
    images, _ = mnist_sample
    diffs = []
    for pixels in images:
        out = primary_view(png_bytes(pixels))
        assert out.shape == (28, 28) and out.dtype == np.float32
        diffs.append(np.abs(out - pixels / 255).max())
    assert sum(d > 0.02 for d in diffs) <= 1


# ---------------------------------------------------------------- formats and modes


@pytest.mark.parametrize(
    "fmt,save",
    [
        ("PNG", {}),
        ("JPEG", {"quality": 95}),
        ("BMP", {}),
        ("GIF", {}),
        ("WEBP", {"lossless": True}),
        ("TIFF", {}),
        ("PPM", {}),
    ],
)
def test_every_pillow_format(digit, reference, fmt, save):
    assert similar(primary_view(encode(Image.fromarray(digit), fmt, **save)), reference) > 0.95


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


def test_other_pngs_take_pillows_path(digit):
    from handler.preprocess.decode import plain_png

    image = Image.fromarray(digit)
    transparent = image.convert("RGB")
    transparent.info["transparency"] = (0, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate
    for data in (
        encode(image.convert("P"), "PNG"),
        encode(image.convert("RGBA"), "PNG"),
        encode(image.convert("LA"), "PNG"),
        encode(Image.fromarray(digit.astype(np.uint16) * 257), "PNG"),
        encode(transparent, "PNG", transparency=(0, 0, 0)),
        encode(image, "PNG", exif=exif),
        encode(image.resize((161, 161)), "PNG"),
        encode(image, "JPEG"),
        encode(image.resize((100, 100)), "PNG")[:200],
    ):
        assert plain_png(data) is None


def test_animated_gif_uses_first_frame(digit, reference):
    frames = [Image.fromarray(digit), Image.fromarray(255 - digit)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert similar(primary_view(data), reference) > 0.95


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
    assert similar(primary_view(data), reference) > threshold


def test_dark_ink_on_light_paper_is_inverted(digit, reference):
    assert similar(primary_view(png_bytes(255 - digit)), reference) > 0.95


def test_rgba_canvas_is_composited_for_dark_and_light_pens(digit, reference):
    for pen in ((0, 0, 0), (255, 255, 255), (200, 30, 30)):
        rgba = np.zeros((28, 28, 4), np.uint8)
        rgba[..., :3] = pen
        rgba[..., 3] = digit
        assert similar(primary_view(png_bytes(rgba)), reference) > 0.95


def test_palette_with_transparency(digit, reference):
    image = Image.fromarray(255 - digit).convert("P")
    image.info["transparency"] = 255  # the white paper is transparent
    assert similar(primary_view(encode(image, "PNG", transparency=255)), reference) > 0.9


def test_exif_orientation_is_applied(digit, reference):
    rotated = Image.fromarray(digit).rotate(90, expand=True)  # stored sideways...
    exif = Image.Exif()
    exif[0x0112] = 6  # ...with "rotate 90 CW to display"
    data = encode(rotated, "JPEG", quality=95, exif=exif)
    assert similar(primary_view(data), reference) > 0.9


def test_large_off_centre_photo_is_cropped_scaled_and_centred(digit, reference):
    paper = np.full((300, 400), 230, np.uint8)
    ink = np.asarray(Image.fromarray(255 - digit).resize((120, 120), Image.BICUBIC))
    paper[20:140, 250:370] = np.minimum(paper[20:140, 250:370], ink)
    out = primary_view(encode(Image.fromarray(paper), "JPEG", quality=70))
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
        out = primary_view(data)
        assert out.shape == (28, 28) and 0 <= out.min() and out.max() <= 1


def test_noise_is_detected_only_on_noisy_inputs(mnist_sample):
    images = mnist_sample[0][:20]
    for pixels in images:
        assert not is_noisy(pixels / 255)
    for data in generate("salt_and_pepper", images, seed=0) + generate("gaussian_noise", images, seed=0):
        assert is_noisy(P.to_grayscale(P.decode_image(data)))
