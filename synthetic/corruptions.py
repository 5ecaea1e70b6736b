"""Corruptions of digit images, batched on tensors: the ways real uploads differ from MNIST.

Each function takes (N, 1, H, W) float images in [0, 1], a light digit on a dark background, a
per-image strength in [0, 1] (N,) and a torch.Generator, and returns images of the same shape in
[0, 1], so one call corrupts a whole batch without Python loops over images. CORRUPTIONS holds the
kinds training draws from (train/augment.py) and the evaluation families apply at fixed strengths
(synthetic/families.py); GEOMETRIC the fixed-magnitude rotations, shears, zooms and shifts only the
evaluation families use.

None of this is derived from a published corruption benchmark or its code: each corruption models
a way real uploads differ from MNIST (grey canvases, scanner edges, edge-detected strokes, faded
pencil, ruled paper, ink spatter, sensor noise, low-resolution scans).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from synthetic.geometry import affine
from synthetic.tensors import column, gaussian_blur, pixel_grid, segments_mask, smooth_field, uniform

Tensor = torch.Tensor

# Each takes (N, 1, H, W) light-on-dark images in [0, 1], a (N,) strength in [0, 1] and a
# generator, and returns images of the same shape in [0, 1].


def grey_background(x: Tensor, s: Tensor, g: torch.Generator) -> Tensor:
    """A light digit on a mid-grey ground (dark-mode canvas, brightened scan): level 0.2-0.65."""
    level = column(0.2 + 0.45 * s * torch.rand(len(x), generator=g, device=x.device).sqrt())
    ink = column(uniform(len(x), 0.85, 1.0, g, x.device))
    return level + (ink - level) * x


def edge_bars(x: Tensor, s: Tensor, g: torch.Generator) -> Tensor:
    """One or two solid bars along image edges (scanner edge, a ruler or table caught by the crop)."""
    n, _, h, w = x.shape
    yy, xx = pixel_grid(h, w, x.device)
    out = x
    for k in range(2):
        present = (torch.rand(n, generator=g, device=x.device) < (1.0 if k == 0 else 0.5 * s)).float()
        side = torch.randint(0, 4, (n,), generator=g, device=x.device)  # top, bottom, left, right
        thickness = 1 + torch.rand(n, generator=g, device=x.device) * (1 + 5 * s)  # px
        # Extent along the edge: from one end or the other, 40-100% of it.
        start = uniform(n, 0, 0.6, g, x.device) * torch.randint(0, 2, (n,), generator=g, device=x.device)
        end = (start + uniform(n, 0.4, 1.0, g, x.device)).clamp(max=1)
        along = torch.where(side[:, None, None] < 2, xx / w, yy / h)  # (N, H, W) position along the edge
        across = torch.stack([yy, h - 1 - yy, xx, w - 1 - xx])[side]  # distance from that edge
        bar = (
            (across < column(thickness)[:, 0]) & (along >= column(start)[:, 0]) & (along <= column(end)[:, 0])
        ).float()
        value = column(uniform(n, 0.7, 1.0, g, x.device))
        out = torch.maximum(out, bar[:, None] * value * column(present))
    return out


def outline(x: Tensor, s: Tensor, g: torch.Generator) -> Tensor:
    """Edge-detected strokes: only the digit's contour, a 1 px line on each side of every stroke
    (hollow digits, as an edge detector or a stencil gives)."""
    n = len(x)
    threshold = column(uniform(n, 0.25, 0.6, g, x.device))
    # At 2x resolution, so that contours stay 1 px (at 28 px) even around thin strokes.
    big = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    ink = (big > threshold).float()
    grown = F.max_pool2d(ink, 3, 1, 1)
    shrunk = 1 - F.max_pool2d(1 - ink, 3, 1, 1)
    # Outer contour (around the strokes) or outer and inner (a thicker double line).
    both = column(torch.rand(n, generator=g, device=x.device) < 0.5 * s)
    contour = torch.where(both, grown - shrunk, grown - ink)
    return F.interpolate(contour, size=x.shape[-2:], mode="area").mul(1.6).clamp(0, 1)


def haze(x: Tensor, s: Tensor, g: torch.Generator) -> Tensor:
    """Low contrast under a smooth fog: faded pencil, mist, a washed-out photo."""
    n, _, h, w = x.shape
    contrast = column(1 - 0.75 * s * torch.rand(n, generator=g, device=x.device).sqrt())
    fog = smooth_field(n, h, w, g, x.device, cells=int(torch.randint(2, 5, (1,), generator=g, device=x.device)))
    amount = column(uniform(n, 0.2, 0.35 + 0.4 * s, g, x.device))
    return (contrast * x + amount * fog).clamp(0, 1)


def crossing_lines(x: Tensor, s: Tensor, g: torch.Generator) -> Tensor:
    """Straight, dashed or zig-zag lines across the digit (ruled paper, strike-throughs, scribbles)."""
    n, _, h, w = x.shape
    d = x.device
    kind = torch.randint(0, 3, (n,), generator=g, device=d)  # straight, dashed, zig-zag
    vertices = 6
    # A polyline from one side to the other through random heights: straight lines use its two
    # ends, zig-zags every vertex.
    ts = torch.linspace(-0.1, 1.1, vertices, device=d)
    base = uniform(n, 0.15, 0.85, g, d)[:, None] * h + (torch.rand(n, 1, generator=g, device=d) - 0.5) * h * 0.8 * ts
    wobble = (torch.rand(n, vertices, generator=g, device=d) - 0.5) * h * (0.2 + 0.5 * s[:, None])
    ys = base + torch.where(kind[:, None] == 2, wobble, torch.zeros_like(wobble))
    xs = ts[None].expand(n, -1) * w
    points = torch.stack([ys, xs], -1)
    angle = uniform(n, 0, math.pi, g, d)  # rotate the polyline about the centre
    centre = torch.tensor([h / 2, w / 2], device=d)
    rot = torch.stack([torch.stack([angle.cos(), -angle.sin()], -1), torch.stack([angle.sin(), angle.cos()], -1)], -2)
    points = (points - centre) @ rot.transpose(1, 2) + centre
    starts, ends = points[:, :-1], points[:, 1:]
    straight = kind != 2
    starts = torch.where(straight[:, None, None], points[:, :1].expand_as(starts), starts)
    ends = torch.where(straight[:, None, None], points[:, -1:].expand_as(ends), ends)
    width = uniform(n, 1.0, 1.5 + 1.5 * s, g, d)
    lines = segments_mask(h, w, starts, ends, width)
    # Dashes: keep periodic stretches along the line's direction.
    yy, xx = pixel_grid(h, w, d)
    along = xx[None] * angle.cos()[:, None, None] + yy[None] * angle.sin()[:, None, None]
    period = column(uniform(n, 3, 6, g, d))[:, 0]
    dashes = (torch.remainder(along, period) < period * 0.55).float()[:, None]
    lines = torch.where(column(kind == 1), lines * dashes, lines)
    value = column(uniform(n, 0.6, 1.0, g, d))
    count_two = column(torch.rand(n, generator=g, device=d) < 0.3 * s)
    out = torch.maximum(x, lines * value)
    if bool(count_two.any()):
        second = crossing_lines(x, s * 0, g)  # a second, plain line on some images
        out = torch.where(count_two, torch.maximum(out, second - x), out)
    return out


def blots(x: Tensor, s: Tensor, g: torch.Generator) -> Tensor:
    """Ink blots and spatter: a few large drops or many small ones, anywhere."""
    n, _, h, w = x.shape
    d = x.device
    drops = 12
    yy, xx = pixel_grid(h, w, d)
    cy = torch.rand(n, drops, 1, 1, generator=g, device=d) * h
    cx = torch.rand(n, drops, 1, 1, generator=g, device=d) * w
    many = torch.rand(n, 1, 1, 1, generator=g, device=d) < 0.5  # spatter (many small) or blots
    radius = torch.where(
        many,
        torch.rand(n, drops, 1, 1, generator=g, device=d) * 1.2 + 0.4,
        torch.rand(n, drops, 1, 1, generator=g, device=d) * (1.5 + 2.0 * column(s)) + 0.8,
    )
    count = torch.where(many[:, 0, 0, 0], 3 + (9 * s).round(), 1 + (2 * s).round())  # (N,)
    active = (torch.arange(drops, device=d)[None] < count[:, None]).float()[..., None, None]
    aspect = 1 + torch.rand(n, drops, 1, 1, generator=g, device=d)
    r2 = ((yy - cy) * aspect) ** 2 + ((xx - cx) / aspect) ** 2
    mask = ((radius - r2.sqrt() + 0.5).clamp(0, 1) * active).amax(1, keepdim=True)  # (N, 1, H, W)
    value = column(uniform(n, 0.6, 1.0, g, d))
    return torch.maximum(x, mask * value)


def speckle(x: Tensor, s: Tensor, g: torch.Generator) -> Tensor:
    """Multiplicative noise x(1 + n), n ~ N(0, sigma), sigma up to 0.7, plus faint grain."""
    sigma = column(0.2 + 0.5 * s)
    noise = torch.randn(x.shape, generator=g, device=x.device)
    grain = torch.randn(x.shape, generator=g, device=x.device).abs() * 0.05
    return (x * (1 + sigma * noise) + grain).clamp(0, 1)


def gaussian_noise(x: Tensor, s: Tensor, g: torch.Generator) -> Tensor:
    return (x + torch.randn(x.shape, generator=g, device=x.device) * column(0.1 + 0.25 * s)).clamp(0, 1)


def salt_and_pepper(x: Tensor, s: Tensor, g: torch.Generator) -> Tensor:
    u = torch.rand(x.shape, generator=g, device=x.device)
    share = column(0.03 + 0.12 * s)
    return torch.where(u < share / 2, 0.0, torch.where(u > 1 - share / 2, 1.0, x))


def blur(x: Tensor, s: Tensor, g: torch.Generator) -> Tensor:
    """Gaussian blur, sigma 0.5-1.5 px, per image (three kernels mixed by strength)."""
    sigma = 0.5 + s  # (N,)
    out = torch.empty_like(x)
    for low, high, kernel_sigma in ((0.0, 0.85, 0.7), (0.85, 1.25, 1.05), (1.25, 9.0, 1.4)):
        chosen = (sigma >= low) & (sigma < high)
        if chosen.any():
            out[chosen] = gaussian_blur(x[chosen], kernel_sigma)
    return out


def motion_blur(x: Tensor, s: Tensor, g: torch.Generator) -> Tensor:
    """A straight smear of 3-9 px in a random direction (a shaken camera)."""
    n, _, h, w = x.shape
    length = 3 + 6 * s * torch.rand(n, generator=g, device=x.device)
    angle = uniform(n, 0, math.pi, g, x.device)
    steps = torch.linspace(-0.5, 0.5, 9, device=x.device)
    out = torch.zeros_like(x)
    base = F.affine_grid(torch.eye(2, 3, device=x.device)[None].expand(n, -1, -1), list(x.shape), align_corners=False)
    for t in steps:
        # Shift by t * length pixels along the angle ([-1, 1] coordinates: 2 / side per pixel).
        shift = torch.stack([angle.cos() * 2 / w, angle.sin() * 2 / h], -1) * (t * length)[:, None]
        out += F.grid_sample(x, base + shift[:, None, None], align_corners=False)
    return out / len(steps)


def jitter(x: Tensor, s: Tensor, g: torch.Generator) -> Tensor:
    """Frosted glass: every pixel displaced by a random 1-2 px, then softened."""
    n, _, h, w = x.shape
    base = F.affine_grid(torch.eye(2, 3, device=x.device)[None].expand(n, -1, -1), list(x.shape), align_corners=False)
    amount = column(0.6 + 1.4 * s)[..., None]  # (N, 1, 1, 1) px
    offset = (torch.rand(n, h, w, 2, generator=g, device=x.device) * 2 - 1) * amount[:, 0]
    offset = offset * torch.tensor([2 / w, 2 / h], device=x.device)
    return gaussian_blur(F.grid_sample(x, base + offset, mode="nearest", align_corners=False), 0.5)


def low_resolution(x: Tensor, s: Tensor, g: torch.Generator) -> Tensor:
    """A tiny scan blown up again: down to 14 px (mild) ... 7 px (strong), then back up, nearest
    neighbour (blocky) or bilinear (soft)."""
    n, _, h, w = x.shape
    out = torch.empty_like(x)
    side = (14 - 7 * s).round().long()
    blocky = torch.rand(n, generator=g, device=x.device) < 0.5
    for size in side.unique().tolist():
        for mode, chosen in (("nearest", blocky), ("bilinear", ~blocky)):
            pick = (side == size) & chosen
            if pick.any():
                small = F.interpolate(x[pick], size=(size, size), mode="area")
                out[pick] = F.interpolate(
                    small, size=(h, w), mode=mode, **({} if mode == "nearest" else {"align_corners": False})
                )
    return out


CORRUPTIONS: dict[str, Callable[[Tensor, Tensor, torch.Generator], Tensor]] = {
    "grey_background": grey_background,
    "edge_bars": edge_bars,
    "outline": outline,
    "haze": haze,
    "crossing_lines": crossing_lines,
    "blots": blots,
    "speckle": speckle,
    "gaussian_noise": gaussian_noise,
    "salt_and_pepper": salt_and_pepper,
    "blur": blur,
    "motion_blur": motion_blur,
    "jitter": jitter,
    "low_resolution": low_resolution,
}


def _fixed_affine(
    x: Tensor,
    g: torch.Generator,
    degrees: Tensor = None,
    shear: Tensor = None,
    zoom: Tensor = None,
    shift: Tensor = None,
) -> Tensor:
    """One affine per image at the given magnitude, its sign (direction) drawn at random."""
    n, d = len(x), x.device
    zero = torch.zeros(n, device=d)

    def signed(v: Tensor | None) -> Tensor:
        return zero if v is None else v * torch.where(torch.rand(n, generator=g, device=d) < 0.5, -1.0, 1.0)

    angle = signed(None if degrees is None else degrees * math.pi / 180)
    tx = signed(None if shift is None else shift * 2 / x.shape[-1])  # px -> [-1, 1] coordinates
    ty = signed(None if shift is None else shift * 2 / x.shape[-2])
    return affine(x, angle, signed(shear), 1 + zero if zoom is None else zoom, tx, ty)


# Geometry beyond what training draws (synthetic.geometry.Geometry): for the evaluation families only.
GEOMETRIC: dict[str, Callable[[Tensor, Tensor, torch.Generator], Tensor]] = {
    "rotation": lambda x, s, g: _fixed_affine(x, g, degrees=10 + 30 * s),  # 22 / 40 degrees
    "shear": lambda x, s, g: _fixed_affine(x, g, shear=0.2 + 0.5 * s),  # 0.4 / 0.7
    "zoom_out": lambda x, s, g: _fixed_affine(x, g, zoom=1 - (0.15 + 0.35 * s)),  # 0.71 / 0.5 of the size
    "shift": lambda x, s, g: _fixed_affine(x, g, shift=2 + 4 * s),  # 3.6 / 6 px right or left, up or down
}


def light_margins(x: Tensor, s: Tensor, g: torch.Generator) -> Tensor:
    """The digit, light, on a dark band between wide light margins: a crop of a dark form cell with
    the page around it, a dark-mode canvas between light panels. The margins lie on one side, on
    two opposite sides or all around and take 10% up to 26% (s=0.4) ... 50% (s=1) of the picture;
    the band is 0-0.4, the margins 0.65-1, the digit 0.75-1, shrunk to fit in the band. Any
    (H, W): the rendered family applies it to larger, non-square pictures."""
    n, _, h, w = x.shape
    d = x.device
    share = uniform(n, 0.1, 0.1 + 0.4 * s, g, d)  # of the picture's area
    layout = torch.randint(0, 3, (n,), generator=g, device=d)  # one side, two sides, all around
    around = layout == 2
    # The band's extent across the margins and along them, as fractions of the side.
    frame = (1 - share).sqrt()
    cut, kept = torch.where(around, frame, 1 - share), torch.where(around, frame, torch.ones_like(share))
    sideways = torch.rand(n, generator=g, device=d) < 0.5  # margins left and right, or top and bottom
    band_w, band_h = torch.where(sideways, cut, kept), torch.where(sideways, kept, cut)
    # Where the band starts, as a share of the room beside it: one side puts all of it on one end.
    one_end = torch.randint(0, 2, (n,), generator=g, device=d).float()
    left = (1 - band_w) * torch.where(layout == 0, one_end, uniform(n, 0.15, 0.85, g, d))
    top = (1 - band_h) * torch.where(layout == 0, one_end, uniform(n, 0.15, 0.85, g, d))
    yy, xx = pixel_grid(h, w, d)  # pixel i spans [i, i + 1]; the share of each the band covers

    def covered(lo: Tensor, hi: Tensor, at: Tensor) -> Tensor:  # (N,) ends in px, (H, W) pixels
        return (torch.minimum(hi[:, None, None], at + 1) - torch.maximum(lo[:, None, None], at)).clamp(0, 1)

    band = covered(left * w, (left + band_w) * w, xx) * covered(top * h, (top + band_h) * h, yy)
    # The digit's frame shrunk into the band (80-100% of its shorter side), anywhere in it.
    scale = torch.minimum(band_w, band_h) * uniform(n, 0.8, 1.0, g, d)
    cx = 2 * (left + (band_w - scale) * torch.rand(n, generator=g, device=d) + scale / 2) - 1  # [-1, 1]
    cy = 2 * (top + (band_h - scale) * torch.rand(n, generator=g, device=d) + scale / 2) - 1
    zero = torch.zeros_like(scale)
    digit = affine(x, zero, zero, scale, -cx / scale, -cy / scale)
    dark, light, ink = uniform(n, 0, 0.4, g, d), uniform(n, 0.65, 1, g, d), uniform(n, 0.75, 1, g, d)
    on_band = column(dark) + column(ink - dark) * digit
    return band[:, None] * on_band + (1 - band[:, None]) * column(light)


# Where the digit lies in the picture (evaluation families only, like GEOMETRIC: training's mix is
# the committed weights' recipe).
LAYOUTS: dict[str, Callable[[Tensor, Tensor, torch.Generator], Tensor]] = {"light_margins": light_margins}
