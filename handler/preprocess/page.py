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
the light's gradient or a shadow's edge is gradual); where the darker tone's cells that reach the
border and the lighter tone's cells are solid (what is left of them a cell in from their edges
covers TABLE_AREA and PAGE_AREA of the map: a stroke is no such region, so a line of bold digits
on dark paper is none); where the light cells the dark ones enclose are none or the sheet itself,
not a light digit's strokes on a dark band between light margins (margins.py); and where the paper
carries dark ink.
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
TABLE_AREA, PAGE_AREA = 0.05, 0.25  # shares of the map, a cell in from the regions' edges
INK_ON_PAGE = 0.0005  # at least this share of the paper darker than a quarter of the way up from the table


def page_filled(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, H, W) in [0, 1] -> the same, with the table around a sheet of paper filled with the
    paper's level in those that show one, and their indices."""
    none = torch.zeros(0, dtype=torch.long, device=x.device)
    if min(x.shape[1:]) < MIN_SIDE:
        return x, none
    cells = _cell_medians(x)  # (N, ch, cw)
    shown, table, light, paper, contrast = _tables(cells)
    if not shown:
        return x, none
    which = torch.tensor(shown, device=x.device)
    h, w = x.shape[1:]
    # The table's cells and those around them, which the sheet's edge crosses.
    ring = F.interpolate(max_filter(table[which], 1)[:, None], size=(h, w), mode="nearest")[:, 0]
    # Dark ink on the paper, clear of the table: else the light region is no page but, say, the
    # light margins around a dark band that a light digit is written on (margins.py).
    on_paper = 1 - ring
    ink = below(x[which], (paper[which] - contrast[which] * 3 / 4).float()[:, None, None]) * on_paper
    inked = ink.flatten(1).sum(1) >= INK_ON_PAGE * on_paper.flatten(1).sum(1)
    which, ring = which[inked], ring[inked]
    if len(which) == 0:
        return x, which
    level = _paper_plane(cells[which], light[which], h, w)
    k = math.ceil(max(h, w) / CELLS)
    darker = below(x[which], (paper[which] - contrast[which] / 4).float()[:, None, None])
    fill = torch.maximum(
        _table_pixels(x[which], table[which], ring, level, contrast[which], k), _from_border(darker, k)
    )
    out = x.clone()
    out[which] = x[which] * (1 - fill) + level * fill
    return out, which


def _tables(cells: torch.Tensor) -> tuple[list[int], torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, ch, cw) cell medians -> the indices of the maps that show a sheet on a table (the module's
    tests), and per map its (N, ch, cw) 0/1 table cells (the dark ones that reach the border) and
    paper cells (the light ones), and (N,) float64 the paper's level and the contrast between paper
    and table."""
    flat = cells.flatten(1)
    low, high = quantiles(flat, (0.02, 0.98))
    dark = below(flat, ((low + high) / 2).float()[:, None])  # (N, ch * cw) 0/1
    table_level, paper = quantiles(flat, 0.5, dark), quantiles(flat, 0.5, 1 - dark)
    contrast = paper - table_level
    edge = ((table_level + paper) / 2).float()
    mixed = (flat - edge[:, None]).abs() < (contrast / 4).float()[:, None]
    light = 1 - below(cells, edge[:, None, None])
    table = reach_border(1 - light)
    enclosed = light - reach_border(light)  # the sheet inside the picture, or light marks on a dark ground
    read = torch.stack(
        (
            contrast,
            mixed.double().mean(1),
            min_filter(table, 1).flatten(1).mean(1).double(),
            min_filter(light, 1).flatten(1).mean(1).double(),
            enclosed.flatten(1).mean(1).double(),
        )
    ).tolist()  # one read of the device; the decisions in Python
    shown = [
        i
        for i, (c, m, t, p, e) in enumerate(zip(*read))
        if c >= CONTRAST and m <= MIXED and t >= TABLE_AREA and p >= PAGE_AREA and not 0 < e < PAGE_AREA
    ]
    return shown, table, light, paper, contrast


def _table_pixels(
    x: torch.Tensor, table: torch.Tensor, ring: torch.Tensor, level: torch.Tensor, contrast: torch.Tensor, k: int
) -> torch.Tensor:
    """(n, H, W) pictures, (n, ch, cw) 0/1 table cells, (n, H, W) 0/1 those and the cells around
    them, (n, H, W) the paper's level, (n,) contrast, the cells' size -> 0/1 the table's pixels: in
    its cells and grown from them across the ring through pixels darker than the paper (the
    sheet's soft edge too, which would stay a faint outline around the digits), not a digit
    written near the edge, which paper separates from the table."""
    h, w = x.shape[1:]
    below_paper = below(x, level - (contrast.float() / 8)[:, None, None])
    allowed = ring * below_paper
    grown = F.interpolate(table[:, None], size=(h, w), mode="nearest")[:, 0] * allowed
    for _ in range(k // 2 + 1):  # a cell's width, two pixels a step
        grown = max_filter(grown, 2) * allowed
    return grown


def _paper_plane(cells: torch.Tensor, paper: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(n, ch, cw) cell medians and 0/1 paper cells -> (n, h, w) the plane a + b x + c y that fits
    the paper cells' levels (least squares): the paper's level under the light's gradient, carried
    across the table smoothly."""
    n, ch, cw = cells.shape
    ys, xs = torch.meshgrid(
        torch.linspace(0, 1, ch, device=cells.device), torch.linspace(0, 1, cw, device=cells.device), indexing="ij"
    )
    basis = torch.stack((torch.ones_like(xs), xs, ys), -1).reshape(1, ch * cw, 3).double()  # (1, K, 3)
    weight = paper.reshape(n, ch * cw, 1).double()
    normal = (basis * weight).transpose(1, 2) @ basis  # (n, 3, 3)
    moment = (basis * weight).transpose(1, 2) @ cells.reshape(n, ch * cw, 1).double()  # (n, 3, 1)
    coefficients = torch.linalg.solve(normal, moment)[:, :, 0].float()  # (n, 3)
    gy, gx = torch.meshgrid(
        torch.linspace(0, 1, h, device=cells.device), torch.linspace(0, 1, w, device=cells.device), indexing="ij"
    )
    return coefficients[:, :1, None] + coefficients[:, 1:2, None] * gx + coefficients[:, 2:3, None] * gy


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
