"""Things drawn by hand without a dataset: letters, symbols and doodles as pen strokes along
jittered skeletons, rendered as light ink on black (synthetic/non_digits.py puts them into uploads).

A shape is a list of strokes and filled polygons in its own unit box (x right, y down, both in
[0, 1]; `aspect` stretches x). Rendering draws each stroke with a round pen whose width varies along
it, after jittering the skeleton's points, slanting, rotating and stretching the whole, and bending
each stroke with a smooth wobble; then an elastic distortion and a slight blur, as a pen on paper
scanned at low resolution gives. None of this comes from a published dataset of handwriting.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFilter

Point = tuple[float, float]
Stroke = list[Point]  # one point: a dot


@dataclass
class Shape:
    strokes: list[Stroke]
    aspect: float = 1.0  # width / height of the unit box
    fills: list[Stroke] = field(default_factory=list)  # closed polygons, filled


def arc(cx: float, cy: float, rx: float, ry: float, start: float, end: float) -> Stroke:
    """Points along an ellipse from angle `start` to `end` in degrees (0: right, 90: down, as y grows down)."""
    steps = max(4, int(abs(end - start) / 12))
    return [
        (cx + rx * math.cos(math.radians(a)), cy + ry * math.sin(math.radians(a)))
        for a in np.linspace(start, end, steps + 1)
    ]


def smooth(*points: Point, per_segment: int = 8) -> Stroke:
    """A Catmull-Rom curve through `points`."""
    p = np.array([points[0], *points, points[-1]], dtype=np.float64)
    out = []
    for i in range(1, len(p) - 2):
        p0, p1, p2, p3 = p[i - 1], p[i], p[i + 1], p[i + 2]
        for t in np.linspace(0, 1, per_segment, endpoint=False):
            out.append(
                0.5
                * (2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2 + (3 * p1 - p0 - 3 * p2 + p3) * t**3)
            )
    out.append(p[-2])
    return [tuple(q) for q in out]


def mirror(strokes: list[Stroke]) -> list[Stroke]:
    return [[(1 - x, y) for x, y in s] for s in strokes]


def regular(cx: float, cy: float, r: float, sides: int, turn: float = -90.0, closed: bool = True) -> Stroke:
    points = [
        (
            cx + r * math.cos(math.radians(turn + 360 * k / sides)),
            cy + r * math.sin(math.radians(turn + 360 * k / sides)),
        )
        for k in range(sides)
    ]
    return points + points[:1] if closed else points


def star_points(cx: float, cy: float, outer: float, inner: float, spikes: int) -> Stroke:
    points = []
    for k in range(2 * spikes):
        r, a = (outer if k % 2 == 0 else inner), math.radians(-90 + 180 * k / spikes)
        points.append((cx + r * math.cos(a), cy + r * math.sin(a)))
    return points + points[:1]


# ------------------------------------------------------------------ letters and symbols

_P_BOWL = [(0, 0), (0.55, 0)] + arc(0.55, 0.27, 0.45, 0.27, -90, 90) + [(0, 0.54)]
_S = arc(0.5, 0.25, 0.45, 0.25, -20, -270) + arc(0.5, 0.75, 0.45, 0.25, -90, 160)
_CIRCLE = arc(0.5, 0.5, 0.5, 0.5, -90, 270)

# glyph -> its skeleton variants, each (strokes, aspect)
GLYPHS: dict[str, list[tuple[list[Stroke], float]]] = {
    "A": [([[(0, 1), (0.5, 0), (1, 1)], [(0.2, 0.6), (0.8, 0.6)]], 0.85)],
    "B": [
        (
            [
                [(0, 1), (0, 0)],
                [(0, 0), (0.55, 0)] + arc(0.55, 0.25, 0.4, 0.25, -90, 90) + [(0, 0.5)],
                [(0, 0.5), (0.6, 0.5)] + arc(0.6, 0.75, 0.4, 0.25, -90, 90) + [(0, 1)],
            ],
            0.7,
        )
    ],
    "C": [([arc(0.5, 0.5, 0.5, 0.5, -40, -320)], 0.85)],
    "D": [([[(0, 0), (0, 1)], [(0, 0), (0.45, 0)] + arc(0.45, 0.5, 0.55, 0.5, -90, 90) + [(0, 1)]], 0.8)],
    "E": [([[(1, 0), (0, 0), (0, 1), (1, 1)], [(0, 0.5), (0.8, 0.5)]], 0.7)],
    "F": [([[(1, 0), (0, 0), (0, 1)], [(0, 0.48), (0.8, 0.48)]], 0.65)],
    "G": [([arc(0.5, 0.5, 0.5, 0.5, -40, -355) + [(1, 0.55), (0.55, 0.55)]], 0.85)],
    "H": [([[(0, 0), (0, 1)], [(1, 0), (1, 1)], [(0, 0.5), (1, 0.5)]], 0.8)],
    "I": [([[(0.5, 0), (0.5, 1)], [(0.1, 0), (0.9, 0)], [(0.1, 1), (0.9, 1)]], 0.5), ([[(0.5, 0), (0.5, 1)]], 0.1)],
    "J": [([[(0.75, 0), (0.75, 0.7)] + arc(0.4, 0.7, 0.35, 0.3, 0, 170)], 0.6)],
    "K": [([[(0, 0), (0, 1)], [(0.9, 0), (0, 0.55)], [(0.3, 0.4), (1, 1)]], 0.75)],
    "L": [([[(0, 0), (0, 1), (0.8, 1)]], 0.6)],
    "M": [([[(0, 1), (0, 0), (0.5, 0.65), (1, 0), (1, 1)]], 1.0)],
    "N": [([[(0, 1), (0, 0), (1, 1), (1, 0)]], 0.8)],
    "O": [([_CIRCLE], 0.85)],
    "P": [([[(0, 1), (0, 0)], _P_BOWL], 0.7)],
    "Q": [([_CIRCLE, [(0.55, 0.7), (1, 1.05)]], 0.9)],
    "R": [([[(0, 1), (0, 0)], _P_BOWL, [(0.35, 0.54), (1, 1)]], 0.75)],
    "S": [([_S], 0.65)],
    "T": [([[(0, 0), (1, 0)], [(0.5, 0), (0.5, 1)]], 0.8)],
    "U": [([[(0, 0), (0, 0.6)] + arc(0.5, 0.6, 0.5, 0.4, 180, 0) + [(1, 0)]], 0.8)],
    "V": [([[(0, 0), (0.5, 1), (1, 0)]], 0.85)],
    "W": [([[(0, 0), (0.25, 1), (0.5, 0.35), (0.75, 1), (1, 0)]], 1.1)],
    "X": [([[(0, 0), (1, 1)], [(1, 0), (0, 1)]], 0.8)],
    "Y": [([[(0, 0), (0.5, 0.5), (1, 0)], [(0.5, 0.5), (0.5, 1)]], 0.8)],
    "Z": [([[(0, 0), (1, 0), (0, 1), (1, 1)]], 0.8)],
    "a": [
        ([arc(0.45, 0.5, 0.45, 0.5, 0, 360), [(0.9, 0), (0.9, 1)]], 0.85),
        ([[(0.1, 0.15)] + arc(0.5, 0.25, 0.4, 0.25, -160, 0) + [(0.9, 1)], arc(0.5, 0.72, 0.4, 0.28, 0, 360)], 0.8),
    ],
    "b": [([[(0, 0), (0, 1)], arc(0.5, 0.7, 0.5, 0.3, 180, -180)], 0.6)],
    "c": [([arc(0.5, 0.5, 0.5, 0.5, -45, -315)], 0.8)],
    "d": [([arc(0.45, 0.7, 0.45, 0.3, 0, 360), [(0.9, 0), (0.9, 1)]], 0.6)],
    "e": [([[(0.05, 0.5), (0.95, 0.5)] + arc(0.5, 0.5, 0.45, 0.5, 0, -310)], 0.85)],
    "f": [([[(0.9, 0.1)] + arc(0.6, 0.2, 0.3, 0.2, -30, -180) + [(0.3, 1)], [(0, 0.4), (0.75, 0.4)]], 0.55)],
    "g": [([arc(0.45, 0.3, 0.45, 0.3, 0, 360), [(0.9, 0), (0.9, 0.8)] + arc(0.5, 0.8, 0.4, 0.2, 0, 160)], 0.6)],
    "h": [([[(0, 0), (0, 1)], [(0, 0.6)] + arc(0.45, 0.6, 0.45, 0.3, 180, 360) + [(0.9, 1)]], 0.6)],
    "i": [([[(0.5, 0.35), (0.5, 1)], [(0.5, 0.05)]], 0.25)],
    "j": [([[(0.6, 0.35), (0.6, 0.8)] + arc(0.35, 0.8, 0.25, 0.2, 0, 150), [(0.6, 0.05)]], 0.4)],
    "k": [([[(0, 0), (0, 1)], [(0.8, 0.35), (0, 0.72)], [(0.3, 0.6), (0.85, 1)]], 0.55)],
    "l": [([[(0.5, 0), (0.5, 1)]], 0.1)],
    "m": [
        (
            [
                [(0, 0.25), (0, 1)],
                [(0, 0.45)] + arc(0.25, 0.45, 0.25, 0.2, 180, 360) + [(0.5, 1)],
                [(0.5, 0.45)] + arc(0.75, 0.45, 0.25, 0.2, 180, 360) + [(1, 1)],
            ],
            1.1,
        )
    ],
    "n": [([[(0, 0.2), (0, 1)], [(0, 0.45)] + arc(0.45, 0.45, 0.45, 0.25, 180, 360) + [(0.9, 1)]], 0.7)],
    "o": [([_CIRCLE], 1.0)],
    "p": [([[(0, 0), (0, 1)], arc(0.5, 0.3, 0.5, 0.3, 180, -180)], 0.6)],
    "q": [([arc(0.5, 0.3, 0.5, 0.3, 0, 360), [(1, 0), (1, 1)]], 0.6)],
    "r": [([[(0, 0), (0, 1)], [(0, 0.35)] + arc(0.5, 0.35, 0.5, 0.3, 180, 300)], 0.5)],
    "s": [([_S], 0.7)],
    "t": [([[(0.4, 0), (0.4, 0.8)] + arc(0.65, 0.8, 0.25, 0.2, 180, 60), [(0, 0.3), (0.85, 0.3)]], 0.5)],
    "u": [([[(0, 0), (0, 0.6)] + arc(0.45, 0.6, 0.45, 0.4, 180, 0), [(0.9, 0), (0.9, 1)]], 0.75)],
    "v": [([[(0, 0), (0.5, 1), (1, 0)]], 0.9)],
    "w": [([[(0, 0), (0.25, 1), (0.5, 0.35), (0.75, 1), (1, 0)]], 1.2)],
    "x": [([[(0, 0), (1, 1)], [(1, 0), (0, 1)]], 0.9)],
    "y": [([[(0, 0), (0.5, 0.65)], [(1, 0), (0.45, 0.8), (0.2, 1)]], 0.75)],
    "z": [([[(0, 0), (1, 0), (0, 1), (1, 1)]], 0.9)],
    "+": [([[(0.5, 0), (0.5, 1)], [(0, 0.5), (1, 0.5)]], 1.0)],
    "-": [([[(0, 0.5), (1, 0.5)]], 1.0)],
    "=": [([[(0, 0.3), (1, 0.3)], [(0, 0.7), (1, 0.7)]], 1.6)],
    "%": [([[(1, 0), (0, 1)], arc(0.2, 0.2, 0.17, 0.17, 0, 360), arc(0.8, 0.8, 0.17, 0.17, 0, 360)], 0.8)],
    "$": [([_S, [(0.5, -0.12), (0.5, 1.12)]], 0.65)],
    "&": [
        (
            [
                smooth(
                    (1, 1),
                    (0.3, 0.4),
                    (0.25, 0.18),
                    (0.42, 0.02),
                    (0.6, 0.16),
                    (0.5, 0.38),
                    (0.1, 0.66),
                    (0.12, 0.92),
                    (0.4, 1),
                    (0.72, 0.85),
                    (0.95, 0.55),
                )
            ],
            0.75,
        )
    ],  # noqa: E501
    "@": [
        (
            [
                arc(0.55, 0.55, 0.2, 0.22, 0, 360),
                [(0.75, 0.35), (0.75, 0.68)]
                + smooth(
                    (0.75, 0.68),
                    (0.9, 0.72),
                    (1, 0.5),
                    (0.9, 0.15),
                    (0.5, 0),
                    (0.1, 0.2),
                    (0, 0.6),
                    (0.25, 0.95),
                    (0.7, 1),
                    (0.9, 0.9),
                ),
            ],
            1.0,
        )
    ],  # noqa: E501
    "#": [([[(0.35, 0), (0.25, 1)], [(0.75, 0), (0.65, 1)], [(0, 0.33), (1, 0.33)], [(0, 0.67), (1, 0.67)]], 0.9)],
    "?": [
        (
            [
                smooth(
                    (0.05, 0.25), (0.2, 0.05), (0.5, 0), (0.85, 0.1), (0.9, 0.3), (0.7, 0.45), (0.5, 0.55), (0.5, 0.72)
                ),
                [(0.5, 0.97)],
            ],
            0.6,
        )
    ],  # noqa: E501
    "!": [([[(0.5, 0), (0.5, 0.72)], [(0.5, 0.97)]], 0.2)],
    "/": [([[(1, 0), (0, 1)]], 0.6)],
    "\\": [([[(0, 0), (1, 1)]], 0.6)],
    "*": [([[(0.5, 0), (0.5, 1)], [(0.07, 0.25), (0.93, 0.75)], [(0.93, 0.25), (0.07, 0.75)]], 0.9)],
    "(": [([arc(1.0, 0.5, 0.9, 0.6, -125, -235)], 0.35)],
    ")": [(mirror([arc(1.0, 0.5, 0.9, 0.6, -125, -235)]), 0.35)],
    "<": [([[(1, 0), (0, 0.5), (1, 1)]], 0.7)],
    ">": [([[(0, 0), (1, 0.5), (0, 1)]], 0.7)],
    "[": [([[(0.8, 0), (0, 0), (0, 1), (0.8, 1)]], 0.35)],
    "]": [([[(0.2, 0), (1, 0), (1, 1), (0.2, 1)]], 0.35)],
    "{": [([smooth((0.9, 0), (0.45, 0.08), (0.45, 0.4), (0, 0.5), (0.45, 0.6), (0.45, 0.92), (0.9, 1))], 0.4)],
    "}": [(mirror([smooth((0.9, 0), (0.45, 0.08), (0.45, 0.4), (0, 0.5), (0.45, 0.6), (0.45, 0.92), (0.9, 1))]), 0.4)],
    "~": [([smooth((0, 0.6), (0.25, 0.4), (0.5, 0.55), (0.75, 0.7), (1, 0.45))], 2.5)],
    "^": [([[(0, 1), (0.5, 0), (1, 1)]], 1.4)],
}


def glyph_shape(glyph: str, rng: np.random.Generator) -> Shape:
    strokes, aspect = GLYPHS[glyph][int(rng.integers(len(GLYPHS[glyph])))]
    return Shape(strokes, aspect)


# ------------------------------------------------------------------ doodles


def _smiley(rng: np.random.Generator) -> Shape:
    strokes = [_CIRCLE]
    if rng.random() < 0.5:
        strokes += [[(0.35, 0.37)], [(0.65, 0.37)]]
    else:
        strokes += [arc(0.35, 0.4, 0.08, 0.08, 0, 360), arc(0.65, 0.4, 0.08, 0.08, 0, 360)]
    mouth = rng.integers(3)
    strokes.append(
        arc(0.5, 0.55, 0.25, 0.2, 20, 160)
        if mouth == 0
        else arc(0.5, 0.85, 0.22, 0.15, 200, 340)
        if mouth == 1
        else [(0.33, 0.72), (0.67, 0.72)]
    )
    if rng.random() < 0.3:
        strokes.append([(0.5, 0.45), (0.47, 0.58), (0.53, 0.58)])
    return Shape(strokes)


def _face(rng: np.random.Generator) -> Shape:
    strokes = [
        arc(0.5, 0.55, 0.4, 0.45, -90, 270),
        [(0.38, 0.45)],
        [(0.62, 0.45)],
        [(0.5, 0.5), (0.47, 0.65), (0.53, 0.65)],
    ]
    strokes.append(arc(0.5, 0.7, 0.15, 0.08, 20, 160))
    if rng.random() < 0.6:  # hair
        strokes.append([(0.15 + 0.07 * k + (0.03 if k % 2 else 0), 0.1 + (0.08 if k % 2 else 0.0)) for k in range(11)])
    if rng.random() < 0.5:  # ears
        strokes += [arc(0.1, 0.55, 0.06, 0.1, 90, 270), arc(0.9, 0.55, 0.06, 0.1, -90, 90)]
    return Shape(strokes, float(rng.uniform(0.8, 1.0)))


def _star(rng: np.random.Generator) -> Shape:
    spikes = int(rng.choice([5, 5, 5, 6, 8]))
    outline = star_points(0.5, 0.52, 0.5, float(rng.uniform(0.18, 0.28)), spikes)
    if rng.random() < 0.3:
        return Shape([], fills=[outline])
    if rng.random() < 0.3 and spikes == 5:
        tips = regular(0.5, 0.52, 0.5, 5, closed=False)
        return Shape([[tips[k % 5] for k in range(0, 12, 2)]])  # a pentagram in one stroke
    return Shape([outline])


def _heart(rng: np.random.Generator) -> Shape:
    half = smooth((0.5, 0.25), (0.3, 0.03), (0.06, 0.12), (0.06, 0.45), (0.5, 1))
    outline = half + [(1 - x, y) for x, y in reversed(half)]
    return Shape([], fills=[outline]) if rng.random() < 0.35 else Shape([outline], float(rng.uniform(0.9, 1.2)))


def _arrow(rng: np.random.Generator) -> Shape:
    head = [(0.7, 0.25), (1, 0.5), (0.7, 0.75)]
    strokes = [[(0, 0.5), (1, 0.5)]]
    fills = []
    if rng.random() < 0.3:
        fills.append(head + head[:1])
    else:
        strokes.append(head)
    if rng.random() < 0.2:  # both ends
        strokes.append([(0.3, 0.25), (0, 0.5), (0.3, 0.75)])
    return Shape(strokes, float(rng.uniform(1.2, 2.5)), fills)


def _house(rng: np.random.Generator) -> Shape:
    strokes = [[(0, 0.45), (0, 1), (1, 1), (1, 0.45)], [(-0.05, 0.47), (0.5, 0), (1.05, 0.47)]]
    if rng.random() < 0.8:
        strokes.append([(0.4, 1), (0.4, 0.72), (0.6, 0.72), (0.6, 1)])
    if rng.random() < 0.6:
        strokes.append([(0.12, 0.55), (0.3, 0.55), (0.3, 0.7), (0.12, 0.7), (0.12, 0.55)])
    return Shape(strokes, float(rng.uniform(0.8, 1.2)))


def _spiral(rng: np.random.Generator) -> Shape:
    turns = rng.uniform(1.8, 4)
    t = np.linspace(0, turns * 2 * math.pi, int(40 * turns))
    r = 0.5 * t / t[-1]
    direction = rng.choice([-1, 1])
    return Shape([list(zip(0.5 + r * np.cos(direction * t), 0.5 + r * np.sin(direction * t)))])


def _scribble(rng: np.random.Generator) -> Shape:
    points = [tuple(p) for p in rng.uniform(0, 1, (int(rng.integers(6, 20)), 2))]
    return Shape([smooth(*points)], float(rng.uniform(0.7, 1.6)))


def _polygon(rng: np.random.Generator, round_ok: bool) -> Stroke:
    """A shape's outline; an ellipse only where `round_ok` (alone and outlined, it is how a 0 is written)."""
    kind = rng.integers(0 if round_ok else 1, 5)
    if kind == 0:
        return arc(0.5, 0.5, 0.5, float(rng.uniform(0.3, 0.5)), -90, 270)
    if kind == 1:
        return [(0, 0), (1, 0), (1, 1), (0, 1), (0, 0)]
    if kind == 2:
        return [(0.5, 0), (1, 1), (0, 1), (0.5, 0)]
    if kind == 3:
        return [(0.5, 0), (1, 0.5), (0.5, 1), (0, 0.5), (0.5, 0)]
    return regular(0.5, 0.5, 0.5, int(rng.integers(5, 9)), float(rng.uniform(0, 60)))


