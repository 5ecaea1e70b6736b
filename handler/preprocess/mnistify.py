"""(H, W) grayscale of either polarity -> candidate views of it as MNIST digits look: the ground
the digit is written on (a photo's table around the sheet, page.py; light margins, margins.py),
polarity, background, contrast, denoising (background.py), crop and centre (framing.py).

Where a decision is uncertain, the image gets more than one *candidate view* (28, 28): both
polarities when neither side of the median clearly holds the ink, the image as it is and
re-cropped when a 28x28 upload is not already MNIST-shaped, the crop without the structures that
touch the border (scanner edges, rulers) instead of the crop with them, the unfiltered image
beside the denoised one (thin outlines look like noise to the detector), the strokes without marks
of a dimmer tone of their own (tones.py: rules, strike-throughs, blots). The network reads them
all (one forward pass each) and the handler answers with the view it is most confident of
(handler/inference.py). Clean MNIST-shaped uploads get one view. reports/evaluation.md shows what
each step buys, per input family.

The steps are torch operations on stacks of same-sized images, (N, H, W), on the worker's device
(CUDA when it has one, the CPU otherwise: one implementation for both), so that a batch of 16
uploads costs about as many calls as one image; a single image is a stack of one. Decisions are
taken in float64 where a threshold meets a quantile, so that both devices take the same ones.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from handler.errors import InputError, NoDigitFound
from handler.preprocess.background import (
    BACKGROUND_PERCENTILE,
    backgrounds,
    denoise,
    map_cells,
    mapped_background,
    noisy,
)
from handler.preprocess.decode import decode_gray, in_unit_range
from handler.preprocess.framing import Views, fit_and_centre, frame_views
from handler.preprocess.kernels import LEAST_NOT_BLACK, below, by_shape, from_levels, quantiles
from handler.preprocess.margins import MARGIN_SHARE, margins_filled
from handler.preprocess.page import page_filled
from handler.preprocess.tones import without_second_tone

# Polarity: the ink is the side of the median whose POLARITY_QUANTILE strays further; when the two
# sides are within AMBIGUOUS of each other, both polarities are read.
POLARITY_QUANTILE, AMBIGUOUS = 0.005, 0.3
BLANK = 0.05  # an image whose contrast is under this (13 of 255 levels) has no digit: 422

# On a GPU worker, stacks of images under this many pixels (MNIST's 28x28, small canvases) are
# preprocessed on the CPU: their steps are a few microseconds of work each, less than launching
# the CUDA kernel costs the worker's CPU, and a process waiting on the GPU competes with the
# other workers for it (docs/performance.md). Photos (reduced to WORK_SIDE, ~19,000 px) stay on
# the GPU.
GPU_MIN_PIXELS = 64 * 64


def mnist_like(gray: np.ndarray, denoise_noisy: bool = True) -> np.ndarray:
    """(H, W) grayscale of either polarity -> its primary (28, 28) float32 candidate view.

    `denoise_noisy=False` skips the noise step; the evaluation uses it to measure what it buys.
    """
    (views,), (error,) = candidate_views([gray], denoise_noisy)
    if error is not None:
        raise error
    return views[0].cpu().numpy()


def views_of_bytes(data: bytes, denoise_noisy: bool = True, multiple: bool = True) -> Views:
    """One image file's bytes -> its (28, 28) candidate views on the CPU, raising its InputError:
    for the evaluation and the tests (the handler preprocesses whole batches, batch.decode_batch)."""
    (views,), (error,) = candidate_views([decode_gray(data)], denoise_noisy, multiple)
    if error is not None:
        raise error
    return views


def candidate_views(
    grays: list[np.ndarray | torch.Tensor],
    denoise_noisy: bool = True,
    multiple: bool = True,
    device: torch.device | str = "cpu",
    gpu_min_pixels: int = GPU_MIN_PIXELS,
) -> tuple[list[Views | None], list[InputError | None]]:
    """(H, W) images (float in [0, 1], or uint8 levels) -> per image, its (28, 28) candidate views on
    `device` (the first is the primary one) or why there are none; `multiple=False`: the primary
    view alone. Images of one size are worked on as one stack; each size is a stack of its own
    (no padding: it would move quantiles and edges).
    On an accelerator, stacks of images under `gpu_min_pixels` are worked on on the CPU and their
    views copied to it at once (see GPU_MIN_PIXELS)."""
    views: list[Views | None] = [None] * len(grays)
    errors: list[InputError | None] = [None] * len(grays)
    device = torch.device(device)
    for indices in by_shape(grays):
        h, w = grays[indices[0]].shape
        here = torch.device("cpu") if device.type != "cpu" and h * w < gpu_min_pixels else device
        stack = _stack([grays[i] for i in indices], here)  # (n, H, W)
        out, blank = _views_of_stack(stack, denoise_noisy, multiple)
        if here != device:
            out = _moved(out, device)
        for i, image_views, is_blank in zip(indices, out, blank.tolist()):
            if is_blank:
                errors[i] = NoDigitFound()
            else:
                views[i] = image_views
    return views, errors


def _moved(out: list[Views], device: torch.device) -> list[Views]:
    """Per image its views, all copied to `device` in one transfer."""
    flat = [view for image_views in out for view in image_views]
    if not flat:
        return out
    moved = iter(torch.stack(flat).to(device).unbind(0))
    return [[next(moved) for _ in image_views] for image_views in out]


def _stack(grays: list[np.ndarray | torch.Tensor], device) -> torch.Tensor:
    """Same-sized images -> (N, H, W) float32 in [0, 1] on `device` (one copy to it for the whole
    stack). Numpy images are float in [0, 1] or uint8 levels (decode.decode_pixels), a stack of
    levels divided by 255 in one call."""
    if all(isinstance(g, np.ndarray) and g.dtype == np.uint8 for g in grays):
        return from_levels(torch.from_numpy(np.stack(grays)).to(device))
    if all(isinstance(g, np.ndarray) for g in grays):
        return torch.from_numpy(np.stack([in_unit_range(g) for g in grays]).astype(np.float32, copy=False)).to(device)
    return torch.stack([torch.as_tensor(g, device=device) for g in grays]).float()


@torch.inference_mode()
def _views_of_stack(x: torch.Tensor, denoise_noisy: bool, multiple: bool) -> tuple[list[Views], torch.Tensor]:
    """(N, H, W) -> per image a list of (28, 28) candidate views, and a (N,) mask of images with no digit."""
    x, first, blank, unfiltered, dark, ambiguous = light_ink(x, denoise_noisy)
    out = frame_views(first, blank, multiple)
    if not multiple:  # (the evaluation measures what the other views buy)
        return [r[:1] for r in out], blank
    # marks of a dimmer tone of their own over the digit (tones.py): the strokes alone, read too
    toned, strokes = without_second_tone(first)
    for i, view in zip(toned, fit_and_centre(strokes).unbind(0) if toned else ()):
        if out[i]:
            out[i].append(view)
    if unfiltered is not None:
        noisy, raw = unfiltered
        for i, extra in zip(noisy.tolist(), frame_views(raw, torch.zeros_like(noisy, dtype=torch.bool), multiple)):
            out[i] += extra
    # the other polarity where it is unclear, also where the first found nothing (a thin stroke)
    other = [] if ambiguous is None else torch.nonzero(ambiguous).flatten()
    if len(other):
        flipped = torch.where(dark[other, None, None], x[other], 1 - x[other])
        second, blank2, _ = cleaned(flipped, denoise_noisy)
        for i, extra in zip(other.tolist(), frame_views(second, blank2, multiple)):
            out[i] += extra
        blank[other] &= blank2
    return out, blank


def light_ink(x: torch.Tensor, denoise_noisy: bool = True):
    """(N, H, W) of either polarity -> what every candidate view starts from, and the number reader
    (handler/number/) reads lines from: the stack on its ground (ground_and_ink; as it was when
    on_black), cleaned's (N, H, W) light ink on black, (N,) blank images and unfiltered versions,
    with ground_and_ink's (N,) dark ink and unclear polarity (both None when on_black)."""
    if on_black(x):  # MNIST's own form, the usual upload: nothing to flip, no background to remove
        return (x, *cleaned(x, denoise_noisy, on_black=True), None, None)
    ground, dark, ambiguous, filled = _ground_and_ink(x, margins=True)
    first, blank, unfiltered = cleaned(torch.where(dark[:, None, None], 1 - ground, ground), denoise_noisy)
    # A band that leaves no ink once its margins are filled was no band: the dark digit itself,
    # bold and cropped tight (a thick "1" from top to bottom between the paper's sides).
    empty = filled[blank[filled]] if len(filled) else filled
    if len(empty):
        ground[empty], dark[empty], ambiguous[empty], _ = _ground_and_ink(x[empty], margins=False)
        again, blank[empty], more = cleaned(
            torch.where(dark[empty, None, None], 1 - ground[empty], ground[empty]), denoise_noisy
        )
        first[empty] = again
        if more is not None:
            unfiltered = _joined(unfiltered, (empty[more[0]], more[1]))
    return ground, first, blank, unfiltered, dark, ambiguous


