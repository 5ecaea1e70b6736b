"""Candidate views (mnistify): noise detection, polarity, grounds, margins, bars, faint and thin strokes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from handler import preprocess as P
from handler.inference import read_views
from handler.preprocess import mnistify
from handler.preprocess.background import NOISE_SHARE, noise_levels, noisy
from handler.preprocess.page import page_filled
from handler.served_model import served_network
from model import DEFAULT_WEIGHTS, load_checkpoint
from synthetic.families import generate
from synthetic.fonts import fonts_available
from tests.conftest import FIXTURES, png_bytes
from tests.preprocess_helpers import is_noisy, noise_level, primary_view, similar, views_of_bytes


def test_noise_levels_on_black_read_the_background_level_without_its_histogram(mnist_sample, monkeypatch):
    """On a black-ground stack (mnistify.on_black) the background's median is read as 0 without
    quantiles where at least half of each image's background is at level 0: the same noise levels
    as the full path, at the edge of the rule too; any image short of it sends the stack the full way."""
    from handler.preprocess import background as bg

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
    monkeypatch.setattr(bg, "quantiles", lambda *a, **k: calls.append(1) or P.kernels.quantiles(*a, **k))
    for stack, shortcut in (
        (digits, True),
        (salted, True),
        (np.stack([half] * 2), True),
        (hazy, False),
        (np.stack([half, under]), False),
        (np.concatenate([digits, hazy[:1]]), False),
    ):
        x = torch.from_numpy(np.ascontiguousarray(stack, dtype=np.float32))
        calls.clear()
        fast = bg.noise_levels(x, on_black=True)
        assert bool(calls) != shortcut
        assert torch.equal(fast, bg.noise_levels(x))
    assert (bg.noise_levels(torch.from_numpy(salted)) > bg.NOISE_SHARE).all()


def test_noise_level_of_an_image_that_is_all_stroke():
    """Found by fuzzing: a tiny image that is all ink has no background to judge noise on."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert noise_level(np.ones((3, 3), np.float32)) == 0.0
        assert noise_level(np.ones((1, 1), np.float32)) == 0.0


# ---------------------------------------------------------------- views (robustness)


def test_clean_mnist_gets_one_reading(mnist_sample):
    for pixels in mnist_sample[0][:20]:
        assert len(views_of_bytes(png_bytes(pixels))) == 1


@pytest.mark.parametrize("ground", [0.3, 0.5, 0.65])
def test_light_digit_on_a_grey_ground_is_not_inverted(digit, reference, ground):
    """The border's median is over 0.5 on a bright grey ground; the ink is still the light side."""
    pixels = (ground + (1 - ground) * digit / 255) * 255
    out = primary_view(png_bytes(pixels.round().astype(np.uint8)))
    assert similar(out, reference) > 0.95


def test_dark_digit_on_a_grey_ground_is_inverted(digit, reference):
    pixels = 0.7 - 0.6 * digit / 255
    assert similar(primary_view(png_bytes((pixels * 255).round().astype(np.uint8))), reference) > 0.95


def test_a_bar_along_the_edge_gets_a_reading_without_it(digit, reference):
    """A scanner edge or ruler in the crop: one view crops the digit alone."""
    pixels = digit.copy()
    pixels[:, :3] = 255  # a 3 px bar down the left edge, apart from the digit
    views = views_of_bytes(png_bytes(pixels))
    assert len(views) >= 2
    assert max(similar(r, reference) for r in views) > 0.9


def test_a_digit_touching_a_bar_along_the_edge_is_also_read_without_the_bar(digit, reference):
    """The bar cannot be cut away with everything it touches (that is the digit too): it goes as
    deep as it is thick, and the digit stays whole."""
    for bar in ((slice(25, None), slice(None)), (slice(25, None), slice(3, 20))):  # whole edge, 60% of it
        pixels = digit.copy()  # ink on rows 5-24: the bar on rows 25-27 touches it
        pixels[bar] = 220
        assert max(similar(view.numpy(), reference) for view in views_of_bytes(png_bytes(pixels))) > 0.99


def _digit_on_a_dark_band(digit: np.ndarray, layout: str) -> np.ndarray:
    """A 60x100 crop of a dark form cell (level 40) with the light page (235) around it, the digit
    light in it: the page on the left half, left and right, or all around."""
    picture = np.full((60, 100), 235, np.float32)
    top, bottom, left, right = {"one side": (0, 60, 50, 100), "two sides": (0, 60, 22, 78)}.get(layout, (8, 52, 25, 75))
    picture[top:bottom, left:right] = 40
    side = min(bottom - top, right - left) - 4
    ink = np.asarray(Image.fromarray(digit).resize((side, side), Image.BILINEAR), np.float32) / 255
    y, x = top + (bottom - top - side) // 2, left + (right - left - side) // 2
    picture[y : y + side, x : x + side] = 40 + 210 * ink
    return picture.round().astype(np.uint8)


