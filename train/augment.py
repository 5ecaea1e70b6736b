"""Training-time augmentation: what each training batch goes through before the network sees it.

Random geometry (synthetic/geometry.py), one corruption from synthetic/corruptions.py for a share
of the images (TRAINING_MIX), dark-on-light inversion, printed digits from the training fonts
(synthetic/fonts.py), then the serving preprocessing, so that training sees what serving sees.
Everything works on (N, 1, H, W) float images in [0, 1], light digit on a dark background (the
network normalizes them itself).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from synthetic.corruptions import CORRUPTIONS
from synthetic.fonts import render_digits
from synthetic.geometry import Geometry, random_affine
from synthetic.tensors import column

Tensor = torch.Tensor


# The corruptions training draws from, each name once per share: the two kinds the network read
# worst (8x8 rescans, crossing lines: reports/evaluation.md) come twice as often as the rest.
TRAINING_MIX = tuple(CORRUPTIONS) + ("low_resolution", "crossing_lines")


def corrupt(x: Tensor, g: torch.Generator, prob: float, names: tuple[str, ...] = TRAINING_MIX) -> tuple[Tensor, Tensor]:
    """Apply one corruption, drawn per image with a random strength (from `names`, uniformly: a
    name given twice is drawn twice as often), to about `prob` of the batch; and which images got one."""
    n, d = len(x), x.device
    chosen = torch.rand(n, generator=g, device=d) < prob
    kind = torch.randint(0, len(names), (n,), generator=g, device=d)
    strength = torch.rand(n, generator=g, device=d)
    out = x.clone()
    for k, name in enumerate(names):
        pick = chosen & (kind == k)
        if pick.any():
            out[pick] = CORRUPTIONS[name](x[pick], strength[pick], g).clamp(0, 1)
    return out, chosen


@dataclass
class AugmentConfig:
    geometry: Geometry
    corrupt_prob: float = 0.0  # share of images that get one corruption from CORRUPTIONS
    invert_prob: float = 0.0  # share sent dark-on-light, so that training exercises polarity too
    printed_prob: float = 0.0  # share of digits replaced by a printed one (training fonts)


class Augmenter:
    """(N, 28, 28) uint8 MNIST digits and labels -> (N, 1, 28, 28) [0, 1] images as the network
    sees them at serving time: augmented, then through the serving preprocessing (`serving_view`,
    handler.preprocess.mnistify.training_view), so that training and serving see the same thing."""

    def __init__(
        self,
        cfg: AugmentConfig,
        generator: torch.Generator,
        serving_view: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
        printed: tuple[Tensor, Tensor] | None = None,
        seed: int = 0,
    ) -> None:
        self.cfg, self.g, self.serving_view, self.printed = cfg, generator, serving_view, printed
        self.rng = np.random.default_rng(seed)

    def __call__(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        x = images.unsqueeze(1).float().div_(255)
        n, d = len(x), x.device
        if self.printed is not None and self.cfg.printed_prob > 0:
            pick = torch.rand(n, generator=self.g, device=d) < self.cfg.printed_prob
            if pick.any():
                bank_x, bank_y = self.printed
                idx = torch.randint(0, len(bank_x), (int(pick.sum()),), generator=self.g, device=d)
                x, labels = x.clone(), labels.clone()
                x[pick], labels[pick] = bank_x[idx], bank_y[idx]
        x = random_affine(x, self.cfg.geometry, self.g)
        changed = torch.zeros(n, dtype=torch.bool, device=d)
        if self.cfg.corrupt_prob > 0:
            x, changed = corrupt(x, self.g, self.cfg.corrupt_prob)
        if self.cfg.invert_prob > 0:
            flip = torch.rand(n, generator=self.g, device=d) < self.cfg.invert_prob
            x = torch.where(column(flip), 1 - x, x)
            changed |= flip
        if self.serving_view is not None and changed.any():
            # 8-bit, as uploads are, then the serving preprocessing on the CPU. Untouched MNIST
            # digits skip it: it would give them back as they are (or re-centred: also a candidate view
            # serving tries, which the network already sees from the corrupted ones).
            pixels = (x[changed, 0] * 255).round_().div_(255).cpu().numpy()
            x = x.clone()
            x[changed] = torch.from_numpy(self.serving_view(pixels, self.rng))[:, None].to(d)
        return x, labels


def printed_bank(files: list[Path], mnist_like: Callable[[np.ndarray], np.ndarray]) -> tuple[Tensor, Tensor]:
    """Printed digits of `files` brought to MNIST form by the serving preprocessing: (M, 1, 28, 28)
    [0, 1] and labels, for mixing into training batches."""
    images, labels = render_digits(files)
    x = np.stack([mnist_like(image / 255) for image in images]) if len(images) else np.zeros((0, 28, 28))
    return torch.from_numpy(x).float()[:, None], torch.from_numpy(labels)
