"""The one augmentation module: geometry, corruptions and printed digits, batched on tensors.

Training draws from it on every batch, and the evaluation families (train/families.py) are the same
functions at fixed strengths applied to MNIST *test* digits, then encoded as a client would upload
them. Everything works on (N, 1, H, W) float images in [0, 1], light digit on a dark background
(the network normalizes them itself), with a per-image strength in [0, 1] (N,), so one call
corrupts a whole batch without Python loops over images.

None of this is derived from a published corruption benchmark or its code: each corruption models
a way real uploads differ from MNIST (grey canvases, scanner edges, edge-detected strokes, faded
pencil, ruled paper, ink spatter, sensor noise, low-resolution scans, printed digits).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

Tensor = torch.Tensor


# ---------------------------------------------------------------- helpers

def _uniform(n: int, low: float | Tensor, high: float | Tensor, g: torch.Generator, device) -> Tensor:
    return low + (high - low) * torch.rand(n, generator=g, device=device)


def _col(v: Tensor) -> Tensor:
    """(N,) -> (N, 1, 1, 1) for broadcasting over images."""
    return v.view(-1, 1, 1, 1)


def _grid(h: int, w: int, device) -> tuple[Tensor, Tensor]:
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


def _blur(x: Tensor, sigma: float) -> Tensor:
    k = gaussian_kernel(sigma, x.device)
    return F.conv2d(F.pad(x, [k.shape[-1] // 2] * 4, mode="replicate"), k)


def smooth_field(n: int, h: int, w: int, g: torch.Generator, device, cells: int = 4) -> Tensor:
    """(N, 1, H, W) smooth random field in [0, 1]: a few octaves of bilinearly upsampled noise."""
    field = torch.zeros(n, 1, h, w, device=device)
    amplitude = 1.0
    for octave in range(3):
        side = cells * 2**octave
        noise = torch.rand(n, 1, side, side, generator=g, device=device)
        field += amplitude * F.interpolate(noise, size=(h, w), mode="bicubic", align_corners=False)
        amplitude /= 2
    low = field.amin(dim=(2, 3), keepdim=True)
    high = field.amax(dim=(2, 3), keepdim=True)
    return (field - low) / (high - low + 1e-6)


def _segments_mask(h: int, w: int, starts: Tensor, ends: Tensor, width: Tensor) -> Tensor:
    """(N, S, 2) segment ends in pixel (y, x) coordinates, (N,) widths -> (N, 1, H, W) soft mask
    of pixels within width/2 of any segment (anti-aliased over one pixel)."""
    yy, xx = _grid(h, w, starts.device)
    p = torch.stack([yy, xx], -1).view(1, 1, h * w, 2)  # (1, 1, P, 2)
    a, b = starts[:, :, None], ends[:, :, None]  # (N, S, 1, 2)
    ab = b - a
    t = ((p - a) * ab).sum(-1) / (ab * ab).sum(-1).clamp_min(1e-6)
    closest = a + t.clamp(0, 1)[..., None] * ab
    distance = (p - closest).norm(dim=-1).amin(1)  # (N, P)
    mask = (width[:, None] / 2 + 0.5 - distance).clamp(0, 1)
    return mask.view(-1, 1, h, w)


# ---------------------------------------------------------------- geometry

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
    return _affine(x, angle, shear, scale, tx, ty)


def _affine(x: Tensor, angle: Tensor, shear: Tensor, scale: Tensor, tx: Tensor, ty: Tensor) -> Tensor:
    """Per image (N,) parameters: rotation (radians) and zoom, a horizontal shear, a shift in
    [-1, 1] coordinates. theta is the output -> input sampling matrix, (N, 2, 3)."""
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin + shear * cos, tx], 1),
                         torch.stack([sin, cos + shear * sin, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


# ---------------------------------------------------------------- corruptions
# Each takes (N, 1, H, W) light-on-dark images in [0, 1], a (N,) strength in [0, 1] and a
# generator, and returns images of the same shape in [0, 1].

def grey_background(x: Tensor, s: Tensor, g: torch.Generator) -> Tensor:
    """A light digit on a mid-grey ground (dark-mode canvas, brightened scan): level 0.2-0.65."""
    level = _col(0.2 + 0.45 * s * torch.rand(len(x), generator=g, device=x.device).sqrt())
    ink = _col(_uniform(len(x), 0.85, 1.0, g, x.device))
    return level + (ink - level) * x


def edge_bars(x: Tensor, s: Tensor, g: torch.Generator) -> Tensor:
    """One or two solid bars along image edges (scanner edge, a ruler or table caught by the crop)."""
    n, _, h, w = x.shape
    yy, xx = _grid(h, w, x.device)
    out = x
    for k in range(2):
        present = (torch.rand(n, generator=g, device=x.device) < (1.0 if k == 0 else 0.5 * s)).float()
        side = torch.randint(0, 4, (n,), generator=g, device=x.device)  # top, bottom, left, right
        thickness = 1 + torch.rand(n, generator=g, device=x.device) * (1 + 5 * s)  # px
        # Extent along the edge: from one end or the other, 40-100% of it.
        start = _uniform(n, 0, 0.6, g, x.device) * torch.randint(0, 2, (n,), generator=g, device=x.device)
        end = (start + _uniform(n, 0.4, 1.0, g, x.device)).clamp(max=1)
        along = torch.where(side[:, None, None] < 2, xx / w, yy / h)  # (N, H, W) position along the edge
        across = torch.stack([yy, h - 1 - yy, xx, w - 1 - xx])[side]  # distance from that edge
        bar = ((across < _col(thickness)[:, 0]) & (along >= _col(start)[:, 0])
               & (along <= _col(end)[:, 0])).float()
        value = _col(_uniform(n, 0.7, 1.0, g, x.device))
        out = torch.maximum(out, bar[:, None] * value * _col(present))
    return out


def outline(x: Tensor, s: Tensor, g: torch.Generator) -> Tensor:
    """Edge-detected strokes: only the digit's contour, a 1 px line on each side of every stroke
    (hollow digits, as an edge detector or a stencil gives)."""
    n = len(x)
    threshold = _col(_uniform(n, 0.25, 0.6, g, x.device))
    # At 2x resolution, so that contours stay 1 px (at 28 px) even around thin strokes.
    big = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    ink = (big > threshold).float()
    grown = F.max_pool2d(ink, 3, 1, 1)
    shrunk = 1 - F.max_pool2d(1 - ink, 3, 1, 1)
    # Outer contour (around the strokes) or outer and inner (a thicker double line).
    both = _col(torch.rand(n, generator=g, device=x.device) < 0.5 * s)
    contour = torch.where(both, grown - shrunk, grown - ink)
    return F.interpolate(contour, size=x.shape[-2:], mode="area").mul(1.6).clamp(0, 1)


def haze(x: Tensor, s: Tensor, g: torch.Generator) -> Tensor:
    """Low contrast under a smooth fog: faded pencil, mist, a washed-out photo."""
    n, _, h, w = x.shape
    contrast = _col(1 - 0.75 * s * torch.rand(n, generator=g, device=x.device).sqrt())
    fog = smooth_field(n, h, w, g, x.device, cells=int(torch.randint(2, 5, (1,), generator=g, device=x.device)))
    amount = _col(_uniform(n, 0.2, 0.35 + 0.4 * s, g, x.device))
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
    base = _uniform(n, 0.15, 0.85, g, d)[:, None] * h + (torch.rand(n, 1, generator=g, device=d) - 0.5) * h * 0.8 * ts
    wobble = (torch.rand(n, vertices, generator=g, device=d) - 0.5) * h * (0.2 + 0.5 * s[:, None])
    ys = base + torch.where(kind[:, None] == 2, wobble, torch.zeros_like(wobble))
    xs = ts[None].expand(n, -1) * w
    points = torch.stack([ys, xs], -1)
    angle = _uniform(n, 0, math.pi, g, d)  # rotate the polyline about the centre
    centre = torch.tensor([h / 2, w / 2], device=d)
    rot = torch.stack([torch.stack([angle.cos(), -angle.sin()], -1), torch.stack([angle.sin(), angle.cos()], -1)], -2)
    points = (points - centre) @ rot.transpose(1, 2) + centre
    starts, ends = points[:, :-1], points[:, 1:]
    straight = kind != 2
    starts = torch.where(straight[:, None, None], points[:, :1].expand_as(starts), starts)
    ends = torch.where(straight[:, None, None], points[:, -1:].expand_as(ends), ends)
    width = _uniform(n, 1.0, 1.5 + 1.5 * s, g, d)
    lines = _segments_mask(h, w, starts, ends, width)
    # Dashes: keep periodic stretches along the line's direction.
    yy, xx = _grid(h, w, d)
    along = xx[None] * angle.cos()[:, None, None] + yy[None] * angle.sin()[:, None, None]
    period = _col(_uniform(n, 3, 6, g, d))[:, 0]
    dashes = (torch.remainder(along, period) < period * 0.55).float()[:, None]
    lines = torch.where(_col(kind == 1), lines * dashes, lines)
    value = _col(_uniform(n, 0.6, 1.0, g, d))
    count_two = _col(torch.rand(n, generator=g, device=d) < 0.3 * s)
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
    yy, xx = _grid(h, w, d)
    cy = torch.rand(n, drops, 1, 1, generator=g, device=d) * h
    cx = torch.rand(n, drops, 1, 1, generator=g, device=d) * w
    many = torch.rand(n, 1, 1, 1, generator=g, device=d) < 0.5  # spatter (many small) or blots
    radius = torch.where(many, torch.rand(n, drops, 1, 1, generator=g, device=d) * 1.2 + 0.4,
                         torch.rand(n, drops, 1, 1, generator=g, device=d) * (1.5 + 2.0 * _col(s)) + 0.8)
    count = torch.where(many[:, 0, 0, 0], 3 + (9 * s).round(), 1 + (2 * s).round())  # (N,)
    active = (torch.arange(drops, device=d)[None] < count[:, None]).float()[..., None, None]
    aspect = 1 + torch.rand(n, drops, 1, 1, generator=g, device=d)
    r2 = ((yy - cy) * aspect) ** 2 + ((xx - cx) / aspect) ** 2
    mask = ((radius - r2.sqrt() + 0.5).clamp(0, 1) * active).amax(1, keepdim=True)  # (N, 1, H, W)
    value = _col(_uniform(n, 0.6, 1.0, g, d))
    return torch.maximum(x, mask * value)


def speckle(x: Tensor, s: Tensor, g: torch.Generator) -> Tensor:
    """Multiplicative noise x(1 + n), n ~ N(0, sigma), sigma up to 0.7, plus faint grain."""
    sigma = _col(0.2 + 0.5 * s)
    noise = torch.randn(x.shape, generator=g, device=x.device)
    grain = torch.randn(x.shape, generator=g, device=x.device).abs() * 0.05
    return (x * (1 + sigma * noise) + grain).clamp(0, 1)


def gaussian_noise(x: Tensor, s: Tensor, g: torch.Generator) -> Tensor:
    return (x + torch.randn(x.shape, generator=g, device=x.device) * _col(0.1 + 0.25 * s)).clamp(0, 1)


def salt_and_pepper(x: Tensor, s: Tensor, g: torch.Generator) -> Tensor:
    u = torch.rand(x.shape, generator=g, device=x.device)
    share = _col(0.03 + 0.12 * s)
    return torch.where(u < share / 2, 0.0, torch.where(u > 1 - share / 2, 1.0, x))


def blur(x: Tensor, s: Tensor, g: torch.Generator) -> Tensor:
    """Gaussian blur, sigma 0.5-1.5 px, per image (three kernels mixed by strength)."""
    sigma = 0.5 + s  # (N,)
    out = torch.empty_like(x)
    for low, high, kernel_sigma in ((0.0, 0.85, 0.7), (0.85, 1.25, 1.05), (1.25, 9.0, 1.4)):
        chosen = (sigma >= low) & (sigma < high)
        if chosen.any():
            out[chosen] = _blur(x[chosen], kernel_sigma)
    return out


def motion_blur(x: Tensor, s: Tensor, g: torch.Generator) -> Tensor:
    """A straight smear of 3-9 px in a random direction (a shaken camera)."""
    n, _, h, w = x.shape
    length = 3 + 6 * s * torch.rand(n, generator=g, device=x.device)
    angle = _uniform(n, 0, math.pi, g, x.device)
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
    amount = _col(0.6 + 1.4 * s)[..., None]  # (N, 1, 1, 1) px
    offset = (torch.rand(n, h, w, 2, generator=g, device=x.device) * 2 - 1) * amount[:, 0]
    offset = offset * torch.tensor([2 / w, 2 / h], device=x.device)
    return _blur(F.grid_sample(x, base + offset, mode="nearest", align_corners=False), 0.5)


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
                out[pick] = F.interpolate(small, size=(h, w), mode=mode,
                                          **({} if mode == "nearest" else {"align_corners": False}))
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


def _fixed_affine(x: Tensor, g: torch.Generator, degrees: Tensor = None, shear: Tensor = None,
                  zoom: Tensor = None, shift: Tensor = None) -> Tensor:
    """One affine per image at the given magnitude, its sign (direction) drawn at random."""
    n, d = len(x), x.device
    zero = torch.zeros(n, device=d)

    def signed(v: Tensor | None) -> Tensor:
        return zero if v is None else v * torch.where(torch.rand(n, generator=g, device=d) < 0.5, -1.0, 1.0)

    angle = signed(None if degrees is None else degrees * math.pi / 180)
    tx = signed(None if shift is None else shift * 2 / x.shape[-1])  # px -> [-1, 1] coordinates
    ty = signed(None if shift is None else shift * 2 / x.shape[-2])
    return _affine(x, angle, signed(shear), 1 + zero if zoom is None else zoom, tx, ty)


# Geometry beyond what training draws (Geometry above): for the evaluation families only.
GEOMETRIC: dict[str, Callable[[Tensor, Tensor, torch.Generator], Tensor]] = {
    "rotation": lambda x, s, g: _fixed_affine(x, g, degrees=10 + 30 * s),  # 22 / 40 degrees
    "shear": lambda x, s, g: _fixed_affine(x, g, shear=0.2 + 0.5 * s),  # 0.4 / 0.7
    "zoom_out": lambda x, s, g: _fixed_affine(x, g, zoom=1 - (0.15 + 0.35 * s)),  # 0.71 / 0.5 of the size
    "shift": lambda x, s, g: _fixed_affine(x, g, shift=2 + 4 * s),  # 3.6 / 6 px right or left, up or down
}


# The corruptions training draws from, each name once per share: the two kinds the network read
# worst (8x8 rescans, crossing lines: reports/evaluation.md) come twice as often as the rest.
TRAINING_MIX = tuple(CORRUPTIONS) + ("low_resolution", "crossing_lines")


def corrupt(x: Tensor, g: torch.Generator, prob: float, names: tuple[str, ...] = TRAINING_MIX
            ) -> tuple[Tensor, Tensor]:
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


# ---------------------------------------------------------------- printed digits

FONT_DIRS = ("/usr/share/fonts",)
# Fonts whose digits are not plain digits (symbols, dingbats) or barely legible (script).
_SKIP_FONTS = ("symbol", "dingbat", "d050000l", "z003", "math", "extralight")


def font_files() -> list[Path]:
    """Every TrueType/OpenType/Type 1 font under /usr/share/fonts with ordinary digits."""
    files = []
    for folder in FONT_DIRS:
        for pattern in ("*.ttf", "*.otf", "*.pfb", "*.t1"):
            files += Path(folder).rglob(pattern)
    return sorted(f for f in set(files) if not any(s in f.name.lower() for s in _SKIP_FONTS))


def split_fonts(files: list[Path]) -> tuple[list[Path], list[Path]]:
    """Training fonts and held-out fonts (every fourth by name): the printed-digit family is
    evaluated on fonts the network never saw."""
    return [f for i, f in enumerate(files) if i % 4 != 3], [f for i, f in enumerate(files) if i % 4 == 3]


def render_digits(files: list[Path], size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Each digit in each font, black on white at `size` px: (F*10, size*2, size*2) uint8 and labels."""
    from PIL import Image, ImageDraw, ImageFont

    images, labels = [], []
    for path in files:
        try:
            font = ImageFont.truetype(str(path), size)
        except OSError:
            continue
        for digit in range(10):
            canvas = Image.new("L", (size * 2, size * 2), 255)
            ImageDraw.Draw(canvas).text((size // 2, size // 4), str(digit), fill=0, font=font)
            if np.asarray(canvas).min() > 128:  # the font has no glyph for it
                continue
            images.append(np.asarray(canvas))
            labels.append(digit)
    if not images:
        return np.zeros((0, size * 2, size * 2), np.uint8), np.zeros(0, np.int64)
    return np.stack(images), np.array(labels, dtype=np.int64)


# ---------------------------------------------------------------- training batches

@dataclass
class AugmentConfig:
    geometry: Geometry
    corrupt_prob: float = 0.0  # share of images that get one corruption from CORRUPTIONS
    invert_prob: float = 0.0  # share sent dark-on-light, so that training exercises polarity too
    printed_prob: float = 0.0  # share of digits replaced by a printed one (training fonts)


class Augmenter:
    """(N, 28, 28) uint8 MNIST digits and labels -> (N, 1, 28, 28) [0, 1] images as the network
    sees them at serving time: augmented, then through the serving preprocessing (`serving_view`,
    handler.preprocess.training_view), so that training and serving see the same thing."""

    def __init__(self, cfg: AugmentConfig, generator: torch.Generator,
                 serving_view: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
                 printed: tuple[Tensor, Tensor] | None = None, seed: int = 0) -> None:
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
            x = torch.where(_col(flip), 1 - x, x)
            changed |= flip
        if self.serving_view is not None and changed.any():
            # 8-bit, as uploads are, then the serving preprocessing on the CPU. Untouched MNIST
            # digits skip it: it would give them back as they are (or re-centred: also a reading
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
