"""Rules, edges and boxes beside or through a number (handler/number/rules.py): a rule the digits
touch, a form box's sides, a bar along the crop's edge that a digit touches, a row of boxes."""

from __future__ import annotations

import numpy as np
import pytest

from handler.number.components import components_of
from handler.number.reader import Reading
from handler.number.rules import without_rules
from harness.inprocess import load_handler
from synthetic.families import encode_image
from synthetic.numbers import mnist_row
from tests.number_helpers import NUMBER
from train.evaluate_numbers import read_batch


@pytest.fixture(scope="module")
def served():
    handler, _ = load_handler(model_name="number", metrics_flush_seconds=0)
    return handler.model


def _row(mnist_sample) -> tuple[np.ndarray, str]:
    digits, labels = mnist_sample
    return mnist_row(digits[NUMBER]), "".join(map(str, labels[NUMBER]))  # (28, 140), light on black


def _underlined(row: np.ndarray) -> np.ndarray:
    """A 3 px rule through the digits' feet, under most of the number (as on ruled paper)."""
    out = row.copy()
    feet = int(np.flatnonzero((row > 64).any(1))[-1])  # the lowest row of ink
    out[feet - 2 : feet + 1, 4:-10] = 255
    return out


def _boxed(row: np.ndarray, first_touched: bool) -> np.ndarray:
    """The number between a form box's sides, 3 px bars flush with the image's edges; where
    `first_touched`, the left bar is widened until it meets the first digit's ink."""
    out = row.copy()
    out[:, :3] = out[:, -3:] = 200
    if first_touched:
        first = int(np.flatnonzero((row > 64).any(0))[0])  # the first column of ink
        out[:, : first + 1] = 200
    return out


def _comb(row: np.ndarray, cell: int = 36, line: int = 2, touching: bool = False) -> np.ndarray:
    """The row's 28 px cells each centred in a box of a form's row of boxes, `cell` px a side, lines
    `line` px wide; `touching`, the first digit moved left until its ink meets its box's side."""
    n, off = row.shape[1] // 28, (cell - 28) // 2
    comb = np.zeros((cell + line, n * cell + line), np.uint8)
    for i in range(n):
        comb[off : off + 28, i * cell + off : i * cell + off + 28] = row[:, 28 * i : 28 * (i + 1)]
        comb[:, i * cell : i * cell + line] = 255
    comb[:, -line:] = comb[:line] = comb[-line:] = 255
    if touching:
        first = row[:, :28]
        ink = int(np.flatnonzero((first > 64).any(0))[0])  # the digit's first column of ink
        comb[off : off + 28, line : off + 28] = 0
        comb[off : off + 28, line : line + 28 - ink] = first[:, ink:]
    return 255 - np.pad(comb, 6)  # dark lines and ink on white paper


def _tight(row: np.ndarray) -> np.ndarray:
    """The row cropped to its ink: its digits touch every side."""
    rows, columns = np.flatnonzero((row > 64).any(1)), np.flatnonzero((row > 64).any(0))
    return row[rows[0] : rows[-1] + 1, columns[0] : columns[-1] + 1]