def _shapes(rng: np.random.Generator) -> Shape:
    strokes, fills = [], []
    count = 1 if rng.random() < 0.6 else int(rng.integers(2, 4))
    for _ in range(count):
        filled = rng.random() < 0.35
        shape = _polygon(rng, round_ok=filled or count > 1)
        if count > 1:
            scale, dx, dy = rng.uniform(0.4, 0.7), rng.uniform(0, 0.5), rng.uniform(0, 0.5)
            shape = [(dx + scale * x, dy + scale * y) for x, y in shape]
        (fills if filled else strokes).append(shape)
    return Shape(strokes, float(rng.uniform(0.7, 1.5)), fills)


def _sun(rng: np.random.Generator) -> Shape:
    rays = int(rng.integers(6, 13))
    strokes = [arc(0.5, 0.5, 0.25, 0.25, 0, 360)]
    for k in range(rays):
        a = 2 * math.pi * k / rays
        strokes.append(
            [(0.5 + 0.33 * math.cos(a), 0.5 + 0.33 * math.sin(a)), (0.5 + 0.5 * math.cos(a), 0.5 + 0.5 * math.sin(a))]
        )
    return Shape(strokes)


def _flower(rng: np.random.Generator) -> Shape:
    petals = int(rng.integers(5, 9))
    strokes = [arc(0.5, 0.3, 0.08, 0.08, 0, 360)]
    for k in range(petals):
        a = 360 * k / petals
        cx, cy = 0.5 + 0.17 * math.cos(math.radians(a)), 0.3 + 0.17 * math.sin(math.radians(a))
        strokes.append(arc(cx, cy, 0.1, 0.1, 0, 360))
    strokes.append([(0.5, 0.45), (0.5, 1)])
    if rng.random() < 0.7:
        strokes.append(arc(0.62, 0.72, 0.12, 0.06, 0, 360))
    return Shape(strokes, 0.7)


