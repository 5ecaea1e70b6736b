"""The torch kernels of the preprocessing against numpy's, scipy's and Pillow's reference
implementations, and the same on CUDA as on the CPU where CUDA is present."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image, ImageFilter
from scipy import ndimage

from handler.preprocess.background import percentile as _percentile
from handler.preprocess.framing import _shifted
from handler.preprocess.kernels import (
    LEAST_NOT_BLACK,
    above,
    below,
    black_counts,
    box_counts,
    divide,
    gaussian_blur,
    median3,
    min_filter,
    opening,
    pad_last2,
    quantiles,
    reach_border,
)

SHAPES = [(1, 1, 1), (1, 3, 5), (4, 28, 28), (2, 17, 40)]
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def stacks(shape, seed=0):
    """Random [0, 1] images, images with plateaus of equal values, and all-zero ones."""
    rng = np.random.default_rng(seed)
    yield rng.random(shape, dtype=np.float32)
    yield (rng.integers(0, 4, shape) / 3).astype(np.float32)
    yield np.zeros(shape, np.float32)


def t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x)


@pytest.mark.parametrize("shape", SHAPES)
def test_median3_is_the_median_of_each_3x3_window_with_edges_replicated(shape):
    for x in stacks(shape):
        padded = np.pad(x, ((0, 0), (1, 1), (1, 1)), mode="edge")
        reference = np.median(sliding_window_view(padded, (3, 3), axis=(1, 2)), axis=(-2, -1))
        assert np.array_equal(median3(t(x)).numpy(), reference)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("q", [0.1, 0.5, 0.65, 0.9, 1.0])
def test_quantiles_match_np_quantile_to_1_over_255(shape, q):
    """The kernel picks an order statistic (no interpolation): numpy's "inverted_cdf" method."""
    for x in stacks(shape):
        reference = np.quantile(x.reshape(len(x), -1), q, axis=1, method="inverted_cdf")
        got = quantiles(t(x), q)
        assert got.dtype == torch.float64
        assert np.abs(got.numpy() - reference).max() <= 1 / 255 + 1e-6


@pytest.mark.parametrize("q", [0.1, 0.5, 0.9])
def test_quantiles_of_masked_values(q):
    rng = np.random.default_rng(1)
    x = rng.random((5, 20, 30), dtype=np.float32)
    mask = rng.random(x.shape) < 0.3
    reference = [np.quantile(image[keep], q, method="inverted_cdf") for image, keep in zip(x, mask)]
    assert np.abs(quantiles(t(x), q, t(mask)).numpy() - reference).max() <= 1 / 255 + 1e-6


def test_several_quantiles_from_one_histogram_equal_one_at_a_time():
    for x in stacks((3, 28, 28)):
        together = quantiles(t(x), (0.005, 0.1, 0.5, 0.995))
        assert all(torch.equal(a, quantiles(t(x), q)) for a, q in zip(together, (0.005, 0.1, 0.5, 0.995)))


@pytest.mark.parametrize("q", [0.1, 0.5, 0.37, 1.0])
def test_percentile_interpolates_as_np_percentile(q):
    """Exact on 8-bit images (what decoding gives), within half a level on any others."""
    rng = np.random.default_rng(4)
    eight_bit = (rng.integers(0, 256, (3, 4, 5, 1600)) / 255).astype(np.float32)
    assert np.allclose(_percentile(t(eight_bit), q).numpy(), np.percentile(eight_bit, 100 * q, axis=-1), atol=1e-6)
    x = rng.random((3, 4, 5, 1600), dtype=np.float32)
    assert np.abs(_percentile(t(x), q).numpy() - np.percentile(x, 100 * q, axis=-1)).max() <= 0.5 / 255 + 1e-6


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("radius", [1, 2])
@pytest.mark.parametrize("mode", ["edge", "constant"])
def test_box_counts_are_window_sums(shape, radius, mode):
    mask = np.random.default_rng(2).random(shape) < 0.4
    padded = np.pad(mask.astype(np.int64), ((0, 0), (radius, radius), (radius, radius)), mode=mode)
    side = 2 * radius + 1
    reference = sliding_window_view(padded, (side, side), axis=(1, 2)).sum(axis=(-2, -1))
    assert np.array_equal(box_counts(t(mask), radius, mode).numpy(), reference)


def test_box_counts_of_a_float_mask_are_those_of_the_bool_one():
    mask = np.random.default_rng(2).random((3, 20, 30)) < 0.4
    assert torch.equal(box_counts(t(mask.astype(np.float32)), 2, "edge"), box_counts(t(mask), 2, "edge"))


def _around(thresholds: list[float]) -> torch.Tensor:
    """float32 values at, just under and just over each threshold, and a spread of others."""
    at = torch.tensor(thresholds, dtype=torch.float32)
    spread = torch.from_numpy(np.random.default_rng(4).random(1000, dtype=np.float32))
    return torch.cat(
        [
            at,
            torch.nextafter(at, torch.tensor(-1.0)),
            torch.nextafter(at, torch.tensor(2.0)),
            spread,
            torch.tensor([0.0, -0.0, 1.0, -1.0, 1e-30, 3e38]),
        ]
    )


@pytest.mark.parametrize("threshold", [0.3, 0.15, 0.25, 0.0, LEAST_NOT_BLACK])
def test_above_and_below_are_the_comparisons_as_floats(threshold):
    x = _around([0.3, 0.15, 0.25, LEAST_NOT_BLACK])
    assert torch.equal(above(x, threshold), (x > threshold).float())
    assert torch.equal(below(x, threshold), (x < threshold).float())


