"""The 100 committed MNIST test digits (tests/fixtures/mnist_test_100.npz): tests and benchmarks
need no dataset."""

from __future__ import annotations

import numpy as np

from ops.paths import ROOT

SAMPLE = ROOT / "tests" / "fixtures" / "mnist_test_100.npz"


def sample_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 100 committed MNIST test digits, (100, 28, 28) uint8, and their labels."""
    data = np.load(SAMPLE)
    return data["images"], data["labels"]


def not_one_digit_samples() -> dict[str, tuple[bytes, str]]:
    """Three uploads that are not one digit, made at call time, and the reason the service gives
    each: an A drawn by hand (a 28x28 PNG as MNIST frames its digits), a smiley drawn on a canvas
    (280x280 RGBA), three of the committed test digits side by side on a photographed sheet (JPEG).
    Seeded; clear cases (the head's probability of a digit under 0.001 for each)."""
    from synthetic.families import encode_image
    from synthetic.non_digits import ink_upload, mnist_framed, side_by_side
    from synthetic.strokes import DOODLES, glyph_shape, render

    rng = np.random.default_rng(4)
    letter = encode_image(mnist_framed(render(glyph_shape("A", rng), rng)))
    rng = np.random.default_rng(7)
    doodle = ink_upload(render(DOODLES["smiley"](rng), rng, side=128, pen=(0.05, 0.06)), "canvas", rng)
    rng = np.random.default_rng(7)
    several = ink_upload(side_by_side(sample_digits()[0][:3], rng), "paper_photo", rng)
    return {
        "letter": (letter, "not_a_digit"),
        "doodle": (doodle, "not_a_digit"),
        "several_digits": (several, "several_digits"),
    }
