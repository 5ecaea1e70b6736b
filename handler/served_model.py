"""The networks as the handler runs them. The digit network: BatchNorm folded, weights
channels-last, the convolutions called as functions (their module calls cost about 0.1 ms a
forward pass, a quarter of a one-image pass on the CPU), and on the CPU small batches on the
native kernel (handler/fast_paths.py). The number model's line reader: served_line_network."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from handler.fast_paths import native_conv_relu, torch_checked
from model.line_network import LineCNN
from model.network import DigitCNN, fuse_batchnorm

# On the CPU, batches of up to this many images skip oneDNN: its per-call setup outweighs their
# work (one image: about 0.31 against 0.45 ms, two: 0.43 against 0.86), while from three images
# on it is faster (at 16, about six times).
NATIVE_CPU_MAX_BATCH = 2


class ServedCNN(nn.Module):
    """DigitCNN's (N, 1, 28, 28) images in [0, 1] -> (N, 10) logits; on the CPU, batches of up to
    NATIVE_CPU_MAX_BATCH on PyTorch's native kernel when `native` (False: oneDNN for every batch)."""

    def __init__(self, model: DigitCNN, native: bool = True) -> None:
        super().__init__()
        self.network = fuse_batchnorm(model).to(memory_format=torch.channels_last)
        self.config = model.config
        self.convolutions = conv_relu_chain(self.network)  # None: not conv -> ReLU throughout
        self.native = self.convolutions is not None and native and torch_checked()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        classifier = self.network.classifier
        return F.linear(self.pooled(x), classifier.weight, classifier.bias)

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, C * pool * pool) pooled features (what the open-set head reads, handler/open_set.py)
        and (N, 10) logits, of one forward pass."""
        classifier = self.network.classifier
        pooled = self.pooled(x)
        return pooled, F.linear(pooled, classifier.weight, classifier.bias)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, 28, 28) -> (N, C * pool * pool): the pooled features the classifier reads."""
        if self.convolutions is None:
            return self.network.pooled(x)
        x = self.network.normalize(x)
        if self.native and x.device.type == "cpu" and len(x) <= NATIVE_CPU_MAX_BATCH:
            features = native_conv_relu(x, self.convolutions)
        else:
            features = conv_relu(x, self.convolutions)
        return F.adaptive_avg_pool2d(features, self.network.pool.output_size).flatten(1)  # (N, C * pool * pool)


def conv_relu(x: torch.Tensor, convolutions: list[nn.Conv2d]) -> torch.Tensor:
    """Normalized (N, 1, 28, 28) -> the last convolution's output after ReLU, through F.conv2d (the
    public path; handler/fast_paths.py has the native one for small batches)."""
    for conv in convolutions:
        x = F.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups).relu_()
    return x


def conv_relu_chain(network: DigitCNN) -> list[nn.Conv2d] | None:
    """The fused network's convolutions where its features are each convolution (zero-padded,
    ungrouped, undilated; its BatchNorm folded away) followed by a ReLU, else None."""
    layers = [m for m in network.features if not isinstance(m, nn.Identity)]
    convolutions, relus = layers[0::2], layers[1::2]
    if (
        len(convolutions) != len(relus)
        or not all(isinstance(m, nn.ReLU) for m in relus)
        or not all(
            isinstance(m, nn.Conv2d) and m.padding_mode == "zeros" and m.groups == 1 and tuple(m.dilation) == (1, 1)
            for m in convolutions
        )
    ):
        return None
    return convolutions


def served_network(model: DigitCNN, native: bool = True) -> ServedCNN:
    """The network as the handler runs it (ServedCNN)."""
    return ServedCNN(model, native)


def served_line_network(model: LineCNN) -> LineCNN:
    """The line reader as the handler runs it: BatchNorm folded, maps channels-last from its first
    convolution's output on, so that oneDNN convolves and pools them in the layout it is fastest
    in (for a 4-digit line on one CPU thread about 0.65 against 1.3 ms; its 2x2 max-pools on
    channels-first maps took a third of that). The first convolution, of the one input channel,
    stays channels-first: so it takes about 0.04 against 0.15 ms."""
    served = fuse_batchnorm(model).to(memory_format=torch.channels_last)
    first = served.features[0].to(memory_format=torch.contiguous_format)
    served.features[0] = nn.Sequential(first, ChannelsLast())
    return served


class ChannelsLast(nn.Module):
    """(N, C, H, W) -> the same values, laid out channels-last."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last)
