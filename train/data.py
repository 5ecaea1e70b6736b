"""MNIST as whole uint8 tensors: 60k x 28 x 28 fits in 47 MB, so batches are slices, not a DataLoader."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ops.paths import ROOT

DEFAULT_ROOT = ROOT / "data"
EVAL_BATCH = 1000  # images per forward pass when scoring a whole split: memory stays flat


def mnist_root(root: str | os.PathLike | None = None) -> Path:
    """The folder holding MNIST/raw: the flag, else $MNIST_ROOT, else ./data."""
    return Path(root or os.environ.get("MNIST_ROOT") or DEFAULT_ROOT)


def load_mnist(
    root: str | os.PathLike | None = None, train: bool = True, download: bool = False, limit: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (N, 28, 28) uint8, labels (N,) int64) of the train or test split."""
    from torchvision.datasets import MNIST

    folder = mnist_root(root)
    if not (folder / "MNIST" / "raw").is_dir() and not download:
        raise FileNotFoundError(f"MNIST not found under {folder}/MNIST/raw: set MNIST_ROOT or pass --download")
    dataset = MNIST(str(folder), train=train, download=download)
    images, labels = dataset.data, dataset.targets
    if limit:
        images, labels = images[:limit], labels[:limit]
    return images, labels


def to_input(images: torch.Tensor) -> torch.Tensor:
    """(N, 28, 28) uint8 -> (N, 1, 28, 28) float in [0, 1]."""
    return images.unsqueeze(1).float().div_(255)


@torch.inference_mode()
def batched_logits(
    model: nn.Module, images, prepare: Callable[..., torch.Tensor], batch_size: int = EVAL_BATCH
) -> torch.Tensor:
    """(N, 10) logits of N images, `batch_size` at a time, in eval mode; `prepare` turns a slice of
    `images` into the network's input."""
    model.eval()
    return torch.cat([model(prepare(images[i : i + batch_size])) for i in range(0, len(images), batch_size)])
