"""Uploads that are not one digit, as upload bytes: what the service must refuse instead of
answering with a digit. Five kinds, each in a training split and an evaluation split that share no
fonts (synthetic.fonts.split_fonts) and no random streams (the split is part of every seed):

- printed_letters: letters and symbols printed in a font;
- handwritten_letters: letters and symbols drawn by hand (synthetic/strokes.py: pen strokes along
  jittered skeletons, not a dataset);
- drawings: doodles (smileys, faces, stars, hearts, arrows, houses, spirals, scribbles, shapes ...);
- photos: procedural pictures of other things (gradients, textures, lit overlapping shapes, JPEG);
- several_digits: two to four digits side by side (MNIST training digits for the training split,
  MNIST test digits for the evaluation one), handwritten or printed.

Each is rendered in the client forms the digit families use (synthetic/families.py): a 28x28 PNG
light on black, a 280x280 canvas export, a photo of paper, a printed crop; photos as JPEG files.
Glyphs a digit is written like (AMBIGUOUS: O and 0, l and 1, ...) are in neither split of the
letter kinds; `ambiguous_glyphs` renders them alone, for the report.
"""

from __future__ import annotations

import functools
import string

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from synthetic.families import encode_image
from synthetic.fonts import font_files, split_fonts
from synthetic.strokes import DOODLES, GLYPHS, glyph_shape, render

# glyph -> the digit it is written like: the same shape in some hands or fonts, so that no reader
# can tell them apart alone (left out of the letter kinds; reported on their own). A plain circle
# or ellipse is a 0 for the same reason, and no drawing is one (synthetic/strokes.py, _shapes).
AMBIGUOUS = {
    "O": "0",
    "o": "0",
    "I": "1",
    "l": "1",
    "|": "1",
    "/": "1",  # a slanted 1
    "\\": "1",
    "(": "1",  # a curved 1
    ")": "1",
    "[": "1",  # a 1 with a flag and a foot
    "]": "1",
    "Z": "2",
    "z": "2",
    "S": "5",
    "s": "5",
    "b": "6",
    "B": "8",
    "g": "9",
    "q": "9",
}
SYMBOLS = "+-=%$&@#?!/\\*()<>[]{}~^"
GLYPH_SET = "".join(c for c in string.ascii_letters + SYMBOLS if c not in AMBIGUOUS)

# kind -> (the reason the service gives, what it is)
KINDS = {
    "printed_letters": ("not_a_digit", "letters (upper and lower case) and symbols printed in a font"),
    "handwritten_letters": ("not_a_digit", "letters and symbols drawn by hand: pen strokes along jittered skeletons"),
    "drawings": ("not_a_digit", "doodles: smileys, faces, stars, hearts, arrows, houses, spirals, scribbles, shapes"),
    "photos": ("not_a_digit", "procedural pictures: gradients, textures, lit overlapping shapes, noise; JPEG"),
    "several_digits": ("several_digits", "two to four MNIST digits (or printed digits) side by side"),
}
REASONS = {kind: reason for kind, (reason, _) in KINDS.items()}
SPLITS = {"train": 1, "eval": 2}  # the split is the first word of every seed: no shared streams
# kind -> (client form, share): how each kind is uploaded
FORMS = {
    "printed_letters": (("printed_crop", 0.45), ("mnist_png", 0.25), ("paper_photo", 0.3)),
    "handwritten_letters": (("mnist_png", 0.4), ("canvas", 0.3), ("paper_photo", 0.3)),
    "drawings": (("mnist_png", 0.3), ("canvas", 0.4), ("paper_photo", 0.3)),
    "photos": (("photo_jpeg", 0.7), ("photo_28px", 0.15), ("photo_png", 0.15)),
    "several_digits": (("mnist_png", 0.35), ("canvas", 0.3), ("paper_photo", 0.35)),
}
DOODLE_PEN = (0.025, 0.1)  # share of a drawing's size: finer than a digit's strokes, to keep its details
PRINTED_NUMBERS = 0.2  # share of several_digits printed in a font instead of written
# Uploads keep their ink this share of the side clear of the edges: ink touching the edge is
# taken for a ruler or scanner edge and cut away (handler/preprocess/framing.py).
MARGIN = 0.04
PHOTO_WORK = 160  # px: photos are drawn at this longer side, then enlarged to theirs


