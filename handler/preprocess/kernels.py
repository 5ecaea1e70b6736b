"""Torch kernels on stacks of images, (N, H, W), on whatever device the stack is on: one call per step
per batch, the same code on the CPU and on CUDA.

tests/test_kernels.py checks each against numpy's, scipy's or Pillow's reference implementation.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F


@functools.lru_cache(maxsize=256)
def constant(values: tuple[float, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A small constant tensor, made once per device: on the CPU, making it costs as much as using it."""
    return torch.tensor(values, dtype=dtype, device=device)


def by_shape(images) -> list[list[int]]:
    """Indices of the images (anything with .shape), grouped by shape in order of first
    appearance: each group is one stack."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, image in enumerate(images):
        groups.setdefault(tuple(image.shape), []).append(i)
    return list(groups.values())


def divide(x: torch.Tensor, by: float) -> torch.Tensor:
    """x / by, correctly rounded on every device. CUDA turns a division by a Python number into a
    multiplication by its reciprocal, an ulp off: enough to move a pixel where a tie is rounded."""
    return x / constant((by,), x.dtype, x.device)


def from_levels(levels: torch.Tensor) -> torch.Tensor:
    """8-bit levels (0..255, any dtype) -> float32 in [0, 1], as numpy's `levels / 255` gives them."""
    return divide(levels.float(), 255)


def _codes(values: torch.Tensor) -> torch.Tensor:
    """(N, K) [0, 1] values -> (N, K) int32 their 8-bit levels (0..255, nearest) offset by 256 per
    row: bins of one bincount for all rows. int32, not int64: an AVX2 CPU converts floats to int32
    with vector instructions and to int64 one at a time (about 5x the time on a batch of photos)."""
    levels = (values * 255 + 0.5).clamp_(0, 255.5).int()  # the whole part: the nearest level
    return levels.add_(constant(tuple(range(0, 256 * len(values), 256)), torch.int32, values.device)[:, None])


def above(x: torch.Tensor, threshold: float) -> torch.Tensor:
    """(x > threshold) as 1.0 and 0.0, in x's float dtype: the sign of x - threshold, which float
    subtraction always gets right. On the CPU a comparison (a bool result) and its conversion to
    float cost about three times these elementwise calls, and the masks are summed as floats."""
    return (x - threshold).sign_().clamp_(min=0)


def below(x: torch.Tensor, threshold: float) -> torch.Tensor:
    """(x < threshold) as 1.0 and 0.0 (see above)."""
    return (threshold - x).sign_().clamp_(min=0)


# The least float32 value whose level (_codes) is 1 or more, just under 0.5/255. Levels
# only grow with the value, so a float32 value is at level 0 exactly when it is below this one
# (tests/test_kernels.py checks it and its float32 neighbour).
LEAST_NOT_BLACK = float.fromhex("0x1.0101p-9")


