"""Cleaned light-on-black (N, H, W) stacks -> (28, 28) candidate views framed as MNIST frames its
digits: the ink cropped, its longer side scaled to 20 px, its centre of mass at MNIST's.

MNIST itself was made this way (NIST digits scaled into a 20x20 box, anti-aliased, then centred
by centre of mass in 28x28), so real photos and canvas drawings land in the same space.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from handler.preprocess.kernels import above, constant, divide, quantiles, reach_border

SIDE, BOX = 28, 20  # MNIST canvas and the box its digits are scaled into
INK = 0.25  # after contrast stretching, pixels above this set the bounding box (faint grain does not)
# MNIST's mean centre of mass in (row, col) index coordinates: 14.00, 14.01 on the training set.
MNIST_CENTRE = (14.0, 14.0)
INNER_MASS = 0.3  # the crop without border-touching structures keeps at least this share of the ink
# A bar along an edge covers at least BAR_SHARE of it; its thickness is the BAR_DEPTH quantile of the
# ink runs from the edge (a digit touching the bar makes a few of them longer).
BAR_SHARE, BAR_DEPTH = 0.5, 0.25

Views = list[torch.Tensor]  # one image's (28, 28) candidate views, the first the primary one


def frame_views(x: torch.Tensor, blank: torch.Tensor, multiple: bool) -> list[Views]:
    """Cleaned (N, H, W) -> per image its (28, 28) candidate views: as it is when already MNIST-shaped;
    else cropped and centred (multiple: without the structures that touch the border, if any),
    and (multiple) also as it is for 28x28 uploads."""
    # Which images are blank or ready read once, the rest decided in Python: fewer calls than
    # masks and a nonzero (a batch's fixed cost on the CPU).
    blank_flags, ready_flags = blank.tolist(), already_mnist(x).tolist()
    as_is = multiple and tuple(x.shape[1:]) == (SIDE, SIDE)
    todo = [i for i, (is_blank, is_ready) in enumerate(zip(blank_flags, ready_flags)) if not (is_blank or is_ready)]
    if todo:
        crops, extra = x[todo], []
        if multiple:
            # With border structures cut away, the crop that keeps them only shrinks the digit;
            # where a digit touches a bar along the edge, the crop without the bar is read too.
            crops, peeled, extra = _without_border_structures(crops)
            crops = torch.cat((crops, peeled))
        fitted = fit_and_centre(crops).unbind(0)
        views = {i: [view] for i, view in zip(todo, fitted)}
        for k, view in zip(extra, fitted[len(todo) :]):
            views[todo[k]].append(view)
    out: list[Views] = []
    for i, (image, is_blank, is_ready) in enumerate(zip(x.unbind(0), blank_flags, ready_flags)):  # one call for all
        if is_blank:
            out.append([])
        elif is_ready:
            out.append([image])
        else:
            out.append(([image] if as_is else []) + views[i])
    return out


def _without_border_structures(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """(N, H, W) -> the images without the ink that touches their border (8-connected) where that
    is worth reading (something touched the border, something else is left, and that keeps at
    least INNER_MASS of the ink: else the digit itself runs off the edge), else as they are; and
    for the images whose bars along an edge (edge_bars) that left in place (a digit touches them),
    their indices and (n, H, W) the images without the bars and then what else touches the border."""
    ink = above(x, INK)
    inner, useful, touched = _without_touching(x, ink)
    if not touched:  # no bars either
        return inner, x[:0], []
    h, w = x.shape[1:]
    # Bars need ink along BAR_SHARE of an edge: one look at the four edges spares most stacks the rest.
    along = (ink[:, [0, -1]].sum(2) >= BAR_SHARE * w).any(1) | (ink[:, :, [0, -1]].sum(1) >= BAR_SHARE * h).any(1)
    barred = torch.nonzero(along & ~useful).flatten()
    if len(barred) == 0:
        return inner, x[:0], []
    kept = 1 - edge_bars(ink[barred])
    peeled, _, _ = _without_touching(x[barred] * kept, ink[barred] * kept)
    return inner, peeled, barred.tolist()


def _without_touching(x: torch.Tensor, ink: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """(N, H, W) and its 0/1 ink -> the images without the ink that touches their border where
    that is worth reading (see _without_border_structures), else as they are; (N,) where; and
    whether any ink of the stack touches the border."""
    # 0/1 float masks and arithmetic: on the CPU, where() and any() on a stack of photos cost
    # several times these (x >= 0, so x * 0 is 0 and x * 1 is x, exactly)
    touching = reach_border(ink)  # within the ink
    if not bool(touching.amax() > 0):  # nothing touches the border: most photos and canvases
        return x, torch.zeros(len(x), dtype=torch.bool, device=x.device), False
    inner = x * (1 - touching)
    useful = (
        (touching.amax((1, 2)) > 0)
        & ((ink - touching).amax((1, 2)) > 0)
        & (inner.sum((1, 2), dtype=torch.float64) >= INNER_MASS * (x * ink).sum((1, 2), dtype=torch.float64))
    )
    return torch.where(useful[:, None, None], inner, x), useful, True


def edge_bars(ink: torch.Tensor) -> torch.Tensor:
    """(N, H, W) 0/1 ink -> 0/1 the bars along its edges (a scanner edge, a ruler, a table caught by
    the crop): along each edge that has ink over at least BAR_SHARE of it, the ink there, as deep
    as the bar's thickness (the BAR_DEPTH quantile of the ink runs that start at the edge), so that
    a digit touching the bar keeps what lies beyond it."""
    h, w = ink.shape[1:]
    across = torch.cat((ink, ink.flip(1)))  # (2N, H, W): the top edge and the bottom edge as row 0
    along = torch.cat((ink.transpose(1, 2), ink.transpose(1, 2).flip(1)))  # (2N, W, H): left, right
    top, bottom = _bars_at_row_0(across).chunk(2)
    left, right = _bars_at_row_0(along).transpose(1, 2).chunk(2)
    return torch.maximum(torch.maximum(top, bottom.flip(1)), torch.maximum(left, right.flip(2)))


def _bars_at_row_0(ink: torch.Tensor) -> torch.Tensor:
    """(N, L, S) 0/1 ink -> 0/1 the bar along its row 0 (see edge_bars)."""
    n, length, side = ink.shape
    edge = ink[:, 0]  # (N, S)
    # (N, S): ink pixels in a row from the edge, up to the first gap (argmax: the first), or all
    runs = ((1 - ink).argmax(1) + ink.amin(1).long() * length).clamp_(max=255).float()
    depth = (quantiles(divide(runs, 255), BAR_DEPTH, edge) * 255).round_()  # (N,) float64, whole
    barred = edge.sum(1) >= BAR_SHARE * side
    rows = torch.arange(length, device=ink.device, dtype=torch.float64)[None, :, None]
    return edge[:, None, :] * ((rows < depth[:, None, None]) & barred[:, None, None]).float()


def _extents(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, H, W) with ink -> (N, 2) first and (N, 2) last row ([:, 0]) and column ([:, 1]) with ink
    (pixels over INK); rows and columns are read in one call per step."""
    h, w = x.shape[1:]
    ink = above(x, INK)  # summed rather than x's maxima taken: on the CPU a third of the cost
    rows, cols = ink.sum(2), ink.sum(1)  # (N, H), (N, W): how many pixels of each are ink
    side = max(h, w)
    if h != w:  # the shorter one padded with places without ink, after its end
        rows, cols = F.pad(rows, (0, side - h)), F.pad(cols, (0, side - w))
    inked = (torch.stack((rows, cols), 1) > 0).byte()  # (N, 2, side)
    # argmax finds the first set entry, from either end
    return inked.argmax(2), side - 1 - inked.flip(2).argmax(2)


