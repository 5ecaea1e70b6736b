"""Printed digits from the fonts installed on the machine (Debian's free fonts under
/usr/share/fonts): finding them, splitting them into training and held-out fonts, and rendering
each digit in each font. Training mixes in the training fonts' digits (train/augment.py); the
"printed" family (synthetic/families.py) uses the held-out ones.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np

FONT_DIRS = ("/usr/share/fonts",)
# Fonts whose digits are not plain digits (symbols, dingbats) or barely legible (script).
_SKIP_FONTS = ("symbol", "dingbat", "d050000l", "z003", "math", "extralight")


def font_files() -> list[Path]:
    """Every TrueType/OpenType/Type 1 font under /usr/share/fonts with ordinary digits: not one of
    _SKIP_FONTS, and ten different glyphs for the ten digits (an icon font that some other package
    installs draws one placeholder box for all of them, and would also shift split_fonts' split)."""
    files = []
    for folder in FONT_DIRS:
        for pattern in ("*.ttf", "*.otf", "*.pfb", "*.t1"):
            files += Path(folder).rglob(pattern)
    named = (f for f in set(files) if not any(s in f.name.lower() for s in _SKIP_FONTS))
    return sorted(f for f in named if _ten_digits(f))


@cache
def _ten_digits(path: Path) -> bool:
    """Whether the font draws the ten digits as ten different glyphs."""
    images, _ = render_digits([path], size=16)
    return len({image.tobytes() for image in images}) == 10


def split_fonts(files: list[Path]) -> tuple[list[Path], list[Path]]:
    """Training fonts and held-out fonts (every fourth by name): the printed-digit family is
    evaluated on fonts the network never saw."""
    return [f for i, f in enumerate(files) if i % 4 != 3], [f for i, f in enumerate(files) if i % 4 == 3]


def render_digits(files: list[Path], size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Each digit in each font, black on white at `size` px: (F*10, size*2, size*2) uint8 and labels."""
    from PIL import Image, ImageDraw, ImageFont

    images, labels = [], []
    for path in files:
        try:
            font = ImageFont.truetype(str(path), size)
        except OSError:
            continue
        for digit in range(10):
            canvas = Image.new("L", (size * 2, size * 2), 255)
            ImageDraw.Draw(canvas).text((size // 2, size // 4), str(digit), fill=0, font=font)
            if np.asarray(canvas).min() > 128:  # the font has no glyph for it
                continue
            images.append(np.asarray(canvas))
            labels.append(digit)
    if not images:
        return np.zeros((0, size * 2, size * 2), np.uint8), np.zeros(0, np.int64)
    return np.stack(images), np.array(labels, dtype=np.int64)


def fonts_available() -> bool:
    """Whether any held-out font is installed (the "printed" family needs one)."""
    return bool(split_fonts(font_files())[1])
