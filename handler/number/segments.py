"""A line of cleaned ink -> its candidate segments: the over-segmentation the best path is chosen from.

    ink components --(noise and rules dropped, wide ones cut along least-ink paths: cuts.py)--> atoms, left to right
    --(runs of 1..MAX_ATOMS neighbouring atoms, as wide as a digit)--> candidate segments

Every digit is meant to be one candidate segment (or a run of atoms that is one): a component
that is one digit, pieces of a broken digit together, a digit cut out of touching ones. Which
candidates are the digits is not decided here: the network scores every one, and the best path
through them (path.py) decides, as in LeCun, Bottou, Bengio and Haffner (1998).
Sizes are in units of the line's height (the median height of its components), so the same
rules hold for a 28 px line and a 300 px photo.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import median

import numpy as np

from handler.number.components import Components
from handler.number.cuts import cut_paths
from handler.number.rules import SPECK, line_height, rules
from handler.preprocess.framing import INK

STACKED = 0.5  # components whose columns overlap by this share of the narrower are one digit's pieces
NOISE_AREA = 0.01  # components under this x height^2 px (or under NOISE_SIDE both ways) are noise
NOISE_SIDE = 0.2
SPLIT_FROM = 1.2  # components wider than this are cut along the paths that cross the least ink
MAX_ATOMS = 4  # atoms in one candidate segment
MAX_WIDTH = 1.3  # no candidate segment wider than this
MAX_GAP = 0.2  # atoms further apart than this (the gap, horizontally) are never one digit
MAX_ATOMS_PER_LINE = 60  # more marks than this are not one number of at most 12 digits
# Lines of digits one above the other: bands of marks at least ROW_MARK line heights tall with
# rows of no such mark between them, ROW_GAP line heights or more, each band with ROW_MARKS of
# them. A broken digit's pieces, a stray blot or a scratch across a line make no such second band.
ROW_MARK, ROW_GAP, ROW_MARKS = 0.5, 0.2, 2


@dataclass
class Atom:
    """A component, or a piece of one between two cuts."""

    box: tuple[int, int, int, int]  # top, left, bottom, right (exclusive) of its ink
    ink: np.ndarray  # (bottom - top, right - left) bool: its pixels
    component: int  # which group of components (lattice: a component, or a broken digit's) it is part of
    area: int  # its pixels' count


@dataclass
class Lattice:
    """The candidate segments of one line. Nodes 0..A are the places between atoms (0: before the
    first); candidate segment s covers atoms spans[s][0] .. spans[s][1] - 1."""

    atoms: list[Atom]
    spans: list[tuple[int, int]]
    boxes: np.ndarray  # (S, 4) top, left, bottom, right (exclusive) of each candidate's ink
    widths: np.ndarray  # (S,) each candidate's width / the line's height
    heights: np.ndarray  # (S,) its height / the line's height
    cuts: np.ndarray  # (A + 1,) per node, the ink cut through there / the stroke width (0: a gap)
    skips: np.ndarray  # (A,) per atom, its area / the median atom's: what leaving it out loses
    line_height: float
    rows: int = 1  # lines of digits found one above the other; over 1, no candidates

    def was_cut(self) -> bool:
        """Whether a mark of the line was cut into pieces (digits that touch)."""
        return any(a.component == b.component for a, b in zip(self.atoms, self.atoms[1:]))

    def cut_piece(self, span: int) -> bool:
        """Whether candidate `span` holds part, not all, of a mark that was cut (its atoms of one
        group are neighbours: a group's pieces lie side by side)."""
        first, end = self.spans[span]
        atoms = self.atoms
        return (first > 0 and atoms[first - 1].component == atoms[first].component) or (
            end < len(atoms) and atoms[end].component == atoms[end - 1].component
        )


def lattice(comps: Components) -> Lattice | None:
    """The candidate segments of a line's ink components; None when nothing in it can be a digit."""
    boxes = comps.boxes
    heights, widths = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    if len(comps) == 0:
        return None
    line = line_height(comps)
    noise = (comps.areas < NOISE_AREA * line**2) | ((heights < NOISE_SIDE * line) & (widths < NOISE_SIDE * line))
    kept = np.flatnonzero(~noise & ~rules(comps, line))
    if len(kept) == 0:
        return None
    rows = _rows(boxes[kept[heights[kept] >= ROW_MARK * line]], line)
    if rows > 1:  # several lines: which is the number is not for the reader to guess
        return _without_candidates(line, rows)
    groups = _stacked(kept.tolist(), boxes.tolist(), comps.areas.tolist())
    if len(groups) > MAX_ATOMS_PER_LINE:  # before any is cut: a page of noise is not worked through
        return _without_candidates(line)
    largest = max(area for _, _, area in groups)
    heights = [box[2] - box[0] for _, box, area in groups if area >= SPECK * largest]
    line = float(median(heights))  # again, with a broken digit's pieces as one
    atoms, cuts = [], [0.0]
    for number, (members, box, area) in enumerate(groups):
        pieces, costs = _pieces(comps, number, members, box, area, line)
        atoms += pieces
        cuts += costs + [0.0]
    if len(atoms) > MAX_ATOMS_PER_LINE:
        return _without_candidates(line)
    spans, span_boxes = _candidates(atoms, line)
    span_boxes = np.array(span_boxes, int).reshape(-1, 4)
    areas = [a.area for a in atoms]
    return Lattice(
        atoms,
        spans,
        span_boxes,
        (span_boxes[:, 3] - span_boxes[:, 1]) / line,
        (span_boxes[:, 2] - span_boxes[:, 0]) / line,
        np.array(cuts),
        np.array(areas) / median(areas),
        line,
    )


def _rows(boxes: np.ndarray, line: float) -> int:
    """(M, 4) boxes of the line's digit-sized marks -> how many bands of at least ROW_MARKS of them
    lie one above the other, ROW_GAP line heights or more apart (1 when fewer than two such)."""
    bands: list[list[int]] = []  # per band: its top, bottom and how many marks it holds
    for top, bottom in sorted(boxes[:, [0, 2]].tolist()):
        if bands and top < bands[-1][1] + ROW_GAP * line:
            bands[-1][1] = max(bands[-1][1], bottom)
            bands[-1][2] += 1
        else:
            bands.append([top, bottom, 1])
    return max(1, sum(count >= ROW_MARKS for _, _, count in bands))


def _without_candidates(line: float, rows: int = 1) -> Lattice:
    """A lattice without candidates: several lines (`rows`), or more marks than a number of
    MAX_DIGITS digits makes."""
    return Lattice([], [], np.zeros((0, 4), int), np.zeros(0), np.zeros(0), np.zeros(1), np.zeros(0), line, rows)


def _stacked(kept: list[int], boxes: list[list[int]], areas: list[int]) -> list[tuple[list[int], tuple, int]]:
    """Components (0-based indices) grouped where their columns overlap by STACKED of the narrower:
    the pieces of a broken digit, one above the other. Per group, left to right: its components'
    labels (1-based), its box and its area."""
    groups: list[tuple[list[int], tuple, int]] = []
    for k in sorted(kept, key=lambda k: boxes[k][1]):
        top, left, bottom, right = boxes[k]
        if groups:
            members, (g_top, g_left, g_bottom, g_right), g_area = groups[-1]
            overlap = min(right, g_right) - max(left, g_left)
            if overlap >= STACKED * min(right - left, g_right - g_left):
                box = (min(top, g_top), min(left, g_left), max(bottom, g_bottom), max(right, g_right))
                groups[-1] = (members + [k + 1], box, g_area + areas[k])
                continue
        groups.append(([k + 1], (top, left, bottom, right), areas[k]))
    return sorted(groups, key=lambda g: g[1][1] + g[1][3])  # by their boxes' centres


def _pieces(
    comps: Components, number: int, members: list[int], box: tuple, area: int, line: float
) -> tuple[list[Atom], list[float]]:
    """Group `number` (components `members`, its box and area) as atoms: itself, or, when wider than
    SPLIT_FROM lines, its pieces between the cuts _cuts finds; and between each two atoms the ink
    the cut there goes through, in stroke widths."""
    top, left, bottom, right = box
    mine = comps.mask(members, *box)  # (h, w)
    if right - left <= SPLIT_FROM * line:
        return [Atom(box, mine, number, area)], []
    stroke = max(comps.stroke, 1.0)
    cuts = cut_paths(mine, line, stroke)
    columns = np.arange(right - left)[None, :]
    bounds = [np.full(len(mine), -1), *(path for path, _ in cuts), np.full(len(mine), right - left)]
    atoms: list[Atom] = []
    costs: list[float] = []
    crossed = 0.0  # the ink of the cuts since the last atom
    for before, after, cost in zip(bounds, bounds[1:], [0.0] + [c for _, c in cuts]):
        crossed = max(crossed, cost / stroke)
        piece = mine & (columns > before[:, None]) & (columns <= after[:, None])
        rows, cols = np.flatnonzero(piece.any(1)), np.flatnonzero(piece.any(0))
        if len(rows) == 0:  # nothing between two cuts
            continue
        if atoms:
            costs.append(crossed)
        crossed = 0.0
        box = (top + int(rows[0]), left + int(cols[0]), top + int(rows[-1]) + 1, left + int(cols[-1]) + 1)
        atoms.append(Atom(box, piece[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1], number, int(piece.sum())))
    return atoms, costs


def _candidates(atoms: list[Atom], line: float) -> tuple[list[tuple[int, int]], list[tuple[int, ...]]]:
    """Runs of neighbouring atoms that may be one digit: every atom alone, every whole component,
    and runs of at most MAX_ATOMS atoms, MAX_WIDTH lines wide, with no gap in them wider than
    MAX_GAP lines."""
    spans, boxes = [], []
    for i, first in enumerate(atoms):
        top, left, bottom, right = first.box
        for j in range(i + 1, len(atoms) + 1):
            if j > i + 1:
                atom = atoms[j - 1]
                if atom.box[1] - right > MAX_GAP * line:
                    break
                top, left = min(top, atom.box[0]), min(left, atom.box[1])
                bottom, right = max(bottom, atom.box[2]), max(right, atom.box[3])
            if j > i + MAX_ATOMS or right - left > MAX_WIDTH * line:
                if _whole(atoms, i, j):
                    spans.append((i, j))
                    boxes.append((top, left, bottom, right))
                if not all(a.component == first.component for a in atoms[i:j]):
                    break
                continue
            spans.append((i, j))
            boxes.append((top, left, bottom, right))
    return spans, boxes


def _whole(atoms: list[Atom], i: int, j: int) -> bool:
    """Whether atoms i..j-1 are all the pieces of one component."""
    label = atoms[i].component
    return (
        all(a.component == label for a in atoms[i:j])
        and (i == 0 or atoms[i - 1].component != label)
        and (j == len(atoms) or atoms[j].component != label)
    )


def segment_inks(cleaned: np.ndarray, lat: Lattice) -> list[np.ndarray]:
    """Each candidate's ink, (h, w) each: `cleaned` within its box on its atoms' pixels and on the
    soft edges there (the pixels at framing's INK or under it next to one over it: a blurred,
    smeared or frosted stroke is much of it, and the digit model frames an image's ink whole; a
    neighbour's edge reaching into the box is faint)."""
    hard = cleaned > INK
    grown = hard.copy()  # hard grown by one pixel, 4-neighbours
    grown[1:] |= hard[:-1]
    grown[:-1] |= hard[1:]
    grown[:, 1:] |= hard[:, :-1]
    grown[:, :-1] |= hard[:, 1:]
    edges = grown & ~hard
    out = []
    for (top, left, bottom, right), (first, end) in zip(lat.boxes.tolist(), lat.spans):
        mask = edges[top:bottom, left:right].copy()
        for atom in lat.atoms[first:end]:
            a_top, a_left, a_bottom, a_right = atom.box
            mask[a_top - top : a_bottom - top, a_left - left : a_right - left] |= atom.ink
        out.append(cleaned[top:bottom, left:right] * mask)
    return out