def already_mnist(x: torch.Tensor) -> torch.Tensor:
    """(N, H, W) -> (N,): 28x28, digit about 20 px, centre of mass within 1 px of MNIST's
    (resampling would only blur). Images need some ink (stretched ones have)."""
    n, h, w = x.shape
    if (h, w) != (SIDE, SIDE):
        return torch.zeros(n, dtype=torch.bool, device=x.device)
    first, last = _extents(x)
    size = (last - first).amax(1) + 1  # (N,): the longer side
    off_centre = (_centres_of_mass(x) - constant(MNIST_CENTRE, torch.float64, x.device)).abs_().amax(1)
    return (0.9 * BOX <= size) & (size <= 1.1 * BOX) & (off_centre <= 1)


def _centres_of_mass(x: torch.Tensor) -> torch.Tensor:
    """(N, S, S) -> (N, 2) float64 row and column centres of mass (meaningless for blank images)."""
    side = x.shape[1]
    sums = torch.stack((x.sum(2, dtype=torch.float64), x.sum(1, dtype=torch.float64)), 1)  # (N, 2, S)
    mass = sums[:, 0].sum(1, keepdim=True).clamp_(min=torch.finfo(torch.float32).tiny)  # (N, 1)
    return (sums @ constant(tuple(range(side)), torch.float64, x.device)) / mass