def described(
    kind: str,
    count: int,
    split: str,
    seed: int = 0,
    mnist: np.ndarray | None = None,
    glyphs: str = GLYPH_SET,
) -> list[tuple[bytes, str]]:
    """`count` uploads of `kind` from `split` ("train" or "eval"), reproducibly, each with what it
    shows: "<glyph or drawing or digits> <form>". several_digits needs `mnist`, (N, 28, 28) uint8
    digits of the matching MNIST split; `glyphs`: the letter kinds' glyphs."""
    rng = np.random.default_rng([SPLITS[split], list(KINDS).index(kind), seed])
    forms, shares = zip(*FORMS[kind])
    out = []
    for _ in range(count):
        form = str(rng.choice(forms, p=shares))
        if kind == "photos":
            out.append((photo_upload(photo(rng), form, rng), f"photo {form}"))
            continue
        ink, form, what = _ink(kind, split, rng, mnist, form, glyphs)
        out.append((ink_upload(ink, form, rng), f"{what} {form}"))
    return out


def ambiguous_glyphs(count: int, seed: int = 0) -> tuple[list[bytes], list[str]]:
    """Evaluation-split uploads of the AMBIGUOUS glyphs, half printed and half by hand, and which glyph each is."""
    rng = np.random.default_rng([SPLITS["eval"], len(KINDS), seed])
    uploads, names = [], []
    for k in range(count):
        kind = "printed_letters" if k % 2 == 0 else "handwritten_letters"
        form = "printed_crop" if kind == "printed_letters" else "mnist_png"
        ink, form, glyph = _ink(kind, "eval", rng, None, form, "".join(AMBIGUOUS))
        uploads.append(ink_upload(ink, form, rng))
        names.append(glyph)
    return uploads, names


def _ink(kind: str, split: str, rng: np.random.Generator, mnist, form: str, glyphs: str) -> tuple[np.ndarray, str, str]:
    """(H, W) light ink on black of one upload of `kind`, the form to upload it in, and what it shows."""
    if kind == "printed_letters":
        glyph = glyphs[rng.integers(len(glyphs))]
        return printed_glyph(split, rng, glyph), form, glyph
    if kind == "handwritten_letters":
        glyph = str(rng.choice(list(_drawable(glyphs))))
        return render(glyph_shape(glyph, rng), rng), form, glyph
    if kind == "drawings":
        name = str(rng.choice(list(DOODLES)))
        return render(DOODLES[name](rng), rng, side=128, pen=DOODLE_PEN), form, name
    if mnist is None:
        raise ValueError("several_digits needs MNIST digits of the split")
    count = int(rng.integers(2, 5))
    if rng.random() < PRINTED_NUMBERS:
        return printed_number(split, rng, count), "printed_crop" if rng.random() < 0.5 else form, f"{count} printed"
    return side_by_side(mnist[rng.integers(len(mnist), size=count)], rng), form, f"{count} written"


def _drawable(glyphs: str) -> str:
    return "".join(g for g in glyphs if g in GLYPHS)


# ------------------------------------------------------------------ printed glyphs


@functools.cache
def _fonts(split: str) -> tuple[ImageFont.FreeTypeFont, ...]:
    """The split's fonts (training or held-out, synthetic.fonts.split_fonts) at 64 px."""
    fonts = []
    for path in split_fonts(font_files())[0 if split == "train" else 1]:
        try:
            fonts.append(ImageFont.truetype(str(path), 64))
        except OSError:
            continue
    return tuple(fonts)


def _has(font: ImageFont.FreeTypeFont, glyph: str) -> bool:
    """Whether the font draws `glyph` itself, not its missing-glyph box."""
    return not np.array_equal(np.asarray(font.getmask(glyph)), np.asarray(font.getmask("\U0010fffd")))


@functools.cache
def _font_bank(split: str, glyph: str) -> np.ndarray:
    """`glyph` in every font of the split that has it, dark on white at 64 px: (M, 128, 128) uint8."""
    images = []
    for font in _fonts(split) if split in SPLITS else ():
        if _has(font, glyph):
            canvas = Image.new("L", (128, 128), 255)
            ImageDraw.Draw(canvas).text((32, 16), glyph, fill=0, font=font)
            if np.asarray(canvas).min() < 128:
                images.append(np.asarray(canvas))
    if not images:
        raise RuntimeError(f"no font of the {split} split prints {glyph!r} (apt-get install fonts-dejavu ...)")
    return np.stack(images)


