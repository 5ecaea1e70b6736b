"""Hand-written numpy kernels on stacks of images, (N, H, W): one numpy call per step per batch.

They replace np.pad, np.quantile and Pillow's median filter where those cost more than the work
on MNIST-sized stacks; tests/test_kernels.py checks each against the reference implementation.
"""
from __future__ import annotations

import numpy as np

# Compare-exchange pairs of the 19-step median-of-9 network (Paeth; Devillard's opt_med9).
_MEDIAN9 = ((1, 2), (4, 5), (7, 8), (0, 1), (3, 4), (6, 7), (1, 2), (4, 5), (7, 8), (0, 3),
            (5, 8), (4, 7), (3, 6), (1, 4), (2, 5), (4, 7), (4, 2), (6, 4), (4, 2))


def quantiles(values: np.ndarray, q: float | tuple[float, ...], mask: np.ndarray | None = None):
    """(N, ...) [0, 1] values -> (N,) q-quantile (0 < q <= 1) of each row (of its masked values) to
    1/255, or a tuple of them for a tuple of q: the order statistic, not interpolated (np.quantile's
    "inverted_cdf"), from histograms: O(n) even when most values are equal (np.partition degrades
    badly on a background of exact zeros), and one bincount for all rows and all q."""
    n = len(values)
    codes = np.clip(values.reshape(n, -1), 0, 1) * 255 + 0.5  # (N, K), truncated to 0..255 below
    bins = codes.astype(np.intp) + 256 * np.arange(n)[:, None]
    weights = None if mask is None else mask.reshape(-1)
    counts = np.bincount(bins.reshape(-1), weights, minlength=256 * n).reshape(n, 256)
    cumulative = np.cumsum(counts, 1)
    sizes = cumulative[:, -1:]
    if isinstance(q, tuple):
        return tuple((cumulative < p * sizes).sum(1) / 255 for p in q)
    return (cumulative < q * sizes).sum(1) / 255


def quantile(values: np.ndarray, q: float) -> float:
    """The q-quantile of one array's values, to 1/255."""
    return float(quantiles(values.reshape(1, -1), q)[0])


def pad_last2(x: np.ndarray, radius: int, mode: str) -> np.ndarray:
    """np.pad of the last two axes by `radius`, "edge" or "constant" (zeros); np.pad itself costs
    more than the filters that use it on MNIST-sized stacks."""
    h, w = x.shape[-2:]
    r = radius
    out = np.zeros(x.shape[:-2] + (h + 2 * r, w + 2 * r), dtype=x.dtype)
    out[..., r:r + h, r:r + w] = x
    if mode == "edge":
        out[..., r:r + h, :r] = x[..., :, :1]
        out[..., r:r + h, r + w:] = x[..., :, -1:]
        out[..., :r, :] = out[..., r:r + 1, :]
        out[..., r + h:, :] = out[..., r + h - 1:r + h, :]
    return out


def median3(x: np.ndarray) -> np.ndarray:
    """3x3 median over the last two axes, edge replicated: 38 vectorized min/max ops instead of
    Pillow's per-pixel sort."""
    h, w = x.shape[-2:]
    padded = pad_last2(x, 1, "edge")
    v = [padded[..., i:i + h, j:j + w] for i in range(3) for j in range(3)]
    for a, b in _MEDIAN9:
        v[a], v[b] = np.minimum(v[a], v[b]), np.maximum(v[a], v[b])
    return v[4]


def box_counts(mask: np.ndarray, radius: int, mode: str) -> np.ndarray:
    """Per pixel, how many of the (2r+1)^2 pixels around it are set (last two axes; padding "edge"
    or "constant"): separable uint8 sums, rows then columns."""
    h, w = mask.shape[-2:]
    padded = pad_last2(mask.view(np.uint8), radius, mode)
    rows = padded[..., :, 0:w].copy()
    for j in range(1, 2 * radius + 1):
        rows += padded[..., :, j:j + w]
    out = rows[..., 0:h, :].copy()
    for i in range(1, 2 * radius + 1):
        out += rows[..., i:i + h, :]
    return out


def min_filter(x: np.ndarray, radius: int) -> np.ndarray:
    """Minimum over the (2r+1)^2 window around each pixel (last two axes, edge replicated):
    separable, rows then columns."""
    h, w = x.shape[-2:]
    padded = pad_last2(x, radius, "edge")
    rows = padded[..., :, 0:w].copy()
    for j in range(1, 2 * radius + 1):
        np.minimum(rows, padded[..., :, j:j + w], out=rows)
    out = rows[..., 0:h, :].copy()
    for i in range(1, 2 * radius + 1):
        np.minimum(out, rows[..., i:i + h, :], out=out)
    return out


def opening(x: np.ndarray, radius: int) -> np.ndarray:
    """Grey opening (a minimum filter, then a maximum filter): the image without the structures
    narrower than 2r+1 px, i.e. the ground that strokes lie on."""
    return -min_filter(-min_filter(x, radius), radius)
