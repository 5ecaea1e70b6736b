"""The number's confidence: the probability that every digit of a reading is right, from what the
reading itself shows (logistic regression on the features below); and the line reader's digits'
probabilities, calibrated (Platt scaling of the highest probability of each digit's columns).

The product of the digits' calibrated probabilities says how sure the network is of each piece it
read, not whether the pieces were the digits: where touching digits were cut apart, a piece of a
`0` is read as a confident `1`, and the product overstates (0.89 for numbers a quarter of which
were right). The features add what the segmentation saw: how many digits were cut out of a larger
mark and how much ink the cuts went through, what was left out, how many pieces the line fell into
per digit read, how unequal the digits' widths are. The weights are fitted by
`python -m train.calibrate_numbers` on numbers written with MNIST training digits and stored beside
the network's weights in model/number_calibration.json, with the digest of the weights; a worker
refuses to start with a calibration of other weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from handler.calibration import CalibrationError, fitted_for
from handler.number.segments import Lattice

# Where it lies, relative to the repository root and to an archive's model_dir alike.
NUMBER_CALIBRATION_FILE = Path("model") / "number_calibration.json"
FEATURES = (
    "log_product",  # sum of the digits' log-probabilities (calibrated): the product's log
    "product_log_odds",  # log(product / (1 - product)): the product on the regression's own scale
    "least_log_p",  # the least sure digit's log-probability
    "cut_share",  # share of the segmentation's digits read from pieces of a mark that was cut
    "most_ink_cut",  # the most ink a cut on the path goes through, in stroke widths
    "left_out",  # the area of the marks left out as noise, in median marks
    "pieces_per_digit",  # log(atoms / digits): how far the line was over-segmented
    "width_spread",  # log(widest digit / narrowest digit)
    "line_reader",  # 1: the line reader's reading stands (the marks were cut), 0: the segmentation's
    "readers_agree",  # 1: both read the same number (always, where only the segmentation read)
)


def log_odds(p: float) -> float:
    """log(p / (1 - p)), p kept within [1e-6, 1 - 1e-6]."""
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def number_features(
    lat: Lattice, path: list[int], confidences: list[float], line_reader: bool, agree: bool
) -> list[float]:
    """One reading's len(FEATURES) features: its lattice, the candidates on the segmentation's
    best path (indices into lat.spans), the answered digits' probabilities, whether the line
    reader's reading stands and whether the two readers agree. (Plain Python: a few values a line.)"""
    logs = [math.log(max(c, 1e-12)) for c in confidences]
    total = sum(logs)
    cuts = [lat.cut_piece(s) for s in path]
    spans = [lat.spans[s] for s in path]
    skips, ink_cut, widths = lat.skips.tolist(), lat.cuts.tolist(), lat.widths.tolist()
    left_out = sum(skips) - sum(sum(skips[i:j]) for i, j in spans)  # the atoms off the path
    on_path = [widths[s] for s in path] or [1.0]
    return [
        total,
        log_odds(math.exp(total)),
        min(logs),
        sum(cuts) / len(cuts) if cuts else 0.0,
        max((ink_cut[i] for i, _ in spans[1:]), default=0.0),  # the places between two digits
        max(left_out, 0.0),
        math.log(len(lat.atoms) / max(len(path), 1)),
        math.log(max(on_path) / max(min(on_path), 1e-3)),
        float(line_reader),
        float(agree),
    ]


@dataclass(frozen=True)
class NumberCalibration:
    """P(the whole number is right) = sigmoid(weights . (features - mean) / scale + bias); and a digit
    the line reader read, P(right) = sigmoid(line_slope * logit(p) + line_intercept), p the highest
    probability of its columns (the segmentation's digits are calibrated as the digit model's)."""

    weights: tuple[float, ...]
    bias: float
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    line_slope: float = 1.0  # 1 and 0: the line reader's own probabilities
    line_intercept: float = 0.0

    def __post_init__(self) -> None:
        sizes = {len(self.weights), len(self.mean), len(self.scale)}
        if sizes != {len(FEATURES)} or not all(s > 0 for s in self.scale):
            raise CalibrationError(f"one weight, mean and positive scale per feature {FEATURES} expected")
        if not self.line_slope > 0:  # a positive slope keeps the digits' order
            raise CalibrationError(f"the line reader's digits need a positive slope, not {self.line_slope}")

    def __call__(self, features: np.ndarray) -> np.ndarray:
        """(N, len(FEATURES)) -> (N,) the probability that each number is right."""
        z = (features - np.array(self.mean)) / np.array(self.scale) @ np.array(self.weights) + self.bias
        return 1 / (1 + np.exp(-z))

    def line_digits(self, probabilities: list[float]) -> list[float]:
        """The line reader's digits' probabilities -> their calibrated ones (6 decimals, as answered)."""
        z = [self.line_slope * log_odds(p) + self.line_intercept for p in probabilities]
        return [round(1 / (1 + math.exp(-v)), 6) for v in z]

    def as_dict(self) -> dict:
        return {
            "features": list(FEATURES),
            "weights": list(self.weights),
            "bias": self.bias,
            "mean": list(self.mean),
            "scale": list(self.scale),
            "line_digits": {"slope": self.line_slope, "intercept": self.line_intercept},
        }


def load_number_calibration(path: Path, weights: Path) -> NumberCalibration:
    """model/number_calibration.json's model, checked against the weights the worker serves."""
    model = fitted_for(path, weights, "make calibrate").get("model", {})
    if model.get("features") != list(FEATURES):
        raise CalibrationError(f"{path} has features {model.get('features')}, not {list(FEATURES)}")
    if "line_digits" not in model:
        raise CalibrationError(f"{path} has no calibration of the line reader's digits: run make calibrate")
    line = model["line_digits"]
    return NumberCalibration(
        tuple(model["weights"]),
        float(model["bias"]),
        tuple(model["mean"]),
        tuple(model["scale"]),
        float(line["slope"]),
        float(line["intercept"]),
    )
