"""A second, dimmer tone over the digit (handler/preprocess/tones.py): found, taken out, read as a view."""

from __future__ import annotations

import numpy as np
import torch

from handler.preprocess.tones import without_second_tone
from synthetic.families import encode_image
from tests.preprocess_helpers import similar, views_of_bytes


def _with_line(digit: np.ndarray, level: float) -> np.ndarray:
    """(28, 28) uint8 digit -> float32 in [0, 1] with a 2 px line of `level` from side to side,
    slanting down across it, under the digit's brighter strokes (as ink on paper: the darker wins)."""
    rows, cols = np.mgrid[:28, :28]
    line = np.abs(rows - (6 + 0.6 * cols)) < 1.0  # about 2 px thick
    return np.maximum(digit / np.float32(255), np.float32(level) * line).astype(np.float32)


def test_a_dimmer_line_across_the_digit_is_taken_out_and_the_strokes_kept(mnist_sample):
    digits = mnist_sample[0][:20]
    x = torch.from_numpy(np.stack([_with_line(d, 0.6) for d in digits]))
    found, strokes = without_second_tone(x)
    assert len(found) >= 18  # (where the line runs mostly along the strokes, too little of it is apart)
    digit = torch.from_numpy(np.stack(digits)[found])
    inked = torch.nn.functional.max_pool2d((digit > 0).float()[:, None], 3, 1, 1)[:, 0] > 0  # 1 px around
    assert (strokes[(x[found] > 0) & ~inked] == 0).all()  # the line, where it is away from the digit, is gone
    ink = digit > 180  # the strokes brighter than the line
    assert (strokes[ink] > 0).all()  # the strokes are all there


def test_clean_digits_and_a_line_as_bright_as_the_strokes_have_no_second_tone(mnist_sample):
    clean = torch.from_numpy(mnist_sample[0] / np.float32(255))  # the 100 committed MNIST test digits
    assert without_second_tone(clean)[0] == []
    bright = torch.from_numpy(np.stack([_with_line(d, 1.0) for d in mnist_sample[0][:20]]))
    assert without_second_tone(bright)[0] == []


def test_an_image_of_several_mid_tones_has_no_second_tone(mnist_sample):
    """A few levels each holding many pixels (a quantized image: an outline's area-averaged
    contours, a rescan's blocks) are not one mark of its own tone."""
    digits = mnist_sample[0][:20]
    one = np.stack([_with_line(d, 0.6) for d in digits])
    two = np.maximum(one, np.flip(np.stack([_with_line(np.zeros_like(d), 0.3) for d in digits]), 2))
    assert len(without_second_tone(torch.from_numpy(one))[0]) >= 18
    assert without_second_tone(torch.from_numpy(np.ascontiguousarray(two)))[0] == []


def test_the_strokes_alone_are_one_more_candidate_view(mnist_sample):
    """The upload keeps its own views; the last one is the digit without the line."""
    digit = mnist_sample[0][3]
    crossed = views_of_bytes(encode_image((_with_line(digit, 0.6) * 255).round().astype(np.uint8)))
    bright = views_of_bytes(encode_image((_with_line(digit, 1.0) * 255).round().astype(np.uint8)))
    assert len(crossed) == len(bright) + 1
    clean = views_of_bytes(encode_image(digit))[0].numpy()
    assert similar(crossed[-1].numpy(), clean) > max(similar(v.numpy(), clean) for v in crossed[:-1])
    assert similar(crossed[-1].numpy(), clean) > 0.9
