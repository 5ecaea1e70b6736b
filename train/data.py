"""MNIST as whole uint8 tensors: 60k x 28 x 28 fits in 47 MB, so batches are slices, not a DataLoader."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from ops.paths import ROOT

DEFAULT_ROOT = ROOT / "data"


def mnist_root(root: str | os.PathLike | None = None) -> Path:
    """The folder holding MNIST/raw: the flag, else $MNIST_ROOT, else ./data."""
    return Path(root or os.environ.get("MNIST_ROOT") or DEFAULT_ROOT)


def load_mnist(root: str | os.PathLike | None = None, train: bool = True, download: bool = False,
               limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (N, 28, 28) uint8, labels (N,) int64) of the train or test split."""
    from torchvision.datasets import MNIST

    folder = mnist_root(root)
    if not (folder / "MNIST" / "raw").is_dir() and not download:
        raise FileNotFoundError(
            f"MNIST not found under {folder}/MNIST/raw: set MNIST_ROOT or pass --download"
        )
    dataset = MNIST(str(folder), train=train, download=download)
    images, labels = dataset.data, dataset.targets
    if limit:
        images, labels = images[:limit], labels[:limit]
    return images, labels