def black_counts(values: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """(N, ...) float32 [0, 1] values -> (N,) float32 how many of each row (of its masked values: a
    0/1 float mask) are at level 0 as quantiles reads them; whole numbers, exact below 2^24."""
    black = below(values.reshape(len(values), -1), LEAST_NOT_BLACK)
    return (black if mask is None else black.mul_(mask.reshape(len(values), -1))).sum(1)


def quantiles(values: torch.Tensor, q: float | tuple[float, ...], mask: torch.Tensor | None = None):
    """(N, ...) [0, 1] values -> (N,) float64 q-quantile (0 < q <= 1) of each row (of its masked
    values) to 1/255, or a tuple of them for a tuple of q: the order statistic, not interpolated
    (np.quantile's "inverted_cdf"), from histograms: O(n) even when most values are equal, no sort,
    one bincount for all rows and all q. Float64, so that the decisions taken on them (polarity,
    ground) are the same on every device. Few calls: on the CPU each costs more than its work."""
    n = len(values)
    weights = None if mask is None else mask.reshape(-1).double()  # bool or 0/1 float
    counts = torch.bincount(_codes(values.reshape(n, -1)).view(-1), weights, minlength=256 * n)
    cumulative = counts.view(n, 1, 256).cumsum(2, dtype=torch.float64)  # (N, 1, 256)
    levels = constant(q if isinstance(q, tuple) else (q,), torch.float64, values.device)[:, None]  # (Q, 1)
    # the first bin whose cumulative count reaches q of the row's: how many bins stay below it
    below = divide((cumulative < cumulative[:, :, -1:] * levels).sum(2).double(), 255)  # (N, Q)
    return tuple(below.unbind(1)) if isinstance(q, tuple) else below[:, 0]


def order_statistics(values: torch.Tensor, ranks: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
    """(..., K) [0, 1] values -> per rank r (0-based), the r-th smallest of each row, (...) float64,
    read to 1/255 from one histogram of all rows (exact for 8-bit images, which decode gives)."""
    lead, k = values.shape[:-1], values.shape[-1]
    rows = values.reshape(-1, k)
    m = len(rows)
    cumulative = torch.bincount(_codes(rows).view(-1), minlength=256 * m).view(m, 256).cumsum(1)
    return tuple(divide((cumulative <= r).sum(1).double(), 255).reshape(lead) for r in ranks)


def pad_last2(x: torch.Tensor, radius: int, mode: str) -> torch.Tensor:
    """(N, H, W) padded by `radius` on the last two axes: "edge" (replicated) or "constant" (zeros)."""
    if mode == "edge":
        return F.pad(x[:, None], (radius,) * 4, mode="replicate")[:, 0]
    return F.pad(x, (radius,) * 4)


# Compare-exchange pairs of the 19-step median-of-9 network (Paeth; Devillard's opt_med9).
_MEDIAN9 = (
    (1, 2),
    (4, 5),
    (7, 8),
    (0, 1),
    (3, 4),
    (6, 7),
    (1, 2),
    (4, 5),
    (7, 8),
    (0, 3),
    (5, 8),
    (4, 7),
    (3, 6),
    (1, 4),
    (2, 5),
    (4, 7),
    (4, 2),
    (6, 4),
    (4, 2),
)


def median3(x: torch.Tensor) -> torch.Tensor:
    """(N, H, W) -> 3x3 median, edge replicated: 38 elementwise min/max calls on the nine shifted
    views (a sort per window costs more on the CPU)."""
    h, w = x.shape[-2:]
    padded = pad_last2(x, 1, "edge")
    return median9([padded[..., i : i + h, j : j + w] for i in range(3) for j in range(3)])


def median9(values: list[torch.Tensor]) -> torch.Tensor:
    """Nine same-shaped tensors -> their elementwise median, by the network's 19 compare-exchanges."""
    v = list(values)
    for a, b in _MEDIAN9:
        v[a], v[b] = torch.minimum(v[a], v[b]), torch.maximum(v[a], v[b])
    return v[4]


def _window(x: torch.Tensor, radius: int, mode: str, reduce) -> torch.Tensor:
    """(N, H, W) -> `reduce` (torch.maximum or torch.add) over the (2r+1)^2 window around each
    pixel, padding "edge" or "constant": separable, rows then columns (_runs). On the CPU, several
    times faster than torch's max pooling at these sizes (a 9x9 window on 16 images of 36x36 px:
    1.7 ms pooled). Sums are of whole numbers here (box_counts), so their order does not matter."""
    padded = pad_last2(x, radius, mode)
    return _runs(_runs(padded, 2 * radius + 1, 2, reduce), 2 * radius + 1, 1, reduce)


def _runs(x: torch.Tensor, k: int, axis: int, reduce) -> torch.Tensor:
    """`reduce` over every k consecutive entries along `axis` (length L -> L - k + 1), from runs
    of doubling width (1, 2, 4, ...) joined by the bits of k: about 2 log2(k) calls instead of
    k - 1 (a 9-wide window: 4 instead of 8)."""
    length = x.shape[axis] - k + 1
    out, covered = None, 0  # out[i]: the entries i .. i + covered - 1
    runs, width = x, 1  # runs[i]: the entries i .. i + width - 1
    while True:
        if k & width:
            part = runs.narrow(axis, covered, length)
            out = part if out is None else reduce(out, part)
            covered += width
        if 2 * width > k:
            return out
        size = runs.shape[axis] - width
        runs = reduce(runs.narrow(axis, 0, size), runs.narrow(axis, width, size))
        width *= 2


def box_counts(mask: torch.Tensor, radius: int, mode: str) -> torch.Tensor:
    """(N, H, W) bool, or float 0/1 -> per pixel, how many of the (2r+1)^2 pixels around it are set
    (padding "edge" or "constant"), as float (exact: small whole numbers). For the radii used (1, 2)
    the window's shifted sums cost less than differences of running sums (two cumsums and four
    slices): on the CPU 0.6 against 1.5 ms for 16 photos at radius 1."""
    return _window(mask if mask.is_floating_point() else mask.float(), radius, mode, torch.add)


def max_filter(x: torch.Tensor, radius: int) -> torch.Tensor:
    """(N, H, W) -> maximum over the (2r+1)^2 window around each pixel, edge replicated."""
    return _window(x, radius, "edge", torch.maximum)


def min_filter(x: torch.Tensor, radius: int) -> torch.Tensor:
    """(N, H, W) -> minimum over the (2r+1)^2 window around each pixel, edge replicated."""
    return -max_filter(-x, radius)


def opening(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Grey opening (a minimum filter, then a maximum filter): the image without the structures
    narrower than 2r+1 px, i.e. the ground that strokes lie on."""
    return max_filter(min_filter(x, radius), radius)


def gaussian_blur(x: torch.Tensor, sigma: float, passes: int = 3) -> torch.Tensor:
    """(N, H, W) in [0, 1] -> Pillow's ImageFilter.GaussianBlur(sigma) of its 8-bit version, within
    1/255: Pillow's extended box blur (Gwosdek et al. 2011), `passes` times along rows, then along
    columns, edges replicated, each pass rounded to 8 bits as Pillow stores it."""
    sigma2 = sigma * sigma / passes
    whole = math.floor((math.sqrt(12 * sigma2 + 1) - 1) / 2)
    fraction = (2 * whole + 1) * (whole * (whole + 1) - 3 * sigma2) / (6 * (sigma2 - (whole + 1) ** 2))
    r = whole + 1
    centre, ends = 1 / (2 * whole + 1 + 2 * fraction), fraction / (2 * whole + 1 + 2 * fraction)
    y = torch.floor(x.clamp(0, 1) * 255 + 0.5)  # (N, H, W) in 8-bit levels
    for axis in (2, 1):  # rows, then columns
        size = y.shape[axis]
        for _ in range(passes):
            padded = pad_last2(y, r, "edge").narrow(3 - axis, r, y.shape[3 - axis])
            inner = padded.narrow(axis, 1, size)
            for i in range(2, 2 * whole + 2):  # the box's other whole taps (none at sigma 0.8)
                inner = inner + padded.narrow(axis, i, size)
            y = (padded.narrow(axis, 0, size) + padded.narrow(axis, 2 * r, size)).mul_(ends)
            y = y.add_(inner, alpha=centre).add_(0.5).floor_()
    return divide(y, 255)


def reach_border(mask: torch.Tensor, check_every: int = 8) -> torch.Tensor:
    """(N, H, W) bool or 0/1 float -> 0/1 float: the set pixels 8-connected to a set pixel on the
    image's border, i.e. the border-touching connected components, grown from the border a pixel
    per step (checked for being done every `check_every` steps, so the device is not asked after
    each). Float throughout: on the CPU, any() of a photo stack costs 15x its amax()."""
    m = mask if mask.is_floating_point() else mask.float()
    grown = m.clone()
    grown[:, 1:-1, 1:-1] = 0
    if not grown.amax() > 0:  # nothing on the border: the common case, one read of the device
        return grown
    while True:
        before = grown
        for _ in range(check_every):
            grown = _window(grown, 1, "constant", torch.maximum) * m
        if torch.equal(grown, before):
            return grown
