"""The digit classifier of the model card: 3 conv layers with ReLU, adaptive average pooling, one linear layer.

Only ``torch`` is imported here: TorchServe copies this file into the model archive.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
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
        for out_channels, kernel, stride in zip(
            self.config.channels, self.config.kernel_sizes, self.config.strides
        ):
            layers.append(
                nn.Conv2d(in_channels, out_channels, kernel, stride, padding=kernel // 2,
                          bias=not self.config.batch_norm)
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
        x = self.pool(self.features(self.normalize(x)))  # (N, C, pool, pool)
        return self.classifier(torch.flatten(x, 1))


def fuse_batchnorm(model: DigitCNN) -> DigitCNN:
    """An eval-mode copy with each BatchNorm folded into its convolution: same outputs, one op
    fewer per layer."""
    import copy

    from torch.nn.utils.fusion import fuse_conv_bn_eval

    fused = copy.deepcopy(model).eval()
    layers = list(fused.features)
    for i, layer in enumerate(layers[:-1]):
        if isinstance(layer, nn.Conv2d) and isinstance(layers[i + 1], nn.BatchNorm2d):
            layers[i], layers[i + 1] = fuse_conv_bn_eval(layer, layers[i + 1]), nn.Identity()
    fused.features = nn.Sequential(*layers)
    return fused


# On the CPU, batches of up to this many images skip oneDNN: its per-call setup outweighs their
# work (one image: about 0.31 against 0.45 ms, two: 0.43 against 0.86), while from three images
# on it is faster (at 16, about six times).
NATIVE_CPU_MAX_BATCH = 2
# The batch size oneDNN's weight layout is chosen for where the caller names none (the handler
# names TorchServe's batchSize); any other batch runs with it too, with the same outputs.
PACKED_FOR_BATCH = 16


class ServedCNN(nn.Module):
    """What the handler runs: the network with BatchNorm folded and weights channels-last, called
    as functions rather than through its modules (their calls cost about 0.1 ms a forward pass,
    a quarter of a one-image pass on the CPU). On the CPU, batches over NATIVE_CPU_MAX_BATCH run
    each convolution and its ReLU as one oneDNN call on weights reordered once into oneDNN's own
    blocked layout (_PackedConvolutions), the same kernels and outputs as nn.Conv2d's oneDNN path
    without reordering the weights on every call (in one process, 13-22% less time for batches of
    3 to 16)."""

    def __init__(self, model: DigitCNN, batch_size: int = PACKED_FOR_BATCH) -> None:
        super().__init__()
        self.network = fuse_batchnorm(model).to(memory_format=torch.channels_last)
        self.config = model.config
        self.convolutions = _conv_relu_chain(self.network)  # None: not conv -> ReLU throughout
        self.packed = _PackedConvolutions.of(self.convolutions, batch_size)  # None where oneDNN is missing

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, 28, 28) images in [0, 1] -> (N, 10) logits, DigitCNN's."""
        if self.convolutions is None:
            return self.network(x)
        x = self.network.normalize(x)
        if x.device.type != "cpu" or not torch.backends.mkldnn.enabled:
            features = self._convolved(x)
        elif len(x) > NATIVE_CPU_MAX_BATCH:
            features = self._convolved(x) if self.packed is None else self.packed(
                x.contiguous(memory_format=torch.channels_last))
        else:
            torch.backends.mkldnn.enabled = False
            try:
                features = self._convolved(x)
            finally:
                torch.backends.mkldnn.enabled = True
        classifier = self.network.classifier
        pooled = F.adaptive_avg_pool2d(features, self.network.pool.output_size)  # (N, C, pool, pool)
        return F.linear(pooled.flatten(1), classifier.weight, classifier.bias)

    def _convolved(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized (N, 1, 28, 28) -> conv3's (N, C, 4, 4) after ReLU, as the modules compute it."""
        for conv in self.convolutions:
            x = F.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups).relu_()
        return x


def _conv_relu_chain(network: DigitCNN) -> list[nn.Conv2d] | None:
    """The fused network's convolutions where its features are each convolution (zero-padded; its
    BatchNorm folded away) followed by a ReLU, else None."""
    layers = [m for m in network.features if not isinstance(m, nn.Identity)]
    convolutions, relus = layers[0::2], layers[1::2]
    if (len(convolutions) != len(relus) or not all(isinstance(m, nn.ReLU) for m in relus)
            or not all(isinstance(m, nn.Conv2d) and m.padding_mode == "zeros" for m in convolutions)):
        return None
    return convolutions


class _PackedConvolutions:
    """The fused network's convolutions, each followed by its ReLU, as oneDNN calls on prepacked
    weights (torch.ops.mkldnn._convolution_pointwise, what torch.compile's CPU freezing emits):
    (N, 1, 28, 28) channels-last -> conv3's (N, C, 4, 4) after ReLU. CPU only; not moved by .to()."""

    def __init__(self, layers: list[tuple[torch.Tensor, torch.Tensor | None, list[int], list[int], list[int], int]]
                 ) -> None:
        self.layers = layers  # (packed weight, bias, padding, stride, dilation, groups) per convolution

    @classmethod
    def of(cls, convolutions: list[nn.Conv2d] | None, batch_size: int) -> "_PackedConvolutions | None":
        if convolutions is None or not (torch.backends.mkldnn.is_available()
                                        and hasattr(torch.ops.mkldnn, "_convolution_pointwise")):
            return None
        layers, side = [], 28
        for conv in convolutions:
            geometry = (list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups)
            weight = torch._C._nn.mkldnn_reorder_conv2d_weight(
                conv.weight.detach().contiguous().to_mkldnn(), *geometry, [batch_size, conv.in_channels, side, side])
            bias = conv.bias.detach() if conv.bias is not None else None
            layers.append((weight, bias, *geometry))
            side = (side + 2 * conv.padding[0] - conv.kernel_size[0]) // conv.stride[0] + 1
        return cls(layers)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for weight, bias, padding, stride, dilation, groups in self.layers:
            x = torch.ops.mkldnn._convolution_pointwise(x, weight, bias, padding, stride, dilation, groups,
                                                        "relu", [], "")
        return x


def served_network(model: DigitCNN, batch_size: int | None = None) -> ServedCNN:
    """The network as the handler runs it (ServedCNN), its oneDNN weights laid out for batches of
    `batch_size` (default PACKED_FOR_BATCH)."""
    return ServedCNN(model, batch_size or PACKED_FOR_BATCH)


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