def fit_and_centre(x: torch.Tensor) -> torch.Tensor:
    """(N, H, W) with ink -> (N, 28, 28): each image's ink cropped, its longer side scaled to 20 px
    (antialiased bilinear, as Pillow resizes), pasted with its centre of mass centred. Crops differ
    in size, so the resize is one call per image that needs one; the rest is batched, with one
    read of the device (the crops' boxes)."""
    first, last = _extents(x)
    boxes = torch.cat((first, last), 1).tolist()  # (N, 4): top, left, bottom, right
    # (N, 28, 28): each digit in the top left corner, then moved so that its centre of mass is
    # MNIST's (as far as it fits), by one take for the whole stack (_picked).
    corner = _cropped(x, first, last - first + 1)
    sizes = []
    for i, (top, left, bottom, right) in enumerate(boxes):
        size = (bottom + 1 - top, right + 1 - left)
        scale = BOX / max(size)
        # Within 10% of the target size resampling would only blur (clean MNIST is already 20 px).
        if not 0.9 <= scale <= 1.1 or max(size) > SIDE:
            size = (max(1, round(size[0] * scale)), max(1, round(size[1] * scale)))
            digit = x[i, top : bottom + 1, left : right + 1][None, None]
            digit = F.interpolate(digit, size=size, mode="bilinear", align_corners=False, antialias=True)
            corner[i] = F.pad(digit[0, 0].clamp(0, 1), (0, SIDE - size[1], 0, SIDE - size[0]))
        sizes.append(size)
    cy, cx = _centres_of_mass(corner).unbind(1)
    heights, widths = torch.tensor(sizes, device=x.device).unbind(1)
    tops = torch.minimum(_whole(MNIST_CENTRE[0] - cy).clamp(min=0).long(), SIDE - heights)
    lefts = torch.minimum(_whole(MNIST_CENTRE[1] - cx).clamp(min=0).long(), SIDE - widths)
    return _shifted(corner, tops, lefts)


def _cropped(x: torch.Tensor, first: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    """(N, H, W), (N, 2) first row and column and (N, 2) height and width of each crop -> (N, 28, 28)
    each crop in the top left corner, zeros around it (where a crop is larger, its first 28 rows
    and columns)."""
    h, w = x.shape[1:]
    at = torch.arange(SIDE, device=x.device)
    rows = torch.where(at < size[:, :1], (first[:, :1] + at).clamp_(max=h - 1), h)  # (N, 28); h: a zero
    cols = torch.where(at < size[:, 1:], (first[:, 1:] + at).clamp_(max=w - 1), w)
    return _picked(x, rows, cols)


def _shifted(x: torch.Tensor, down: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """(N, H, W) -> each image moved `down` rows and `right` columns ((N,) each, >= 0), zeros
    coming in: out[n, i, j] = x[n, i - down[n], j - right[n]]."""
    h, w = x.shape[1:]
    rows = torch.arange(h, device=x.device) - down[:, None]  # (N, H): the source row of each row
    cols = torch.arange(w, device=x.device) - right[:, None]  # (N, W)
    return _picked(x, torch.where(rows >= 0, rows, h), torch.where(cols >= 0, cols, w))


def _picked(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """(N, H, W), (N, R) rows and (N, C) columns of each image (H, W: a zero) -> (N, R, C)
    x[n, rows[n, i], cols[n, j]]: one take for the whole stack, from the stack with a row and a
    column of zeros added (on the CPU about half the time of two gathers and a mask, and exact)."""
    n, h, w = x.shape
    padded = F.pad(x, (0, 1, 0, 1))
    flat = (torch.arange(n, device=x.device)[:, None, None] * (h + 1) + rows[:, :, None]) * (w + 1) + cols[:, None, :]
    return padded.take(flat)


def _whole(x: torch.Tensor) -> torch.Tensor:
    """Nearest whole numbers, ties to even, after snapping to 1e-6: a symmetric digit's centre of
    mass is often exactly half way, and float rounding (which differs between devices and
    summation orders) must not be what picks the side."""
    return torch.round(divide(torch.round(x * 1e6), 1e6))
