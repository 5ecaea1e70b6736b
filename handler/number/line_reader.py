"""A line read whole by the line reader (model/line_network.py), for lines whose digits touch.

    the line's atoms' ink --line_input--> (28, W) --LineCNN, one pass a line-->
    (W / 4, 11) per column --greedy CTC decoding--> digits, each with its columns --> boxes

The segmentation (segments.py) reads digits that stand apart as well as the digit network reads a
digit; where digits touch, it must cut them apart, and no cut separates interlocked strokes. Lines
where it had to cut, and lines it is unsure of, are read by this network as well (reader.py
decides which reading stands).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from handler.number.segments import Lattice
from model.line_network import BLANK, HEIGHT, STRIDE

MARGIN = 2  # rows above and below the ink in the (28, W) input; columns: 2 x MARGIN each side
MAX_WIDTH = 40 * HEIGHT  # no line wider than this (in input columns): 12 digits at well over 3 digit heights each


def line_input(ink: np.ndarray, lat: Lattice) -> tuple[np.ndarray, tuple[float, float], int, int]:
    """(H, W) cleaned ink and its lattice -> (HEIGHT, w) float32 the line reader's input: only the
    atoms' pixels (specks and rules left out), cropped to them, scaled to HEIGHT - 2 MARGIN rows
    (and as much across, up to MAX_WIDTH), stretched to 1 at the brightest, w a multiple of STRIDE;
    and the scales across and down (input px per ink px) and the crop's top and left, to map
    columns back."""
    top = min(a.box[0] for a in lat.atoms)
    left = min(a.box[1] for a in lat.atoms)
    bottom = max(a.box[2] for a in lat.atoms)
    right = max(a.box[3] for a in lat.atoms)
    mask = np.zeros((bottom - top, right - left), bool)
    for atom in lat.atoms:
        t, lft, b, r = atom.box
        mask[t - top : b - top, lft - left : r - left] |= atom.ink
    crop = ink[top:bottom, left:right] * mask
    down = (HEIGHT - 2 * MARGIN) / crop.shape[0]
    width = min(max(1, round(crop.shape[1] * down)), MAX_WIDTH)
    with torch.inference_mode():
        x = torch.from_numpy(np.ascontiguousarray(crop, np.float32))[None, None]
        x = F.interpolate(x, (HEIGHT - 2 * MARGIN, width), mode="bilinear", antialias=True, align_corners=False)
        x = x / x.amax().clamp(min=1e-6)
    padded_width = -(-(width + 4 * MARGIN) // STRIDE) * STRIDE
    out = np.zeros((HEIGHT, padded_width), np.float32)
    out[MARGIN:-MARGIN, 2 * MARGIN : 2 * MARGIN + width] = x[0, 0].numpy()
    return out, (width / crop.shape[1], down), top, left


def read_columns(model: torch.nn.Module, inputs: list[np.ndarray], device) -> list[np.ndarray]:
    """Lines' (HEIGHT, w) inputs -> each one's (w / STRIDE, 11) probabilities, a forward pass each:
    padded to a batch's widest, a line's last columns would see the padding's features, so its
    reading would depend on the lines it was batched with (a stack of two costs about 1.7 passes)."""
    with torch.inference_mode():
        return [model(torch.from_numpy(x)[None, None].to(device)).exp()[0].cpu().numpy() for x in inputs]


def greedy_decode(p: np.ndarray) -> list[tuple[int, float, int, int]]:
    """(T, 11) per-column probabilities -> the digits of the best path (the most probable class per
    column, repeats merged, blanks dropped): per digit its class, its probability (the highest of
    its columns') and its first and last column."""
    best = p.argmax(1)
    out: list[tuple[int, float, int, int]] = []
    start = 0
    for t in range(1, len(best) + 1):
        if t == len(best) or best[t] != best[start]:
            if best[start] != BLANK:
                out.append((int(best[start]), float(p[start:t, best[start]].max()), start, t - 1))
            start = t
    return out


def digit_boxes(
    digits: list[tuple[int, float, int, int]], lat: Lattice, scale: tuple[float, float], top: int, left: int
) -> np.ndarray:
    """Each decoded digit's (top, left, bottom, right) box in the ink's pixels: the atoms' ink
    between the midpoints of its columns and its neighbours' (each digit's columns are where the
    network saw its middle), or where it has none, those columns over the line's rows. `scale`:
    line_input's, across and down."""
    across, down = scale
    centres = [((first + last) / 2 + 0.5) * STRIDE for _, _, first, last in digits]  # input px
    end = max(a.box[3] for a in lat.atoms)
    cuts = [(c - 2 * MARGIN) / across + left for c in ((a + b) / 2 for a, b in zip(centres, centres[1:]))]
    pixels = [np.nonzero(atom.ink) for atom in lat.atoms]
    rows = np.concatenate([r + atom.box[0] for (r, _), atom in zip(pixels, lat.atoms)])  # the atoms' ink pixels
    cols = np.concatenate([c + atom.box[1] for (_, c), atom in zip(pixels, lat.atoms)])
    boxes = []
    for x0, x1 in zip([left, *cuts], [*cuts, end]):  # ink columns
        inside = (cols >= x0) & (cols < x1)
        r, c = rows[inside], cols[inside]
        if len(r):
            boxes.append((int(r.min()), int(c.min()), int(r.max()) + 1, int(c.max()) + 1))
        else:  # no ink there: the columns, the line's rows
            boxes.append((top, int(x0), top + round((HEIGHT - 2 * MARGIN) / down), max(int(x0) + 1, int(x1))))
    return np.array(boxes, int).reshape(-1, 4)


@dataclass
class WholeLine:
    """A line as the line reader read it: its digits and their probabilities; their boxes are
    found only for the lines whose reading stands (reader.py), from what is kept here."""

    digits: list[int]
    confidences: list[float]
    decoded: list[tuple[int, float, int, int]]  # greedy_decode's
    lattice: Lattice
    placed: tuple[tuple[float, float], int, int]  # line_input's scales, top and left

    def boxes(self) -> np.ndarray:
        """(n, 4) each digit's (top, left, bottom, right) box in the ink's pixels (digit_boxes)."""
        return digit_boxes(self.decoded, self.lattice, *self.placed)


def read_whole_lines(model: torch.nn.Module, lines: list[tuple[np.ndarray, Lattice]], device) -> list[WholeLine]:
    """Lines' (cleaned ink, lattice) -> each one read by the line reader (read_columns)."""
    if not lines:
        return []
    prepared = [line_input(ink, lat) for ink, lat in lines]
    out = []
    for p, (_, lat), (_, *placed) in zip(read_columns(model, [x for x, *_ in prepared], device), lines, prepared):
        digits = greedy_decode(p)
        out.append(WholeLine([d for d, *_ in digits], [round(c, 6) for _, c, *_ in digits], digits, lat, tuple(placed)))
    return out
