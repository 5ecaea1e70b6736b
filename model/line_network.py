"""The line reader: a line of digits (1, 28, W) -> per column of 4 px, the probabilities of the ten
digits and of "no digit here" (the blank), read by CTC (Graves et al. 2006).

The digit network reads one digit at a time, so a line must first be cut into digits; where digits
touch or overlap, no cut separates them cleanly. This network reads the whole line and is trained
with CTC on numbers written with MNIST training digits (train/line_reader.py), so it needs no cut.

Only ``torch`` is imported here: TorchServe copies this file into the model archive.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

# Where the weights lie, relative to the repository root and to an archive's model_dir alike.
LINE_READER_FILE = Path("model") / "line_reader.pt"
LINE_WEIGHTS = Path(__file__).with_name(LINE_READER_FILE.name)
HEIGHT = 28  # the line's height as the network reads it
STRIDE = 4  # input columns per output column
BLANK = 10  # the CTC blank's class; digits are 0..9


@dataclass
class LineConfig:
    """Everything needed to rebuild the network; saved in the checkpoint beside the weights."""

    # 3x3 convolutions at full, 1/2 and 1/4 width (a 2x2 max-pool after the first two), then one
    # over the 7 remaining rows: about 5 M MACs per 28 x 28 of line, a digit network's 1.5 times.
    channels: tuple[int, int, int, int] = (32, 48, 64, 96)
    # 1-D convolutions along the line (kernel 5 at 4 px a column): each output column sees about
    # 50 px, two digits' width, enough to tell a digit's middle from its edge and from its neighbour's.
    context_layers: int = 2
    context_kernel: int = 5
    num_classes: int = 11  # ten digits and the blank

    def __post_init__(self) -> None:
        self.channels = tuple(self.channels)


class LineCNN(nn.Module):
    """(N, 1, 28, W) lines in [0, 1], light ink on black -> (N, W // 4, 11) log-probabilities."""

    def __init__(self, config: LineConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or LineConfig()
        c1, c2, c3, c4 = c.channels

        def block(cin: int, cout: int, kernel, padding) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, kernel, padding=padding, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]

        self.features = nn.Sequential(
            *block(1, c1, 3, 1),
            nn.MaxPool2d(2),  # 14 x W/2
            *block(c1, c2, 3, 1),
            nn.MaxPool2d(2),  # 7 x W/4
            *block(c2, c3, 3, 1),
            *block(c3, c4, (HEIGHT // STRIDE, 1), 0),  # 1 x W/4
        )
        context: list[nn.Module] = []
        for _ in range(c.context_layers):
            context += [nn.Conv1d(c4, c4, c.context_kernel, padding=c.context_kernel // 2), nn.ReLU(True)]
        self.context = nn.Sequential(*context)
        self.classifier = nn.Conv1d(c4, c.num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        columns = self.features(x).squeeze(2)  # (N, C, W/4)
        columns = columns + self.context(columns)
        return self.classifier(columns).transpose(1, 2).log_softmax(-1)  # (N, W/4, 11)


def save_line_checkpoint(model: LineCNN, path: str | Path, **extra) -> None:
    """{"config", "state_dict" (floats as fp16), **extra}, as model/network.py saves the digit network."""
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    torch.save({"config": asdict(model.config), "state_dict": state, **extra}, path)


def load_line_checkpoint(path: str | Path = LINE_WEIGHTS, map_location="cpu") -> LineCNN:
    """The line reader rebuilt from its checkpoint, fp32, in eval mode."""
    checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    model = LineCNN(LineConfig(**checkpoint["config"]))
    state = {k: v.float() if v.is_floating_point() else v for k, v in checkpoint["state_dict"].items()}
    model.load_state_dict(state)
    return model.eval()
