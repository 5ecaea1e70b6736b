"""Candidate views -> digit probabilities: one forward pass over every view of every image, the
most confident view of each image, test-time augmentation (TTA) for the unsure ones, and the
calibration of the answered probabilities (handler/calibration.py).

The handler and the evaluation both classify this way.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from handler.calibration import Calibration, turned_paths, view_paths
from handler.preprocess.kernels import divide

# Test-time augmentation: an answer under TTA_BELOW is re-read with its view turned by
# +-TTA_DEGREES, the rotation training drew from (the model card's "small rotations"), and the
# three probability vectors averaged. An answer under TURN_BELOW is also read turned by
# +-TURN_DEGREES: a digit written or photographed at a slant reads sure once turned back, and where
# a turn reads TURNED_SURE or more, and surer than the view itself, its reading is the answer
# (docs/decisions.md). Decided on the network's own probability, before calibration, so that
# calibrating changes no answer. Independent of the LowConfidencePredictions metric's threshold
# (HandlerSettings.low_confidence), which counts the calibrated answers.
TTA_BELOW, TTA_DEGREES = 0.6, 10.0
TURN_BELOW, TURN_DEGREES, TURNED_SURE = 0.7, 20.0, 0.9


def to_batch(views: list[list[torch.Tensor]]) -> tuple[torch.Tensor, list[int]]:
    """Per image its (28, 28) candidate views in [0, 1] -> (K, 1, 28, 28) network input, on the
    views' device, holding every view of every image in order (the network normalizes it), and
    how many views each image has."""
    counts = [len(v) for v in views]
    return torch.stack([x for v in views for x in v])[:, None], counts


def most_confident(probabilities: torch.Tensor, counts: list[int]) -> list[int] | slice:
    """(K, 10) probabilities of all views -> per image, the index of the view the network is most
    confident of (mnistify explains why an image can have several)."""
    if len(probabilities) == len(counts):  # one view each: MNIST-shaped uploads
        return slice(None)
    confidence = probabilities.max(1).values.tolist()
    best, start = [], 0
    for count in counts:
        best.append(max(range(start, start + count), key=confidence.__getitem__))
        start += count
    return best


def _rotation(degrees: float) -> list[list[float]]:
    a = math.radians(degrees)
    return [[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]]


# The turns, in this order in the re-read batch: the averaged ones, then the wider ones.
_TURNS = torch.tensor([_rotation(a) for a in (TTA_DEGREES, -TTA_DEGREES, TURN_DEGREES, -TURN_DEGREES)])


@functools.lru_cache(maxsize=8)
def _turn_grids(device: torch.device) -> torch.Tensor:
    """(T, 28, 28, 2) sampling grids of the turns, made once per device: on the CPU, making
    them for every batch with an unsure answer cost about 0.1 ms of its TTA."""
    return F.affine_grid(_TURNS.to(device), [len(_TURNS), 1, 28, 28], align_corners=False)


class Turned(NamedTuple):
    """The answers test-time augmentation took from a turned view: their rows of the batch, and
    the turned view's reading of each."""

    rows: list[int]
    probabilities: torch.Tensor  # (t, 10)
    views: torch.Tensor  # (t, 1, 28, 28)
    features: torch.Tensor  # (t, C)


def tta(
    model: torch.nn.Module, images: torch.Tensor, probabilities: torch.Tensor, below: float = TTA_BELOW
) -> tuple[torch.Tensor, Turned | None]:
    """(N, 1, 28, 28) chosen views and their (N, 10) probabilities -> (N, 10) where the answers under
    `below` are the mean over the view and the view turned by +-TTA_DEGREES; and the answers under
    max(below, TURN_BELOW) whose view turned TURN_DEGREES one way reads TURNED_SURE or more, and
    surer than the view, as that turned view's reading (None: none). One more forward pass, of four
    turns of each unsure view."""
    # One read of the confidences, the checks in Python: fewer calls than a mask and its nonzero,
    # for the usual batch where nobody is unsure.
    confidences = probabilities.amax(1).tolist()
    unsure_rows = [i for i, surest in enumerate(confidences) if surest < max(below, TURN_BELOW)]
    if not unsure_rows:
        return probabilities, None
    n = len(unsure_rows)
    unsure = torch.tensor(unsure_rows, device=images.device)
    x = images[unsure].repeat(len(_TURNS), 1, 1, 1)  # (4n, 1, 28, 28): every image once per turn
    grid = _turn_grids(images.device).repeat_interleave(n, 0)  # (4n, 28, 28, 2), as x
    x = F.grid_sample(x, grid, align_corners=False)
    features, logits = model.features_and_logits(x)
    turned = torch.softmax(logits, dim=1).view(len(_TURNS), n, 10)
    own = probabilities[unsure]
    averaged = torch.tensor([confidences[i] < below for i in unsure_rows], device=own.device)[:, None]
    probabilities = probabilities.clone()
    probabilities[unsure] = torch.where(averaged, divide(own + turned[0] + turned[1], 3), own)
    surest, way = turned[2:].amax(2).max(0)  # (n,) the surer of the wider turns, and which
    taken = ((surest >= TURNED_SURE) & (surest > own.amax(1))).nonzero().flatten()
    if not len(taken):
        return probabilities, None
    at = (way[taken] + 2) * n + taken  # in x
    return probabilities, Turned(unsure[taken].tolist(), turned.flatten(0, 1)[at], x[at], features[at])