def _between_second_and_third(row: np.ndarray) -> slice:
    """2 columns without ink within 2 px, between the row's second and third cells."""
    clear = [c for c in range(40, 70) if not (row[:, c - 2 : c + 4] > 64).any()]
    return slice(clear[len(clear) // 2], clear[len(clear) // 2] + 2)


def _crossed(row: np.ndarray) -> np.ndarray:
    """An upright line, 2 px wide, drawn from the picture's top to its bottom between two digits,
    in a picture a pixel taller than the row above and below: 1.5 line heights, not longer than
    rules() asks of a rule."""
    out = np.pad(row, 1)
    out[:, _between_second_and_third(out)] = 255
    return out


def _tall_one(row: np.ndarray) -> np.ndarray:
    """A 1 between the second and third digits, from 6 px above their highest top down to their
    lowest foot, in the number cropped tight to its ink: the 1 spans the picture's height too."""
    out = np.pad(row, ((8, 0), (0, 0)))
    rows = np.flatnonzero((out > 64).any(1))
    out[rows[0] - 6 : rows[-1] + 1, _between_second_and_third(row)] = 255
    return _tight(out)


def _read(served, images: list[np.ndarray]) -> list:
    return read_batch(served, [encode_image(image) for image in images])


def test_a_rule_through_the_digits_and_a_boxs_sides_are_not_read(mnist_sample, served):
    row, text = _row(mnist_sample)
    images = [_tight(row), _underlined(row), _boxed(row, False), _boxed(row, True), _boxed(_underlined(row), True)]
    readings = _read(served, images)
    assert [r.number if isinstance(r, Reading) else r for r in readings] == [text] * len(images)


def test_digits_in_a_row_of_boxes_are_read_without_the_boxes_sides(mnist_sample, served):
    row, text = _row(mnist_sample)
    images = [_comb(row), _comb(row, 44, 3), _comb(row, touching=True)]
    readings = _read(served, images)
    assert [r.number if isinstance(r, Reading) else r for r in readings] == [text] * len(images)


def test_only_bars_taller_than_the_digits_and_side_by_side_are_boxes_sides(mnist_sample):
    row, _ = _row(mnist_sample)
    one_bar = np.pad(row > 64, ((6, 6), (4, 8)))
    one_bar[:, -6:-4] = True  # one bar taller than the digits, clear of the image's sides: maybe a 1
    masks = [one_bar, _comb(row) < 128]
    before = components_of(masks)
    kept, boxed = without_rules(masks, before)
    assert kept is before[0]
    assert len(before[1]) == 1 + 5 and len(boxed) == 5  # the comb and the digits; the digits alone


def test_a_digit_flush_with_the_side_of_a_number_cropped_tight_is_no_edge(mnist_sample):
    """Cropped tight to its ink, a number's last digit, an upright 1 as a sans-serif font prints it,
    is flush with the image's side along its height, as a box's side is; the digits between touch
    the top and the bottom row, so it is kept. With a margin above and below, the same bar is an edge."""
    row, _ = _row(mnist_sample)
    ink_rows = np.flatnonzero((row > 64).any(1))
    bar = np.zeros((row.shape[0], 10), np.uint8)
    bar[ink_rows[0] : ink_rows[-1] + 1, -4:] = 255
    tight = _tight(np.concatenate([row, bar], 1)) > 64
    margins = np.pad(tight, ((3, 3), (0, 0)))
    masks = [tight, margins]
    before = components_of(masks)
    kept, cleared = without_rules(masks, before)
    assert kept is before[0]
    assert len(cleared) == len(before[1]) - 1 and cleared.boxes[:, 3].max() < margins.shape[1] - 4


def test_the_rule_is_taken_out_of_the_ink_before_it_is_labelled(mnist_sample):
    row, _ = _row(mnist_sample)
    digits = row > 64
    masks = [digits, _underlined(row) > 64, _boxed(row, True) > 64]
    before = components_of(masks)
    plain, underlined, boxed = without_rules(masks, before)
    assert plain is before[0]  # nothing to take out: the same components
    assert len(before[1]) < 5 <= len(underlined)  # the rule had joined the digits
    assert np.all(digits[underlined.labels > 0])  # what is left of the ink is the digits'
    assert len(before[2]) == len(before[0]) + 1 and len(boxed) == len(before[0])  # a bar touched the first digit
    assert boxed.boxes[:, 1].min() > 3 and boxed.boxes[:, 3].max() < row.shape[1] - 3  # no bar left


def test_a_line_across_the_picture_is_not_read_but_a_tall_1_is(mnist_sample, served):
    """A line past the digits' tops and feet is a rule; a 1 taller than its neighbours, in a crop
    tight to it, spans the picture as well, but their feet are near its own: it is read."""
    row, text = _row(mnist_sample)
    readings = _read(served, [_crossed(row), _tall_one(row)])
    assert [r.number if isinstance(r, Reading) else r for r in readings] == [text, text[:2] + "1" + text[2:]]
