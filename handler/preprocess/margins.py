"""Margins: the light page or panels around the region a digit is written in.

A crop of a dark form cell with the page around it, or a dark-mode canvas between light panels,
is a light digit on a dark band between wide light margins. The margins are as light as the digit,
so to the rest of the preprocessing they are ink (a crop that holds them shrinks the digit), and
where they take half of the picture its median lies in them, and the band is taken for ink. The
band's own ground is the digit's ground: margins_filled finds the band and fills the margins with
its ground level, so that the picture is the band alone; every later step then reads it as it
reads any light digit on a dark ground.

A margin is a light row or column at the border (or next to another margin); the band, what they
leave, counts only as a dark rectangle: large, mostly dark, dark along each of its sides, with
something light (the digit) in it. The bounding box of a dark digit on paper is not one: paper
lies along its sides.
"""

from __future__ import annotations

import torch

from handler.preprocess.kernels import above, quantiles

# Light: over the mid-point of the picture's extreme levels. A row or column is margin when at
# least MARGIN_SHARE of it is light. The band, what is left, holds at least BAND_AREA of the
# picture, each of its four sides is at least DARK_SIDES dark, and between LIT and STROKES of it
# is light: a digit's strokes, which cover well under a third of their frame (the light counter
# of a bold "0" cropped tight covers more).
MARGIN_SHARE, BAND_AREA, DARK_SIDES, LIT, STROKES = 0.9, 0.3, 0.8, 0.01, 1 / 3
SIDE_DEPTH = 3  # a side is its darkest line of the SIDE_DEPTH at that end


def margins_filled(x: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, H, W) and (N,) float64 its darkest and lightest levels (low and high quantiles) -> the
    same, the light margins of those that have them filled with their band's ground level (its
    median), and the indices of those."""
    n, h, w = x.shape
    light = above(x, ((low + high) / 2).float()[:, None, None])  # (N, H, W) 0/1
    rows, cols = _between(light.sum(2) < MARGIN_SHARE * w), _between(light.sum(1) < MARGIN_SHARE * h)  # (N, H), (N, W)
    lit = (rows[:, None, :] @ light @ cols[:, :, None]).view(n)  # light pixels in the band
    # One read of the device, the rest decided in Python (whole numbers, exact): most have no margins.
    height, width, lit = torch.stack((rows.sum(1), cols.sum(1), lit)).tolist()
    framed = [
        i
        for i, (rows_in, cols_in, light_in) in enumerate(zip(height, width, lit))
        if BAND_AREA * h * w <= rows_in * cols_in < h * w and LIT <= light_in / (rows_in * cols_in) < STROKES
    ]
    if not framed:
        return x, torch.zeros(0, dtype=torch.long, device=x.device)
    which = torch.tensor(framed, device=x.device)
    # Each end of the band moved to its darkest line near it; each side dark along its length.
    light, rows, cols = light[which], rows[which], cols[which]
    inner_rows, top_bottom = _darkest_ends((light * cols[:, None, :]).sum(2), rows)  # (n, H), (n, 2)
    inner_cols, left_right = _darkest_ends((light * rows[:, :, None]).sum(1), cols)  # (n, W), (n, 2)
    across = torch.tensor([[width[i]] * 2 + [height[i]] * 2 for i in framed], dtype=torch.float64, device=x.device)
    sides = torch.cat((top_bottom, left_right), 1) / across  # (n, 4): light shares of the sides
    keep = sides.amax(1) <= 1 - DARK_SIDES
    which = which[keep]
    if len(which) == 0:
        return x, which
    out = x.clone()
    inside = inner_rows[keep, :, None] * inner_cols[keep, None, :]  # (n, H, W) 0/1: the band
    level = quantiles(x[which], 0.5, inside).float()[:, None, None]
    out[which] = x[which] * inside + level * (1 - inside)
    return out, which


def _between(kept: torch.Tensor) -> torch.Tensor:
    """(N, L) bool, which lines are not margin -> (N, L) 0/1: from the first of them to the last."""
    kept = kept.float()
    return kept.cummax(1).values * kept.flip(1).cummax(1).values.flip(1)


def _span(first: torch.Tensor, last: torch.Tensor, length: int) -> torch.Tensor:
    """(N, 1) first and last line -> (N, length) 0/1 the lines from one to the other."""
    at = torch.arange(length, device=first.device)[None]
    return ((at >= first) & (at <= last)).float()


def _darkest_ends(counts: torch.Tensor, inner: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, L) light pixels per line and the (N, L) 0/1 lines of the band -> the band's lines from
    the darkest of the SIDE_DEPTH lines at its start to the darkest of those at its end (where band
    and margin meet, a line is partly both), less one where a margin lies beyond, and (N, 2) the
    light pixels of the darkest lines."""
    length = counts.shape[1]
    first = inner.argmax(1, keepdim=True)
    last = length - 1 - inner.flip(1).argmax(1, keepdim=True)
    depth = torch.arange(SIDE_DEPTH, device=counts.device)[None]
    lines = torch.stack((torch.minimum(first + depth, last), torch.maximum(last - depth, first)), 1)  # (N, 2, D)
    at_lines = counts.gather(1, lines.flatten(1)).view_as(lines)
    darkest = lines.gather(2, at_lines.argmin(2, keepdim=True))[..., 0]  # (N, 2): first darkest wins ties
    # and one line further in where a margin lies beyond it: the line a blurred edge left grey
    start, end = darkest[:, :1], darkest[:, 1:]
    start, end = start + (start > 0).long(), end - (end < length - 1).long()
    return _span(start, end, length), at_lines.amin(2).double()