def _tree(rng: np.random.Generator) -> Shape:
    crown = smooth(
        (0.3, 0.55), (0.05, 0.4), (0.15, 0.12), (0.4, 0.0), (0.65, 0.05), (0.92, 0.2), (0.95, 0.45), (0.7, 0.58)
    )
    strokes = [crown, [(0.42, 0.58), (0.42, 1)], [(0.58, 0.58), (0.58, 1)]]
    if rng.random() < 0.3:
        return Shape(strokes[1:], 0.8, [crown + crown[:1]])
    return Shape(strokes, 0.8)


def _cloud(rng: np.random.Generator) -> Shape:
    bumps = int(rng.integers(3, 6))
    outline = []
    for k in range(bumps):
        cx = 0.15 + 0.7 * k / max(1, bumps - 1)
        outline += arc(cx, 0.35, 0.7 / bumps + 0.05, 0.25, 180, 360)
    outline += [(1, 0.6), (0, 0.6), outline[0]]
    return Shape([outline], float(rng.uniform(1.4, 2.2)))


def _lightning(rng: np.random.Generator) -> Shape:
    bolt = [(0.6, 0), (0.2, 0.55), (0.5, 0.55), (0.3, 1), (0.85, 0.4), (0.55, 0.4), (0.8, 0), (0.6, 0)]
    return Shape([], 0.6, [bolt]) if rng.random() < 0.5 else Shape([bolt], 0.6)


