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

The steps work on stacks of same-sized images, (N, H, W), so that a batch of 16 MNIST-sized
uploads costs about as many numpy calls as one image; a single image is a stack of one.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter
from scipy import ndimage

from handler.errors import InputError, NoDigitFound
from handler.preprocess.decode import WORK_SIDE
from handler.preprocess.kernels import box_counts, median3, opening, quantile, quantiles

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


def mnist_like(gray: np.ndarray, denoise_noisy: bool = True) -> np.ndarray:
    """(H, W) grayscale of either polarity -> its primary (28, 28) float32 reading.

    `denoise_noisy=False` skips the noise step; the evaluation uses it to measure what it buys.
    """
    (readings,), (error,) = mnist_like_many([gray], denoise_noisy)
    if error is not None:
        raise error
    return readings[0]


def mnist_like_many(grays: list[np.ndarray], denoise_noisy: bool = True, multiple: bool = True
                    ) -> tuple[list[list[np.ndarray] | None], list[InputError | None]]:
    """Per image, its (28, 28) readings (the first is the primary one) or why there are none;
    `multiple=False`: the primary reading alone."""
    readings: list[list[np.ndarray] | None] = [None] * len(grays)
    errors: list[InputError | None] = [None] * len(grays)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, gray in enumerate(grays):
        by_shape.setdefault(gray.shape, []).append(i)
    for indices in by_shape.values():
        stack = np.stack([grays[i] for i in indices]).astype(np.float32, copy=False)  # (n, H, W)
        out, blank = _readings_stack(stack, denoise_noisy, multiple)
        for i, image_readings, is_blank in zip(indices, out, blank):
            if is_blank:
                errors[i] = NoDigitFound("blank", "no digit found: the image is blank or has no contrast")
            else:
                readings[i] = image_readings
    return readings, errors


def _readings_stack(x: np.ndarray, denoise_noisy: bool, multiple: bool) -> tuple[list, np.ndarray]:
    """(N, H, W) -> per image a list of (28, 28) readings, and a (N,) mask of images with no digit."""
    dark, ambiguous = _ink_polarity(x)
    first, blank, unfiltered = _cleaned(np.where(dark[:, None, None], 1 - x, x), denoise_noisy)
    out = _framings(first, blank, multiple)
    if not multiple:  # (the evaluation measures what the other readings buy)
        return [r[:1] for r in out], blank
    if unfiltered:
        idx = list(unfiltered)
        raw = np.stack([unfiltered[i] for i in idx])
        for i, extra in zip(idx, _framings(raw, np.zeros(len(idx), bool), multiple)):
            out[i] += extra
    other = np.flatnonzero(ambiguous)  # also where the first polarity found nothing (a thin stroke)
    if len(other):
        flipped = np.where(dark[other, None, None], x[other], 1 - x[other])
        second, blank2, _ = _cleaned(flipped, denoise_noisy)
        for i, extra in zip(other, _framings(second, blank2, multiple)):
            out[i] += extra
        blank[other] &= blank2
    return out, blank


def _ink_polarity(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W) -> (N,) whether the ink is darker than the ground, and whether that is unclear.
    The ground is the median (a digit covers well under half of its image), the ink the side whose
    extreme quantile strays further from it: a grey ground with a white digit is light ink, which
    the border alone (a median of the frame over 0.5) took for paper."""
    low, median, high = quantiles(x, (POLARITY_QUANTILE, 0.5, 1 - POLARITY_QUANTILE))
    down, up = median - low, high - median
    return down > up, np.abs(down - up) <= AMBIGUOUS * np.maximum(down, up)


def _cleaned(x: np.ndarray, denoise_noisy: bool) -> tuple[np.ndarray, np.ndarray, dict[int, np.ndarray]]:
    """Light-on-dark (N, H, W) -> background removed, contrast stretched, noise filtered where it
    is detected; which images are blank; and, for the filtered ones, their unfiltered version."""
    x, blank = _stretch(x - _backgrounds(x))
    unfiltered = {}
    if denoise_noisy:
        for i in np.flatnonzero((_noise_levels(x) > NOISE_SHARE) & ~blank):
            unfiltered[int(i)] = x[i].copy()
            (x[i],), (blank[i],) = _stretch(denoise(x[i])[None])
    return x, blank, unfiltered


def _framings(x: np.ndarray, blank: np.ndarray, multiple: bool) -> list[list[np.ndarray]]:
    """Cleaned (N, H, W) -> per image its (28, 28) readings: as it is when already MNIST-shaped;
    else cropped and centred (multiple: without the structures that touch the border, if any),
    and (multiple) also as it is for 28x28 uploads."""
    ready = _already_mnist(x) & ~blank
    as_is = multiple and x.shape[1:] == (SIDE, SIDE)
    out: list[list[np.ndarray]] = []
    for i in range(len(x)):
        if blank[i]:
            out.append([])
        elif ready[i]:
            out.append([x[i]])
        else:
            readings = [x[i]] if as_is else []
            inner = _without_border_structures(x[i]) if multiple else None
            # With border structures cut away, the crop that keeps them only shrinks the digit.
            readings.append(_fit_and_centre(x[i] if inner is None else inner))
            out.append(readings)
    return out


def _without_border_structures(gray: np.ndarray) -> np.ndarray | None:
    """The image without the ink that touches its border (8-connected), or None when nothing
    touches it or too little would be left (the digit itself runs off the edge)."""
    ink = gray > INK
    if not (ink[0].any() or ink[-1].any() or ink[:, 0].any() or ink[:, -1].any()):
        return None
    labels, count = ndimage.label(ink, structure=np.ones((3, 3), bool))
    touching = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    touching = touching[touching > 0]
    if len(touching) == count:
        return None
    inner = np.where(np.isin(labels, touching), 0, gray)
    return inner if inner.sum() >= INNER_MASS * gray[ink].sum() else None


def _stretch(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W): black background, brightest stroke at 1; and which images have no contrast."""
    x = np.clip(x, 0, None)
    top = x.max(axis=(1, 2))
    blank = top < BLANK
    return np.clip(x / np.where(blank, 1, top)[:, None, None], 0, 1).astype(np.float32), blank


