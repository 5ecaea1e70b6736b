"""The number families (synthetic/numbers.py) and the evaluation's Numbers section (train/evaluate_numbers.py)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from synthetic.fonts import fonts_available
from synthetic.numbers import CORRUPTION_STRENGTHS, LENGTHS, NUMBER_FAMILIES, number_family
from synthetic.tensors import smooth_field
from train.evaluate_numbers import NOT_NUMBERS, aligned_right, edit_distance, markdown, numbers_report


@pytest.mark.parametrize("family", list(NUMBER_FAMILIES))
def test_each_family_uploads_images_of_3_to_7_digit_numbers_reproducibly(family, mnist_sample):
    if family == "printed" and not fonts_available():
        pytest.skip("no fonts under /usr/share/fonts (make fonts)")
    digits, labels = mnist_sample
    samples = number_family(family, digits, labels, 4, seed=1)
    assert samples == number_family(family, digits, labels, 4, seed=1)
    for data, text in samples:
        assert text.isdigit() and LENGTHS[0] <= len(text) <= LENGTHS[1]
        image = Image.open(io.BytesIO(data))
        assert image.width > image.height  # a line of digits
        written = image.getchannel("A") if image.mode == "RGBA" else image.convert("L")  # a canvas: in alpha
        assert np.asarray(written).std() > 10


def test_a_corrupted_family_is_written_at_the_strength_asked_for(mnist_sample):
    """The evaluation's strength by default; another on request (the line reader trains at several);
    a family without a corruption has no strength to set."""
    digits, labels = mnist_sample
    default = number_family("haze", digits, labels, 3, seed=2)
    assert default == number_family("haze", digits, labels, 3, seed=2, strength=CORRUPTION_STRENGTHS["haze"])
    weaker = number_family("haze", digits, labels, 3, seed=2, strength=0.1)
    assert [text for _, text in weaker] == [text for _, text in default]
    assert all(a != b for (a, _), (b, _) in zip(weaker, default))
    with pytest.raises(ValueError, match="gaps"):
        number_family("gaps", digits, labels, 3, seed=2, strength=0.5)


def test_haze_on_a_wide_line_is_no_streakier_than_on_a_digit():
    """smooth_field keeps its cells square on a wide line: pixels 6 apart differ about as much
    across the line as down it (square cells stretched to a 10:1 line differed 8 times less
    across: streaks, not fog)."""
    field = smooth_field(64, 28, 280, torch.Generator().manual_seed(0), "cpu", cells=3)[:, 0]
    across = (field[:, :, 6:] - field[:, :, :-6]).abs().mean()
    down = (field[:, 6:] - field[:, :-6]).abs().mean()
    assert 0.5 < float(across / down) < 2


def test_edit_distance_counts_digits_replaced_missing_or_extra():
    assert [edit_distance(a, b) for a, b in (("4096", "4096"), ("4096", "4056"), ("4096", "406"), ("4096", ""))] == [
        0,
        1,
        1,
        4,
    ]


def test_each_digit_read_is_right_where_the_alignment_pairs_it_with_its_digit():
    assert aligned_right("4096", "4096") == [True] * 4
    assert aligned_right("4096", "4056") == [True, True, False, True]  # replaced
    assert aligned_right("4096", "406") == [True, True, True]  # one missing
    extra = aligned_right("4096", "40996")  # one extra: either 9 may be the one paired
    assert len(extra) == 5 and sum(extra) == 4 and extra[:2] == [True, True] and extra[-1]
    assert aligned_right("4096", "") == [] and aligned_right("", "12") == [False, False]
    for written, read in (("4096", "4056"), ("4096", "406"), ("123456", "12356"), ("70", "1170")):
        assert len(read) - sum(aligned_right(written, read)) <= edit_distance(written, read)


def test_the_numbers_section_scores_and_sets_the_goals(mnist_sample):
    from handler.open_set import OpenSet
    from handler.served_model import served_network
    from model import DEFAULT_WEIGHTS, load_checkpoint
    from model.open_set import DEFAULT_OPEN_SET

    digits, labels = mnist_sample
    head = OpenSet(DEFAULT_OPEN_SET, DEFAULT_WEIGHTS)
    network = served_network(load_checkpoint(DEFAULT_WEIGHTS))
    section = numbers_report(network, digits, labels, 6, names=["gaps"], open_set=head)
    row = section["families"]["gaps"]
    assert row["numbers"] == 6 and 0 <= row["whole_number_accuracy"] <= row["per_digit_accuracy"] <= 1
    assert 0 <= row["digit_ece"] <= 1
    assert set(section["goals"]) == {"numbers, gaps: whole number", "numbers, gaps: per digit"}
    assert section["goals"]["numbers, gaps: whole number"]["goal"] == 0.98
    assert any(line.startswith("| gaps | 6 |") for line in markdown(section))
    assert list(section["not_numbers"]) == NOT_NUMBERS and "### Not a number" in markdown(section)
    for row in section["not_numbers"].values():
        assert row["uploads"] == 6 and row["refused"] + row["answered"] == 1 and row["not_a_digit"] <= row["refused"]
