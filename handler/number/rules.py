"""Rules, edges and boxes: straight marks beside or through a number that are not digits.

A number is often written on a ruled line, underlined, or in a form's boxes; a crop catches a
scanner's edge or a table's border. A rule clear of the digits is a mark of its own, long and thin,
and is dropped (`rules`), as is a line drawn across the picture past the digits' tops and feet. A
rule the digits touch joins them into one mark that no cut separates (it runs under all of them),
and a bar along the image's side or a box's side between two digits reads as a `1`. So before a
line is segmented (`without_rules`), its runs of ink along rows longer than any digit's stroke and
the bars flush with its sides are taken out of its ink; then, where two or more upright bars taller
than the digits stand with one top and one bottom (a row of boxes, a box around the number), so are
the runs of ink down a column that span them all. Sizes are in line heights, as in segments.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from statistics import median

import numpy as np

from handler.number.components import Components, components_of, runs

SPECK = 0.1  # components under this share of the largest one's area do not set the line's height
THIN, LONG = 0.15, 1.5  # thinner on average and longer than these: a rule, not a digit
RULE_RUN = 2.5  # a run of ink along a row longer than this: a rule through the digits
# A box's side: an upright bar (no wider than BAR of its height, a column inked in SOLID of its rows)
# TALL times the digits' height or more (a 1 is as tall as the digits), one of two or more whose
# tops and bottoms are within ALIGN line heights of the median such bar's.
BAR, SOLID, TALL, ALIGN = 0.25, 0.9, 1.15, 0.1
# The image's left or right side is an edge where its ink runs down EDGE_RUN line heights or more
# (a box's side, a scanner's edge), unless the ink between both sides touches the top and the bottom
# row: a number cropped tight to its ink, whose first or last digit (a `1`) is flush with the side.
# Its top or bottom is an edge where its ink runs along LONG line heights (no digit is so wide).
# The edge is the columns (rows) next to that run, up to EDGE_WIDTH line heights, inked in FLUSH of it.
EDGE_RUN, EDGE_WIDTH, FLUSH = 0.4, 0.4, 0.9
# A line across the picture (_across): a thin mark from its top row to its bottom row, at least
# ACROSS line heights tall, with the other marks' tops and feet CLEAR line heights or more from both.
ACROSS, CLEAR = 1.2, 0.15


def line_height(comps: Components, leaving_out: np.ndarray | None = None) -> float:
    """The median height of the components that are not specks beside the largest (nor those
    `leaving_out` marks, a (K,) bool); nan when none is left."""
    heights = comps.boxes[:, 2] - comps.boxes[:, 0]
    counted = comps.areas >= SPECK * comps.areas.max()
    if leaving_out is not None:
        counted &= ~leaving_out
    return float(median(heights[counted].tolist())) if counted.any() else math.nan  # (statistics': few values)


def without_rules(masks: list[np.ndarray], comps: list[Components]) -> list[Components]:
    """Each mask's components (all from one components_of call), relabelled without its rules and
    edges where it has any (runs of ink along a row longer than RULE_RUN line heights; a side inked
    down EDGE_RUN of them), then without its boxes' sides; each pass's masks in one components_of
    call."""
    cleared: dict[int, np.ndarray] = {}
    for i, (mask, c, longest) in enumerate(zip(masks, comps, _longest_runs(comps))):
        if not len(c):
            continue
        line = line_height(c)
        sides = mask[:, 0].any() or mask[:, -1].any() or mask[0].any() or mask[-1].any()
        if longest > RULE_RUN * line or (sides and any(_edge(*side, line) for side in _sides(mask))):
            cleared[i] = _cleared(mask, line)
    comps = _relabelled(comps, cleared)
    boxed: dict[int, np.ndarray] = {}
    for i, c in enumerate(comps):
        span = _box_sides(c) if len(c) else None
        if span is not None:
            boxed[i] = _without_columns(cleared.get(i, masks[i]), *span)
    return _relabelled(comps, boxed)


def rules(comps: Components, line: float) -> np.ndarray:
    """(K,) bool: the components that are rules: longer than LONG lines and thinner than THIN on
    average (a rule under the number, a sheet's edge), or lines across the picture (_across)."""
    heights, widths = comps.boxes[:, 2] - comps.boxes[:, 0], comps.boxes[:, 3] - comps.boxes[:, 1]
    longer = np.maximum(heights, widths)
    return ((longer > LONG * line) & (comps.areas < THIN * line * longer)) | _across(comps, line, heights)


def _across(comps: Components, line: float, heights: np.ndarray) -> np.ndarray:
    """(K,) bool: thin marks (THIN) from the picture's top row to its bottom row, ACROSS line heights
    tall or more, where the line's other marks (not specks) have their tops and feet (the medians)
    CLEAR line heights or more from both rows: a line drawn across the picture beside the digits,
    which would read as a 1. A 1 written as tall runs off the picture only where the picture is
    cropped to it, and then its neighbours' feet, on one baseline with its own, are near its bottom."""
    height = comps.labels.shape[0]  # the picture's, in working pixels
    across = (
        (comps.boxes[:, 0] == 0)
        & (comps.boxes[:, 2] == height)
        & (heights >= ACROSS * line)
        & (comps.areas < THIN * line * heights)
    )
    if not across.any():
        return across
    others = comps.boxes[~across & (comps.areas >= SPECK * comps.areas.max())]
    if len(others) == 0:
        return np.zeros_like(across)
    top, bottom = np.median(others[:, 0]), np.median(others[:, 2])  # one digit may reach an edge
    clear = CLEAR * line
    return across if top >= clear and bottom <= height - clear else np.zeros_like(across)


def _relabelled(comps: list[Components], masks: dict[int, np.ndarray]) -> list[Components]:
    """`comps` with those of the masks given (by index) labelled again, in one call."""
    if not masks:
        return comps
    out = list(comps)
    for i, relabelled in zip(masks, components_of(list(masks.values()))):
        out[i] = relabelled
    return out


def _box_sides(comps: Components) -> tuple[int, int] | None:
    """The rows (top, bottom) that two or more boxes' sides all span, None without such: upright
    bars TALL times as tall as the line's other marks, their tops and bottoms ALIGN line heights
    from the median bar's."""
    boxes = comps.boxes
    heights, widths = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    thin = widths <= BAR * heights
    if thin.sum() < 2:
        return None
    line = line_height(comps, leaving_out=thin)  # the digits' height, not the boxes'
    if math.isnan(line):
        return None
    tall = [k for k in np.flatnonzero(thin & (heights >= TALL * line)) if _upright(comps, k)]
    if len(tall) < 2:
        return None
    tops, bottoms = boxes[tall, 0], boxes[tall, 2]
    near = ALIGN * line
    aligned = (np.abs(tops - np.median(tops)) <= near) & (np.abs(bottoms - np.median(bottoms)) <= near)
    return (int(tops[aligned].max()), int(bottoms[aligned].min())) if aligned.sum() >= 2 else None


def _upright(comps: Components, k: int) -> bool:
    """Whether component k (0-based) has a column inked in SOLID of its rows: a slanted stroke's
    columns each cover a part of them."""
    return bool(comps.mask([k + 1], *comps.boxes[k]).mean(0).max() >= SOLID)


def _without_columns(mask: np.ndarray, top: int, bottom: int) -> np.ndarray:
    """The mask without its runs of ink down a column that span rows top..bottom - 1."""
    out = mask.copy()
    _clear_runs(out.T, lambda starts, ends: (starts <= top) & (ends >= bottom))
    return out


def _clear_runs(lines: np.ndarray, picked: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> None:
    """Clears, in place, the runs of ink along the rows of `lines` (a mask, or a transposed view of
    one for its columns) that `picked(starts, ends)` marks."""
    rows, starts, ends = runs(lines)
    for row, start, end in zip(*(a[picked(starts, ends)] for a in (rows, starts, ends))):
        lines[row, start:end] = False


def _longest_runs(comps: list[Components]) -> np.ndarray:
    """(M,) the longest run of ink along a row in each mask (0 without ink), from the runs that
    components_of found in the masks side by side."""
    out = np.zeros(len(comps), int)
    if comps:
        starts, lengths, _, _ = comps[0].runs
        firsts = np.array([c.runs[2] for c in comps])  # each mask's first column
        np.maximum.at(out, np.searchsorted(firsts, starts, "right") - 1, lengths)
    return out


def _sides(mask: np.ndarray) -> list[tuple[np.ndarray, float, bool]]:
    """The (H, W) mask seen from each side, as views whose first column is that side (top, bottom,
    left, right), each with the run along it, in line heights, that makes it an edge and whether
    a number cropped tight to its ink has no edge on that side."""
    return [(mask.T, LONG, False), (mask[::-1].T, LONG, False), (mask, EDGE_RUN, True), (mask[:, ::-1], EDGE_RUN, True)]


def _edge(side: np.ndarray, least: float, unless_tight: bool, line: float) -> tuple[int, int] | None:
    """The rows (first, end) of the longest run of ink down a side's first column, where it is
    `least` line heights or longer and, `unless_tight`, the ink between the two sides' EDGE_WIDTH
    does not touch both ends of the side; else None."""
    column = side[:, 0]
    if not column.any():
        return None
    _, starts, ends = runs(column[None, :])
    k = int(np.argmax(ends - starts))
    first, end = int(starts[k]), int(ends[k])
    if end - first < least * line:
        return None
    width = max(1, round(EDGE_WIDTH * line))
    if unless_tight and side[0, width:-width].any() and side[-1, width:-width].any():
        return None
    return first, end


def _cleared(mask: np.ndarray, line: float) -> np.ndarray:
    """The mask without its runs of ink along rows longer than RULE_RUN lines, nor its edges: along
    a side's longest run of ink, the columns (rows) next to it inked in FLUSH of that run."""
    out = mask.copy()
    _clear_runs(out, lambda starts, ends: ends - starts > RULE_RUN * line)
    for side, least, unless_tight in _sides(out):  # views: cleared in place
        run = _edge(side, least, unless_tight, line)
        if run is not None:
            bar = side[run[0] : run[1], : max(1, round(EDGE_WIDTH * line))]
            bar[:, : int(np.argmin(np.r_[bar.mean(0) >= FLUSH, False]))] = False
    return out