def _moon(rng: np.random.Generator) -> Shape:
    return Shape([arc(0.5, 0.5, 0.5, 0.5, 60, 300) + arc(0.75, 0.5, 0.4, 0.45, 240, 120)], 0.8)


def _stick_figure(rng: np.random.Generator) -> Shape:
    return Shape(
        [
            arc(0.5, 0.12, 0.12, 0.12, 0, 360),
            [(0.5, 0.24), (0.5, 0.65)],
            [(0.1, 0.35), (0.5, 0.4), (0.9, 0.35)],
            [(0.2, 1), (0.5, 0.65), (0.8, 1)],
        ],
        0.6,
    )


def _fish(rng: np.random.Generator) -> Shape:
    body = arc(0.4, 0.5, 0.4, 0.3, 0, 360)
    tail = [(0.78, 0.5), (1, 0.25), (1, 0.75), (0.78, 0.5)]
    return Shape([body, tail, [(0.22, 0.45)]], 1.6)


def _cat(rng: np.random.Generator) -> Shape:
    head = arc(0.5, 0.58, 0.42, 0.4, -60, 240)
    ears = [(0.29, 0.24), (0.2, 0.0), (0.42, 0.19), (0.58, 0.19), (0.8, 0.0), (0.71, 0.24)]
    whiskers = [
        [(0.1, 0.62), (0.38, 0.66)],
        [(0.62, 0.66), (0.9, 0.62)],
        [(0.12, 0.74), (0.38, 0.7)],
        [(0.62, 0.7), (0.88, 0.74)],
    ]
    return Shape([head, ears, [(0.38, 0.5)], [(0.62, 0.5)], *whiskers], 1.0)


