"""Calibrated confidence: temperature scaling of the served probabilities, one temperature per path.

The network was trained with label smoothing, so its probabilities rank answers but do not say how
often they are right (on MNIST test a mean confidence of 0.94 at 99.5% accuracy). The service
answers p' = softmax(log p / T) instead, where p (N, 10) are the probabilities after the choice of
the most confident candidate view and test-time augmentation (handler/inference.py), and T the
temperature of the image's path:

- "one_view": the image has one candidate view (clean MNIST-shaped uploads, photos, canvases);
- "views_agree": several candidate views, all read as the same digit;
- "views_disagree": several candidate views read as different digits (the answer is the most
  confident one's, which is more often wrong than its probability says);
- "turned": the answer is the chosen view's turned by test-time augmentation (handler/inference.py,
  tta: an unsure view that reads sure once turned), whatever the views.

A temperature is positive, so each row keeps its order and its argmax: the digits answered are
those of the network. The temperatures are fitted by `python -m train.calibrate` on training digits
and stored beside the weights in model/calibration.json, with the digest of the weights they were
fitted for; a worker refuses to start with a calibration of other weights.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

# Where the calibration lies, relative to the repository root and to an archive's model_dir alike
# (ops/build_archive.py stages it there).
CALIBRATION_FILE = Path("model") / "calibration.json"
PATHS = ("one_view", "views_agree", "views_disagree", "turned")
ONE_VIEW, VIEWS_AGREE, VIEWS_DISAGREE, TURNED = range(len(PATHS))


class CalibrationError(ValueError):
    """model/calibration.json is missing a temperature, holds a wrong one, or was fitted for other weights."""


@dataclass(frozen=True)
class Calibration:
    """One temperature per path (PATHS), each > 0."""

    temperatures: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.temperatures) != len(PATHS) or not all(t > 0 for t in self.temperatures):
            raise CalibrationError(f"one positive temperature per path {PATHS} expected, not {self.temperatures}")
        object.__setattr__(self, "_by_path", torch.tensor(self.temperatures, dtype=torch.float32))

    def __call__(self, probabilities: torch.Tensor, paths: torch.Tensor | None) -> torch.Tensor:
        """(N, 10) probabilities and each row's path index (N,) (None: every row "one_view") ->
        (N, 10) calibrated probabilities, each row's argmax kept."""
        if paths is None:
            temperature = self.temperatures[ONE_VIEW]
        else:
            temperature = self._by_path.to(probabilities.device)[paths][:, None]  # (N, 1)
        # log(0) = -inf stays -inf, which softmax maps back to 0: no clamp needed.
        return torch.softmax(probabilities.log() / temperature, dim=1)

    def as_dict(self) -> dict[str, float]:
        return dict(zip(PATHS, self.temperatures))


def view_paths(probabilities: torch.Tensor, counts: list[int], best: list[int] | slice) -> torch.Tensor | None:
    """(K, 10) probabilities of every candidate view, views per image and the chosen view of each
    (handler/inference.py, most_confident) -> (N,) each image's path index; None when every image
    has one view (MNIST-shaped batches: nothing to look at)."""
    if isinstance(best, slice):
        return None
    digits = probabilities.argmax(1).tolist()
    paths, start = [], 0
    for count, chosen in zip(counts, best):
        if count == 1:
            paths.append(ONE_VIEW)
        else:
            agree = all(digits[i] == digits[chosen] for i in range(start, start + count))
            paths.append(VIEWS_AGREE if agree else VIEWS_DISAGREE)
        start += count
    return torch.tensor(paths)


def turned_paths(paths: torch.Tensor | None, n: int, turned: list[int]) -> torch.Tensor | None:
    """view_paths' (N,) paths (None: every image one view) with the `turned` rows on TURNED."""
    if not turned:
        return paths
    paths = torch.full((n,), ONE_VIEW) if paths is None else paths.clone()
    paths[turned] = TURNED
    return paths


def file_digest(path: Path) -> str:
    """SHA-256 of a file, hex."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def fitted_for(path: Path, weights: Path, command: str) -> dict:
    """A JSON file fitted for the network's weights (its "weights_sha256"), read and checked against
    the weights the worker serves; `command` writes it."""
    try:
        stored = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise CalibrationError(f"cannot read the calibration {path}: {error} ({command} writes it)") from error
    if stored.get("weights_sha256") != file_digest(weights):
        raise CalibrationError(
            f"{path} was fitted for other weights (SHA-256 {stored.get('weights_sha256')}), not {weights}: "
            f"run `{command}` after training"
        )
    return stored


def load_calibration(path: Path, weights: Path) -> Calibration:
    """model/calibration.json's temperatures, checked against the weights the worker serves."""
    stored = fitted_for(path, weights, "make calibrate")
    temperatures = stored.get("temperatures", {})
    missing = [p for p in PATHS if not isinstance(temperatures.get(p), (int, float))]
    if missing:
        raise CalibrationError(f"{path} has no temperature for {', '.join(missing)}")
    return Calibration(tuple(float(temperatures[p]) for p in PATHS))