class Reading(NamedTuple):
    """What one forward pass over a batch's candidate views gives, per image of the N."""

    probabilities: torch.Tensor  # (N, 10) on the CPU: the network's own, of the view answered with, after TTA
    views: torch.Tensor  # (N, 1, 28, 28) that view, on the device (what an explanation shows and attributes)
    features: torch.Tensor  # (N, C) the network's pooled features of that view, on the device
    candidates: list[int]  # how many candidate views each image had
    paths: torch.Tensor | None  # (N,) each image's calibration path (view_paths; None: one view each)
    # The reading before any turn, where TTA answered some images with a turned view (None: this one).
    first_read: Reading | None = None

    def calibrated(self, calibration: Calibration | None) -> torch.Tensor:
        """(N, 10) the service's answers: the probabilities calibrated (None: the network's own)."""
        return self.probabilities if calibration is None else calibration(self.probabilities, self.paths)

    def as_first_read(self) -> Reading:
        """The reading before any turn: what the open-set head judges. A turn is searched for where
        the view reads unsure, until some digit reads sure: a letter turned until it reads as a
        digit is still a letter, so whether an image is one digit is judged as it was uploaded."""
        return self if self.first_read is None else self.first_read


def read_views(
    model: torch.nn.Module, views: list[list[torch.Tensor]], device="cpu", tta_below: float | None = TTA_BELOW
) -> Reading:
    """N images given as their candidate views -> one forward pass, the most confident view of
    each, and TTA for answers under `tta_below` (None: no TTA, for the evaluation's comparison).
    The probabilities are the network's, before calibration (digit_probabilities calibrates).
    `model` gives features and logits (features_and_logits: DigitCNN, ServedCNN)."""
    inputs, counts = to_batch(views)
    with torch.inference_mode():
        inputs = inputs.to(device, non_blocking=True)
        features, logits = model.features_and_logits(inputs)
        probabilities = torch.softmax(logits, dim=1)
        best = most_confident(probabilities, counts)
        paths = view_paths(probabilities, counts, best)
        probabilities, chosen, features = probabilities[best], inputs[best], features[best]
        turned = None
        if tta_below is not None:
            probabilities, turned = tta(model, chosen, probabilities, tta_below)
        reading = Reading(probabilities.cpu(), chosen, features, counts, paths)
        return reading if turned is None else _answered_turned(reading, turned)


def _answered_turned(reading: Reading, turned: Turned) -> Reading:
    """`reading` with the turned rows answered by their turned views, on the "turned" path."""
    probabilities, views, features = reading.probabilities.clone(), reading.views.clone(), reading.features.clone()
    probabilities[turned.rows] = turned.probabilities.cpu()
    views[turned.rows], features[turned.rows] = turned.views, turned.features
    paths = turned_paths(reading.paths, len(probabilities), turned.rows)
    return Reading(probabilities, views, features, reading.candidates, paths, first_read=reading)


def digit_probabilities(
    model: torch.nn.Module,
    views: list[list[torch.Tensor]],
    device="cpu",
    tta_below: float | None = TTA_BELOW,
    calibration: Calibration | None = None,
) -> torch.Tensor:
    """read_views' (N, 10) probabilities, calibrated when a `calibration` is given (the service's
    answers; None: the network's own). TTA is decided on the network's own probabilities."""
    return read_views(model, views, device, tta_below).calibrated(calibration)
