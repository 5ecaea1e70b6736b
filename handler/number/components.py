"""Connected components (8-connected) of a binary image, from its runs of ink along rows.

Each row's runs are found at once (numpy), each run is joined to the runs of the row above that it
touches (ranges found by binary search, all rows together), and the runs' graph is reduced to its
components by hooking each edge's larger root to the smaller and halving paths, a few passes of
array operations: no Python loop over pixels or runs, no image-wide flood fill.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Components:
    """The components of a (H, W) ink mask, numbered 1..K: component k's pixels are where `labels`
    is k + `base` (labels shared by several masks' components: components_of)."""

    labels: np.ndarray  # (H, W) int32
    boxes: np.ndarray  # (K, 4) int: top, left, bottom, right of each, the last two exclusive
    areas: np.ndarray  # (K,) int: pixels of each
    base: int = 0
    # the runs of ink along rows that the labels were found from: (first columns, lengths), and
    # the columns (from, to) that are this mask's; read for its stroke width and its longest run (rules.py)
    runs: tuple[np.ndarray, np.ndarray, int, int] = (np.zeros(0, int), np.zeros(0, int), 0, 0)

    def __len__(self) -> int:
        return len(self.areas)

    @property
    def stroke(self) -> float:
        """The median length of the mask's horizontal runs of ink: how wide the strokes are."""
        starts, lengths, first, end = self.runs
        mine = lengths[(starts >= first) & (starts < end)]
        return float(np.median(mine)) if len(mine) else 0.0

    def mask(self, ks: list[int], top: int, left: int, bottom: int, right: int) -> np.ndarray:
        """Components ks' pixels within rows top..bottom-1 and columns left..right-1, bool."""
        labels = self.labels[top:bottom, left:right]
        if len(ks) == 1:
            return labels == ks[0] + self.base
        return np.isin(labels, np.array(ks) + self.base)


def runs(ink: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(H, W) bool -> per run of ink along a row: its row, first column and end column (exclusive),
    in row-major order."""
    h, w = ink.shape
    edges = np.zeros((h, w + 2), np.int8)
    edges[:, 1:-1] = ink
    steps = np.diff(edges, axis=1).ravel()  # (H * (W + 1)): +1 where a run starts, -1 where one has ended
    at = np.flatnonzero(steps)  # row-major: in each row a run's start, then its end, then the next's
    rows, starts = np.divmod(at[0::2], w + 1)
    return rows, starts, at[1::2] - rows * (w + 1)


def _touching_pairs(rows: np.ndarray, starts: np.ndarray, ends: np.ndarray, width: int) -> np.ndarray:
    """(E, 2) indices of runs in consecutive rows that touch (8-connected: columns at most 1 apart).
    Runs are sorted by row, then column, so those of row r touching run b of row r + 1 are one
    slice: from the first whose end reaches b's start to the last whose start is within b's end."""
    stride = width + 2  # (row, column) -> one sortable key
    above = (rows - 1) * stride
    first = np.searchsorted(rows * stride + ends, above + starts, "left")  # ends exclusive: end >= start
    last = np.searchsorted(rows * stride + starts, above + ends, "right")  # start <= end (exclusive)
    counts = np.maximum(last - first, 0)
    below = np.repeat(np.arange(len(rows)), counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    return np.stack([np.repeat(first, counts) + offsets, below], 1)


def _roots(count: int, pairs: np.ndarray) -> np.ndarray:
    """Per node of a graph with `count` nodes and edges `pairs`, the smallest node of its component."""
    parent = np.arange(count)
    a, b = pairs[:, 0], pairs[:, 1]
    while True:
        pa, pb = parent[a], parent[b]
        differ = pa != pb
        if not differ.any():
            return parent
        # hook each edge's larger root under the smaller (a root's parent only ever decreases)
        np.minimum.at(parent, np.maximum(pa, pb)[differ], np.minimum(pa, pb)[differ])
        while True:  # compress: every node to its root
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand


def components(ink: np.ndarray) -> Components:
    """(H, W) bool -> its 8-connected components, numbered left to right by their first column."""
    return components_of([ink])[0]


def components_of(masks: list[np.ndarray]) -> list[Components]:
    """Each (H, W) bool mask's components, labelled in one pass: the masks side by side, a column
    without ink between each two (numpy's fixed cost per call is paid once per batch)."""
    height = max(m.shape[0] for m in masks)
    starts_at = np.cumsum([0] + [m.shape[1] + 1 for m in masks])  # each mask's first column
    side_by_side = np.zeros((height, int(starts_at[-1]) - 1), bool)
    for mask, x in zip(masks, starts_at):
        side_by_side[: mask.shape[0], x : x + mask.shape[1]] = mask
    labels, boxes, areas, (starts, lengths) = _labelled(side_by_side)
    firsts = np.searchsorted(boxes[:, 1], starts_at)  # components are numbered by first column
    out = []
    for mask, x, first, last in zip(masks, starts_at, firsts, firsts[1:]):
        h, w = mask.shape
        own = labels[:h, x : x + w]  # a view: its components are labels first + 1 .. last
        shift = np.array([0, x, 0, x])
        out.append(Components(own, boxes[first:last] - shift, areas[first:last], first, (starts, lengths, x, x + w)))
    return out


def _labelled(ink: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """(H, W) bool -> labels (0: no ink, 1..K by first column), (K, 4) boxes, (K,) areas, and every
    run's first column and length."""
    h, w = ink.shape
    rows, starts, ends = runs(ink)
    lengths = ends - starts
    if len(rows) == 0:
        return np.zeros((h, w), np.int32), np.zeros((0, 4), int), np.zeros(0, int), (starts, lengths)
    roots = _roots(len(rows), _touching_pairs(rows, starts, ends, w))
    # A component's root is its first run (row-major): component ids in order of their top row.
    is_root = roots == np.arange(len(roots))
    component = (np.cumsum(is_root) - 1)[roots]  # per run: 0..K-1
    by_component = np.argsort(component, kind="stable")  # each component's runs together, in row order
    first = np.flatnonzero(np.r_[True, np.diff(component[by_component]) != 0])  # each one's first run
    last = np.r_[first[1:], len(rows)] - 1
    top, bottom = rows[by_component[first]], rows[by_component[last]] + 1
    left = np.minimum.reduceat(starts[by_component], first)
    right = np.maximum.reduceat(ends[by_component], first)
    areas = np.add.reduceat(lengths[by_component], first)
    order = np.argsort(left, kind="stable")  # renumbered left to right
    rank = np.empty(len(order), int)
    rank[order] = np.arange(len(order))
    labels = np.zeros((h, w), np.int32)
    pixel_rows = np.repeat(rows, lengths)
    pixel_cols = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
    labels[pixel_rows, pixel_cols] = np.repeat(rank[component] + 1, lengths)
    return labels, np.stack([top, left, bottom, right], 1)[order], areas[order], (starts, lengths)
