"""Decoded lines -> per line its candidate segments and their (28, 28) views, or why it has none.

    lines --lines.cleaned_lines--> light ink (and, where noise was filtered, the ink before)
    --components, segments.lattice--> candidate segments --framing.fit_and_centre--> views

Where the cleaning filtered noise out of a line, the line keeps two things from before the
filtering, as the digit model keeps an unfiltered candidate view (mnistify): each candidate's box
of the unfiltered ink, a second view of it (reader.read_candidates reads the more
confident), and a segmentation of the unfiltered ink of its own, `alternative`: the filtering
that removes grain also breaks thin strokes (a stencil's outline, a fine pen) into pieces, which
no path reads whole (reader.read_lines decides which segmentation stands).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from handler.errors import InternalError, NoDigitFound, RequestError, SeveralLines, TooManyDigits
from handler.number.components import components_of
from handler.number.lines import Line, LineInk, cleaned_lines
from handler.number.rules import without_rules
from handler.number.segments import Lattice, lattice, segment_inks
from handler.preprocess.framing import INK, fit_and_centre

logger = logging.getLogger(__name__)

MAX_DIGITS = 12


@dataclass
class Candidates:
    """One line's candidate segments and where they are in the upload."""

    lattice: Lattice
    scale: tuple[float, float]  # upload pixels per working pixel, across and down
    ink: np.ndarray  # (H, W) the line's cleaned ink, light on black, in working pixels
    # (n, 28, 28) each candidate's box of the line's unfiltered ink framed, where noise was filtered
    # out of the line (lines.LineInk); None where it was not
    unfiltered: torch.Tensor | None = None
    # the unfiltered ink's own segmentation, its (m, 28, 28) views and candidates, where it has one
    alternative: tuple[torch.Tensor, Candidates] | None = None


def line_candidates(lines: list[Line]) -> list[tuple[torch.Tensor, Candidates] | RequestError]:
    """Per line its candidates' (n, 28, 28) views and Candidates, or why it has none: NoDigitFound,
    SeveralLines, TooManyDigits, or an InternalError when our code raises on it. The batch's lines
    are worked on together (cleaned per size, labelled and framed in one call each); should that
    raise, line by line, so that only the lines that raise alone fail."""
    try:
        return _candidates(lines)
    except Exception:
        logger.exception("segmenting a batch of lines failed; segmenting them one by one")
    out = []
    for line in lines:
        try:
            out.append(_candidates([line])[0])
        except Exception:
            logger.exception("segmenting a decoded %s line failed", "x".join(map(str, line.gray.shape)))
            out.append(InternalError())
    return out


def _candidates(lines: list[Line]) -> list[tuple[torch.Tensor, Candidates] | RequestError]:
    inks = cleaned_lines(lines)
    readable = [ink for ink in inks if ink is not None]
    noisy = [ink.unfiltered for ink in readable if ink.unfiltered is not None]
    # the ink as framing sees it, of every line and then of every noisy line's unfiltered ink
    masks = [ink.cleaned > INK for ink in readable] + [raw > INK for raw in noisy]
    comps = without_rules(masks, components_of(masks)) if masks else []
    lattices, alternatives = iter(comps[: len(readable)]), iter(comps[len(readable) :])
    found: list[tuple[LineInk, Lattice, Lattice | None] | RequestError] = []
    for ink in inks:
        if ink is None:
            found.append(NoDigitFound())
            continue
        lat = lattice(next(lattices))
        alt = lattice(next(alternatives)) if ink.unfiltered is not None else None
        if alt is not None and _refused(alt):
            alt = None
        if alt is not None and _refused(lat):  # the filtered ink has no reading: the unfiltered one's
            lat, ink, alt = alt, LineInk(ink.unfiltered), None
        found.append(_refused(lat) or (ink, lat, alt))
    return _framed(found, lines)


def _refused(lat: Lattice | None) -> RequestError | None:
    """Why a line with this segmentation gets no reading, None when it gets one."""
    if lat is None:
        return NoDigitFound("no digit found: the image has no mark the size of a digit")
    if lat.rows > 1:
        return SeveralLines("several_lines", f"{lat.rows} lines of digits, one above the other: send one line")
    if not lat.spans:
        return TooManyDigits("too_many_digits", f"more than {MAX_DIGITS} digits: too many marks")
    return None


def _framed(
    found: list[tuple[LineInk, Lattice, Lattice | None] | RequestError], lines: list[Line]
) -> list[tuple[torch.Tensor, Candidates] | RequestError]:
    """Every candidate view of the batch framed in one call: the lines' candidates, then the noisy
    lines' unfiltered boxes, then their alternative segmentations' candidates."""
    kept = [f for f in found if not isinstance(f, RequestError)]
    crops = [crop for ink, lat, _ in kept for crop in segment_inks(ink.cleaned, lat)]
    for ink, lat, _ in kept:
        if ink.unfiltered is not None:
            crops += [ink.unfiltered[top:bottom, left:right] for top, left, bottom, right in lat.boxes]
    for ink, _, alt in kept:
        if alt is not None:
            crops += segment_inks(ink.unfiltered, alt)
    parts = iter(torch.split(_views(crops), _counts(kept)) if crops else ())
    own = [next(parts) for _ in kept]
    unfiltered = [next(parts) if ink.unfiltered is not None else None for ink, _, _ in kept]
    alternative = [next(parts) if alt is not None else None for _, _, alt in kept]
    made = iter(zip(kept, own, unfiltered, alternative))
    out: list[tuple[torch.Tensor, Candidates] | RequestError] = []
    for f, line in zip(found, lines):
        if isinstance(f, RequestError):
            out.append(f)
            continue
        (ink, lat, alt), views, raw, other = next(made)
        second = None if alt is None else (other, Candidates(alt, line.scale, ink.unfiltered))
        out.append((views, Candidates(lat, line.scale, ink.cleaned, raw, second)))
    return out


def _counts(kept: list[tuple[LineInk, Lattice, Lattice | None]]) -> list[int]:
    """How many views each part of _framed's one stack has, in its order."""
    counts = [len(lat.spans) for _, lat, _ in kept]
    counts += [len(lat.spans) for ink, lat, _ in kept if ink.unfiltered is not None]
    return counts + [len(alt.spans) for _, _, alt in kept if alt is not None]


def _views(crops: list[np.ndarray]) -> torch.Tensor:
    """Candidates' (h, w) ink -> their (N, 28, 28) views: each stretched to 1 at its brightest (as
    the digit model stretches an image), then framed as MNIST frames a digit
    (framing.fit_and_centre), all in one stack."""
    height, width = max(c.shape[0] for c in crops), max(c.shape[1] for c in crops)
    stack = np.zeros((len(crops), height, width), np.float32)
    for canvas, crop in zip(stack, crops):
        canvas[: crop.shape[0], : crop.shape[1]] = crop
    with torch.inference_mode():
        x = torch.from_numpy(stack)
        x /= x.amax((1, 2), keepdim=True).clamp_(min=1e-6)
        return fit_and_centre(x)
