"""The number's confidence: the probability that every digit of a reading is right, from what the
reading itself shows (logistic regression on the features below).

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

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from handler.calibration import CalibrationError, file_digest
from handler.number.segments import Lattice

# Where it lies, relative to the repository root and to an archive's model_dir alike.
NUMBER_CALIBRATION_FILE = Path("model") / "number_calibration.json"
FEATURES = (
    "log_product",  # sum of the digits' log-probabilities (calibrated): the product's log
    "product_log_odds",  # log(product / (1 - product)): the product on the regression's own scale
    "least_log_p",  # the least sure digit's log-probability
    "cut_share",  # share of the digits read from pieces of a mark that was cut
    "most_ink_cut",  # the most ink a cut on the path goes through, in stroke widths
    "left_out",  # the area of the marks left out as noise, in median marks
    "pieces_per_digit",  # log(atoms / digits): how far the line was over-segmented
    "width_spread",  # log(widest digit / narrowest digit)
    "line_reader",  # 1: the line reader's reading stands (the marks were cut), 0: the segmentation's
    "readers_agree",  # 1: both read the same number (always, where only the segmentation read)
)


def number_features(
    lat: Lattice, path: list[int], confidences: list[float], line_reader: bool, agree: bool
) -> np.ndarray:
    """One reading's (len(FEATURES),) features: its lattice, the candidates on the segmentation's
    best path (indices into lat.spans), the answered digits' probabilities, whether the line
    reader's reading stands and whether the two readers agree."""
    logs = np.log(np.clip(confidences, 1e-12, 1.0))
    pieces = np.bincount([a.component for a in lat.atoms])  # atoms per mark: > 1 where it was cut
    cut = [any(pieces[a.component] > 1 for a in lat.atoms[i:j]) for i, j in (lat.spans[s] for s in path)]
    nodes = [lat.spans[s][0] for s in path[1:]]  # the places between two digits of the path
    used = np.zeros(len(lat.atoms), bool)
    for i, j in (lat.spans[s] for s in path):
        used[i:j] = True
    widths = lat.widths[path] if path else np.ones(1)
    return np.array(
        [
            logs.sum(),
            math.log(max(math.exp(logs.sum()), 1e-6) / max(1 - math.exp(logs.sum()), 1e-6)),
            logs.min(),
            np.mean(cut) if cut else 0.0,
            max((lat.cuts[n] for n in nodes), default=0.0),
            lat.skips[~used].sum(),
            math.log(len(lat.atoms) / len(path)),
            math.log(widths.max() / max(widths.min(), 1e-3)),
            float(line_reader),
            float(agree),
        ]
    )


@dataclass(frozen=True)
class NumberCalibration:
    """P(the whole number is right) = sigmoid(weights . (features - mean) / scale + bias)."""

    weights: tuple[float, ...]
    bias: float
    mean: tuple[float, ...]
    scale: tuple[float, ...]

    def __post_init__(self) -> None:
        sizes = {len(self.weights), len(self.mean), len(self.scale)}
        if sizes != {len(FEATURES)} or not all(s > 0 for s in self.scale):
            raise CalibrationError(f"one weight, mean and positive scale per feature {FEATURES} expected")

    def __call__(self, features: np.ndarray) -> np.ndarray:
        """(N, len(FEATURES)) -> (N,) the probability that each number is right."""
        z = (features - np.array(self.mean)) / np.array(self.scale) @ np.array(self.weights) + self.bias
        return 1 / (1 + np.exp(-z))

    def as_dict(self) -> dict:
        return {
            "features": list(FEATURES),
            "weights": list(self.weights),
            "bias": self.bias,
            "mean": list(self.mean),
            "scale": list(self.scale),
        }


def load_number_calibration(path: Path, weights: Path) -> NumberCalibration:
    """model/number_calibration.json's model, checked against the weights the worker serves."""
    try:
        stored = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise CalibrationError(f"cannot read {path}: {error} (python -m train.calibrate_numbers writes it)") from error
    if stored.get("weights_sha256") != file_digest(weights):
        raise CalibrationError(f"{path} was fitted for other weights than {weights}: run train.calibrate_numbers")
    model = stored.get("model", {})
    if model.get("features") != list(FEATURES):
        raise CalibrationError(f"{path} has features {model.get('features')}, not {list(FEATURES)}")
    return NumberCalibration(tuple(model["weights"]), float(model["bias"]), tuple(model["mean"]), tuple(model["scale"]))
