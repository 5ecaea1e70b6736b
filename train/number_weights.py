"""Choose the best path's weights (handler/number/path.py) on numbers written with MNIST *training*
digits: the evaluation's families are written with test digits, which must not choose them.

    python -m train.number_weights --per-family 150      # prints the best weights and their accuracy

Each number is segmented and its candidates read once; then every combination of GRID is scored
by the whole-number accuracy of the best path (test-time augmentation left out: it only re-reads
the chosen digits), the families' mean, and the best few are printed.
"""

from __future__ import annotations

import argparse
import itertools

import numpy as np
import torch

from handler.number import path
from handler.number.reader import read_candidates, read_requests
from handler.served_model import served_network
from model import DEFAULT_WEIGHTS, load_checkpoint
from synthetic.numbers import number_family
from train.data import load_mnist

FAMILIES = ("gaps", "sizes_baseline", "scanned", "touching")
GRID = {
    "WIDE_FROM": (0.7, 0.8, 1.0),
    "WIDE": (1.0, 2.0, 4.0),
    "SHORT_BELOW": (0.6, 0.75),
    "SHORT": (2.0, 4.0),
    "CUT": (0.1, 0.3, 0.6, 1.0),
    "DIGIT": (0.0, 0.3),
}


def candidates(model, family: str, digits: np.ndarray, labels: np.ndarray, count: int, seed: int) -> list:
    """Per number: its text, lattice, and each candidate's log-probability and digit (None: refused)."""
    samples = number_family(family, digits, labels, count, seed)
    batch = read_requests([{"body": data} for data, _ in samples])
    lines = iter(zip(batch.views, batch.candidates))
    out = []
    for (_, text), outcome in zip(samples, batch.outcomes):
        if not isinstance(outcome, slice):
            out.append((text, None, None, None))
            continue
        views, found = next(lines)
        with torch.inference_mode():
            p = read_candidates(model, [views], [found], "cpu").probabilities.numpy()
        out.append((text, found.lattice, np.log(p.max(1).clip(1e-12)), p.argmax(1)))
    return out


def accuracy(numbers: list) -> float:
    right = 0
    for text, lat, log_p, digits in numbers:
        if lat is not None and lat.spans:
            right += (
                "".join(
                    str(digits[s]) for s in path.best_path(lat, path.segment_scores(lat.widths, lat.heights, log_p))
                )
                == text
            )
    return right / len(numbers)


def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    model = served_network(load_checkpoint(DEFAULT_WEIGHTS))
    x, y = load_mnist(train=True, limit=20000)
    data = {f: candidates(model, f, x.numpy(), y.numpy(), args.per_family, args.seed) for f in args.families}
    rows = []
    for values in itertools.product(*GRID.values()):
        for name, value in zip(GRID, values):
            setattr(path, name, value)
        scores = {family: accuracy(numbers) for family, numbers in data.items()}
        rows.append((float(np.mean(list(scores.values()))), dict(zip(GRID, values)), scores))
    for mean, weights, scores in sorted(rows, key=lambda row: -row[0])[: args.top]:
        print(f"{mean:.4f}", weights, {family: round(score, 3) for family, score in scores.items()})


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--per-family", type=int, default=150, help="numbers per family")
    p.add_argument("--families", nargs="+", default=list(FAMILIES))
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--top", type=int, default=8, help="weight sets printed")
    main(p.parse_args())