@pytest.mark.parametrize("layout", ["one side", "two sides", "all around"])
def test_a_light_digit_on_a_dark_band_between_light_margins_is_read_on_its_band(digit, reference, layout):
    """With the page half the picture its median lies in the page, and the band was read as ink
    (a similarity of 0.37, -0.11, 0.35 without margins.margins_filled); resampled twice, so softer."""
    assert similar(primary_view(png_bytes(_digit_on_a_dark_band(digit, layout))), reference) > 0.75


def test_paper_around_a_dark_digit_is_not_taken_for_margins(mnist_sample):
    """The bounding box of a dark digit on paper is no dark band: paper lies along its sides."""
    images, labels = mnist_sample
    for family in ("paper_photo", "printed", "canvas_export"):
        if family == "printed" and not fonts_available():
            continue
        for data in generate(family, images[:10], seed=1, labels=labels[:10]):
            x = mnistify._stack([P.decode_gray(data)], "cpu")
            assert torch.equal(mnistify.ground_and_ink(x)[0], x), family


def test_fog_is_not_taken_for_noise(mnist_sample):
    """What the ground's opening leaves of a fog strays from the background level as noise does,
    but smoothly: the denoise step (which blurs such digits into blobs) is kept for grain."""

    def cleaned(family: str) -> tuple[torch.Tensor, torch.Tensor]:
        x = mnistify._stack([P.decode_gray(data) for data in generate(family, mnist_sample[0][:40], seed=1)], "cpu")
        x, dark, _ = mnistify.ground_and_ink(x)
        y, blank, _ = mnistify.cleaned(torch.where(dark[:, None, None], 1 - x, x), denoise_noisy=False)
        return y, ~blank

    fog, legible = cleaned("haze_strong")
    assert int(((noise_levels(fog) > NOISE_SHARE) & legible).sum()) > 5  # the level alone flags some
    assert len(noisy(fog, among=legible)) == 0
    for family in ("gaussian_noise", "salt_and_pepper"):
        grain, legible = cleaned(family)
        assert len(noisy(grain, among=legible)) == int(legible.sum())


def test_a_faint_digit_is_read_not_refused(digit, reference):
    """A digit 20 levels above a grey ground (faded pencil) is legible: no 422."""
    pixels = 120 + (20 * (digit / 255)).round()
    assert similar(primary_view(png_bytes(pixels.astype(np.uint8))), reference) > 0.9


def test_a_noisy_image_is_also_read_unfiltered(mnist_sample):
    """Thin strokes (outlines) can look like noise to the detector; the median filter would erase them."""
    data = generate("salt_and_pepper", mnist_sample[0][:1], seed=0)[0]
    assert is_noisy(P.decode_gray(data)) and len(views_of_bytes(data)) >= 2


def test_a_thin_stroke_on_paper_is_read_not_refused():
    """A "1" of a few hundred dark pixels on a 400x300 page: too little ink for the polarity
    quantiles to see it, so both polarities are read, and the dark one finds the digit."""
    page = np.full((300, 400), 205, np.uint8)
    page[120:180, 200:203] = 90
    assert len(views_of_bytes(png_bytes(page))) >= 1


def test_a_bold_digit_cropped_tight_is_no_band_between_margins():
    """A printed "1" in a bold font, cropped tight (26 x 61 px): its stem runs from top to bottom
    with paper on both sides, the layout of a dark band between light margins. Filled as one, it
    leaves nothing; the digit is read as written instead of refused as blank."""
    views = views_of_bytes((FIXTURES / "bold_one.png").read_bytes())
    reading = read_views(served_network(load_checkpoint(DEFAULT_WEIGHTS)), [views])
    assert reading.probabilities.argmax(1).tolist() == [1]


def test_the_table_around_a_sheet_is_filled_with_the_papers_level_and_a_dark_band_is_not():
    """page.page_filled: a sheet (0.9) with a dark mark on it, on a table (0.2) along two sides: the
    table comes out at the paper's level and the mark as it was. A light digit on a dark band
    between light margins (the band is its ground, margins.py), a gradient of light and a bold
    digit cropped tight (its strokes along the border) are no sheet on a table."""
    sheet = np.full((120, 160), 0.2, np.float32)
    sheet[20:, 30:] = 0.9
    sheet[60:64, 80:110] = 0.1  # a stroke on the paper
    filled, which = page_filled(torch.from_numpy(sheet)[None])
    assert which.tolist() == [0]
    assert float(filled[0, :20].min()) > 0.85 and float(filled[0, :, :30].min()) > 0.85
    assert torch.equal(filled[0, 60:64, 80:110], torch.from_numpy(sheet[60:64, 80:110]))
    band = np.full((120, 160), 0.9, np.float32)
    band[:, 40:120] = 0.2
    band[40:80, 70:74] = band[40:44, 60:90] = band[76:80, 60:90] = 0.9  # a light digit on the band
    gradient = np.tile(np.linspace(0.2, 0.9, 160, dtype=np.float32), (120, 1))
    gradient[60:64, 80:110] = 0.05
    bold = np.full((100, 70), 0.95, np.float32)  # a bold "C" cropped tight: no ink on the paper beside it
    bold[:14] = bold[-14:] = bold[:, :14] = 0.05
    for picture in (band, gradient, bold):
        assert len(page_filled(torch.from_numpy(picture)[None])[1]) == 0
