"""A second tone: ink of one dimmer tone of its own (a ruled or struck-through line, a blot, a
stamp) over the digit's strokes -> a candidate view of the strokes alone.

Marks made apart from the digit often have a tone of their own: a form's printed lines are grey
where the pen is black, a blot is as dark as it is thick. Where a light-ink image (N, H, W) has
many pixels of one mid tone (one: an image of a few levels, quantized, has several), distinctly
dimmer than its brightest strokes and lying away from them, the pixels of that tone and dimmer
are dropped, except those next to the brighter strokes (their own antialiased edges). The image
keeps its first views: the network reads them all, and the handler answers with the view it is
most confident of (handler/inference.py). Thresholds chosen on MNIST *training* digits under the
evaluation's corruptions (docs/decisions.md).
"""

from __future__ import annotations

import numpy as np
import torch

BINS = 50  # tones, equal-width over [0, 1] of the image's brightest pixel
MID = 0.25  # tones above this count (fainter pixels are grain or antialiasing)
SEPARATION = 0.06  # the strokes are brighter than the top of the tone's bin by this much
LEAST = 10  # pixels of the tone, and pixels of it away from the strokes, at least
SHARE = 0.3  # the tone holds at least this share of the mid tones (not one of many: a rescan's blocks)
SECOND = 0.5  # ... and no tone 2 or more bins away holds this share of its pixels (a few levels: quantized)
PEAK = 6  # ... and this many times the mean of the bins 2-4 away (a tone, not a gradient: fog, blur)
STROKES = 15  # pixels brighter than the tone, at least
NEAR = 1  # px: the tone's pixels this close to the strokes are the strokes' edges, kept
AROUND = (-4, -3, -2, 2, 3, 4)  # bins compared with the tone's


def without_second_tone(x: torch.Tensor) -> tuple[list[int], torch.Tensor]:
    """(N, H, W) light ink on black -> the indices of the images with a second, dimmer tone, and
    (n, H, W) those images without it, stretched to 1 at their brightest, on x's device. In numpy
    on the CPU: a stack's few dozen small steps cost about a tenth of torch's calls (a batch of 16
    MNIST digits: a few microseconds an image), and most stacks stop after counting their tones."""
    n, h, w = x.shape
    a = x.cpu().numpy().reshape(n, h * w)
    v = a / np.maximum(a.max(1), np.float32(1e-6))[:, None]  # (N, H*W) in [0, 1]
    bins = np.minimum((v * np.float32(BINS)).astype(np.int32), BINS - 1)  # each pixel's tone
    mid = (v > np.float32(MID)) & (v < np.float32(1 - SEPARATION))
    codes = (bins + np.arange(0, n * BINS, BINS, dtype=np.int32)[:, None])[mid]
    picked, tones = _one_tone(np.bincount(codes, minlength=n * BINS).reshape(n, BINS))
    if not picked:
        return [], x[:0]
    v, bins, mid = v[picked].reshape(-1, h, w), bins[picked].reshape(-1, h, w), mid[picked].reshape(-1, h, w)
    tone = np.array(tones, np.int32)[:, None, None]
    top = (tone + 1).astype(np.float32) / np.float32(BINS)  # (n, 1, 1) the top of the tone's bin
    strokes = v > top + np.float32(SEPARATION)
    near = _dilated(strokes)  # the strokes and the pixels next to them (NEAR)
    apart = ((bins == tone) & mid & ~near).sum((1, 2))  # the tone's pixels away from the strokes
    keep = np.flatnonzero((strokes.sum((1, 2)) >= STROKES) & (apart >= LEAST))
    if len(keep) == 0:
        return [], x[:0]
    out = v[keep] * ((v[keep] >= top[keep]) | near[keep])
    out /= np.maximum(out.reshape(len(keep), -1).max(1), np.float32(1e-6))[:, None, None]
    return [picked[i] for i in keep], torch.from_numpy(out).to(x.device)


def _dilated(mask: np.ndarray) -> np.ndarray:
    """(n, H, W) bool -> set where any pixel within NEAR (a square) is set."""
    out = mask.copy()
    for _ in range(NEAR):
        grown = out.copy()
        grown[:, 1:] |= out[:, :-1]
        grown[:, :-1] |= out[:, 1:]
        out = grown.copy()
        out[:, :, 1:] |= grown[:, :, :-1]
        out[:, :, :-1] |= grown[:, :, 1:]
    return out


def _one_tone(counts: np.ndarray) -> tuple[list[int], list[int]]:
    """(N, BINS) each image's count of mid-tone pixels per tone -> the images with one tone of
    many pixels (LEAST, SHARE, SECOND, PEAK) and that tone. Shares and means in float32, so that
    an image exactly on a bound (27 of 90 mid tones at SHARE) goes the way the evaluated views did."""
    f32 = np.float32
    peak, tone = counts.max(1), counts.argmax(1)  # the first of equal tones
    maybe = np.flatnonzero((peak >= LEAST) & (peak.astype(f32) >= f32(SHARE) * counts.sum(1).astype(f32)))
    if len(maybe) == 0:  # most stacks: no tone holds enough of the mid tones
        return [], []
    counts, peak, tone = counts[maybe], peak[maybe], tone[maybe]
    second = np.where(np.abs(np.arange(BINS)[None] - tone[:, None]) >= 2, counts, 0).max(1)
    others = tone[:, None] + np.array(AROUND)[None]  # (n, 6) the tones around it
    real = (others >= 0) & (others < BINS)
    around = np.where(real, np.take_along_axis(counts, others.clip(0, BINS - 1), 1), 0).sum(1).astype(f32)
    around = np.maximum(around / real.sum(1).clip(min=1).astype(f32), f32(1))  # their mean, at least 1
    picked = np.flatnonzero((second < SECOND * peak) & (peak >= f32(PEAK) * around))
    return maybe[picked].tolist(), tone[picked].tolist()
