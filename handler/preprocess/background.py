"""Background and noise of light-on-dark (N, H, W) stacks: the background to subtract, whether an
image is noisy, and the model card's denoising (blur and threshold) in a form that keeps strokes."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from handler.preprocess.decode import WORK_SIDE
from handler.preprocess.kernels import (
    above,
    black_counts,
    box_counts,
    gaussian_blur,
    median3,
    opening,
    order_statistics,
    quantiles,
)

BACKGROUND_CELL = WORK_SIDE // 4  # background_map's cell: 40 px
BACKGROUND_PERCENTILE = 0.1  # background_map's level of a cell
# Noise is judged on the background (pixels over 2 px away from any stroke): a share above
# NOISE_SHARE of it off the background level by over NOISE_DELTA. Clean MNIST scores exactly 0.
NOISE_DELTA, NOISE_SHARE = 0.15, 0.02
# A small image whose median (after polarity) is above FLAT_GROUND lies on a grey or hazy ground:
# its background is a grey opening of radius OPEN_RADIUS (9x9: wider than any stroke, narrower
# than fog); on a dark ground it is one level, so that thick strokes stay whole.
FLAT_GROUND, OPEN_RADIUS = 0.05, 4
DENOISE_SIGMA, DENOISE_FLOOR = 0.8, 0.65  # the denoise step's blur and soft threshold (see denoise)


def backgrounds(x: torch.Tensor) -> torch.Tensor:
    """(N, H, W) background estimates: background_map for large images; for small ones one level
    on a dark ground, a grey opening raised to its texture floor on a grey or hazy one (see
    FLAT_GROUND)."""
    if mapped_background(*x.shape[1:]):
        return background_map(x)
    low, median = quantiles(x, (0.1, 0.5))
    level = low.float()[:, None, None]  # (N, 1, 1)
    uneven = torch.nonzero(median > FLAT_GROUND).flatten()  # a read of the device, to skip most openings
    if len(uneven) == 0:
        return level
    out = level.expand_as(x).clone()
    ground = opening(x[uneven], OPEN_RADIUS)
    # The opening follows a fog's broad swell but leaves its finer texture, which is as fine as
    # strokes and would be read as ink: the ground is raised to the median of what it leaves (a
    # digit, even one blurred from a rescan, covers under half of its frame; a flat ground's is 0).
    floor = quantiles((x[uneven] - ground).clamp_(0, 1), 0.5).float()[:, None, None]
    out[uneven] = ground + floor
    return out


def mapped_background(h: int, w: int) -> bool:
    """Whether images of this size get a background map (of cells) rather than one level."""
    return h >= 2 * BACKGROUND_CELL or w >= 2 * BACKGROUND_CELL


def background_map(x: torch.Tensor, cell: int = BACKGROUND_CELL) -> torch.Tensor:
    """(N, H, W) -> smooth background estimates: the 10th percentile of each 40 px cell, bilinearly
    upsampled. Strokes cover far less than 90% of a cell, so the percentile sees paper, not ink."""
    levels = percentile(map_cells(x, cell), BACKGROUND_PERCENTILE)  # (N, ny, nx)
    return F.interpolate(levels[:, None], size=x.shape[1:], mode="bilinear", align_corners=False)[:, 0]


def map_cells(x: torch.Tensor, cell: int = BACKGROUND_CELL) -> torch.Tensor:
    """(N, H, W) -> (N, ny, nx, ch * cw) the pixels of background_map's cells: equal cells of about
    `cell` px; the few leftover edge pixels are covered by its upsampling."""
    n, h, w = x.shape
    ny, nx = max(1, h // cell), max(1, w // cell)
    ch, cw = h // ny, w // nx
    return x[:, : ny * ch, : nx * cw].reshape(n, ny, ch, nx, cw).transpose(2, 3).reshape(n, ny, nx, -1)


def percentile(x: torch.Tensor, q: float) -> torch.Tensor:
    """q-quantile along the last axis, float32, interpolated between order statistics as
    np.percentile does by default (to 1/255: see order_statistics)."""
    position = q * (x.shape[-1] - 1)
    k = math.floor(position)
    low, high = order_statistics(x, (k, min(k + 1, x.shape[-1] - 1)))
    return (low + (position - k) * (high - low)).float()


def noisy(x: torch.Tensor, on_black: bool = False, among: torch.Tensor | None = None) -> torch.Tensor:
    """(N, H, W) -> indices of the noisy images (of those `among`, a (N,) mask): their noise level
    over NOISE_SHARE, and again counting only grain (noise_levels), which is looked at only on
    the few the first found."""
    found = noise_levels(x, on_black) > NOISE_SHARE
    candidates = torch.nonzero(found if among is None else found & among).flatten()
    if len(candidates) == 0:
        return candidates
    return candidates[noise_levels(x[candidates], on_black, grain=True) > NOISE_SHARE]


def noise_levels(x: torch.Tensor, on_black: bool = False, grain: bool = False) -> torch.Tensor:
    """(N, H, W) -> (N,) float64 share of background pixels (over 2 px from any stroke) that stray
    from the background level; 0 where under a fifth of the image is background. `on_black`: the
    stack was on a black ground (on_black), so its background level is likely 0 (see below).
    `grain`: only those that also stray from their 3x3 median, as noise does: what is left of a
    fog or an uneven ground strays from the level too, but smoothly."""
    h, w = x.shape[1:]
    # Strokes: where the 3x3 median is over 0.3, i.e. 5 of the 9 pixels are (the median ignores
    # salt, so isolated noise is not taken for a stroke); background: over 2 px from any stroke.
    # Masks are 0/1 floats (kernels.above), counted by float sums: whole numbers, exact, so
    # clamping count - 4 to [0, 1] is "count >= 5" and 1 - count to [0, ...] is "count == 0".
    strokes = (box_counts(above(x, 0.3), 1, "edge") - 4).clamp_(0, 1)
    background = (1 - box_counts(strokes, 2, "constant")).clamp_(min=0)
    sizes = background.sum((1, 2)).double()
    # The level is the background's median as quantiles reads it: 0 wherever half the background
    # is at level 0, as on images that were on black, and then its histogram (a tenth of such a
    # stack's calls) is not needed to know it. (Elsewhere the check would mostly cost calls.)
    if on_black and bool((2 * black_counts(x, background) >= sizes).all()):
        off_level = above(x, NOISE_DELTA)  # x >= 0: stretched (_stretch)
    else:
        off_level = above((x - quantiles(x, 0.5, background).float()[:, None, None]).abs_(), NOISE_DELTA)
    if grain:
        off_level.mul_(above((x - median3(x)).abs_(), NOISE_DELTA))
    strays = off_level.mul_(background).sum((1, 2)).double()
    enough = sizes >= max(1, h * w // 5)
    return torch.where(enough, strays / sizes, 0.0)


def denoise(x: torch.Tensor) -> torch.Tensor:
    """(N, H, W) -> the model card's blur and threshold, in a form that keeps strokes.

    A 3x3 median removes impulses, a Gaussian blur (sigma 0.8) averages what is left, and a soft
    threshold at the 65th percentile (background: a digit covers well under a third of its
    frame) takes away the noise floor but keeps the strokes' edges. A hard Otsu threshold cost
    accuracy on salt-and-pepper digits by cutting faint strokes.
    """
    smooth = gaussian_blur(median3(x), DENOISE_SIGMA)
    return (smooth - quantiles(smooth, DENOISE_FLOOR).float()[:, None, None]).clamp(min=0)
