"""Where to cut a mark too wide for one digit (digits that touch): the paths from its top to its
bottom that cross the least ink, found by dynamic programming (segments.py makes its pieces atoms).
Two touching digits meet at a few pixels, and a path around each one's curves crosses only those;
a path through a digit crosses its strokes.
"""

from __future__ import annotations

import numpy as np

MIN_PIECE = 0.2  # no cut closer than this to the component's ends
APART = 0.2  # no cut closer than this to another, on average
MAX_CUT = 3.0  # no cut crossing more ink than this many strokes
SIDEWAYS = 0.1  # a cut's price for each column it moves sideways, in ink pixels
CUT_ROWS = (1 / 3, 1 / 2, 2 / 3)  # cuts go through these heights (of the component) at their cheapest


def cut_paths(mine: np.ndarray, line: float, stroke: float) -> list[tuple[np.ndarray, float]]:
    """Where to cut a wide component: paths from its top row to its bottom row, one column per row
    moving at most one column a row, that cross the least ink (dynamic programming down the rows
    and up them, a small price on each sideways step so that they stay upright where nothing is
    in the way). Two touching digits meet at a few pixels, and a path around each one's curves
    crosses only those; a path through a digit crosses its strokes. For each column of each row
    of CUT_ROWS the best path through it is known; the cuts are those whose cost is a local
    minimum along such a row, crossing at most MAX_CUT strokes of ink, the cheapest first, each
    APART lines from the others (on average) and MIN_PIECE from the ends. Per cut, left to right:
    its column in each row (the pixels up to it go left) and the ink pixels it crosses."""
    h, w = mine.shape
    margin = max(1, round(MIN_PIECE * line))
    if w <= 2 * margin or h < 3:
        return []
    cost = mine.astype(np.float32)
    cost[:, :margin] = cost[:, w - margin :] = np.inf
    down, down_steps = _descend(cost)
    up, up_steps = _descend(cost[::-1])
    inner = np.arange(margin, w - margin)
    chosen: list[tuple[float, int, int]] = []  # (ink crossed, row, column) of each cut's point
    for row in sorted({round(h * f) for f in CUT_ROWS}):
        through = np.full(w, np.inf, np.float32)  # the best path through each column of the row
        through[inner] = down[row, inner] + up[h - 1 - row, inner] - cost[row, inner]
        low = inner[(through[inner] <= through[inner - 1]) & (through[inner] <= through[inner + 1])]
        chosen += [(float(through[x]), row, int(x)) for x in low if through[x] <= MAX_CUT * stroke]
    cuts: list[tuple[np.ndarray, float]] = []
    for _, row, x in sorted(chosen):  # the cheapest first
        path = np.concatenate([_traced(down_steps[: row + 1], x), _traced(up_steps[: h - row], x)[::-1][1:]])
        if all(np.abs(path - other).mean() >= APART * line for other, _ in cuts):
            cuts.append((path, float(mine[np.arange(h), path].sum())))
    return sorted(cuts, key=lambda cut: cut[0].mean())


def _descend(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(h, w) costs -> per pixel the least cost of a path from the top row to it (moving at most a
    column a row, SIDEWAYS per step aside), and where that path came from (-1, 0, +1; the first
    of equals)."""
    h, w = cost.shape
    total = np.full((h, w + 2), np.inf, np.float32)  # a column of inf either side: no way out
    steps = np.zeros((h, w), np.int8)
    total[0, 1:-1] = cost[0]
    for y in range(1, h):
        above = total[y - 1]
        left, straight, right = above[:-2] + SIDEWAYS, above[1:-1], above[2:] + SIDEWAYS
        best = np.minimum(np.minimum(left, straight), right)
        steps[y] = np.where(left == best, -1, np.where(straight == best, 0, 1))
        total[y, 1:-1] = best + cost[y]
    return total[:, 1:-1], steps


def _traced(steps: np.ndarray, end: int) -> np.ndarray:
    """The best path's column in each row of `steps`, from its column `end` in the last row back up."""
    path = np.empty(len(steps), int)
    x = end
    for y in range(len(steps) - 1, 0, -1):
        path[y] = x
        x += int(steps[y, x])
    path[0] = x
    return path
