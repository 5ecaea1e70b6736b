"""The page in a photo: a sheet of paper on a darker surface (a table, a desk, a clipboard).

A phone photo of a number written on paper often shows the sheet's edges and the table around it.
The table is darker than the paper and lies along the picture's border; where it covers half of
the picture, the median that polarity takes for the ground lies in it and the paper is taken for
ink, and the smooth ground estimate (background.py) cannot follow the sheet's sharp edge, so that
the table is left as ink around the digits. page_filled finds such a table and fills it with the
paper's level, as margins.py fills light margins with their band's ground: every later step then
reads the page alone.

The map: the picture averaged down to 3 pixels a cell, about CELLS cells along its longer side, and
the median of each cell's 9 pixels: a stroke narrower than half a cell leaves its cell on the paper.
A table is there where the map has two tones far apart (CONTRAST) with few cells between them
(MIXED: a sheet's edge is sharp, where the light's gradient or a shadow's edge is gradual); where
the darker tone's cells that reach the border and the lighter tone's cells are solid (what is left
of them a cell in from their edges covers TABLE_AREA and PAGE_AREA of the map: a stroke is no such
region, so a line of bold digits on dark paper is none); where the light cells the dark ones
enclose are none or the sheet itself, not a light digit's strokes on a dark band between light
margins (margins.py); and where the paper carries dark ink (not a bold digit cropped tight). The
table is filled with a plane fitted to the paper's cells (the light's gradient carried across), and
the cells around it, where the sheet's edge runs, as far as darker pixels join them to it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from handler.preprocess.kernels import below, max_filter, median9, min_filter, quantiles, reach_border

CELLS = 32  # about this many cells along the longer side
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
    small, cells = _map(x)  # (N, 3 ch, 3 cw) the picture averaged down, (N, ch, cw) its cells' medians
    shown, table, light, paper, contrast = _tables(cells)
    if not shown:
        return x, none
    which = torch.tensor(shown, device=x.device)
    h, w = x.shape[1:]
    picked = x[which]
    # Dark ink on the paper, clear of the table and the cells around it (which the sheet's edge
    # crosses): else the light region is no page but, say, the light margins around a dark band
    # that a light digit is written on (margins.py), or a bold digit's paper.
    cell = 3 * _factor(h, w)  # a cell's side in the picture's pixels
    on_paper = 1 - _at(max_filter(table[which], 1), cell, (h, w))
    ink = below(picked, (paper[which] - contrast[which] * 3 / 4).float()[:, None, None]) * on_paper
    inked = ink.flatten(1).sum(1) >= INK_ON_PAGE * on_paper.flatten(1).sum(1)
    which, picked = which[inked], picked[inked]
    if len(which) == 0:
        return x, which
    table, light, contrast = table[which], light[which], contrast[which].float()[:, None, None]
    plane = _paper_plane(cells[which], light)
    level_small, level = _plane_at(plane, small.shape[1:]), _plane_at(plane, (h, w))
    grown = _at(_table_reach(small[which], table, level_small - contrast / 8), cell // 3, (h, w))
    darker = below(picked, level - contrast / 4)
    fill = torch.maximum(grown * below(picked, level - contrast / 8), _from_border(darker, cell))
    out = x.clone()
    out[which] = picked + (level - picked) * fill
    return out, which


def _map(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, H, W) -> the picture averaged down by a whole factor to 3 pixels a cell, about CELLS
    cells along its longer side, (N, 3 ch, 3 cw) (the last rows and columns that make no whole cell
    left out); and each cell's median of its 9, (N, ch, cw): a stroke narrower than half a cell
    leaves its cell's median on the paper."""
    n, h, w = x.shape
    f = _factor(h, w)
    ch, cw = h // (3 * f), w // (3 * f)
    # the mean of each f x f block as f * f strided views added (a mean over the reshaped blocks'
    # strided axes, or avg_pool2d, costs several times more on the CPU)
    small = sum(x[:, i : 3 * ch * f : f, j : 3 * cw * f : f] for i in range(f) for j in range(f)) / (f * f)
    blocks = small.view(n, ch, 3, cw, 3)
    return small, median9([blocks[:, :, i, :, j] for i in range(3) for j in range(3)])