@functools.cache
def digit_fonts(split: str) -> tuple[ImageFont.FreeTypeFont, ...]:
    """The split's fonts that print every digit (not a missing-glyph box)."""
    return tuple(font for font in _fonts(split) if all(_has(font, d) for d in string.digits))


def printed_glyph(split: str, rng: np.random.Generator, glyph: str) -> np.ndarray:
    """`glyph` printed in a random font of the split that has it, as light ink on black."""
    images = _font_bank(split, glyph)
    return 1 - images[rng.integers(len(images))].astype(np.float32) / 255


def printed_number(split: str, rng: np.random.Generator, count: int) -> np.ndarray:
    """`count` digits printed in a font of the split, as light ink on black."""
    fonts = digit_fonts(split)
    font = fonts[rng.integers(len(fonts))]
    text = "".join(str(d) for d in rng.integers(0, 10, count))
    canvas = Image.new("L", (96 * len(text), 128), 0)
    draw, x = ImageDraw.Draw(canvas), 16.0
    for digit in text:
        draw.text((x, 16), digit, fill=255, font=font)
        x += font.getlength(digit) * rng.uniform(0.95, 1.4)
    return np.asarray(canvas, dtype=np.float32) / 255


# ------------------------------------------------------------------ several digits


def side_by_side(digits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(k, 28, 28) uint8 digits -> one (H, W) float image of them in a row: each scaled by 0.8-1.2,
    turned up to 10 degrees, off the baseline by a few px, gaps from touching to wide."""
    pieces = []
    for digit in digits:
        image = Image.fromarray(digit).rotate(float(rng.uniform(-10, 10)), resample=Image.BILINEAR)
        ink = np.argwhere(np.asarray(image) > 30)
        (top, left), (bottom, right) = ink.min(0), ink.max(0)
        image = image.crop((int(left), int(top), int(right) + 1, int(bottom) + 1))
        scale = rng.uniform(0.8, 1.2) * 40 / 20  # drawn at twice MNIST's 20 px
        size = (max(2, round(image.width * scale)), max(2, round(image.height * scale)))
        pieces.append(np.asarray(image.resize(size, Image.BILINEAR), dtype=np.float32) / 255)
    height = max(p.shape[0] for p in pieces) + 24
    width = sum(p.shape[1] for p in pieces) + 24 * len(pieces) + 24
    canvas = np.zeros((height, width), np.float32)
    x = 12
    for piece in pieces:
        h, w = piece.shape
        y = int(np.clip((height - h) // 2 + rng.normal(0, 3), 0, height - h))
        canvas[y : y + h, x : x + w] = np.maximum(canvas[y : y + h, x : x + w], piece)
        x += w + int(rng.uniform(-5, 16))
        x = max(0, x)
    return canvas


# ------------------------------------------------------------------ photos


def photo(rng: np.random.Generator) -> np.ndarray:
    """A procedural picture of no digit: (H, W, 3) uint8; a gradient or textured ground, lit
    overlapping shapes with soft shadows, vignette, sensor noise, slight blur."""
    long = int(rng.integers(160, 640))
    size = (long, int(long * rng.uniform(0.6, 1.0)))[:: 1 if rng.random() < 0.5 else -1]  # (H, W)
    h, w = (max(8, round(side * PHOTO_WORK / long)) for side in size)  # drawn small, then enlarged
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    t = ((xx * np.cos(angle) + yy * np.sin(angle)) / max(h, w) + 1) / 2
    a, b = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
    image = a + (b - a) * t[..., None]
    texture = _texture(rng, h, w)
    image = image * (1 + rng.uniform(0.1, 0.6) * (texture[..., None] - 0.5))
    for _ in range(int(rng.integers(1, 9))):
        mask = _shape_mask(rng, h, w)
        light = 0.7 + 0.6 * ((xx * rng.normal() + yy * rng.normal()) / max(h, w) % 1)
        shadow = np.roll(mask, (int(rng.integers(2, 12)), int(rng.integers(2, 12))), (0, 1)) * rng.uniform(0, 0.4)
        image = image * (1 - shadow[..., None])
        colour = rng.uniform(0, 1, 3) * light[..., None]
        image = image * (1 - mask[..., None]) + colour * mask[..., None]
    vignette = 1 - rng.uniform(0, 0.4) * (((yy - h / 2) / h) ** 2 + ((xx - w / 2) / w) ** 2) * 2
    image = image * vignette[..., None] + rng.normal(0, rng.uniform(0, 0.04), (h, w, 3))
    if rng.random() < 0.25:
        image = image.mean(2, keepdims=True).repeat(3, 2)
    out = Image.fromarray((np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)).resize(size[::-1], Image.BICUBIC)
    return np.asarray(out.filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.5))))


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    kind = rng.integers(3)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == 0:  # smooth noise of a few octaves
        field = sum(
            np.asarray(Image.fromarray(rng.uniform(0, 255, (c, c)).astype(np.uint8)).resize((w, h), Image.BICUBIC))
            / 255
            / (k + 1)
            for k, c in enumerate((4, 12, 40))
        )
        return (field - field.min()) / (np.ptp(field) + 1e-6)
    if kind == 1:  # stripes
        period, angle = rng.uniform(6, 60), rng.uniform(0, np.pi)
        return 0.5 + 0.5 * np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period)
    cell = int(rng.integers(8, 60))  # a checkerboard or tiles
    return ((yy // cell + xx // cell) % 2).astype(np.float32)


def _shape_mask(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    mask = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(mask)
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    rx, ry = rng.uniform(0.05, 0.4) * w, rng.uniform(0.05, 0.4) * h
    kind = rng.integers(3)
    if kind == 0:
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=255)
    elif kind == 1:
        draw.rectangle([cx - rx, cy - ry, cx + rx, cy + ry], fill=255)
    else:
        angles = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(3, 8))))
        draw.polygon([(cx + rx * np.cos(a), cy + ry * np.sin(a)) for a in angles], fill=255)
    return np.asarray(mask.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 3))), dtype=np.float32) / 255


def photo_upload(image: np.ndarray, form: str, rng: np.random.Generator) -> bytes:
    if form == "photo_jpeg":
        return encode_image(image, "JPEG", quality=int(rng.integers(50, 95)))
    if form == "photo_28px":
        return encode_image(Image.fromarray(image).convert("L").resize((28, 28), Image.BILINEAR))
    side = int(rng.integers(64, 200))
    return encode_image(Image.fromarray(image).resize((side, side * image.shape[0] // image.shape[1]), Image.BILINEAR))


# ------------------------------------------------------------------ client forms of an ink image


def ink_upload(ink: np.ndarray, form: str, rng: np.random.Generator) -> bytes:
    """(H, W) light ink on black, uploaded in a client's `form`."""
    ink = _cropped(ink)
    if form == "mnist_png":
        return encode_image(mnist_framed(ink) if rng.random() < 0.6 else _downscaled_canvas(ink, rng))
    if form == "canvas":
        return _canvas(ink, rng)
    if form == "paper_photo":
        return _paper(ink, rng)
    return _printed_crop(ink, rng)


def _cropped(ink: np.ndarray) -> np.ndarray:
    rows, cols = np.flatnonzero(ink.max(1) > 0.05), np.flatnonzero(ink.max(0) > 0.05)
    return ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _resized(ink: np.ndarray, longer: int) -> np.ndarray:
    h, w = ink.shape
    scale = longer / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(ink).resize(size, Image.BILINEAR, reducing_gap=2.0), dtype=np.float32)


