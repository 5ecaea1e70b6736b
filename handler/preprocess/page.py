"""The page in a photo: a sheet of paper on a darker surface (a table, a desk, a clipboard).

A phone photo of a number written on paper often shows the sheet's edges and the table around it.
The table is darker than the paper and lies along the picture's border; where it covers half of
the picture, the median that polarity takes for the ground lies in it and the paper is taken for
ink, and the smooth ground estimate (background.py) cannot follow the sheet's sharp edge, so that
the table is left as ink around the digits. page_filled finds such a table and fills it with the
paper's level, as margins.py fills light margins with their band's ground: every later step then
reads the page alone.

The map is the median of each cell of a grid, about CELLS cells along the longer side: a stroke
narrower than half a cell leaves its cell's median on the paper. A table is there where the map has
two tones far apart (CONTRAST) with few cells between them (MIXED: a sheet's edge is sharp, where
the light's gradient or a shadow's edge is gradual), and the darker tone's cells that reach the
border cover TABLE_AREA of the map, the lighter PAGE_AREA. Light ink on a dark ground (a canvas in
dark mode) leaves few cells light: its strokes are narrow.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from handler.preprocess.kernels import below, max_filter, min_filter, quantiles, reach_border

CELLS = 32
MIN_SIDE = 64  # smaller images are crops or drawings, not photos of a page
CONTRAST = 0.25  # the paper at least this much lighter than the table (of full scale)
MIXED = 0.1  # at most this share of cells within a quarter of the contrast of the midpoint
TABLE_AREA, PAGE_AREA = 0.05, 0.25
INK_ON_PAGE = 0.0005  # at least this share of the paper darker than a quarter of the way down to the table
SOLID = 2  # the table's cells SOLID cells in from its edges cover TABLE_AREA: no stroke is that thick


def page_filled(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, H, W) in [0, 1] -> the same, with the table around a sheet of paper filled with the
    paper's level in those that show one, and their indices."""
    n, h, w = x.shape
    none = torch.zeros(0, dtype=torch.long, device=x.device)
    if min(h, w) < MIN_SIDE:
        return x, none
    cells = _cell_medians(x)  # (N, ch, cw)
    flat = cells.flatten(1)
    low, high = quantiles(flat, (0.02, 0.98))
    middle = ((low + high) / 2).float()[:, None]
    dark = below(flat, middle)  # (N, ch * cw) 0/1
    table = quantiles(flat, 0.5, dark)
    paper = quantiles(flat, 0.5, 1 - dark)
    edge = ((table + paper) / 2).float()
    contrast = paper - table
    mixed = (flat - edge[:, None]).abs() < (contrast / 4).float()[:, None]
    tabled = reach_border(below(cells, edge[:, None, None]))  # (N, ch, cw) 0/1: the dark cells at the border
    solid = min_filter(tabled, SOLID)  # what is left of it SOLID cells in from its edges
    # Light cells the dark ones enclose: the sheet itself where it lies inside the picture, else
    # light marks on a dark ground (a light digit on a dark band between light margins).
    light = 1 - dark.view_as(cells)
    enclosed = light - reach_border(light)
    read = torch.stack(
        (
            contrast,
            mixed.double().mean(1),
            solid.flatten(1).mean(1).double(),
            light.flatten(1).mean(1).double(),
            enclosed.flatten(1).mean(1).double(),
        )
    ).tolist()  # one read of the device; the decisions in Python
    shown = [
        i
        for i, (c, m, t, p, e) in enumerate(zip(*read))
        if c >= CONTRAST and m <= MIXED and t >= TABLE_AREA and p >= PAGE_AREA and not 0 < e < PAGE_AREA
    ]
    if not shown:
        return x, none
    which = torch.tensor(shown, device=x.device)
    lighter = (edge[which] + contrast[which].float() / 4)[:, None, None]
    darker = below(x[which], lighter)  # darker than three quarters of the way up to the paper
    # Dark ink on the paper, clear of the table: else the light region is no page but, say, the
    # light margins around a dark band that a light digit is written on (margins.py).
    grown = max_filter(tabled[which], 1)[:, None]  # the table's cells and those its edge crosses
    region = F.interpolate(grown, size=(h, w), mode="nearest")[:, 0]
    ink = below(x[which], (edge[which] - contrast[which].float() / 4)[:, None, None]) * (1 - region)
    inked = ink.flatten(1).sum(1) >= INK_ON_PAGE * (1 - region).flatten(1).sum(1)
    which, darker, region = which[inked], darker[inked], region[inked]
    if len(which) == 0:
        return x, which
    level = paper[which].float()[:, None, None]
    k = math.ceil(max(h, w) / CELLS)
    fill = torch.maximum(region, _from_border(darker, k)) * darker
    out = x.clone()
    out[which] = x[which] * (1 - fill) + level * fill
    return out, which


def _cell_medians(x: torch.Tensor) -> torch.Tensor:
    """(N, H, W) -> (N, H // k, W // k) the median of each k x k cell, k = ceil(max(H, W) / CELLS)
    (the last rows and columns that make no whole cell left out)."""
    n, h, w = x.shape
    k = math.ceil(max(h, w) / CELLS)
    ch, cw = h // k, w // k
    blocks = x[:, : ch * k, : cw * k].reshape(n, ch, k, cw, k).transpose(2, 3).reshape(n * ch * cw, k * k)
    return quantiles(blocks, 0.5).float().view(n, ch, cw)


def _from_border(dark: torch.Tensor, depth: int) -> torch.Tensor:
    """(N, H, W) 0/1 -> 0/1 the pixels within `depth` of a side whose row or column is dark from that
    side to them: the strips of table narrower than a cell along the border, which the map, whose
    cells the sheet's edge crosses there, takes for paper."""
    out = torch.zeros_like(dark)
    for axis in (1, 2):
        d = min(depth, dark.shape[axis])
        start = dark.narrow(axis, 0, d)
        out.narrow(axis, 0, d).copy_(torch.maximum(out.narrow(axis, 0, d), start.cumprod(axis)))
        end = dark.narrow(axis, dark.shape[axis] - d, d).flip(axis)
        tail = out.narrow(axis, dark.shape[axis] - d, d)
        tail.copy_(torch.maximum(tail, end.cumprod(axis).flip(axis)))
    return out