def _joined(a: tuple[torch.Tensor, torch.Tensor] | None, b: tuple[torch.Tensor, torch.Tensor]):
    """Two (indices, unfiltered images) of cleaned as one."""
    return b if a is None else (torch.cat((a[0], b[0])), torch.cat((a[1], b[1])))


def ground_and_ink(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, H, W) -> the same on the ground its digit is written on (light margins around a dark
    band filled: margins.py), and (N,) whether the ink is darker than that ground, and whether
    that is unclear. The ground is the median (a digit covers well under half of its image), the
    ink the side whose extreme quantile strays further from it: a grey ground with a white digit
    is light ink, which the border alone (a median of the frame over 0.5) took for paper."""
    return _ground_and_ink(x, margins=True)[:3]


def _ground_and_ink(x: torch.Tensor, margins: bool):
    """ground_and_ink's, with or without looking for margins, and the indices of those filled; a
    photo's table around the sheet filled with the paper's level first (page.py)."""
    x = page_filled(x)[0]
    levels = quantiles(x, (POLARITY_QUANTILE, 0.5, 1 - POLARITY_QUANTILE))
    x, filled = margins_filled(x, levels[0], levels[2]) if margins else (x, x.new_zeros(0, dtype=torch.long))
    if len(filled):  # their levels again, without the margins
        again = quantiles(x[filled], (POLARITY_QUANTILE, 0.5, 1 - POLARITY_QUANTILE))
        levels = [level.index_put((filled,), level_again) for level, level_again in zip(levels, again)]
    low, median, high = levels
    down, up = median - low, high - median
    return x, down > up, (down - up).abs_() <= AMBIGUOUS * torch.maximum(down, up), filled


def on_black(x: torch.Tensor) -> bool:
    """Whether every image of the (N, H, W) stack is light ink on a black ground, as MNIST's are: at
    least half of it at level 0 (as quantiles reads it) and more than POLARITY_QUANTILE of it not;
    if it is large enough for a background map (a line of digits, a large canvas), also enough of
    each of the map's cells at level 0 for the cell's level to be 0, and no border row or column
    light along MARGIN_SHARE of it (only such lines can be margins; light is never level 0).
    ground_and_ink would find light ink, unambiguous (its low quantile and median 0, its high one
    above), no margins, and backgrounds a level of 0, so their calls (a third of a batch's, half of
    a line's) can be skipped with the same views (tests/test_batches.py). Small images' light
    margins around a black band are not filled on this road: framing reads them as bars."""
    h, w = x.shape[1:]
    size = h * w
    black = below(x, LEAST_NOT_BLACK)  # (N, H, W) 0/1: level 0
    counts = black.sum((1, 2))
    if not mapped_background(h, w):
        return all(size * 0.5 <= count < size * (1 - POLARITY_QUANTILE) for count in counts.tolist())
    cells = map_cells(black)  # (N, ny, nx, pixels of a cell)
    # background_map's percentile interpolates between two order statistics: both at level 0
    least = math.floor(BACKGROUND_PERCENTILE * (cells.shape[-1] - 1)) + 2
    margin = ((w - black[:, [0, -1], :].sum(2)) >= MARGIN_SHARE * w).any(1) | (
        (h - black[:, :, [0, -1]].sum(1)) >= MARGIN_SHARE * h
    ).any(1)
    read = torch.stack((counts, cells.sum(3).flatten(1).amin(1), margin.float())).tolist()  # one read of the device
    return all(
        size * 0.5 <= count < size * (1 - POLARITY_QUANTILE) and cell >= least and not lit
        for count, cell, lit in zip(*read)
    )


def cleaned(
    x: torch.Tensor, denoise_noisy: bool, on_black: bool = False
) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
    """Light-on-dark (N, H, W) -> background removed (none `on_black`: see on_black), contrast
    stretched, noise filtered where it is detected; which images are blank; and, if any were
    filtered, their indices and (n, H, W) unfiltered versions."""
    x, blank = _stretch(x if on_black else x - backgrounds(x))
    if not denoise_noisy:
        return x, blank, None
    grainy = noisy(x, on_black, ~blank)
    if len(grainy) == 0:
        return x, blank, None
    raw = x[grainy]
    x[grainy], blank[grainy] = _stretch(denoise(raw))
    return x, blank, (grainy, raw)


def _stretch(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, H, W): black background, brightest stroke at 1; and which images have no contrast."""
    x = x.clamp(min=0)
    top = x.amax((1, 2), keepdim=True)  # (N, 1, 1)
    blank = top < BLANK
    return x.div_(torch.where(blank, 1, top)), blank.view(-1)  # at most 1: x <= top