def _car(rng: np.random.Generator) -> Shape:
    body = [(0, 0.75), (0, 0.45), (0.25, 0.45), (0.35, 0.15), (0.7, 0.15), (0.8, 0.45), (1, 0.5), (1, 0.75), (0, 0.75)]
    return Shape([body, arc(0.22, 0.8, 0.12, 0.15, 0, 360), arc(0.78, 0.8, 0.12, 0.15, 0, 360)], 1.8)


def _grid(rng: np.random.Generator) -> Shape:
    return Shape([[(0.33, 0), (0.33, 1)], [(0.67, 0), (0.67, 1)], [(0, 0.33), (1, 0.33)], [(0, 0.67), (1, 0.67)]])


DOODLES: dict[str, Callable[[np.random.Generator], Shape]] = {
    "smiley": _smiley,
    "face": _face,
    "star": _star,
    "heart": _heart,
    "arrow": _arrow,
    "house": _house,
    "spiral": _spiral,
    "scribble": _scribble,
    "shapes": _shapes,
    "sun": _sun,
    "flower": _flower,
    "tree": _tree,
    "cloud": _cloud,
    "lightning": _lightning,
    "moon": _moon,
    "stick_figure": _stick_figure,
    "fish": _fish,
    "cat": _cat,
    "car": _car,
    "grid": _grid,
}


