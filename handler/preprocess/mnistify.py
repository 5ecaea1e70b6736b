"""(H, W) grayscale of either polarity -> (28, 28) as MNIST digits look: polarity, background,
denoise, crop, centre.

MNIST itself was made this way (NIST digits scaled into a 20x20 box, anti-aliased, then centred
by centre of mass in 28x28), so real photos and canvas drawings land in the same space.
The steps work on stacks of same-sized images, (N, H, W), so that a batch of 16 MNIST-sized
uploads costs about as many numpy calls as one image; a single image is a stack of one.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from handler.errors import InputError, NoDigitFound
from handler.preprocess.decode import WORK_SIDE
from handler.preprocess.kernels import box_counts, median3, quantile, quantiles

SIDE, BOX = 28, 20  # MNIST canvas and the box its digits are scaled into
BACKGROUND_CELL = WORK_SIDE // 4  # background_map's cell: 40 px
# Noise is judged on the background (pixels over 2 px away from any stroke): a share above
# NOISE_SHARE of it off the background level by over NOISE_DELTA. Clean MNIST scores exactly 0.
NOISE_DELTA, NOISE_SHARE = 0.15, 0.02
INK = 0.25  # after contrast stretching, pixels above this set the bounding box (faint grain does not)
# MNIST's mean centre of mass in (row, col) index coordinates: 14.00, 14.01 on the training set.
MNIST_CENTRE = (14.0, 14.0)


def mnist_like(gray: np.ndarray, denoise_noisy: bool = True) -> np.ndarray:
    """(H, W) grayscale of either polarity -> (28, 28) float32 as MNIST digits look.

    `denoise_noisy=False` skips the noise step; the evaluation uses it to measure what it buys.
    """
    (image,), (error,) = mnist_like_many([gray], denoise_noisy)
    if error is not None:
        raise error
    return image


def mnist_like_many(grays: list[np.ndarray], denoise_noisy: bool = True
                    ) -> tuple[list[np.ndarray | None], list[InputError | None]]:
    """mnist_like for many images at once: per image, its (28, 28) image or why there is none."""
    images: list[np.ndarray | None] = [None] * len(grays)
    errors: list[InputError | None] = [None] * len(grays)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, gray in enumerate(grays):
        by_shape.setdefault(gray.shape, []).append(i)
    for indices in by_shape.values():
        stack = np.stack([grays[i] for i in indices]).astype(np.float32, copy=False)  # (n, H, W)
        out, blank = _mnist_like_stack(stack, denoise_noisy)
        for i, image, is_blank in zip(indices, out, blank):
            if is_blank:
                errors[i] = NoDigitFound("blank", "no digit found: the image is blank or has no contrast")
            else:
                images[i] = image
    return images, errors


def _mnist_like_stack(x: np.ndarray, denoise_noisy: bool) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W) -> (N, 28, 28) and a (N,) mask of images with no digit in them."""
    dark_on_light = _border_levels(x) > 0.5  # dark ink on light paper -> light digit on black
    x = np.where(dark_on_light[:, None, None], 1 - x, x)
    x, blank = _stretch(x - _backgrounds(x))  # uneven light, grey paper, faint pens -> 0..1
    if denoise_noisy:
        for i in np.flatnonzero((_noise_levels(x) > NOISE_SHARE) & ~blank):
            (x[i],), (blank[i],) = _stretch(denoise(x[i])[None])
    out = np.zeros((len(x), SIDE, SIDE), dtype=np.float32)
    ready = _already_mnist(x) & ~blank
    if ready.any():  # only 28x28 stacks can be
        out[ready] = x[ready]
    for i in np.flatnonzero(~ready & ~blank):
        out[i] = _fit_and_centre(x[i])
    return out, blank


def _stretch(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W): black background, brightest stroke at 1; and which images have no contrast."""
    x = np.clip(x, 0, None)
    top = x.max(axis=(1, 2))
    blank = top < 0.1
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


def _border_levels(x: np.ndarray) -> np.ndarray:
    """(N, H, W) -> (N,) median of each image's outer 5% frame: the paper (or background) level."""
    n, h, w = x.shape
    margin = max(1, min(h, w) // 20)
    frame = np.concatenate([x[:, :margin].reshape(n, -1), x[:, -margin:].reshape(n, -1),
                            x[:, :, :margin].reshape(n, -1), x[:, :, -margin:].reshape(n, -1)], axis=1)
    return quantiles(frame, 0.5)


def _backgrounds(x: np.ndarray) -> np.ndarray:
    """(N, H, W) background estimates (see background_map); a level per image for small ones."""
    h, w = x.shape[1:]
    if h < 2 * BACKGROUND_CELL and w < 2 * BACKGROUND_CELL:
        return quantiles(x, 0.1).astype(np.float32)[:, None, None]
    return np.stack([background_map(gray) for gray in x])


def background_map(gray: np.ndarray, cell: int = BACKGROUND_CELL) -> np.ndarray:
    """Smooth background estimate: the 10th percentile of each 40 px cell, bilinearly upsampled.

    Strokes cover far less than 90% of a cell, so the percentile sees paper, not ink. Images under
    80 px (MNIST-sized) get one cell: a flat level, 0 for a clean digit.
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


# ---------------------------------------------------------------- for tests and the evaluation only
# (not on the serving path: the handler goes through mnist_like_many)

def noise_level(gray: np.ndarray) -> float:
    """One image's noise level (see _noise_levels); tests use it to check the detector."""
    return float(_noise_levels(gray[None])[0])


def is_noisy(gray: np.ndarray) -> bool:
    """Whether the denoise step would run on this image; for tests."""
    return noise_level(gray) > NOISE_SHARE
