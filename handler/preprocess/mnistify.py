"""(H, W) grayscale of either polarity -> readings of it as MNIST digits look: polarity, background,
contrast, denoise, crop, centre.

MNIST itself was made this way (NIST digits scaled into a 20x20 box, anti-aliased, then centred
by centre of mass in 28x28), so real photos and canvas drawings land in the same space.

Where a decision is uncertain, the image gets more than one *reading* (28, 28): both polarities
when neither side of the median clearly holds the ink, the image as it is and re-cropped when a
28x28 upload is not already MNIST-shaped, the crop without the structures that touch the border
(scanner edges, rulers) instead of the crop with them, the unfiltered image beside the denoised
one (thin outlines look like noise to the detector). The network reads them all (one forward
pass each; reports/evaluation.md gives its cost) and the handler answers with the reading it is
surest of (batch.surest_readings). Clean MNIST-shaped uploads get one reading.
reports/evaluation.md shows what each step buys, per input family.

The steps are torch operations on stacks of same-sized images, (N, H, W), on the worker's device
(CUDA when it has one, the CPU otherwise: one implementation for both), so that a batch of 16
uploads costs about as many calls as one image; a single image is a stack of one. Decisions are
taken in float64 where a threshold meets a quantile, so that both devices take the same ones.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from handler.errors import InputError, NoDigitFound
from handler.preprocess.decode import WORK_SIDE, in_unit_range
from handler.preprocess.kernels import (above, black_counts, box_counts, by_shape, constant, divide, from_levels,
                                        gaussian_blur, median3, opening, order_statistics, quantiles, reach_border)

SIDE, BOX = 28, 20  # MNIST canvas and the box its digits are scaled into
BACKGROUND_CELL = WORK_SIDE // 4  # background_map's cell: 40 px
# Noise is judged on the background (pixels over 2 px away from any stroke): a share above
# NOISE_SHARE of it off the background level by over NOISE_DELTA. Clean MNIST scores exactly 0.
NOISE_DELTA, NOISE_SHARE = 0.15, 0.02
INK = 0.25  # after contrast stretching, pixels above this set the bounding box (faint grain does not)
# MNIST's mean centre of mass in (row, col) index coordinates: 14.00, 14.01 on the training set.
MNIST_CENTRE = (14.0, 14.0)
# Polarity: the ink is the side of the median whose POLARITY_QUANTILE strays further; when the two
# sides are within AMBIGUOUS of each other, both polarities are read.
POLARITY_QUANTILE, AMBIGUOUS = 0.005, 0.3
# A small image whose median (after polarity) is above FLAT_GROUND lies on a grey or hazy ground:
# its background is a grey opening of radius OPEN_RADIUS (9x9: wider than any stroke, narrower
# than fog); on a dark ground it is one level, so that thick strokes stay whole.
FLAT_GROUND, OPEN_RADIUS = 0.05, 4
BLANK = 0.05  # an image whose contrast is under this (13 of 255 levels) has no digit: 422
INNER_MASS = 0.3  # the crop without border-touching structures keeps at least this share of the ink
DENOISE_SIGMA, DENOISE_FLOOR = 0.8, 0.65  # the denoise step's blur and soft threshold (see denoise)

# On a GPU worker, stacks of images under this many pixels (MNIST's 28x28, small canvases) are
# preprocessed on the CPU: their steps are a few microseconds of work each, less than launching
# the CUDA kernel costs the worker's CPU, and a process waiting on the GPU competes with the
# other workers for it (reports/bench-gpu.md: in-process, the MNIST PNGs both ways). Photos
# (reduced to WORK_SIDE, ~19,000 px) stay on the GPU.
GPU_MIN_PIXELS = 64 * 64

Readings = list[torch.Tensor]  # one image's (28, 28) readings, the first the primary one


def mnist_like(gray: np.ndarray, denoise_noisy: bool = True) -> np.ndarray:
    """(H, W) grayscale of either polarity -> its primary (28, 28) float32 reading.

    `denoise_noisy=False` skips the noise step; the evaluation uses it to measure what it buys.
    """
    (readings,), (error,) = mnist_like_many([gray], denoise_noisy)
    if error is not None:
        raise error
    return readings[0].cpu().numpy()


def mnist_like_many(grays: list[np.ndarray | torch.Tensor], denoise_noisy: bool = True, multiple: bool = True,
                    device: torch.device | str = "cpu", gpu_min_pixels: int = GPU_MIN_PIXELS
                    ) -> tuple[list[Readings | None], list[InputError | None]]:
    """(H, W) images (float in [0, 1], or uint8 levels) -> per image, its (28, 28) readings on
    `device` (the first is the primary one) or why there are none; `multiple=False`: the primary
    reading alone. Images of one size are worked on as one stack; each size is a stack of its own
    (no padding: it would move quantiles and edges).
    On an accelerator, stacks of images under `gpu_min_pixels` are worked on on the CPU and their
    readings copied to it at once (see GPU_MIN_PIXELS)."""
    readings: list[Readings | None] = [None] * len(grays)
    errors: list[InputError | None] = [None] * len(grays)
    device = torch.device(device)
    for indices in by_shape(grays):
        h, w = grays[indices[0]].shape
        here = torch.device("cpu") if device.type != "cpu" and h * w < gpu_min_pixels else device
        stack = _stack([grays[i] for i in indices], here)  # (n, H, W)
        out, blank = _readings_stack(stack, denoise_noisy, multiple)
        if here != device:
            out = _moved(out, device)
        for i, image_readings, is_blank in zip(indices, out, blank.tolist()):
            if is_blank:
                errors[i] = NoDigitFound("blank", "no digit found: the image is blank or has no contrast")
            else:
                readings[i] = image_readings
    return readings, errors


def _moved(out: list[Readings], device: torch.device) -> list[Readings]:
    """Per image its readings, all copied to `device` in one transfer."""
    flat = [reading for image_readings in out for reading in image_readings]
    if not flat:
        return out
    moved = iter(torch.stack(flat).to(device).unbind(0))
    return [[next(moved) for _ in image_readings] for image_readings in out]


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
def _readings_stack(x: torch.Tensor, denoise_noisy: bool, multiple: bool) -> tuple[list[Readings], torch.Tensor]:
    """(N, H, W) -> per image a list of (28, 28) readings, and a (N,) mask of images with no digit."""
    if _on_black(x):  # MNIST's own form, the usual upload: nothing to flip, no background to remove
        dark = ambiguous = None
        first, blank, unfiltered = _cleaned(x, denoise_noisy, on_black=True)
    else:
        dark, ambiguous = _ink_polarity(x)
        first, blank, unfiltered = _cleaned(torch.where(dark[:, None, None], 1 - x, x), denoise_noisy)
    out = _framings(first, blank, multiple)
    if not multiple:  # (the evaluation measures what the other readings buy)
        return [r[:1] for r in out], blank
    if unfiltered is not None:
        noisy, raw = unfiltered
        for i, extra in zip(noisy.tolist(), _framings(raw, torch.zeros_like(noisy, dtype=torch.bool), multiple)):
            out[i] += extra
    # the other polarity where it is unclear, also where the first found nothing (a thin stroke)
    other = [] if ambiguous is None else torch.nonzero(ambiguous).flatten()
    if len(other):
        flipped = torch.where(dark[other, None, None], x[other], 1 - x[other])
        second, blank2, _ = _cleaned(flipped, denoise_noisy)
        for i, extra in zip(other.tolist(), _framings(second, blank2, multiple)):
            out[i] += extra
        blank[other] &= blank2
    return out, blank


def _ink_polarity(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, H, W) -> (N,) whether the ink is darker than the ground, and whether that is unclear.
    The ground is the median (a digit covers well under half of its image), the ink the side whose
    extreme quantile strays further from it: a grey ground with a white digit is light ink, which
    the border alone (a median of the frame over 0.5) took for paper."""
    low, median, high = quantiles(x, (POLARITY_QUANTILE, 0.5, 1 - POLARITY_QUANTILE))
    down, up = median - low, high - median
    return down > up, (down - up).abs_() <= AMBIGUOUS * torch.maximum(down, up)


