"""The open-set head: is an upload one digit, something else, or several digits?

A small classifier over what the frozen digit network already computes for the view it answers
with (handler/open_set.py assembles its inputs: the pooled features, the probabilities, a few
facts about the ink). Three classes, CLASSES; an image is refused when the head's probability
of "digit" is under `digit_below`, with the likelier of the other two as the reason. Trained by
`python -m train.open_set`, which writes model/open_set.pt (about 160 KB) with its provenance.

Only ``torch`` is imported here: TorchServe copies this file into the model archive.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

OPEN_SET_FILE = Path("model") / "open_set.pt"  # in the repository and in the archive, beside this file
DEFAULT_OPEN_SET = Path(__file__).with_name(OPEN_SET_FILE.name)
CLASSES = ("digit", "not_a_digit", "several_digits")  # the head's outputs; the last two are reasons


@dataclass
class OpenSetConfig:
    inputs: int  # length of the input vector (handler/open_set.py, head_inputs)
    hidden: int = 64  # hidden units of each member
    members: int = 3  # small MLPs whose probabilities are averaged: a smoother tail than one
    digit_below: float = 0.5  # refuse when P(digit) is under this (chosen on training data)
    network: str = ""  # SHA-256 of the digit network's weights file whose features it was trained on


class OpenSetHead(nn.Module):
    """(N, inputs) -> (N, 3): the log of the members' mean probabilities over CLASSES. Each member
    is inputs -> hidden -> ReLU -> 3; the inputs are standardized inside (mean, scale). The members'
    weights are stacked, (members, ...), so that the batch goes through all of them in two calls."""

    def __init__(self, config: OpenSetConfig) -> None:
        super().__init__()
        self.config = config
        m, d, h, c = config.members, config.inputs, config.hidden, len(CLASSES)
        self.register_buffer("mean", torch.zeros(d))
        self.register_buffer("scale", torch.ones(d))
        self.w1 = nn.Parameter(torch.empty(m, d, h).uniform_(-(d**-0.5), d**-0.5))  # nn.Linear's default
        self.b1 = nn.Parameter(torch.zeros(m, 1, h))
        self.w2 = nn.Parameter(torch.empty(m, h, c).uniform_(-(h**-0.5), h**-0.5))
        self.b2 = nn.Parameter(torch.zeros(m, 1, c))

    def member_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(N, inputs) -> (members, N, 3) logits, each member's."""
        z = ((x - self.mean) * self.scale).expand(self.config.members, -1, -1)  # (M, N, D)
        return torch.baddbmm(self.b2, torch.baddbmm(self.b1, z, self.w1).relu_(), self.w2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.member_logits(x), -1).mean(0).log()


def save_head(head: OpenSetHead, path: str | Path, **provenance) -> None:
    """{"config", "state_dict" (fp16: the rounding, relative 5e-4, is far below what moves a
    decision), "provenance"}."""
    state = {k: v.detach().half().cpu() for k, v in head.state_dict().items()}
    torch.save({"config": asdict(head.config), "state_dict": state, "provenance": provenance}, path)


def load_head(path: str | Path = DEFAULT_OPEN_SET, map_location="cpu") -> OpenSetHead:
    checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    head = OpenSetHead(OpenSetConfig(**checkpoint["config"]))
    head.load_state_dict({k: v.float() for k, v in checkpoint["state_dict"].items()})
    return head.eval()
