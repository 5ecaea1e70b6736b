"""Input families generated from MNIST test digits: how clients really send digits, as upload bytes.

Two kinds. Corruptions: synthetic/corruptions.py's functions (the ones training draws from) at
fixed strengths on the test digits, uploaded as 28x28 8-bit PNGs, a "mild" and a "strong" version
of each kind of input the service must read. Renderings: how a client packages a digit (a phone
photo of paper, a browser canvas export, printed digits in fonts training never saw). Also the one
image encoder, encode_image. Used by the evaluation report, the tests, the harness and the
benchmarks.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from synthetic.corruptions import CORRUPTIONS, GEOMETRIC, LAYOUTS, light_margins
from synthetic.fonts import font_files, render_digits, split_fonts

# family -> (corruption in synthetic/corruptions.py, strength in [0, 1], what it is)
CORRUPTED = {
    "clean": (None, 0.0, "MNIST test digit as an 8-bit PNG"),
    "gaussian_noise": ("gaussian_noise", 0.8, "additive Gaussian noise, sigma 0.3 of full scale"),
    "salt_and_pepper": ("salt_and_pepper", 7 / 12, "10% of pixels set to black or white"),
    "blur": ("blur", 0.5, "Gaussian blur, sigma 1 px"),
    "speckle": ("speckle", 0.6, "multiplicative noise x(1+n), n ~ N(0, 0.5), plus faint grain"),
}
_AT_TWO_STRENGTHS = {  # "mild / strong" (strength 0.4 / 1): the robustness kinds, then geometry
    "grey_background": "white digit on a grey ground, level up to 0.38 / 0.65",
    "edge_bars": "one or two solid bars along the image edges, up to 4 / 7 px thick",
    "outline": "hollow digit: only the contours of the strokes (outer, or outer and inner)",
    "haze": "contrast down to 0.7 / 0.25 under smooth fog",
    "crossing_lines": "straight, dashed or zig-zag lines across the digit, up to 2.1 / 3 px wide",
    "blots": "1-2 / 1-3 ink blots (radius up to 3.1 / 4.3 px) or 7 / 12 spatter drops",
    "speckle": "multiplicative noise x(1+n), n ~ N(0, 0.4 / 0.7), plus faint grain",
    "motion_blur": "camera shake: a straight smear of up to 5.4 / 9 px",
    "jitter": "frosted glass: pixels displaced by up to 1.2 / 2 px, softened",
    "rotation": "rotated 22 / 40 degrees, either way",
    "shear": "sheared by 0.4 / 0.7, either way",
    "zoom_out": "shrunk to 0.71 / 0.5 of its size",
    "shift": "moved 3.6 / 6 px sideways and up or down",
    "light_margins": "light digit on a dark band, light margins (one side, two, all around) 10-26% / 10-50% of it",
}
for _name, _what in _AT_TWO_STRENGTHS.items():
    CORRUPTED[f"{_name}_mild"] = (_name, 0.4, _what)
    CORRUPTED[f"{_name}_strong"] = (_name, 1.0, _what)
CORRUPTED["rescan_12px"] = ("low_resolution", 2 / 7, "scanned at 12x12, blown up to 28x28 (blocky or soft)")
CORRUPTED["rescan_8px"] = ("low_resolution", 6 / 7, "scanned at 8x8, blown up to 28x28 (blocky or soft)")

RENDERED = {
    "paper_photo": "dark ink on off-white paper, 400x300, 60-220 px digit anywhere, uneven light, JPEG q40-90",
    "canvas_export": "280x280 RGBA, transparent background, mostly dark (20% any colour) pen",
    "printed": "the digit's label printed in a held-out font, dark on white, 24-100 px tall, +-5 deg",
    "dark_cell_crop": "light_margins_strong, 40-160 px by up to twice that (e.g. 100x60), grain, tint, PNG or JPEG",
}
FAMILIES = list(CORRUPTED) + list(RENDERED)
DESCRIPTIONS = {name: spec[2] for name, spec in CORRUPTED.items()} | RENDERED
# The nine kinds of input the robustness goals name -> their family at each setting.
KINDS = {
    kind: {"mild": f"{name}_mild", "strong": f"{name}_strong"}
    for kind, name in (
        ("grey background", "grey_background"),
        ("edge bars", "edge_bars"),
        ("outlines", "outline"),
        ("haze", "haze"),
        ("crossing lines", "crossing_lines"),
        ("blots", "blots"),
        ("speckle", "speckle"),
    )
}
KINDS["printed digits"] = {"mild": "printed", "strong": "printed"}
KINDS["8x8 rescans"] = {"mild": "rescan_8px", "strong": "rescan_8px"}


def encode_image(image: np.ndarray | Image.Image, fmt: str = "PNG", **save) -> bytes:
    """An array or Pillow image as the bytes of an image file (PNG unless told): the one encoder of
    uploads for the evaluation, the tests and the benchmarks."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)


def generate(family: str, digits: np.ndarray, seed: int = 0, labels: np.ndarray | None = None) -> list[bytes]:
    """The family's upload bytes for each (28, 28) uint8 digit, reproducibly ("printed" prints the
    digit's label instead, so it needs `labels`)."""
    if family in CORRUPTED:
        return [encode_image(d) for d in corrupted(digits, family, seed)]
    rng = np.random.default_rng(seed)
    if family == "printed":
        return printed(np.asarray(labels), rng)
    render = {"paper_photo": paper_photo, "canvas_export": canvas_export, "dark_cell_crop": dark_cell_crop}[family]
    return [render(digit, rng) for digit in digits]


