"""Candidate views -> digit probabilities: one forward pass over every view of every image, the
most confident view of each image, test-time augmentation (TTA) for the unsure ones, and the
calibration of the answered probabilities (handler/calibration.py).

The handler and the evaluation both classify this way.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from handler.calibration import Calibration, view_paths
from handler.preprocess.kernels import divide

# Test-time augmentation: an answer under TTA_BELOW is re-read with its view turned by
# +-TTA_DEGREES, the rotation training drew from (the model card's "small rotations"), and the
# three probability vectors averaged. Decided on the network's own probability, before calibration,
# so that calibrating changes no answer. Independent of the LowConfidencePredictions metric's
# threshold (HandlerSettings.low_confidence), which counts the calibrated answers.
TTA_BELOW, TTA_DEGREES = 0.6, 10.0


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


_TURNS = torch.tensor([_rotation(TTA_DEGREES), _rotation(-TTA_DEGREES)])


@functools.lru_cache(maxsize=8)
def _turn_grids(device: torch.device) -> torch.Tensor:
    """(2, 28, 28, 2) sampling grids of the two turns, made once per device: on the CPU, making
    them for every batch with an unsure answer cost about 0.1 ms of its TTA."""
    return F.affine_grid(_TURNS.to(device), [2, 1, 28, 28], align_corners=False)


def tta(
    model: torch.nn.Module, images: torch.Tensor, probabilities: torch.Tensor, below: float = TTA_BELOW
) -> torch.Tensor:
    """(N, 1, 28, 28) chosen views and their (N, 10) probabilities -> (N, 10), where the answers
    under `below` are the mean over the view and the view turned by +-TTA_DEGREES. Two more
    forward passes for the few unsure images; what it buys per input family is in
    reports/evaluation.md."""
    # One read of the confidences, the checks in Python: fewer calls than a mask and its nonzero,
    # for the usual batch where nobody is unsure.
    unsure_rows = [i for i, surest in enumerate(probabilities.amax(1).tolist()) if surest < below]
    if not unsure_rows:
        return probabilities
    unsure = torch.tensor(unsure_rows, device=images.device)
    x = images[unsure].repeat(2, 1, 1, 1)  # (2n, 1, 28, 28): every image once per turn
    grid = _turn_grids(images.device).repeat_interleave(len(unsure), 0)  # (2n, 28, 28, 2), as x
    turned = torch.softmax(model(F.grid_sample(x, grid, align_corners=False)), dim=1)  # (2n, 10)
    probabilities = probabilities.clone()
    probabilities[unsure] = divide(probabilities[unsure] + turned.view(2, len(unsure), 10).sum(0), 3)
    return probabilities


def read_views(
    model: torch.nn.Module, views: list[list[torch.Tensor]], device="cpu", tta_below: float | None = TTA_BELOW
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(N, 10) probabilities, on the CPU, of N images given as their candidate views: one forward
    pass, the most confident view of each, and TTA for answers under `tta_below` (None: no TTA,
    for the evaluation's comparison); the (N, 1, 28, 28) views it answered with, on `device` (what
    an explanation shows and attributes, handler/explanations.py); and each image's calibration
    path (handler/calibration.py, view_paths; None: one view each)."""
    inputs, counts = to_batch(views)
    with torch.inference_mode():
        inputs = inputs.to(device, non_blocking=True)
        probabilities = torch.softmax(model(inputs), dim=1)
        best = most_confident(probabilities, counts)
        paths = view_paths(probabilities, counts, best)
        probabilities, chosen = probabilities[best], inputs[best]
        if tta_below is not None:
            probabilities = tta(model, chosen, probabilities, tta_below)
    return probabilities.cpu(), chosen, paths


def digit_probabilities(
    model: torch.nn.Module,
    views: list[list[torch.Tensor]],
    device="cpu",
    tta_below: float | None = TTA_BELOW,
    calibration: Calibration | None = None,
) -> torch.Tensor:
    """read_views' (N, 10) probabilities, calibrated when a `calibration` is given (the service's
    answers; None: the network's own). TTA is decided on the network's own probabilities."""
    probabilities, _, paths = read_views(model, views, device, tta_below)
    return probabilities if calibration is None else calibration(probabilities, paths)
