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