def corrupted(digits: np.ndarray, family: str, seed: int = 0) -> np.ndarray:
    """(N, 28, 28) uint8 -> the family's corrupted digits, (N, 28, 28) uint8."""
    name, strength, _ = CORRUPTED[family]
    if name is None:
        return digits
    generator = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(digits).float()[:, None] / 255
    corruption = CORRUPTIONS.get(name) or GEOMETRIC.get(name) or LAYOUTS[name]
    out = corruption(x, torch.full((len(x),), strength), generator)
    return _to_uint8(out[:, 0].numpy())


def printed(labels: np.ndarray, rng: np.random.Generator, fonts: list | None = None) -> list[bytes]:
    """Each label printed in a random one of `fonts` (default: the held-out fonts,
    synthetic.fonts.split_fonts), cropped as a client would: a random margin, size and slight
    rotation, dark on white, PNG."""
    images, font_labels = render_digits(split_fonts(font_files())[1] if fonts is None else fonts)
    if not len(images):
        raise RuntimeError("no fonts found under /usr/share/fonts (apt-get install fonts-dejavu ...)")
    out = []
    for label in labels:
        choices = np.flatnonzero(font_labels == label)
        image = Image.fromarray(images[rng.choice(choices)])
        ink = np.argwhere(np.asarray(image) < 128)
        (top, left), (bottom, right) = ink.min(0), ink.max(0)
        margin = int(rng.integers(2, 20))
        crop = image.crop((left - margin, top - margin, right + margin, bottom + margin))
        crop = crop.rotate(float(rng.uniform(-5, 5)), fillcolor=255, resample=Image.BILINEAR)
        side = int(rng.integers(24, 100))
        out.append(encode_image(crop.resize((max(8, side * crop.width // crop.height), side), Image.BILINEAR)))
    return out


def paper_photo(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """Dark ink on off-white paper: 400x300 or 300x400, digit 60-220 px tall anywhere, uneven light, JPEG."""
    width, height = (400, 300) if rng.random() < 0.5 else (300, 400)
    size = int(rng.integers(60, min(width, height) - 40))
    ink = np.asarray(Image.fromarray(digit).resize((size, size), Image.BICUBIC), dtype=np.float32) / 255
    top, left = int(rng.integers(0, height - size)), int(rng.integers(0, width - size))
    coverage = np.zeros((height, width), dtype=np.float32)
    coverage[top : top + size, left : left + size] = np.clip(ink, 0, 1)

    paper = rng.uniform(0.75, 0.95)
    # A lighting gradient across the sheet and a little sensor noise.
    gy, gx = np.mgrid[0:height, 0:width] / max(width, height)
    light = 1 + rng.uniform(-0.12, 0.12) * gx + rng.uniform(-0.12, 0.12) * gy
    ink_level = rng.uniform(0.05, 0.3)
    gray = (paper * (1 - coverage) + ink_level * coverage) * light + rng.normal(0, 0.02, (height, width))
    tint = rng.uniform(0.9, 1.0, 3)  # warm or cool paper
    rgb = _to_uint8(gray[..., None] * tint)
    return encode_image(rgb, "JPEG", quality=int(rng.integers(40, 90)))


def canvas_export(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """A browser canvas toDataURL(): 280x280 RGBA, transparent background, strokes only in alpha."""
    side = 280
    size = int(rng.integers(140, 260))
    alpha = np.asarray(Image.fromarray(digit).resize((size, size), Image.BICUBIC), dtype=np.uint8)
    canvas = np.zeros((side, side, 4), dtype=np.uint8)
    top, left = (int(v) for v in rng.integers(0, side - size + 1, 2))
    color = rng.integers(0, 60, 3) if rng.random() < 0.8 else rng.integers(0, 256, 3)  # mostly dark pens
    canvas[top : top + size, left : left + size, :3] = color
    canvas[top : top + size, left : left + size, 3] = alpha
    return encode_image(canvas)


def dark_cell_crop(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """A crop of a dark form cell (or a dark-mode canvas) with the light page (panels) around it, at
    any size: the digit centred on a picture 40-160 px on its shorter side, up to twice that on its
    longer one (e.g. 100x60), light_margins at full strength, sensor grain, a tint, PNG or JPEG."""
    side = int(rng.integers(40, 161))
    longer = int(side * rng.uniform(1, 2))
    height, width = (side, longer) if rng.random() < 0.5 else (longer, side)
    square = Image.fromarray(digit).resize((side, side), Image.BICUBIC)
    canvas = np.zeros((height, width), dtype=np.float32)
    top, left = (height - side) // 2, (width - side) // 2
    canvas[top : top + side, left : left + side] = np.asarray(square, dtype=np.float32) / 255
    g = torch.Generator().manual_seed(int(rng.integers(2**31)))
    x = light_margins(torch.from_numpy(canvas)[None, None], torch.ones(1), g)[0, 0].numpy()
    gray = x + rng.normal(0, 0.02, x.shape)
    rgb = _to_uint8(gray[..., None] * rng.uniform(0.9, 1.0, 3))
    if rng.random() < 0.5:
        return encode_image(rgb)
    return encode_image(rgb, "JPEG", quality=int(rng.integers(60, 96)))
