"""Training-time augmentation, batched on tensors (one affine_grid per batch, no per-image PIL work).

Inputs and outputs are (N, 1, 28, 28) float images in [0, 1], light digit on dark background;
the network normalizes them itself (ModelConfig.mean/std), as at serving time.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class AugmentConfig:
    degrees: float = 10.0  # card: random rotation up to 10 degrees
    translate: float = 0.1  # card: random translation up to 10% of the side
    scale: float = 0.0  # +-fraction of random zoom
    noise_prob: float = 0.0  # share of images that get one of: Gaussian noise, blur, salt-and-pepper


def random_affine(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    n, device = x.shape[0], x.device

    def uniform(limit: float) -> torch.Tensor:
        return (torch.rand(n, generator=generator, device=device) * 2 - 1) * limit

    angle = uniform(math.radians(cfg.degrees))
    scale = 1 + uniform(cfg.scale)
    # affine_grid works in [-1, 1] coordinates, so a shift of f * side is 2f.
    tx, ty = uniform(2 * cfg.translate), uniform(2 * cfg.translate)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)  # (N, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


def gaussian_kernel(sigma: float, device) -> torch.Tensor:
    radius = max(1, math.ceil(2 * sigma))
    t = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    return (k[:, None] * k[None, :])[None, None]  # (1, 1, K, K)


def random_noise(x: torch.Tensor, prob: float, generator: torch.Generator) -> torch.Tensor:
    """Corrupt about `prob` of the images, a third each with noise, blur or salt-and-pepper."""
    n, device = x.shape[0], x.device
    pick = torch.rand(n, generator=generator, device=device)
    kind = torch.randint(0, 3, (n,), generator=generator, device=device)
    chosen = (pick < prob)[:, None, None, None]
    strength = torch.rand(n, 1, 1, 1, generator=generator, device=device)

    gaussian = x + torch.randn(x.shape, generator=generator, device=device) * 0.2 * strength
    blurred = F.conv2d(x, gaussian_kernel(1.0, device), padding="same")
    salt = torch.rand(x.shape, generator=generator, device=device)
    salted = torch.where(salt < 0.05 * strength, 1.0, torch.where(salt > 1 - 0.05 * strength, 0.0, x))

    noisy = torch.where((kind == 0)[:, None, None, None], gaussian,
                        torch.where((kind == 1)[:, None, None, None], blurred, salted))
    return torch.where(chosen, noisy, x).clamp_(0, 1)


def augment(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    x = random_affine(x, cfg, generator)
    if cfg.noise_prob > 0:
        x = random_noise(x, cfg.noise_prob, generator)
    return x
