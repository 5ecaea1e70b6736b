"""Uploads that are not one digit: the open-set head (model/open_set.py) on what the digit network
computed anyway, and the 422 each refused image gets.

The head reads, per image, the most confident candidate view and its answer after test-time
augmentation's averaging, as first read: where a turned view became the answer, the image is
still judged as uploaded (Reading.as_first_read). The network's pooled features of that view, its ten
probabilities (the network's own, before calibration: what the head was trained on), and a few
facts about the view's ink that several digits squashed into one frame show at once (the ink
box's aspect, how many separate runs of inked columns and rows it has, its share of the frame),
and how many candidate views preprocessing made of the image. Two batched matrix products for the
batch; no second forward pass.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from handler.calibration import file_digest
from handler.errors import NotADigit, NotOneDigit, SeveralDigits
from handler.inference import Reading
from handler.preprocess.framing import INK
from model.open_set import OpenSetHead, load_head

GEOMETRY = ("log_aspect", "column_runs", "row_runs", "ink_share", "grey_share")  # geometry()'s columns
GREY = 0.1, 0.6  # a pen stroke is mostly full ink; a photo's shapes and shades are mostly grey
MAX_CANDIDATES = 4  # candidate views counted up to this many


def geometry(views: torch.Tensor) -> np.ndarray:
    """(N, 1, 28, 28) views -> (N, 5) float32, GEOMETRY: log(inked columns / inked rows), the runs of
    inked columns and of inked rows (two digits side by side: two column runs), the inked share of
    the frame, and the share of what is not black that is grey (between GREY's bounds). In numpy:
    a dozen calls on a batch's few small arrays cost a fraction of torch's."""
    x = views[:, 0].cpu().numpy()
    ink = x > INK  # (N, 28, 28)
    lines = np.stack((ink.any(1), ink.any(2)), 1).astype(np.float32)  # (N, 2, 28): columns, rows with ink
    runs = np.diff(lines, axis=-1).clip(min=0).sum(-1) + lines[..., 0]  # (N, 2)
    sizes = lines.sum(-1).clip(min=1)  # (N, 2)
    lit = (x > GREY[0]).sum((1, 2), dtype=np.float32)
    grey = lit - (x >= GREY[1]).sum((1, 2), dtype=np.float32)
    shares = np.stack((ink.mean((1, 2), dtype=np.float32), grey / lit.clip(min=1)), 1)
    return np.concatenate((np.log(sizes[:, :1] / sizes[:, 1:]), runs, shares), 1, dtype=np.float32)


def head_inputs(reading: Reading) -> torch.Tensor:
    """(N, C + 10 + 2 + 5 + 1) on the features' device: pooled features, log-probabilities, the top
    probability and its margin over the second, geometry(), and how many candidate views the
    image had (up to MAX_CANDIDATES: a photo of something else often has several), all of the
    reading as first read (Reading.as_first_read: before any turn). All but the features are put
    together in numpy, on the CPU where the probabilities are."""
    reading = reading.as_first_read()
    p = reading.probabilities.cpu().numpy()  # (N, 10)
    top2 = -np.partition(-p, 1, axis=1)[:, :2]  # (N, 2), largest first
    candidates = np.minimum(np.asarray(reading.candidates, dtype=np.float32), MAX_CANDIDATES)
    answer = (np.log(p.clip(min=1e-6)), top2[:, :1], top2[:, :1] - top2[:, 1:])  # its log-probabilities, top, margin
    facts = np.concatenate((*answer, geometry(reading.views), candidates[:, None]), 1, dtype=np.float32)
    features = reading.features
    return torch.cat((features, torch.from_numpy(facts).to(features.device, non_blocking=True)), 1)


class OpenSet:
    """The head, loaded once per worker, and the refusals it makes."""

    def __init__(self, path: str | Path, weights: str | Path, device: torch.device | str = "cpu") -> None:
        self.head: OpenSetHead = load_head(path).to(device)
        self.digit_below = self.head.config.digit_below
        # The inputs' standardization folded into the first layer: x @ w1' + b1' == ((x - mean) * scale) @ w1 + b1.
        with torch.no_grad():
            head = self.head
            self._w1 = head.scale[None, :, None] * head.w1  # (M, D, H)
            self._b1 = head.b1 - (head.mean * head.scale)[None, None] @ head.w1  # (M, 1, H)
        if self.head.config.network != file_digest(weights):
            # another network's features mean nothing to it: refuse to start rather than refuse at random
            raise ValueError(
                f"{path} was trained on another digit network than {Path(weights).name}: retrain it "
                "(python -m train.open_set) or turn it off (handler.open_set: false in model-config.yaml)"
            )

    def probabilities(self, reading: Reading) -> torch.Tensor:
        """(N, 3) over CLASSES: OpenSetHead's, exponentiated, through the folded first layer."""
        with torch.inference_mode():
            x = head_inputs(reading).expand(len(self._w1), -1, -1)  # (M, N, D)
            hidden = torch.baddbmm(self._b1, x, self._w1).relu_()
            return torch.baddbmm(self.head.b2, hidden, self.head.w2).softmax(-1).mean(0)  # members' mean

    def refusals(self, reading: Reading) -> list[NotOneDigit | None]:
        """Per image: None for one digit, else the 422 that says what it is instead."""
        p = self.probabilities(reading).tolist()
        return [None if digit >= self.digit_below else _refusal(other, several) for digit, other, several in p]


def _refusal(other: float, several: float) -> NotOneDigit:
    """The 422 of the likelier reason (CLASSES[1:])."""
    return NotADigit() if other >= several else SeveralDigits()