def _on_black(x: torch.Tensor) -> bool:
    """Whether every image of the (N, H, W) stack is light ink on a black ground, as MNIST's are:
    small enough for one background level, at least half of it at level 0 (as quantiles reads it)
    and more than POLARITY_QUANTILE of it not. _ink_polarity would find light ink, unambiguous
    (its low quantile and median 0, its high one above), and _backgrounds a level of 0, so their
    calls (a third of a batch's) can be skipped with the same readings (tests/test_preprocess.py)."""
    h, w = x.shape[1:]
    if _mapped_background(h, w):
        return False
    size = h * w
    return all(size * 0.5 <= black < size * (1 - POLARITY_QUANTILE) for black in black_counts(x).tolist())


def _cleaned(x: torch.Tensor, denoise_noisy: bool, on_black: bool = False
             ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
    """Light-on-dark (N, H, W) -> background removed (none `on_black`: see _on_black), contrast
    stretched, noise filtered where it is detected; which images are blank; and, if any were
    filtered, their indices and (n, H, W) unfiltered versions."""
    x, blank = _stretch(x if on_black else x - _backgrounds(x))
    if not denoise_noisy:
        return x, blank, None
    noisy = torch.nonzero((_noise_levels(x, on_black) > NOISE_SHARE) & ~blank).flatten()
    if len(noisy) == 0:
        return x, blank, None
    raw = x[noisy]
    x[noisy], blank[noisy] = _stretch(denoise(raw))
    return x, blank, (noisy, raw)


def _framings(x: torch.Tensor, blank: torch.Tensor, multiple: bool) -> list[Readings]:
    """Cleaned (N, H, W) -> per image its (28, 28) readings: as it is when already MNIST-shaped;
    else cropped and centred (multiple: without the structures that touch the border, if any),
    and (multiple) also as it is for 28x28 uploads."""
    # Which images are blank or ready read once, the rest decided in Python: fewer calls than
    # masks and a nonzero (a batch's fixed cost on the CPU).
    blank_flags, ready_flags = blank.tolist(), _already_mnist(x).tolist()
    as_is = multiple and tuple(x.shape[1:]) == (SIDE, SIDE)
    todo = [i for i, (is_blank, is_ready) in enumerate(zip(blank_flags, ready_flags))
            if not (is_blank or is_ready)]
    if todo:
        crops = x[todo]
        if multiple:
            # With border structures cut away, the crop that keeps them only shrinks the digit.
            inner, useful = _without_border_structures(crops)
            crops = torch.where(useful[:, None, None], inner, crops)
        fitted = iter(_fit_and_centre(crops).unbind(0))
    out: list[Readings] = []
    for image, is_blank, is_ready in zip(x.unbind(0), blank_flags, ready_flags):  # one call for all views
        if is_blank:
            out.append([])
        elif is_ready:
            out.append([image])
        else:
            out.append(([image] if as_is else []) + [next(fitted)])
    return out


def _without_border_structures(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, H, W) -> the images without the ink that touches their border (8-connected), and (N,)
    whether that is worth reading: something touched the border, something else is left, and
    that keeps at least INNER_MASS of the ink (else the digit itself runs off the edge)."""
    # 0/1 float masks and arithmetic: on the CPU, where() and any() on a stack of photos cost
    # several times these (x >= 0, so x * 0 is 0 and x * 1 is x, exactly)
    ink = above(x, INK)
    touching = reach_border(ink)  # within the ink
    inner = x * (1 - touching)
    useful = ((touching.amax((1, 2)) > 0) & ((ink - touching).amax((1, 2)) > 0)
              & (inner.sum((1, 2), dtype=torch.float64) >= INNER_MASS * (x * ink).sum((1, 2), dtype=torch.float64)))
    return inner, useful


def _stretch(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, H, W): black background, brightest stroke at 1; and which images have no contrast."""
    x = x.clamp(min=0)
    top = x.amax((1, 2), keepdim=True)  # (N, 1, 1)
    blank = top < BLANK
    return x.div_(torch.where(blank, 1, top)), blank.view(-1)  # at most 1: x <= top


def _extents(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, H, W) with ink -> (N, 2) first and (N, 2) last row ([:, 0]) and column ([:, 1]) with ink
    (pixels over INK); rows and columns are read in one call per step."""
    h, w = x.shape[1:]
    ink = above(x, INK)  # summed rather than x's maxima taken: on the CPU a third of the cost
    rows, cols = ink.sum(2), ink.sum(1)  # (N, H), (N, W): how many pixels of each are ink
    side = max(h, w)
    if h != w:  # the shorter one padded with places without ink, after its end
        rows, cols = F.pad(rows, (0, side - h)), F.pad(cols, (0, side - w))
    inked = (torch.stack((rows, cols), 1) > 0).byte()  # (N, 2, side)
    # argmax finds the first set entry, from either end
    return inked.argmax(2), side - 1 - inked.flip(2).argmax(2)


def _already_mnist(x: torch.Tensor) -> torch.Tensor:
    """(N, H, W) -> (N,): 28x28, digit about 20 px, centre of mass within 1 px of MNIST's
    (resampling would only blur). Images need some ink (stretched ones have)."""
    n, h, w = x.shape
    if (h, w) != (SIDE, SIDE):
        return torch.zeros(n, dtype=torch.bool, device=x.device)
    first, last = _extents(x)
    size = (last - first).amax(1) + 1  # (N,): the longer side
    off_centre = (_centres_of_mass(x) - constant(MNIST_CENTRE, torch.float64, x.device)).abs_().amax(1)
    return (0.9 * BOX <= size) & (size <= 1.1 * BOX) & (off_centre <= 1)


def _centres_of_mass(x: torch.Tensor) -> torch.Tensor:
    """(N, S, S) -> (N, 2) float64 row and column centres of mass (meaningless for blank images)."""
    side = x.shape[1]
    sums = torch.stack((x.sum(2, dtype=torch.float64), x.sum(1, dtype=torch.float64)), 1)  # (N, 2, S)
    mass = sums[:, 0].sum(1, keepdim=True).clamp_(min=torch.finfo(torch.float32).tiny)  # (N, 1)
    return (sums @ constant(tuple(range(side)), torch.float64, x.device)) / mass


def _backgrounds(x: torch.Tensor) -> torch.Tensor:
    """(N, H, W) background estimates: background_map for large images; for small ones one level
    on a dark ground, a grey opening on a grey or hazy one (see FLAT_GROUND)."""
    if _mapped_background(*x.shape[1:]):
        return background_map(x)
    low, median = quantiles(x, (0.1, 0.5))
    level = low.float()[:, None, None]  # (N, 1, 1)
    uneven = torch.nonzero(median > FLAT_GROUND).flatten()  # a read of the device, to skip most openings
    if len(uneven) == 0:
        return level
    out = level.expand_as(x).clone()
    out[uneven] = opening(x[uneven], OPEN_RADIUS)
    return out


def _mapped_background(h: int, w: int) -> bool:
    """Whether images of this size get a background map (of cells) rather than one level."""
    return h >= 2 * BACKGROUND_CELL or w >= 2 * BACKGROUND_CELL


def background_map(x: torch.Tensor, cell: int = BACKGROUND_CELL) -> torch.Tensor:
    """(N, H, W) -> smooth background estimates: the 10th percentile of each 40 px cell, bilinearly
    upsampled. Strokes cover far less than 90% of a cell, so the percentile sees paper, not ink."""
    n, h, w = x.shape
    ny, nx = max(1, h // cell), max(1, w // cell)
    ch, cw = h // ny, w // nx  # equal cells; the few leftover edge pixels are covered by upsampling
    cells = x[:, :ny * ch, :nx * cw].reshape(n, ny, ch, nx, cw).transpose(2, 3).reshape(n, ny, nx, -1)
    levels = _percentile(cells, 0.1)  # (N, ny, nx)
    return F.interpolate(levels[:, None], size=(h, w), mode="bilinear", align_corners=False)[:, 0]


def _percentile(x: torch.Tensor, q: float) -> torch.Tensor:
    """q-quantile along the last axis, float32, interpolated between order statistics as
    np.percentile does by default (to 1/255: see order_statistics)."""
    position = q * (x.shape[-1] - 1)
    k = math.floor(position)
    low, high = order_statistics(x, (k, min(k + 1, x.shape[-1] - 1)))
    return (low + (position - k) * (high - low)).float()


def _noise_levels(x: torch.Tensor, on_black: bool = False) -> torch.Tensor:
    """(N, H, W) -> (N,) float64 share of background pixels (over 2 px from any stroke) that stray
    from the background level; 0 where under a fifth of the image is background. `on_black`: the
    stack was on a black ground (_on_black), so its background level is likely 0 (see below)."""
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
    strays = off_level.mul_(background).sum((1, 2)).double()
    enough = sizes >= max(1, h * w // 5)
    return torch.where(enough, strays / sizes, 0.0)


def denoise(x: torch.Tensor) -> torch.Tensor:
    """(N, H, W) -> the card's blur and threshold, in a form that keeps strokes.

    A 3x3 median removes impulses, a Gaussian blur (sigma 0.8) averages what is left, and a soft
    threshold at the 65th percentile (background: a digit covers well under a third of its
    frame) takes away the noise floor but keeps the strokes' edges. A hard Otsu threshold cost
    accuracy on salt-and-pepper digits by cutting faint strokes.
    """
    smooth = gaussian_blur(median3(x), DENOISE_SIGMA)
    return (smooth - quantiles(smooth, DENOISE_FLOOR).float()[:, None, None]).clamp(min=0)


def _fit_and_centre(x: torch.Tensor) -> torch.Tensor:
    """(N, H, W) with ink -> (N, 28, 28): each image's ink cropped, its longer side scaled to 20 px
    (antialiased bilinear, as Pillow resizes), pasted with its centre of mass centred. Crops differ
    in size, so the resize is one call per image; the rest is batched, with one read of the
    device (the crops' boxes)."""
    first, last = _extents(x)
    boxes = torch.cat((first, last), 1).tolist()  # (N, 4): top, left, bottom, right
    digits = []
    for image, (top, left, bottom, right) in zip(x.unbind(0), boxes):
        digit = image[top:bottom + 1, left:right + 1]
        longer = max(digit.shape)
        scale = BOX / longer
        # Within 10% of the target size resampling would only blur (clean MNIST is already 20 px).
        if not 0.9 <= scale <= 1.1 or longer > SIDE:
            size = (max(1, round(digit.shape[0] * scale)), max(1, round(digit.shape[1] * scale)))
            digit = F.interpolate(digit[None, None], size=size, mode="bilinear", align_corners=False,
                                  antialias=True)[0, 0].clamp(0, 1)
        digits.append(digit)
    # (N, 28, 28): each digit in the top left corner, then moved so that its centre of mass is
    # MNIST's (as far as it fits), by one gather for the whole stack.
    corner = torch.stack([F.pad(d, (0, SIDE - d.shape[1], 0, SIDE - d.shape[0])) for d in digits])
    cy, cx = _centres_of_mass(corner).unbind(1)
    heights, widths = torch.tensor([d.shape for d in digits], device=x.device).unbind(1)
    tops = torch.minimum(_whole(MNIST_CENTRE[0] - cy).clamp(min=0).long(), SIDE - heights)
    lefts = torch.minimum(_whole(MNIST_CENTRE[1] - cx).clamp(min=0).long(), SIDE - widths)
    return _shifted(corner, tops, lefts)


def _shifted(x: torch.Tensor, down: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """(N, H, W) -> each image moved `down` rows and `right` columns ((N,) each, >= 0), zeros
    coming in: out[n, i, j] = x[n, i - down[n], j - right[n]]."""
    n, h, w = x.shape
    rows = torch.arange(h, device=x.device) - down[:, None]  # (N, H): the source row of each row
    cols = torch.arange(w, device=x.device) - right[:, None]  # (N, W)
    out = x.gather(1, rows.clamp(min=0)[:, :, None].expand(n, h, w))
    out = out.gather(2, cols.clamp(min=0)[:, None, :].expand(n, h, w))
    return out * ((rows >= 0)[:, :, None] & (cols >= 0)[:, None, :])


def _whole(x: torch.Tensor) -> torch.Tensor:
    """Nearest whole numbers, ties to even, after snapping to 1e-6: a symmetric digit's centre of
    mass is often exactly half way, and float rounding (which differs between devices and
    summation orders) must not be what picks the side."""
    return torch.round(divide(torch.round(x * 1e6), 1e6))


# ---------------------------------------------------------------- for training, tests and the evaluation
# (not on the serving path: the handler goes through mnist_like_many)

def training_view(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For training: (N, 28, 28) augmented images -> one of the readings serving would make of
    each, drawn at random (either polarity when unclear, filtered or not, as it is or cropped), so
    that the network learns every reading it will be shown. The crop without border structures is
    left out (rarely made, costly). Blank images stay as they are."""
    x = torch.from_numpy(x.astype(np.float32, copy=False))
    dark, ambiguous = _ink_polarity(x)
    flip = dark ^ (ambiguous & torch.from_numpy(rng.random(len(x)) < 0.5))
    y, blank, unfiltered = _cleaned(torch.where(flip[:, None, None], 1 - x, x), True)
    if unfiltered is not None:
        noisy, raw = unfiltered
        keep = torch.from_numpy(rng.random(len(noisy)) < 0.5)
        y[noisy[keep]] = raw[keep]
    ready = _already_mnist(y) & ~blank
    out = torch.where(blank[:, None, None], x, y)
    crop = torch.nonzero(~ready & ~blank & torch.from_numpy(rng.random(len(x)) < 0.5)).flatten()
    if len(crop):
        out[crop] = _fit_and_centre(y[crop])
    return out.numpy()


def noise_level(gray: np.ndarray | torch.Tensor) -> float:  # for tests of the detector
    """One image's noise level (see _noise_levels)."""
    return float(_noise_levels(torch.as_tensor(gray, dtype=torch.float32)[None])[0])


def is_noisy(gray: np.ndarray | torch.Tensor) -> bool:
    """Whether the denoise step would run on this image; for tests."""
    return noise_level(gray) > NOISE_SHARE
