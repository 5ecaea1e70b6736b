"""Numbers of 3 to 7 digits as clients send them: the number reader's input families.

Handwritten numbers are MNIST digits written side by side (each cropped to its ink and scaled to
the line's height), printed ones are strings in the held-out fonts (synthetic/fonts.py,
split_fonts), so that the evaluation reads handwriting and type the network never saw when it is
given MNIST **test** digits. How the digits stand (gaps, touching, overlapping, sizes and a wobbly
baseline) and how the line is delivered (a PNG of the line, a phone photo of paper, a wide canvas
export, a scan, a form's row of boxes, the digit families' noise, grey grounds, outlines, edge
bars, haze, crossing lines, blots, speckle, motion blur and jitter) make the families. Nothing here
comes from a published benchmark.

    samples = number_family("gaps", digits, labels, count=500, seed=0)   # [(upload bytes, "40961"), ...]
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from synthetic.corruptions import CORRUPTIONS
from synthetic.families import encode_image
from synthetic.fonts import font_files, split_fonts

LENGTHS = (3, 7)  # digits per number, both included

NUMBER_FAMILIES = {
    "gaps": "handwritten digits side by side, gaps of 0.15-1 digit height, 24-48 px tall, PNG",
    "touching": "handwritten digits whose strokes touch their neighbour's (1-2 px of ink in common)",
    "overlapping": "handwritten digits whose boxes overlap by 5-20% of the height (they may touch or cross)",
    "sizes_baseline": "sizes varying by +-25% on a baseline wobbling by +-15% of the height",
    "paper_photo": "dark ink on paper photographed by a phone: 640x480, uneven light, +-4 deg, perspective, JPEG",
    "paper_on_table": "the sheet photographed on a darker table: 60-90% of the 640x480 picture each way, +-6 deg, JPEG",
    "canvas": "a wide browser canvas (840x280 RGBA): transparent ground, strokes in alpha, mostly dark pens",
    "scanned": "a scanned form: 1-3 deg skew, scanner blur and noise, sometimes a rule under the number",
    "boxed": "a form's row of boxes, a digit in each (cells 1.3-1.8 digit heights, lines 1-3 px), scanned",
    "printed": "held-out fonts on receipts, labels and meters: dark on light or light on dark, noise, JPEG",
    "gaussian_noise": "a 28 px high line, light on black, additive Gaussian noise (sigma 0.3)",
    "salt_and_pepper": "a 28 px high line, light on black, 10% of pixels set to black or white",
    "grey_background": "a 28 px high line, white on a grey ground (level up to 0.65)",
    "outline": "a 28 px high line of outlined digits: their strokes' contours only, as a stencil draws them",
    "edge_bars": "a 28 px high line, one or two solid bars along its edges up to 4 px thick (a box, a crop's edge)",
    "haze": "a 28 px high line, light on black, its contrast down to 0.48 under smooth fog",
    "crossing_lines": "a 28 px high line crossed by a straight, dashed or zig-zag line up to 2.6 px wide, at any angle",
    "blots": "a 28 px high line with 1-2 ink blots up to 3.7 px in radius, or 9 spatter drops",
    "speckle": "a 28 px high line, light on black, multiplicative noise x(1 + n), n ~ N(0, 0.5), faint grain",
    "motion_blur": "a 28 px high line smeared up to 7.2 px in one direction (a shaken camera)",
    "jitter": "a 28 px high line through frosted glass: pixels displaced by up to 1.6 px, softened",
}
# The digit families' corruptions (synthetic/corruptions.py) and the strengths the last eleven
# families apply (number_family's `strength` sets another).
CORRUPTION_STRENGTHS = {
    "gaussian_noise": 0.8,
    "salt_and_pepper": 7 / 12,
    "grey_background": 1.0,
    "outline": 0.7,
    "edge_bars": 0.5,
    # between the digit families' mild (0.4) and strong (1.0); speckle at its digit family's 0.6
    "haze": 0.7,
    "crossing_lines": 0.7,
    "blots": 0.7,
    "speckle": 0.6,
    "motion_blur": 0.7,
    "jitter": 0.7,
}


def number_family(
    family: str, digits: np.ndarray, labels: np.ndarray, count: int, seed: int = 0, strength: float | None = None
) -> list[tuple[bytes, str]]:
    """`count` numbers of the family as (upload bytes, the number's digits), reproducibly: each number
    draws LENGTHS digits at random from `digits` (N, 28, 28) uint8 and their `labels` (printed
    numbers print those labels in a held-out font). `strength`: the corruption's, for the families
    of CORRUPTION_STRENGTHS (None: the evaluation's, given there)."""
    if strength is not None and family not in CORRUPTION_STRENGTHS:
        raise ValueError(f"{family} has no corruption strength")
    render = _RENDER[family] if strength is None else _corrupted(family, strength)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        picked = rng.choice(len(digits), int(rng.integers(LENGTHS[0], LENGTHS[1] + 1)), replace=False)
        text = "".join(str(int(labels[i])) for i in picked)
        out.append((render(digits[picked], text, rng), text))
    return out


def mnist_row(digits: np.ndarray) -> np.ndarray:
    """(K, 28, 28) MNIST digits -> (28, 28K) uint8: the number they write in MNIST's own cells."""
    return np.concatenate(list(digits), axis=1)


# ---------------------------------------------------------------- writing a line


def glyph(digit: np.ndarray) -> np.ndarray:
    """(28, 28) uint8 light on black -> float32 coverage in [0, 1] cropped to its ink."""
    rows, cols = np.nonzero(digit > 25)
    crop = digit[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    return crop.astype(np.float32) / 255


def _scaled(coverage: np.ndarray, height: int) -> np.ndarray:
    h, w = coverage.shape
    width = max(1, round(w * height / h))
    return np.asarray(Image.fromarray(coverage).resize((width, height), Image.BICUBIC)).clip(0, 1)


def write_line(
    digits: np.ndarray,
    rng: np.random.Generator,
    height: int,
    gap: tuple[float, float] = (0.15, 1.0),
    size: float = 0.0,
    wobble: float = 0.0,
    touch: bool = False,
) -> np.ndarray:
    """(K, 28, 28) digits -> (H, W) float32 ink coverage, light on black, a margin of 2 px: each digit
    `height` px tall (times 1 +- `size`), its top `wobble` x height up or down, and the next one
    `gap` x height (drawn from the range; negative: the boxes overlap) after it, or, `touch`, moved
    until its strokes meet the line's and then 1-2 px further."""
    glyphs = [_scaled(glyph(d), max(6, round(height * (1 + rng.uniform(-size, size))))) for d in digits]
    tops = [round(wobble * height * rng.uniform(-1, 1)) for _ in glyphs]
    top0 = min(tops)
    canvas = np.zeros((max(t - top0 + g.shape[0] for t, g in zip(tops, glyphs)) + 4, 4 * height * len(glyphs)))
    x = 2
    for i, (g, top) in enumerate(zip(glyphs, tops)):
        y = top - top0 + 2
        if i and touch:
            x = _touching_x(canvas, g, y) - int(rng.integers(1, 3))
        elif i:
            x += round(height * rng.uniform(*gap))
        x = max(x, 2)
        region = canvas[y : y + g.shape[0], x : x + g.shape[1]]
        np.maximum(region, g, out=region)
        x += g.shape[1]
    used = np.flatnonzero(canvas.max(0) > 0)
    return canvas[:, : used.max() + 3].astype(np.float32)


def _touching_x(canvas: np.ndarray, g: np.ndarray, y: int) -> int:
    """Where glyph `g`'s left edge goes, its top at row `y`, for its ink to just meet the canvas's:
    per row the rightmost ink of the line and the leftmost of the glyph."""
    rows = canvas[y : y + g.shape[0]] > 0.3
    ink = g > 0.3
    both = rows.any(1) & ink.any(1)
    if not both.any():  # no row in common: side by side
        return int(np.flatnonzero(canvas.max(0) > 0).max()) + 1
    right = np.where(rows.any(1), rows.shape[1] - 1 - np.argmax(rows[:, ::-1], 1), -1)
    left = np.argmax(ink, 1)
    return int((right - left)[both].max()) + 1


# ---------------------------------------------------------------- delivering it


def _uint8(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)


def _on_paper(coverage: np.ndarray, rng: np.random.Generator, margin: int) -> bytes:
    """Dark ink on light paper (a fifth: light ink on dark), a margin around, 8-bit grey PNG."""
    padded = np.pad(coverage, margin)
    paper, ink = rng.uniform(0.85, 1.0), rng.uniform(0.0, 0.25)
    if rng.random() < 0.2:
        paper, ink = 1 - paper, 1 - ink
    return encode_image(_uint8(paper + (ink - paper) * padded))


def _line_png(digits: np.ndarray, rng: np.random.Generator, **how) -> bytes:
    height = int(rng.integers(24, 49))
    return _on_paper(write_line(digits, rng, height, **how), rng, int(rng.integers(2, 20)))


def gaps(digits, text, rng) -> bytes:
    return _line_png(digits, rng)


def touching(digits, text, rng) -> bytes:
    return _line_png(digits, rng, touch=True)


def overlapping(digits, text, rng) -> bytes:
    return _line_png(digits, rng, gap=(-0.2, -0.05))


def sizes_baseline(digits, text, rng) -> bytes:
    return _line_png(digits, rng, size=0.25, wobble=0.15)


def _tilted(gray: Image.Image, rng: np.random.Generator, degrees: float, keystone: float, fill: int) -> Image.Image:
    """Turned by up to `degrees` and seen slightly from the side: each corner moved by up to
    `keystone` of the side (a perspective transform)."""
    gray = gray.rotate(float(rng.uniform(-degrees, degrees)), Image.BILINEAR, fillcolor=fill)
    w, h = gray.size
    corners = np.array([(0, 0), (w, 0), (w, h), (0, h)], np.float64)
    seen = corners + rng.uniform(-keystone, keystone, (4, 2)) * (w, h)
    return gray.transform((w, h), Image.PERSPECTIVE, _perspective(corners, seen), Image.BILINEAR, fillcolor=fill)


def _perspective(out: np.ndarray, src: np.ndarray) -> tuple[float, ...]:
    """Pillow's 8 PERSPECTIVE coefficients taking each of the 4 `out` points (x, y) to its `src` one:
    x' = (a x + b y + c) / (g x + h y + 1), y' = (d x + e y + f) / (g x + h y + 1)."""
    rows, values = [], []
    for (x, y), (u, v) in zip(out, src):
        rows += [[x, y, 1, 0, 0, 0, -u * x, -u * y], [0, 0, 0, x, y, 1, -v * x, -v * y]]
        values += [u, v]
    return tuple(np.linalg.solve(np.array(rows), np.array(values)).tolist())


def paper_photo(digits, text, rng) -> bytes:
    """Dark ink on off-white paper, 640x480 or 480x640, the number 40-110 px tall anywhere, uneven
    light, sensor noise, a slight turn and perspective, warm or cool paper, JPEG q40-90."""
    width, height = (640, 480) if rng.random() < 0.7 else (480, 640)
    line = write_line(digits, rng, int(rng.integers(40, 111)), gap=(0.15, 0.8))
    if line.shape[1] > width - 100:
        scale = (width - 100) / line.shape[1]
        line = np.asarray(Image.fromarray(line).resize((width - 100, max(8, round(line.shape[0] * scale)))))
    coverage = np.zeros((height, width), np.float32)
    top = int(rng.integers(50, height - line.shape[0] - 50))  # clear of the edges the turn brings in
    left = int(rng.integers(50, width - line.shape[1] - 49))
    coverage[top : top + line.shape[0], left : left + line.shape[1]] = line.clip(0, 1)
    paper, ink = rng.uniform(0.7, 0.95), rng.uniform(0.05, 0.3)
    gy, gx = np.mgrid[0:height, 0:width] / max(width, height)
    light = 1 + rng.uniform(-0.15, 0.15) * gx + rng.uniform(-0.15, 0.15) * gy
    gray = (paper + (ink - paper) * coverage) * light + rng.normal(0, 0.02, (height, width))
    tilted = _tilted(Image.fromarray(_uint8(gray)), rng, 4.0, 0.04, int(np.median(gray) * 255))
    tint = rng.uniform(0.9, 1.0, 3)
    rgb = _uint8(np.asarray(tilted, np.float32)[..., None] / 255 * tint)
    return encode_image(rgb, "JPEG", quality=int(rng.integers(40, 91)))


def paper_on_table(digits, text, rng) -> bytes:
    """A sheet of paper on a darker table, photographed so that the table shows on one to four
    sides: the sheet 60-90% of the 640x480 picture each way, turned by up to 6 degrees about the
    number, the number 40-100 px tall; the table 0.05-0.45 of full scale, the paper 0.75-0.95,
    uneven light, sensor noise, JPEG q40-90."""
    width, height = 640, 480
    line = write_line(digits, rng, int(rng.integers(40, 101)), gap=(0.15, 0.8))
    sheet_w, sheet_h = int(width * rng.uniform(0.6, 0.9)), int(height * rng.uniform(0.6, 0.9))
    if line.shape[1] > sheet_w - 60:
        scale = (sheet_w - 60) / line.shape[1]
        line = np.asarray(Image.fromarray(line).resize((sheet_w - 60, max(8, round(line.shape[0] * scale)))))
    sheet_top, sheet_left = int(rng.integers(0, height - sheet_h + 1)), int(rng.integers(0, width - sheet_w + 1))
    top = sheet_top + int(rng.integers(20, sheet_h - line.shape[0] - 20))
    left = sheet_left + int(rng.integers(20, sheet_w - line.shape[1] - 19))
    coverage = np.zeros((height, width), np.float32)
    coverage[top : top + line.shape[0], left : left + line.shape[1]] = line.clip(0, 1)
    sheet = np.zeros((height, width), np.float32)
    sheet[sheet_top : sheet_top + sheet_h, sheet_left : sheet_left + sheet_w] = 1
    centre = (left + line.shape[1] / 2, top + line.shape[0] / 2)
    sheet = np.asarray(Image.fromarray(sheet).rotate(float(rng.uniform(-6, 6)), Image.BILINEAR, center=centre))
    paper, ink, table = rng.uniform(0.75, 0.95), rng.uniform(0.05, 0.3), rng.uniform(0.05, 0.45)
    gray = table + (paper - table) * sheet
    gray = gray + (ink - gray) * coverage
    gy, gx = np.mgrid[0:height, 0:width] / width
    light = 1 + rng.uniform(-0.15, 0.15) * gx + rng.uniform(-0.15, 0.15) * gy
    gray = gray * light + rng.normal(0, 0.02, (height, width))
    return encode_image(_uint8(gray), "JPEG", quality=int(rng.integers(40, 91)))


def canvas(digits, text, rng) -> bytes:
    """A browser canvas's toDataURL(): 840x280 RGBA, transparent, the strokes only in alpha."""
    width, height = 840, 280
    line = write_line(digits, rng, int(rng.integers(90, 200)), gap=(0.1, 0.6))
    if line.shape[1] > width - 10 or line.shape[0] > height - 10:
        scale = min((width - 10) / line.shape[1], (height - 10) / line.shape[0])
        size = (max(1, round(line.shape[1] * scale)), max(1, round(line.shape[0] * scale)))
        line = np.asarray(Image.fromarray(line).resize(size, Image.BILINEAR))
    out = np.zeros((height, width, 4), np.uint8)
    top = int(rng.integers(0, height - line.shape[0] + 1))
    left = int(rng.integers(0, width - line.shape[1] + 1))
    color = rng.integers(0, 60, 3) if rng.random() < 0.8 else rng.integers(0, 256, 3)
    out[top : top + line.shape[0], left : left + line.shape[1], :3] = color
    out[top : top + line.shape[0], left : left + line.shape[1], 3] = _uint8(line)
    return encode_image(out)


def scanned(digits, text, rng) -> bytes:
    """A scanned form: white paper, the number 30-70 px tall, 1-3 deg of skew, the scanner's blur and
    noise, and in a third of them a printed rule under the number, clear of it."""
    line = write_line(digits, rng, int(rng.integers(30, 71)), gap=(0.15, 0.8))
    page = np.pad(line, ((30, 40), (40, 40)))
    if rng.random() < 1 / 3:
        y = 30 + line.shape[0] + int(rng.integers(6, 14))
        page[y : y + int(rng.integers(1, 3)), 10:-10] = rng.uniform(0.5, 0.9)
    gray = Image.fromarray(_uint8(0.97 - 0.9 * page))
    gray = gray.rotate(float(rng.choice([-1, 1]) * rng.uniform(1, 3)), Image.BILINEAR, fillcolor=247)
    blurred = np.asarray(gray.filter(_blur(rng.uniform(0.4, 1.0))), np.float32) / 255
    return encode_image(_uint8(blurred + rng.normal(0, rng.uniform(0.01, 0.05), blurred.shape)))


def _blur(sigma: float):
    from PIL import ImageFilter

    return ImageFilter.GaussianBlur(sigma)


_FONTS: list | None = None


def boxed(digits, text, rng) -> bytes:
    """Each digit written in its own box of a form's row of boxes (a comb): cells 1.3-1.8 digit
    heights, lines 1-3 px of a lighter print, the digit anywhere in its cell clear of the lines;
    dark on white paper with the scanner's blur and noise."""
    height = int(rng.integers(24, 41))
    cell, line = round(height * rng.uniform(1.3, 1.8)), int(rng.integers(1, 4))
    comb = np.zeros((cell + line, len(digits) * cell + line), np.float32)
    level = rng.uniform(0.5, 1.0)
    comb[:line] = comb[-line:] = level
    for i, digit in enumerate(digits):
        comb[:, i * cell : i * cell + line] = level
        g = _scaled(glyph(digit), height)[:, : cell - line - 2]
        y = line + 1 + int(rng.integers(0, cell - line - 1 - g.shape[0]))
        x = i * cell + line + 1 + int(rng.integers(0, cell - line - 1 - g.shape[1]))
        region = comb[y : y + g.shape[0], x : x + g.shape[1]]
        np.maximum(region, g, out=region)
    comb[:, -line:] = level
    page = Image.fromarray(_uint8(0.97 - 0.9 * np.pad(comb, int(rng.integers(8, 25)))))
    blurred = np.asarray(page.filter(_blur(rng.uniform(0.3, 0.8))), np.float32) / 255
    return encode_image(_uint8(blurred + rng.normal(0, rng.uniform(0.01, 0.04), blurred.shape)))


def held_out_fonts() -> list:
    """The held-out fonts' files that Pillow opens (synthetic/fonts.py, split_fonts)."""
    global _FONTS
    if _FONTS is None:
        _FONTS = []
        for path in split_fonts(font_files())[1]:
            try:
                ImageFont.truetype(str(path), 20)
                _FONTS.append(path)
            except OSError:
                continue
    return _FONTS


def printed(digits, text, rng) -> bytes:
    """The number in a held-out font, 20-80 px: a receipt (faint grey print on white), a label (dark
    on a coloured ground) or a meter (light on dark); noise, a slight turn, JPEG q50-95."""
    fonts = held_out_fonts()
    if not fonts:
        raise RuntimeError("no fonts found under /usr/share/fonts (apt-get install fonts-dejavu ...)")
    font = ImageFont.truetype(str(fonts[int(rng.integers(len(fonts)))]), int(rng.integers(20, 81)))
    left, top, right, bottom = font.getbbox(text)
    margin = int(rng.integers(6, 30))
    kind = rng.choice(["receipt", "label", "meter"])
    ground, ink = {"receipt": (0.95, rng.uniform(0.25, 0.55)), "label": (rng.uniform(0.6, 0.9), 0.1)}.get(
        kind, (rng.uniform(0.0, 0.2), rng.uniform(0.75, 1.0))
    )
    image = Image.new("L", (right - left + 2 * margin, bottom - top + 2 * margin), int(ground * 255))
    ImageDraw.Draw(image).text((margin - left, margin - top), text, fill=int(ink * 255), font=font)
    image = image.rotate(float(rng.uniform(-3, 3)), Image.BILINEAR, fillcolor=int(ground * 255))
    gray = np.asarray(image, np.float32) / 255 + rng.normal(0, rng.uniform(0.01, 0.06), image.size[::-1])
    return encode_image(_uint8(gray), "JPEG", quality=int(rng.integers(50, 96)))


def _corrupted(family: str, strength: float | None = None):
    strength = CORRUPTION_STRENGTHS[family] if strength is None else strength

    def render(digits, text, rng) -> bytes:
        line = torch.from_numpy(write_line(digits, rng, 20, gap=(0.2, 0.6)))
        line = torch.nn.functional.pad(line, (4, 4, 2, 2))[None, None]  # 28 px high, as MNIST's cells
        generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
        out = CORRUPTIONS[family](line, torch.full((1,), strength), generator)
        return encode_image(_uint8(out[0, 0].numpy()))

    return render


_RENDER = {
    "gaps": gaps,
    "touching": touching,
    "overlapping": overlapping,
    "sizes_baseline": sizes_baseline,
    "paper_photo": paper_photo,
    "paper_on_table": paper_on_table,
    "canvas": canvas,
    "scanned": scanned,
    "boxed": boxed,
    "printed": printed,
    **{name: _corrupted(name) for name in CORRUPTION_STRENGTHS},
}
