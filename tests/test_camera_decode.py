"""Photos as phones save them, in-process: HEIC, AVIF and WebP, EXIF orientation applied exactly
once, a 50 MP JPEG decoded at an eighth of its size, HEIF read from its thumbnail, the pixel limits
and broken files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from handler import preprocess as P
from handler.errors import BadRequest, PayloadTooLarge
from handler.preprocess.decode import FULL_DECODE_PIXELS, HEIF_THUMBNAIL_SIDE, MAX_PIXELS, WORK_SIDE, full_decode_pixels
from harness.bad_inputs import jpeg_header, png_header
from synthetic.camera import orientation_exif, paper_photo, phone_heic
from synthetic.families import encode_image as encode
from tests.preprocess_helpers import primary_view, similar


def in_format(photo: Image.Image, fmt: str) -> bytes:
    """A sensor photo saved as a phone would in `fmt`, with its EXIF orientation."""
    if fmt == "HEIF":
        return phone_heic(photo)
    save = {"JPEG": {"quality": 90}, "AVIF": {"quality": 70, "speed": 10}, "WEBP": {"quality": 85}}[fmt]
    return encode(photo, fmt, exif=orientation_exif(), **save)


@pytest.fixture(scope="module")
def upright_view(camera_photo) -> np.ndarray:
    """The primary view of camera_photo turned upright and saved as a plain PNG."""
    return primary_view(encode(camera_photo.transpose(Image.Transpose.ROTATE_270)))


@pytest.mark.parametrize("fmt", ["JPEG", "HEIF", "AVIF", "WEBP"])
def test_phone_formats_are_read_upright(camera_photo, camera_heic, upright_view, fmt):
    data = camera_heic if fmt == "HEIF" else in_format(camera_photo, fmt)
    assert P.decode_image(data).format == fmt
    assert P.decode_gray(data).shape == (WORK_SIDE, WORK_SIDE * 3 // 4)  # 1512 x 2016 shown: portrait
    assert similar(primary_view(data), upright_view) > 0.8
    sideways = encode(camera_photo, "PNG")  # the same pixels without the rotation: another picture
    assert similar(primary_view(sideways), upright_view) < 0.5


def test_a_heic_is_turned_by_libheif_and_not_again(camera_heic):
    """libheif applies the HEIF rotation as it decodes, and pillow-heif sets the EXIF orientation to 1
    (keeping the original in info), so exif_transpose has nothing left to do."""
    image = P.decode_image(camera_heic)
    assert image.height > image.width  # already portrait
    assert image.getexif().get(0x0112, 1) == 1 and image.info["original_orientation"] == 6


def test_a_50_mp_jpeg_is_decoded_at_an_eighth_and_read_right(camera_jpeg, camera_label, handler_and_context):
    image = P.decode_image(camera_jpeg)
    assert (image.format, image.size, image.mode) == ("JPEG", (1024, 768), "L")  # 8192 x 6144 stored
    handler, context = handler_and_context
    assert json.loads(handler.handle([{"body": camera_jpeg}], context)[0])["digit"] == camera_label


@pytest.fixture(scope="module")
def small_photo(mnist_sample) -> Image.Image:
    return paper_photo(mnist_sample[0][4], 800, 600, np.random.default_rng(3))


@pytest.mark.parametrize(
    "thumbnails, longer_side",
    [
        ((HEIF_THUMBNAIL_SIDE, 640), HEIF_THUMBNAIL_SIDE),  # the smallest large enough
        ((640,), 640),
        ((256,), 800),  # too small to leave WORK_SIDE its margin: the full image
        ((), 800),
    ],
)
def test_a_heif_is_read_from_its_smallest_thumbnail_that_is_large_enough(small_photo, thumbnails, longer_side):
    data = phone_heic(small_photo, thumbnails=thumbnails)
    assert P.decode_image(data).size == (longer_side * 3 // 4, longer_side)  # turned upright: portrait
    assert P.decode_gray(data).shape == (WORK_SIDE, WORK_SIDE * 3 // 4)


def test_more_than_50_mp_declared_is_refused_from_the_header():
    assert MAX_PIXELS == 8192 * 6144
    for header in (png_header(8193, 6144), jpeg_header(8193, 6144), jpeg_header(6144, 8193)):
        with pytest.raises(PayloadTooLarge):
            P.decode_image(header)
    with pytest.raises(BadRequest) as truncated:  # at the limit: read, and found to hold no pixels
        P.decode_image(jpeg_header(8192, 6144))
    assert truncated.value.reason == "truncated"


def test_formats_decoded_at_full_size_have_their_own_limits():
    assert full_decode_pixels("PNG") == full_decode_pixels("TIFF") == FULL_DECODE_PIXELS == 4096 * 4096
    assert full_decode_pixels("WEBP") < full_decode_pixels("AVIF") == full_decode_pixels("HEIF") < FULL_DECODE_PIXELS
    with pytest.raises(PayloadTooLarge):
        P.decode_image(png_header(4097, 4096))  # under 50 MP, but a PNG is decoded at full size
    side = int(full_decode_pixels("WEBP") ** 0.5) + 1
    webp = encode(Image.new("RGB", (side, side), (200, 200, 200)), "WEBP", quality=50, method=0)
    with pytest.raises(PayloadTooLarge) as refused:
        P.decode_image(webp)
    assert "WEBP" in refused.value.message and refused.value.status == 413


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_a_truncated_or_corrupt_heic_or_avif_is_a_bad_request(small_photo, fmt):
    data = phone_heic(small_photo) if fmt == "HEIF" else encode(small_photo, "AVIF", quality=70, speed=10)
    broken = [data[:cut] for cut in (40, 200, len(data) // 2, len(data) - 10)]
    broken.append(data[:32] + bytes(200) + data[232:])  # the boxes after "ftyp" zeroed
    for body in broken:
        with pytest.raises(BadRequest) as refused:
            P.decode_image(body)
        assert refused.value.status == 400 and refused.value.reason == "truncated", len(body)