def _tables(cells: torch.Tensor) -> tuple[list[int], torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, ch, cw) cell medians -> the indices of the maps that show a sheet on a table (the module's
    tests, the cheap ones on every map first), per map its (N, ch, cw) 0/1 table cells (the dark
    ones that reach the border; found only where the cheap tests pass) and paper cells (the light
    ones), and (N,) float64 the paper's level and the contrast between paper and table."""
    flat = cells.flatten(1)
    low, high = quantiles(flat, (0.02, 0.98))
    dark = below(flat, ((low + high) / 2).float()[:, None])  # (N, ch * cw) 0/1
    table_level, paper = quantiles(flat, 0.5, dark), quantiles(flat, 0.5, 1 - dark)
    contrast = paper - table_level
    edge = ((table_level + paper) / 2).float()
    mixed = ((flat - edge[:, None]).abs() < (contrast / 4).float()[:, None]).double().mean(1)
    light = 1 - below(cells, edge[:, None, None])
    table = torch.zeros_like(cells)
    shares = light.flatten(1).mean(1).double()
    read = torch.stack((contrast, mixed, shares)).tolist()  # one read of the device; the decisions in Python
    shown = [
        i for i, (c, m, p) in enumerate(zip(*read)) if c >= CONTRAST and m <= MIXED and PAGE_AREA <= p <= 1 - TABLE_AREA
    ]
    if shown:  # solid regions: the dark cells at the border, the light cells
        which = torch.tensor(shown, device=cells.device)
        table[which] = reach_border(1 - light[which])
        solid = [min_filter(m, 1).flatten(1).mean(1) for m in (table[which], light[which])]
        read = torch.stack(solid).tolist()
        shown = [i for i, t, p in zip(shown, *read) if t >= TABLE_AREA and p >= PAGE_AREA]
    if shown:  # the light cells the dark ones enclose: none, or the sheet inside the picture
        which = torch.tensor(shown, device=cells.device)
        enclosed = (light[which] - reach_border(light[which])).flatten(1).mean(1).tolist()
        shown = [i for i, e in zip(shown, enclosed) if not 0 < e < PAGE_AREA]
    return shown, table, light, paper, contrast


def _table_reach(small: torch.Tensor, table: torch.Tensor, paper: torch.Tensor) -> torch.Tensor:
    """(n, 3 ch, 3 cw) pictures averaged down, (n, ch, cw) 0/1 table cells, (n, 3 ch, 3 cw) the
    paper's level less a margin -> 0/1 the table's pixels at that size: its cells, and the pixels of
    the cells around them that darker pixels join to them (the sheet's soft edge), not a digit
    written near the edge, which paper separates from the table."""
    size = small.shape[1:]
    ring, inside = _at(max_filter(table, 1), 3, size), _at(table, 3, size)
    allowed = ring * below(small, paper)
    grown = inside * allowed
    for _ in range(4):  # across the ring of cells, 3 pixels wide
        grown = max_filter(grown, 1) * allowed
    # and a pixel further: the sheet's soft edge, lighter on average than the margin
    return torch.maximum(max_filter(grown, 1) * ring, inside)


def _factor(h: int, w: int) -> int:
    """The whole factor _map averages an (h, w) picture down by: 3 pixels a cell, about CELLS cells."""
    return max(1, round(max(h, w) / (3 * CELLS)))


def _at(m: torch.Tensor, scale: int, size: tuple[int, int]) -> torch.Tensor:
    """(n, a, b) values of blocks `scale` pixels a side from the top left -> (n, *size), each
    block's value over its pixels, the last row and column carried on over those the blocks leave."""
    up = F.interpolate(m[:, None], scale_factor=scale, mode="nearest")
    return F.pad(up, (0, size[1] - up.shape[3], 0, size[0] - up.shape[2]), mode="replicate")[:, 0]


def _paper_plane(cells: torch.Tensor, paper: torch.Tensor) -> torch.Tensor:
    """(n, ch, cw) cell medians and 0/1 paper cells -> (n, 3) the plane a + b x + c y (x, y in
    [0, 1] across the map) that fits the paper cells' levels (least squares): the paper's level
    under the light's gradient, carried across the table smoothly (not the cells of ink, nor those
    the sheet's edge crosses)."""
    n, ch, cw = cells.shape
    ys, xs = _grid(ch, cw, cells.device)
    basis = torch.stack((torch.ones_like(xs), xs, ys), -1).reshape(1, ch * cw, 3).double()  # (1, K, 3)
    weighted = basis * paper.reshape(n, ch * cw, 1).double()
    return torch.linalg.solve(
        weighted.transpose(1, 2) @ basis, weighted.transpose(1, 2) @ cells.reshape(n, ch * cw, 1).double()
    )[:, :, 0].float()


def _plane_at(plane: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(n, 3) planes -> (n, *size) their levels over a picture of that size."""
    gy, gx = _grid(*size, plane.device)
    return plane[:, :1, None] + plane[:, 1:2, None] * gx + plane[:, 2:3, None] * gy


def _grid(rows: int, cols: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, cols) y and x, each from 0 to 1."""
    return torch.meshgrid(
        torch.linspace(0, 1, rows, device=device), torch.linspace(0, 1, cols, device=device), indexing="ij"
    )


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
