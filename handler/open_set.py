"""Uploads that are not one digit: the open-set head (model/open_set.py) on what the digit network
computed anyway, and the 422 each refused image gets.

The head reads, per image, the view the service answers with (the most confident candidate view)
and its answer after test-time augmentation: the network's pooled features of that view, its ten
probabilities (the network's own, before calibration: what the head was trained on), and a few
facts about the view's ink that several digits squashed into one frame show at once (the ink
box's aspect, how many separate runs of inked columns and rows it has, its share of the frame),
and how many candidate views preprocessing made of the image. Two batched matrix products for the
batch; no second forward pass.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from handler.errors import NotADigit, NotOneDigit, SeveralDigits
from handler.inference import Reading
from handler.preprocess.framing import INK
from model.open_set import OpenSetHead, load_head

GEOMETRY = ("log_aspect", "column_runs", "row_runs", "ink_share", "grey_share")  # geometry()'s columns
GREY = 0.1, 0.6  # a pen stroke is mostly full ink; a photo's shapes and shades are mostly grey
MAX_CANDIDATES = 4  # candidate views counted up to this many


def geometry(views: torch.Tensor) -> torch.Tensor:
    """(N, 1, 28, 28) views -> (N, 5) float32, GEOMETRY: log(inked columns / inked rows), the runs of
    inked columns and of inked rows (two digits side by side: two column runs), the inked share of
    the frame, and the share of what is not black that is grey (between GREY's bounds)."""
    x = views[:, 0]
    ink = (x > INK).float()  # (N, 28, 28)
    lines = torch.stack((ink.amax(1), ink.amax(2)), 1)  # (N, 2, 28): columns, rows with ink
    runs = (lines[..., 1:] - lines[..., :-1]).clamp_(min=0).sum(-1) + lines[..., 0]  # (N, 2)
    sizes = lines.sum(-1).clamp_(min=1)  # (N, 2)
    aspect = (sizes[:, :1] / sizes[:, 1:]).log_()
    lit = (x > GREY[0]).float().sum((1, 2))
    grey = lit - (x >= GREY[1]).float().sum((1, 2))
    shares = torch.stack((ink.mean((1, 2)), grey / lit.clamp(min=1)), 1)
    return torch.cat((aspect, runs, shares), 1)


def head_inputs(reading: Reading) -> torch.Tensor:
    """(N, C + 10 + 2 + 5 + 1) on the views' device: pooled features, log-probabilities, the top
    probability and its margin over the second, geometry(), and how many candidate views the
    image had (up to MAX_CANDIDATES: a photo of something else often has several)."""
    device = reading.features.device
    probabilities = reading.probabilities.to(device)
    top2 = probabilities.topk(2, 1).values  # (N, 2)
    candidates = torch.tensor(reading.candidates, dtype=torch.float32).clamp_(max=MAX_CANDIDATES).to(device)
    return torch.cat(
        (
            reading.features,
            probabilities.clamp(min=1e-6).log(),
            top2[:, :1],
            top2[:, :1] - top2[:, 1:],
            geometry(reading.views),
            candidates[:, None],
        ),
        1,
    )


class OpenSet:
    """The head, loaded once per worker, and the refusals it makes."""

    def __init__(self, path: str | Path, weights: str | Path, device: torch.device | str = "cpu") -> None:
        self.head: OpenSetHead = load_head(path).to(device)
        self.digit_below = self.head.config.digit_below
        if self.head.config.network != hashlib.sha256(Path(weights).read_bytes()).hexdigest():
            # another network's features mean nothing to it: refuse to start rather than refuse at random
            raise ValueError(
                f"{path} was trained on another digit network than {Path(weights).name}: retrain it "
                "(python -m train.open_set) or turn it off (handler.open_set: false in model-config.yaml)"
            )

    def refusals(self, reading: Reading) -> list[NotOneDigit | None]:
        """Per image: None for one digit, else the 422 that says what it is instead."""
        with torch.inference_mode():
            p = self.head(head_inputs(reading)).exp_().tolist()  # (N, 3) over CLASSES
        return [None if digit >= self.digit_below else _refusal(other, several) for digit, other, several in p]


def _refusal(other: float, several: float) -> NotOneDigit:
    """The 422 of the likelier reason (CLASSES[1:])."""
    return NotADigit() if other >= several else SeveralDigits()