def test_black_counts_count_level_zero_as_quantiles_reads_it():
    values = _around([LEAST_NOT_BLACK, 0.5 / 255, 1 / 255]).clamp(0, 1)[:1000].reshape(10, 100)
    mask = torch.from_numpy(np.random.default_rng(5).random((10, 100)) < 0.5)
    level_zero = values * 255 + 0.5 < 1  # quantiles' levels (kernels._codes): the nearest, halves up
    assert black_counts(values).tolist() == level_zero.sum(1).tolist()
    assert black_counts(values, mask.float()).tolist() == (level_zero & mask).sum(1).tolist()
    least = torch.tensor(LEAST_NOT_BLACK)  # float32, as the images are
    assert least * 255 + 0.5 >= 1 > torch.nextafter(least, torch.tensor(0.0)) * 255 + 0.5


@pytest.mark.parametrize("mode", ["edge", "constant"])
def test_pad_last2_is_np_pad(mode):
    x = np.random.default_rng(3).random((3, 7, 9), dtype=np.float32)
    assert np.array_equal(pad_last2(t(x), 2, mode).numpy(), np.pad(x, ((0, 0), (2, 2), (2, 2)), mode=mode))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("radius", [1, 3, 4])  # windows of 3, 7 and 9: every way _runs joins its runs
def test_min_filter_and_opening_match_scipy_with_edges_replicated(shape, radius):
    size = (1, 2 * radius + 1, 2 * radius + 1)
    for x in stacks(shape):
        assert np.array_equal(min_filter(t(x), radius).numpy(), ndimage.minimum_filter(x, size=size, mode="nearest"))
        assert np.array_equal(opening(t(x), radius).numpy(), ndimage.grey_opening(x, size=size, mode="nearest"))


@pytest.mark.parametrize("shape", [(28, 28), (40, 17), (160, 120), (3, 3), (1, 1), (1, 5)])
@pytest.mark.parametrize("sigma", [0.8, 2.5])
def test_gaussian_blur_is_pillows_on_8_bits(shape, sigma):
    rng = np.random.default_rng(5)
    for image in ((rng.random(shape) * 255).astype(np.uint8), (rng.random(shape) < 0.1).astype(np.uint8) * 255):
        reference = np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(sigma)), dtype=np.float32)
        got = gaussian_blur(t(image.astype(np.float32) / 255)[None], sigma)[0].numpy() * 255
        assert np.abs(got - reference).max() <= 1


def test_reach_border_is_the_border_touching_components():
    rng = np.random.default_rng(6)
    masks = rng.random((6, 40, 30)) < np.linspace(0.2, 0.6, 6)[:, None, None]
    masks[0] = False
    masks[1, 5:35, 15] = True  # a long line that touches nothing, and a spiral-free maze above it
    for mask, got in zip(masks, reach_border(t(masks))):
        labels, _ = ndimage.label(mask, structure=np.ones((3, 3), bool))
        touching = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
        assert np.array_equal(got.numpy(), np.isin(labels, touching[touching > 0]))


def test_reach_border_follows_a_snake_longer_than_its_check_interval():
    mask = np.zeros((1, 21, 21), bool)
    mask[0, 0, 1] = True
    for row in range(1, 20, 2):  # a snake from the top edge winding down the image
        mask[0, row, 1:20] = True
        mask[0, row + 1, 19 if row % 4 == 1 else 1] = row + 1 < 20
    assert torch.equal(reach_border(t(mask), check_every=2), t(mask).float())


def test_shifted_moves_each_image_by_its_own_offset_with_zeros_coming_in():
    x = torch.rand(5, 28, 28)
    down, right = torch.tensor([0, 3, 27, 5, 28]), torch.tensor([0, 7, 0, 27, 2])
    out = _shifted(x, down, right)
    for image, moved, d, r in zip(x, out, down.tolist(), right.tolist()):
        expected = torch.zeros(28, 28)
        expected[d:, r:] = image[: 28 - d, : 28 - r]
        assert torch.equal(moved, expected)


def test_divide_is_true_division():
    x = torch.arange(256, dtype=torch.float64)
    assert divide(x, 255).tolist() == [i / 255 for i in range(256)]
    assert divide(x.float(), 255).dtype == torch.float32


@pytest.mark.gpu
@needs_cuda
def test_kernels_give_the_same_on_cuda_as_on_the_cpu():
    x = next(stacks((4, 40, 30)))
    cpu, gpu = t(x), t(x).cuda()
    assert torch.equal(quantiles(cpu, 0.5), quantiles(gpu, 0.5).cpu())
    assert torch.equal(median3(cpu), median3(gpu).cpu())
    assert torch.equal(box_counts(cpu > 0.5, 2, "edge"), box_counts(gpu > 0.5, 2, "edge").cpu())
    assert torch.equal(opening(cpu, 4), opening(gpu, 4).cpu())
    assert (gaussian_blur(cpu, 0.8) - gaussian_blur(gpu, 0.8).cpu()).abs().max() <= 1 / 255
    assert torch.equal(reach_border(cpu > 0.6), reach_border(gpu > 0.6).cpu())
    assert torch.equal(above(cpu, 0.3), above(gpu, 0.3).cpu())
    assert torch.equal(black_counts(cpu), black_counts(gpu).cpu())
    levels = torch.arange(256, dtype=torch.float64)
    assert torch.equal(divide(levels, 255), divide(levels.cuda(), 255).cpu())
