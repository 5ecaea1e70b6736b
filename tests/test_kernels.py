"""The hand-written numpy kernels of the preprocessing against numpy's reference implementations."""
from __future__ import annotations

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from handler.preprocess.kernels import box_counts, median3, min_filter, opening, pad_last2, quantiles

SHAPES = [(1, 1, 1), (1, 3, 5), (4, 28, 28), (2, 17, 40)]


def stacks(shape, seed=0):
    """Random [0, 1] images, images with plateaus of equal values, and all-zero ones."""
    rng = np.random.default_rng(seed)
    yield rng.random(shape, dtype=np.float32)
    yield (rng.integers(0, 4, shape) / 3).astype(np.float32)
    yield np.zeros(shape, np.float32)


@pytest.mark.parametrize("shape", SHAPES)
def test_median3_is_the_median_of_each_3x3_window_with_edges_replicated(shape):
    for x in stacks(shape):
        padded = np.pad(x, ((0, 0), (1, 1), (1, 1)), mode="edge")
        reference = np.median(sliding_window_view(padded, (3, 3), axis=(1, 2)), axis=(-2, -1))
        assert np.array_equal(median3(x), reference)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("q", [0.1, 0.5, 0.65, 0.9, 1.0])
def test_quantiles_match_np_quantile_to_1_over_255(shape, q):
    """The kernel picks an order statistic (no interpolation): numpy's "inverted_cdf" method."""
    for x in stacks(shape):
        reference = np.quantile(x.reshape(len(x), -1), q, axis=1, method="inverted_cdf")
        assert np.abs(quantiles(x, q) - reference).max() <= 1 / 255 + 1e-6


@pytest.mark.parametrize("q", [0.1, 0.5, 0.9])
def test_quantiles_of_masked_values(q):
    rng = np.random.default_rng(1)
    x = rng.random((5, 20, 30), dtype=np.float32)
    mask = rng.random(x.shape) < 0.3
    reference = [np.quantile(image[keep], q, method="inverted_cdf") for image, keep in zip(x, mask)]
    assert np.abs(quantiles(x, q, mask) - reference).max() <= 1 / 255 + 1e-6


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("radius", [1, 2])
@pytest.mark.parametrize("mode", ["edge", "constant"])
def test_box_counts_are_window_sums(shape, radius, mode):
    mask = np.random.default_rng(2).random(shape) < 0.4
    padded = np.pad(mask.astype(np.int64), ((0, 0), (radius, radius), (radius, radius)), mode=mode)
    side = 2 * radius + 1
    reference = sliding_window_view(padded, (side, side), axis=(1, 2)).sum(axis=(-2, -1))
    assert np.array_equal(box_counts(mask, radius, mode), reference)


@pytest.mark.parametrize("mode", ["edge", "constant"])
def test_pad_last2_is_np_pad(mode):
    x = np.random.default_rng(3).random((3, 7, 9), dtype=np.float32)
    assert np.array_equal(pad_last2(x, 2, mode), np.pad(x, ((0, 0), (2, 2), (2, 2)), mode=mode))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("radius", [1, 4])
def test_min_filter_and_opening_match_scipy_with_edges_replicated(shape, radius):
    from scipy import ndimage

    size = (1, 2 * radius + 1, 2 * radius + 1)
    for x in stacks(shape):
        assert np.array_equal(min_filter(x, radius), ndimage.minimum_filter(x, size=size, mode="nearest"))
        assert np.array_equal(opening(x, radius), ndimage.grey_opening(x, size=size, mode="nearest"))


def test_several_quantiles_from_one_histogram_equal_one_at_a_time():
    for x in stacks((3, 28, 28)):
        together = quantiles(x, (0.005, 0.1, 0.5, 0.995))
        assert all(np.array_equal(a, quantiles(x, q)) for a, q in zip(together, (0.005, 0.1, 0.5, 0.995)))
