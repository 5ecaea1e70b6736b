"""The digit classifier of the model card: 3 conv layers with ReLU, adaptive average pooling, one linear layer.

Only ``torch`` is imported here: TorchServe copies this file into the model archive.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

# The committed weights, the product of `make train`.
DEFAULT_WEIGHTS = Path(__file__).with_name("mnist_cnn.pt")


@dataclass
class ModelConfig:
    """Everything needed to rebuild the network; saved in the checkpoint beside the weights."""

    # Widths grow as the maps shrink: 3.4 M MACs per image (conv1 0.12 M at 14x14, conv2 1.41 M
    # at 7x7, conv3 1.84 M at 4x4), 149 k parameters. 16/32/64 costs half as much and reads the
    # hard kinds of input (crossing lines, edge bars, blots) worse (MODEL_CARD.md, "Runs behind
    # the choice"; "Architecture comparison" for the clean-MNIST-only comparison).
    channels: tuple[int, int, int] = (24, 48, 96)
    # 5x5 kernels, each with stride 2 (28 -> 14 -> 7 -> 4): conv3's receptive field is 29 px, so
    # every feature sees the whole 20 px digit. Compared with a 3x3/5x5 mix (11 px field) and
    # strides 2, 1, 2 (21 px field, 3x the work) in MODEL_CARD.md's architecture table.
    kernel_sizes: tuple[int, int, int] = (5, 5, 5)
    # Strided convolutions instead of pooling layers.
    strides: tuple[int, int, int] = (2, 2, 2)
    # BatchNorm lets Adam use a larger learning rate and adds nothing at inference:
    # it folds into the convolution's affine transform.
    batch_norm: bool = True
    # AdaptiveAvgPool2d output side: 2 (from conv3's 4x4) keeps coarse "where" information
    # (top vs bottom strokes tell 6 from 9) that a global 1x1 average would throw away.
    pool_size: int = 2
    num_classes: int = 10
    # The card's normalization. The network takes [0, 1] images (light digit on black) and
    # normalizes them itself, so the constants travel with the weights and nobody else types them.
    # Checkpoints saved before these fields existed load with these defaults, which they used.
    mean: float = 0.5
    std: float = 0.5

    def __post_init__(self) -> None:
        # Checkpoints store lists; keep tuples so configs compare equal.
        self.channels = tuple(self.channels)
        self.kernel_sizes = tuple(self.kernel_sizes)
        self.strides = tuple(self.strides)


class DigitCNN(nn.Module):
    """(N, 1, 28, 28) images in [0, 1] -> (N, 10) logits."""

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config or ModelConfig()
        layers: list[nn.Module] = []
        in_channels = 1
        for out_channels, kernel, stride in zip(self.config.channels, self.config.kernel_sizes, self.config.strides):
            layers.append(
                nn.Conv2d(
                    in_channels, out_channels, kernel, stride, padding=kernel // 2, bias=not self.config.batch_norm
                )
            )
            if self.config.batch_norm:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.ReLU(inplace=True))
            in_channels = out_channels
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(self.config.pool_size)
        self.classifier = nn.Linear(in_channels * self.config.pool_size**2, self.config.num_classes)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] images -> the range the weights were trained on."""
        return (x - self.config.mean) / self.config.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pooled(x))

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, 28, 28) -> (N, C * pool * pool): the pooled features the classifier reads."""
        return torch.flatten(self.pool(self.features(self.normalize(x))), 1)

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, C * pool * pool) pooled features and (N, 10) logits of one forward pass."""
        pooled = self.pooled(x)
        return pooled, self.classifier(pooled)


M = TypeVar("M", bound=nn.Module)


def fuse_batchnorm(model: M) -> M:
    """An eval-mode copy of a network whose `features` are a Sequential (the digit network, the
    line reader) with each BatchNorm folded into its convolution: same outputs, one op fewer per
    layer."""
    import copy

    from torch.nn.utils.fusion import fuse_conv_bn_eval

    fused = copy.deepcopy(model).eval()
    layers = list(fused.features)
    for i, layer in enumerate(layers[:-1]):
        if isinstance(layer, nn.Conv2d) and isinstance(layers[i + 1], nn.BatchNorm2d):
            layers[i], layers[i + 1] = fuse_conv_bn_eval(layer, layers[i + 1]), nn.Identity()
    fused.features = nn.Sequential(*layers)
    return fused


def save_checkpoint(model: DigitCNN, path: str | Path, **extra) -> None:
    """Write {"config", "state_dict", **extra}. Float tensors are stored as fp16: half the size, and
    the rounding (relative 5e-4) barely moves predictions; reports/evaluation.md measures the
    weights as saved."""
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    torch.save({"config": asdict(model.config), "state_dict": state, **extra}, path)


def load_checkpoint(path: str | Path = DEFAULT_WEIGHTS, map_location="cpu") -> DigitCNN:
    """Rebuild the network from the config stored with the weights, fp32, in eval mode."""
    return model_from_checkpoint(torch.load(path, map_location=map_location, weights_only=True))


def model_from_checkpoint(checkpoint: dict) -> DigitCNN:
    """The network of a checkpoint already read (its other entries: recipe, accuracy, ...), fp32, eval mode."""
    model = DigitCNN(ModelConfig(**checkpoint["config"]))
    state = {k: v.float() if v.is_floating_point() else v for k, v in checkpoint["state_dict"].items()}
    model.load_state_dict(state)
    return model.eval()
