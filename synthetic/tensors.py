"""Batched tensor helpers the synthetic corruptions are built from: uniform draws per image,
broadcasting a per-image value over images, pixel-centre grids, Gaussian kernels and blur, smooth
random fields and anti-aliased line-segment masks. Images are (N, 1, H, W) float tensors.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def uniform(n: int, low: float | Tensor, high: float | Tensor, g: torch.Generator, device) -> Tensor:
    return low + (high - low) * torch.rand(n, generator=g, device=device)


def column(v: Tensor) -> Tensor:
    """(N,) -> (N, 1, 1, 1) for broadcasting over images."""
    return v.view(-1, 1, 1, 1)


def pixel_grid(h: int, w: int, device) -> tuple[Tensor, Tensor]:
    """Pixel-centre coordinates, (H, W) each: rows y and columns x."""
    y = torch.arange(h, device=device, dtype=torch.float32)
    x = torch.arange(w, device=device, dtype=torch.float32)
    return torch.meshgrid(y, x, indexing="ij")


def gaussian_kernel(sigma: float, device) -> Tensor:
    radius = max(1, math.ceil(2 * sigma))
    t = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    return (k[:, None] * k[None, :])[None, None]  # (1, 1, K, K)


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    k = gaussian_kernel(sigma, x.device)
    return F.conv2d(F.pad(x, [k.shape[-1] // 2] * 4, mode="replicate"), k)


def smooth_field(n: int, h: int, w: int, g: torch.Generator, device, cells: int = 4) -> Tensor:
    """(N, 1, H, W) smooth random field in [0, 1]: a few octaves of bicubically upsampled noise,
    `cells` of it along the shorter side, as many as keep them square along the longer (a wide
    line's fog is no streakier than a digit's)."""
    field = torch.zeros(n, 1, h, w, device=device)
    amplitude = 1.0
    for octave in range(3):
        side = cells * 2**octave
        rows, cols = max(side, round(side * h / w)), max(side, round(side * w / h))
        noise = torch.rand(n, 1, rows, cols, generator=g, device=device)
        field += amplitude * F.interpolate(noise, size=(h, w), mode="bicubic", align_corners=False)
        amplitude /= 2
    low = field.amin(dim=(2, 3), keepdim=True)
    high = field.amax(dim=(2, 3), keepdim=True)
    return (field - low) / (high - low + 1e-6)


def segments_mask(h: int, w: int, starts: Tensor, ends: Tensor, width: Tensor) -> Tensor:
    """(N, S, 2) segment ends in pixel (y, x) coordinates, (N,) widths -> (N, 1, H, W) soft mask
    of pixels within width/2 of any segment (anti-aliased over one pixel)."""
    yy, xx = pixel_grid(h, w, starts.device)
    p = torch.stack([yy, xx], -1).view(1, 1, h * w, 2)  # (1, 1, P, 2)
    a, b = starts[:, :, None], ends[:, :, None]  # (N, S, 1, 2)
    ab = b - a
    t = ((p - a) * ab).sum(-1) / (ab * ab).sum(-1).clamp_min(1e-6)
    closest = a + t.clamp(0, 1)[..., None] * ab
    distance = (p - closest).norm(dim=-1).amin(1)  # (N, P)
    mask = (width[:, None] / 2 + 0.5 - distance).clamp(0, 1)
    return mask.view(-1, 1, h, w)