def _already_mnist(x: np.ndarray) -> np.ndarray:
    """(N, H, W) -> (N,): 28x28, digit about 20 px, centre of mass within 1 px of MNIST's
    (resampling would only blur). Images need some ink (stretched ones have)."""
    n, h, w = x.shape
    if (h, w) != (SIDE, SIDE):
        return np.zeros(n, dtype=bool)
    ink = x > INK
    rows, cols = ink.any(2), ink.any(1)  # (N, 28) each
    # extent = last - first + 1, with argmax finding the first True from either end
    height = SIDE - rows[:, ::-1].argmax(1) - rows.argmax(1)
    width = SIDE - cols[:, ::-1].argmax(1) - cols.argmax(1)
    size = np.maximum(height, width)
    cy, cx = _centres_of_mass(x)
    return ((0.9 * BOX <= size) & (size <= 1.1 * BOX)
            & (np.abs(cy - MNIST_CENTRE[0]) <= 1) & (np.abs(cx - MNIST_CENTRE[1]) <= 1))


def _centres_of_mass(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W) -> row and column centres of mass, (N,) each (meaningless for blank images)."""
    mass = np.maximum(x.sum(axis=(1, 2)), np.finfo(np.float32).tiny)
    return x.sum(2) @ np.arange(x.shape[1]) / mass, x.sum(1) @ np.arange(x.shape[2]) / mass


def _backgrounds(x: np.ndarray) -> np.ndarray:
    """(N, H, W) background estimates: background_map for large images; for small ones one level
    on a dark ground, a grey opening on a grey or hazy one (see FLAT_GROUND)."""
    h, w = x.shape[1:]
    if h >= 2 * BACKGROUND_CELL or w >= 2 * BACKGROUND_CELL:
        return np.stack([background_map(gray) for gray in x])
    low, median = quantiles(x, (0.1, 0.5))
    out = np.repeat(low.astype(np.float32), h * w).reshape(x.shape)
    uneven = np.flatnonzero(median > FLAT_GROUND)
    if len(uneven):
        out[uneven] = opening(x[uneven], OPEN_RADIUS)
    return out


def background_map(gray: np.ndarray, cell: int = BACKGROUND_CELL) -> np.ndarray:
    """Smooth background estimate: the 10th percentile of each 40 px cell, bilinearly upsampled.

    Strokes cover far less than 90% of a cell, so the percentile sees paper, not ink.
    """
    h, w = gray.shape
    ny, nx = max(1, h // cell), max(1, w // cell)
    if ny == nx == 1:
        return np.float32(quantile(gray, 0.1))
    ch, cw = h // ny, w // nx  # equal cells; the few leftover edge pixels are covered by upsampling
    cells = gray[:ny * ch, :nx * cw].reshape(ny, ch, nx, cw).transpose(0, 2, 1, 3).reshape(ny, nx, -1)
    levels = np.percentile(cells, 10, axis=-1).astype(np.float32)  # (ny, nx)
    return np.asarray(Image.fromarray(levels).resize((w, h), Image.BILINEAR), dtype=np.float32)


def _filtered(gray: np.ndarray, image_filter: ImageFilter.Filter) -> np.ndarray:
    """Apply one of Pillow's C filters to a [0, 1] float image via 8 bits (1/255 steps are plenty)."""
    image = Image.fromarray((np.clip(gray, 0, 1) * 255 + 0.5).astype(np.uint8))
    return np.asarray(image.filter(image_filter), dtype=np.float32) / 255


