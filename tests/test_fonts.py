"""The fonts printed digits are drawn from (synthetic/fonts.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from synthetic.fonts import FONT_DIRS, _ten_digits, font_files, fonts_available


def test_a_font_without_ordinary_digits_is_left_out():
    """An icon font (Bootstrap's, which Prometheus's packages install) draws one placeholder box for
    every digit: it is no printed digit, and counted among the fonts it would shift which are held out."""
    icons = sorted(p for folder in FONT_DIRS for p in Path(folder).rglob("glyphicons*.ttf"))
    if not icons:
        pytest.skip("no icon font installed (fonts-glyphicons-halflings)")
    assert not _ten_digits(icons[0]) and icons[0] not in font_files()


@pytest.mark.skipif(not fonts_available(), reason="no fonts under /usr/share/fonts")
def test_every_listed_font_draws_ten_different_digits():
    assert all(_ten_digits(path) for path in font_files())
