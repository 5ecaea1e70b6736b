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

import torch

from handler.preprocess.kernels import constant, max_filter

BINS = 50  # tones, equal-width over [0, 1] of the image's brightest pixel
MID = 0.25  # tones above this count (fainter pixels are grain or antialiasing)
SEPARATION = 0.06  # the strokes are brighter than the top of the tone's bin by this much
LEAST = 10  # pixels of the tone, and pixels of it away from the strokes, at least
SHARE = 0.3  # the tone holds at least this share of the mid tones (not one of many: a rescan's blocks)
SECOND = 0.5  # ... and no tone 2 or more bins away holds this share of its pixels (a few levels: quantized)
PEAK = 6.0  # ... and this many times the mean of the bins 2-4 away (a tone, not a gradient: fog, blur)
STROKES = 15  # pixels brighter than the tone, at least
NEAR = 1  # px: the tone's pixels this close to the strokes are the strokes' edges, kept
AROUND = (-4, -3, -2, 2, 3, 4)  # bins compared with the tone's


def without_second_tone(x: torch.Tensor) -> tuple[list[int], torch.Tensor]:
    """(N, H, W) light ink on black -> the indices of the images with a second, dimmer tone, and
    (n, H, W) those images without it, stretched to 1 at their brightest."""
    n = len(x)
    v = x / x.flatten(1).amax(1).clamp(min=1e-6)[:, None, None]  # (N, H, W) in [0, 1]
    bins = (v * BINS).int().clamp_(max=BINS - 1)  # (N, H, W) each pixel's tone
    mid = (v > MID) & (v < 1 - SEPARATION)
    counts = torch.zeros(n, BINS + 8, device=x.device)  # 4 empty bins each side, for AROUND
    counts.scatter_add_(1, (bins + 4).flatten(1).long(), mid.flatten(1).float())
    tones = counts[:, 4 : BINS + 4]  # (N, BINS)
    peak, tone = tones.max(1)  # (N,) the most common mid tone and its count
    apart_bins = (constant(tuple(range(BINS)), torch.int64, x.device)[None] - tone[:, None]).abs() >= 2
    second = (tones * apart_bins).amax(1)  # (N,) the most common tone 2 or more bins from it
    others = tone[:, None] + constant(AROUND, torch.int64, x.device)  # (N, 6) the bins around it
    real = ((others >= 0) & (others < BINS)).sum(1).clamp(min=1)  # those within [0, 1]
    around = counts.gather(1, others + 4).sum(1) / real  # (N,) their mean count
    top = (tone + 1).float() / BINS  # (N,) the top of the tone's bin
    strokes = v > (top + SEPARATION)[:, None, None]
    near = max_filter(strokes.float(), NEAR) > 0
    plateau = (bins == tone[:, None, None]) & mid
    apart = (plateau & ~near).flatten(1).sum(1)
    found = (
        (peak >= LEAST)
        & (peak >= SHARE * mid.flatten(1).sum(1))
        & (second < SECOND * peak)
        & (peak >= PEAK * around.clamp(min=1))
        & (strokes.flatten(1).sum(1) >= STROKES)
        & (apart >= LEAST)
    )
    picked = torch.nonzero(found).flatten()
    if len(picked) == 0:
        return [], x[:0]
    kept = (v[picked] >= top[picked, None, None]) | near[picked]
    out = v[picked] * kept
    return picked.tolist(), out / out.flatten(1).amax(1).clamp(min=1e-6)[:, None, None]