# ------------------------------------------------------------------ rendering


def _densify(stroke: Stroke, step: float = 0.03) -> np.ndarray:
    p = np.asarray(stroke, dtype=np.float64)
    if len(p) < 2:
        return p
    out = [p[:1]]
    for a, b in zip(p[:-1], p[1:]):
        n = max(1, int(np.ceil(np.linalg.norm(b - a) / step)))
        out.append(a + (b - a) * np.linspace(0, 1, n + 1)[1:, None])
    return np.concatenate(out)


def _wobble(points: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    """A smooth sideways drift along the stroke: a hand does not follow its skeleton exactly."""
    if len(points) < 3:
        return points
    t = np.linspace(0, 1, len(points))[:, None]
    drift = sum(
        rng.normal(0, amount / (k + 1), 2) * np.sin((k + 1) * math.pi * t + rng.uniform(0, 2 * math.pi))
        for k in range(3)
    )
    return points + drift


def render(
    shape: Shape, rng: np.random.Generator, side: int = 96, pen: tuple[float, float] = (0.06, 0.16)
) -> np.ndarray:
    """`shape` drawn by a hand: (H, W) float32 light ink on black, the ink's longer side about
    `side` px, the pen's width a share of it drawn from `pen` (MNIST's strokes: about a tenth)."""
    jitter, wobble = rng.uniform(0.0, 0.04), rng.uniform(0.0, 0.03)
    slant, angle = rng.uniform(-0.35, 0.35), math.radians(rng.uniform(-12, 12))
    stretch = shape.aspect * rng.uniform(0.8, 1.2)
    rotate = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])

    def place(points: np.ndarray) -> np.ndarray:
        p = points + rng.normal(0, jitter, points.shape) if len(points) else points
        p = p * [stretch, 1.0]
        p[:, 0] += slant * (0.5 - p[:, 1])  # a forward slant leans the tops right
        return p @ rotate.T

    strokes = [_wobble(place(_densify(s)), rng, wobble) for s in shape.strokes]
    fills = [place(np.asarray(f, dtype=np.float64)) for f in shape.fills]
    everything = np.concatenate(strokes + fills)
    low, high = everything.min(0), everything.max(0)
    scale = side / max(1e-6, (high - low).max())
    pen = side * rng.uniform(*pen)
    margin = pen + 4
    width, height = (np.ceil((high - low) * scale + 2 * margin)).astype(int)
    canvas = Image.new("L", (int(width), int(height)), 0)
    draw = ImageDraw.Draw(canvas)
    to_pixels = lambda p: (p - low) * scale + margin  # noqa: E731
    for polygon in fills:
        draw.polygon([tuple(q) for q in to_pixels(polygon)], fill=255)
    phase = rng.uniform(0, 2 * math.pi)
    for stroke in strokes:
        p = to_pixels(stroke)
        for k in range(len(p)):  # a round pen, its width varying along the stroke (pressure)
            w = pen * (1 + 0.25 * math.sin(phase + k / 7))
            if k:
                draw.line([tuple(p[k - 1]), tuple(p[k])], fill=255, width=max(1, round(w)))
            r = w / 2 * (1.2 if len(p) == 1 else 1.0)
            draw.ellipse([p[k][0] - r, p[k][1] - r, p[k][0] + r, p[k][1] + r], fill=255)
    ink = np.asarray(canvas.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2))), dtype=np.float32) / 255
    return elastic(ink, rng, rng.uniform(0, 0.04) * side)


def elastic(ink: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    """(H, W) -> the same bent by a smooth random displacement of up to about `amount` px."""
    if amount < 0.5:
        return ink
    h, w = ink.shape
    generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
    shift = torch.rand(1, 2, 5, 5, generator=generator) * 2 - 1
    shift = F.interpolate(shift, size=(h, w), mode="bicubic", align_corners=True)[0]  # (2, H, W)
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    grid = torch.stack((xs + shift[0] * 2 * amount / w, ys + shift[1] * 2 * amount / h), -1)[None]
    out = F.grid_sample(torch.from_numpy(ink)[None, None], grid, align_corners=True, padding_mode="zeros")
    return out[0, 0].numpy()
