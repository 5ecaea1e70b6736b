"""Random geometry on batches of images: one affine transform per image (rotation, horizontal shear,
zoom, shift) through a single affine_grid call. Training draws it on every batch (Geometry's limits);
the evaluation's geometric families use fixed magnitudes (synthetic/corruptions.py, GEOMETRIC).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


@dataclass
class Geometry:
    degrees: float = 12.0  # random rotation, +-
    shear: float = 0.0  # random horizontal shear factor, +-
    scale: float = 0.1  # random zoom, +-fraction
    translate: float = 0.1  # random shift, +-fraction of the side


def random_affine(x: Tensor, geo: Geometry, g: torch.Generator) -> Tensor:
    """One affine_grid for the batch: rotation, shear, zoom and shift drawn per image."""
    n, device = x.shape[0], x.device

    def uniform(limit: float) -> Tensor:
        return (torch.rand(n, generator=g, device=device) * 2 - 1) * limit

    angle = uniform(math.radians(geo.degrees))
    shear = uniform(geo.shear)
    scale = 1 + uniform(geo.scale)
    tx, ty = uniform(2 * geo.translate), uniform(2 * geo.translate)  # [-1, 1] coordinates: 2f
    return affine(x, angle, shear, scale, tx, ty)


def affine(x: Tensor, angle: Tensor, shear: Tensor, scale: Tensor, tx: Tensor, ty: Tensor) -> Tensor:
    """Per image (N,) parameters: rotation (radians) and zoom, a horizontal shear, a shift in
    [-1, 1] coordinates. theta is the output -> input sampling matrix, (N, 2, 3)."""
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin + shear * cos, tx], 1), torch.stack([sin, cos + shear * sin, ty], 1)], 1
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")