def mnist_framed(ink: np.ndarray) -> np.ndarray:
    """As MNIST framed its digits: the longer side 20 px, centre of mass at the middle of 28x28; uint8."""
    small = np.clip(_resized(ink, 20), 0, 1)
    h, w = small.shape
    mass = small.sum() or 1.0
    cy, cx = (small.sum(1) @ np.arange(h)) / mass, (small.sum(0) @ np.arange(w)) / mass
    top, left = int(np.clip(round(14 - cy), 0, 28 - h)), int(np.clip(round(14 - cx), 0, 28 - w))
    out = np.zeros((28, 28), np.float32)
    out[top : top + h, left : left + w] = small
    return (out * 255 + 0.5).astype(np.uint8)


def _downscaled_canvas(ink: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A square drawing area, shrunk to 28x28 by the client: the ink 50-95% of its side, anywhere."""
    side = 112
    piece = np.clip(_resized(ink, int(side * rng.uniform(0.5, 0.9))), 0, 1)
    h, w = piece.shape
    canvas = np.zeros((side, side), np.float32)
    top, left = _place(rng, side, side, h, w, MARGIN * side)
    canvas[top : top + h, left : left + w] = piece
    small = Image.fromarray(canvas).resize((28, 28), Image.BILINEAR, reducing_gap=2.0)
    return (np.clip(np.asarray(small), 0, 1) * 255 + 0.5).astype(np.uint8)


def _place(rng: np.random.Generator, height: int, width: int, h: int, w: int, margin: float) -> tuple[int, int]:
    """A random top left corner for an (h, w) piece, `margin` px clear of the edges where it fits."""
    m = int(margin)
    top = int(rng.integers(min(m, height - h), max(min(m, height - h), height - h - m) + 1))
    left = int(rng.integers(min(m, width - w), max(min(m, width - w), width - w - m) + 1))
    return top, left


def _canvas(ink: np.ndarray, rng: np.random.Generator) -> bytes:
    """A browser canvas toDataURL(): 280x280 RGBA, transparent, the strokes in alpha (as canvas_export)."""
    piece = (np.clip(_resized(ink, int(rng.integers(140, 250))), 0, 1) * 255 + 0.5).astype(np.uint8)
    h, w = piece.shape
    canvas = np.zeros((280, 280, 4), np.uint8)
    top, left = _place(rng, 280, 280, h, w, MARGIN * 280)
    canvas[top : top + h, left : left + w, :3] = (
        rng.integers(0, 60, 3) if rng.random() < 0.8 else rng.integers(0, 256, 3)
    )
    canvas[top : top + h, left : left + w, 3] = piece
    return encode_image(canvas)


def _paper(ink: np.ndarray, rng: np.random.Generator) -> bytes:
    """Dark ink on off-white paper, uneven light, JPEG (as paper_photo), the ink's aspect kept."""
    width, height = (400, 300) if rng.random() < 0.5 else (300, 400)
    piece = np.clip(_resized(ink, int(rng.integers(60, min(width, height) - 40))), 0, 1)
    ph, pw = piece.shape
    if pw > width * (1 - 2 * MARGIN):
        piece = np.clip(_resized(piece, int(width * (1 - 2 * MARGIN))), 0, 1)
        ph, pw = piece.shape
    top, left = _place(rng, height, width, ph, pw, MARGIN * min(height, width))
    coverage = np.zeros((height, width), np.float32)
    coverage[top : top + ph, left : left + pw] = piece
    paper = rng.uniform(0.75, 0.95)
    gy, gx = np.mgrid[0:height, 0:width] / max(width, height)
    light = 1 + rng.uniform(-0.12, 0.12) * gx + rng.uniform(-0.12, 0.12) * gy
    gray = (paper * (1 - coverage) + rng.uniform(0.05, 0.3) * coverage) * light + rng.normal(0, 0.02, (height, width))
    rgb = (np.clip(gray[..., None] * rng.uniform(0.9, 1.0, 3), 0, 1) * 255 + 0.5).astype(np.uint8)
    return encode_image(rgb, "JPEG", quality=int(rng.integers(40, 90)))


def _printed_crop(ink: np.ndarray, rng: np.random.Generator) -> bytes:
    """Dark on white, cropped as a client would (as the printed family): a margin, a slight turn, 24-100 px tall."""
    margin = int(rng.integers(6, 24))  # the ink clear of the edges, turned or not (MARGIN)
    image = Image.fromarray(((1 - np.pad(ink, margin)) * 255 + 0.5).clip(0, 255).astype(np.uint8))
    image = image.rotate(float(rng.uniform(-5, 5)), fillcolor=255, resample=Image.BILINEAR)
    side = int(rng.integers(24, 100))
    return encode_image(image.resize((max(8, side * image.width // image.height), side), Image.BILINEAR))