def _noise_levels(x: np.ndarray) -> np.ndarray:
    """(N, H, W) -> (N,) share of background pixels (over 2 px from any stroke) that stray from
    the background level; 0 where under a fifth of the image is background."""
    h, w = x.shape[1:]
    # Strokes: where the 3x3 median is over 0.3, i.e. 5 of the 9 pixels are (the median ignores
    # salt, so isolated noise is not taken for a stroke); background: over 2 px from any stroke.
    strokes = box_counts(x > 0.3, 1, "edge") >= 5
    background = box_counts(strokes, 2, "constant") == 0
    sizes = background.sum(axis=(1, 2))
    level = quantiles(x, 0.5, background).astype(np.float32)[:, None, None]
    strays = ((np.abs(x - level) > NOISE_DELTA) & background).sum(axis=(1, 2))
    enough = (sizes > 0) & (sizes >= h * w // 5)
    return np.where(enough, strays / np.maximum(sizes, 1), 0.0)


def denoise(gray: np.ndarray) -> np.ndarray:
    """The card's blur and threshold, in a form that keeps strokes.

    A 3x3 median removes impulses, a Gaussian blur (sigma 0.8) averages what is left, and a soft
    threshold at the 65th percentile (background: a digit covers well under a third of its
    frame) takes away the noise floor but keeps the strokes' edges. A hard Otsu threshold cost
    accuracy on salt-and-pepper digits by cutting faint strokes.
    """
    smooth = _filtered(median3(gray), ImageFilter.GaussianBlur(0.8))
    return np.clip(smooth - quantile(smooth, 0.65), 0, None)


def _fit_and_centre(gray: np.ndarray) -> np.ndarray:
    """Crop the ink, scale the longer side to 20 px, paste with the centre of mass centred."""
    rows, cols = np.nonzero(gray > INK)
    digit = gray[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    scale = BOX / max(digit.shape)
    # Within 10% of the target size resampling would only blur (clean MNIST is already 20 px).
    if not 0.9 <= scale <= 1.1 or max(digit.shape) > SIDE:
        size = (max(1, round(digit.shape[1] * scale)), max(1, round(digit.shape[0] * scale)))
        digit = np.asarray(Image.fromarray(digit).resize(size, Image.BILINEAR), dtype=np.float32)
        digit = np.clip(digit, 0, 1)
    h, w = digit.shape
    cy, cx = _centres_of_mass(digit[None])
    top = int(np.clip(round(MNIST_CENTRE[0] - float(cy[0])), 0, SIDE - h))
    left = int(np.clip(round(MNIST_CENTRE[1] - float(cx[0])), 0, SIDE - w))
    canvas = np.zeros((SIDE, SIDE), dtype=np.float32)
    canvas[top:top + h, left:left + w] = digit
    return canvas


# ---------------------------------------------------------------- for training, tests and the evaluation
# (not on the serving path: the handler goes through mnist_like_many)

def training_view(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For training: (N, 28, 28) augmented images -> one of the readings serving would make of
    each, drawn at random (either polarity when unclear, filtered or not, as it is or cropped), so
    that the network learns every reading it will be shown. The crop without border structures is
    left out (rarely made, costly). Blank images stay as they are."""
    x = x.astype(np.float32, copy=False)
    dark, ambiguous = _ink_polarity(x)
    flip = dark ^ (ambiguous & (rng.random(len(x)) < 0.5))
    y, blank, unfiltered = _cleaned(np.where(flip[:, None, None], 1 - x, x), True)
    for i, raw in unfiltered.items():
        if rng.random() < 0.5:
            y[i] = raw
    ready = _already_mnist(y) & ~blank
    out = np.where(blank[:, None, None], x, y)
    for i in np.flatnonzero(~ready & ~blank & (rng.random(len(x)) < 0.5)):
        out[i] = _fit_and_centre(y[i])
    return out


def noise_level(gray: np.ndarray) -> float:  # for tests of the detector
    """One image's noise level (see _noise_levels)."""
    return float(_noise_levels(gray[None])[0])


def is_noisy(gray: np.ndarray) -> bool:
    """Whether the denoise step would run on this image; for tests."""
    return noise_level(gray) > NOISE_SHARE
