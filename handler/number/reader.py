"""A TorchServe batch of number requests -> per image its reading: the number, its digits, their boxes.

    requests --batch.decode_requests, lines.decode_line--> lines --lines.cleaned_lines--> light ink
    --components, segments.lattice--> candidate segments --framing.fit_and_centre--> (28, 28) views
    --ONE forward pass for every candidate of every image--> probabilities --path.best_path--> digits
    lines where a mark was cut or the digits are unsure --line_reader.read_whole_lines--> digits
    read whole, where they stand
    --confidence.py--> the number's probability of being right

Every candidate is brought to MNIST form the way the digit model frames a digit and read by the
same network in one batched pass, and their probabilities are calibrated as the digit model's are
(handler/calibration.py: a candidate of a line whose noise was filtered has two views, one from
the unfiltered line, and answers with the more confident, as the digit model does). No test-time
augmentation: the line reader's second opinion on unsure lines reads as many numbers right without
it, at less CPU (docs/decisions.md). A bad request never spoils the others: decoding errors are
the client's 4xx, anything raised past decoding that request's 500.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from handler.calibration import Calibration, view_paths
from handler.errors import InternalError, NoDigitFound, RequestError, SeveralLines, TooManyDigits
from handler.inference import most_confident
from handler.number.components import components_of
from handler.number.confidence import NumberCalibration, number_features
from handler.number.line_reader import WholeLine, read_whole_lines
from handler.number.lines import Line, LineInk, as_line, cleaned_lines, decode_line
from handler.number.path import best_path, segment_scores
from handler.number.segments import Lattice, lattice, segment_ink
from handler.preprocess.batch import RequestBatch, decode_requests
from handler.preprocess.framing import INK, fit_and_centre

logger = logging.getLogger(__name__)

MAX_DIGITS = 12
# The line reader also reads lines whose segmentation is less sure than this (the product of the
# digits' probabilities), chosen on numbers written with the training digits it was not trained on
# (docs/decisions.md, "Touching digits read whole").
SECOND_OPINION = 0.8
NUMBER_OUTPUTS = ("number", "confidence", "length", "digit", "digit_confidence", "box")  # v2 answers' tensors


@dataclass
class Candidates:
    """One line's candidate segments and where they are in the upload."""

    lattice: Lattice
    scale: tuple[float, float]  # upload pixels per working pixel, across and down
    ink: np.ndarray  # (H, W) the line's cleaned ink, light on black, in working pixels
    # (n, 28, 28) each candidate's box of the line's unfiltered ink framed, where noise was filtered
    # out of the line (lines.LineInk); None where it was not
    unfiltered: torch.Tensor | None = None


@dataclass
class NumberBatch(RequestBatch):
    """RequestBatch whose `views` hold, per image, its candidate segments' views: (n, 28, 28), one each."""

    candidates: list[Candidates] = field(default_factory=list)  # per image, as `views`


@dataclass
class Reading:
    """A line read: its digits left to right, each with its (calibrated) probability and its box in
    the upload, and the probability that the whole number is right (handler/number/confidence.py;
    without a number calibration, the product of the digits')."""

    digits: list[int]
    confidences: list[float]
    boxes: list[list[int]]  # [x, y, width, height] each
    confidence: float

    @property
    def number(self) -> str:
        return "".join(map(str, self.digits))


def read_requests(requests: list[dict], headers: list[Mapping[str, str]] | None = None) -> NumberBatch:
    """Decode each request on its own, then segment each of its lines and frame the candidates."""
    decoded, items = decode_requests(requests, decode_line, headers, NUMBER_OUTPUTS, explains=False)
    lines = [as_line(item) for item in items]
    found = _candidates_isolated(lines)
    batch = NumberBatch()
    for indices, envelope in decoded:
        if not isinstance(indices, range):
            batch.reject(indices, envelope)
            continue
        error = next((found[i] for i in indices if isinstance(found[i], RequestError)), None)
        if error is not None:
            batch.reject(error, envelope)
            continue
        batch.add([found[i][0] for i in indices], envelope)
        batch.candidates.extend(found[i][1] for i in indices)
    return batch


def _candidates_isolated(lines: list[Line]) -> list[tuple[torch.Tensor, Candidates] | RequestError]:
    """Per line its candidates' (n, 28, 28) views and lattice, or why it has none: NoDigitFound,
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
    found: list[tuple[LineInk, Lattice] | RequestError] = []
    readable = [ink.cleaned for ink in inks if ink is not None]
    comps = iter(components_of([ink > INK for ink in readable]) if readable else [])  # ink as framing sees it
    for ink in inks:
        lat = lattice(next(comps)) if ink is not None else None
        if ink is None:
            found.append(NoDigitFound())
        elif lat is None:
            found.append(NoDigitFound("no digit found: the image has no mark the size of a digit"))
        elif lat.rows > 1:
            found.append(
                SeveralLines("several_lines", f"{lat.rows} lines of digits, one above the other: send one line")
            )
        elif not lat.spans:
            found.append(TooManyDigits("too_many_digits", f"more than {MAX_DIGITS} digits: too many marks"))
        else:
            found.append((ink, lat))
    kept = [f for f in found if not isinstance(f, RequestError)]
    crops = [segment_ink(ink.cleaned, lat, s) for ink, lat in kept for s in range(len(lat.spans))]
    # where noise was filtered, each candidate's box of the unfiltered ink too, framed after them
    for ink, lat in kept:
        if ink.unfiltered is not None:
            crops += [ink.unfiltered[top:bottom, left:right] for top, left, bottom, right in lat.boxes]
    views = _views(crops) if crops else None
    at, after = 0, sum(len(lat.spans) for _, lat in kept)
    out: list[tuple[torch.Tensor, Candidates] | RequestError] = []
    for f, line in zip(found, lines):
        if isinstance(f, RequestError):
            out.append(f)
            continue
        ink, lat = f
        n, unfiltered = len(lat.spans), None
        if ink.unfiltered is not None:
            unfiltered, after = views[after : after + n], after + n
        out.append((views[at : at + n], Candidates(lat, line.scale, ink.cleaned, unfiltered)))
        at += n
    return out


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


def read_lines(
    model: torch.nn.Module,
    batch: NumberBatch,
    device,
    calibration: Calibration | None = None,
    number_calibration: NumberCalibration | None = None,
    line_model: torch.nn.Module | None = None,
) -> list[Reading | RequestError]:
    """Per image of the batch, its reading: one forward pass over every candidate, the best path of
    each line (on the network's own probabilities), then the chosen digits' calibration (None:
    the network's own probabilities) and the number's confidence (None: the product of the
    digits'). Lines whose marks had to be cut, and lines under SECOND_OPINION, are read whole by
    `line_model` (line_reader.py; None: not); _line_reader_stands says whose reading stands."""
    counts = [len(v) for v in batch.views]
    with torch.inference_mode():
        probabilities, paths = candidate_probabilities(model, batch.views, batch.candidates, device)
        log_p = probabilities.amax(1).clamp_(min=1e-12).log_().cpu().numpy()
        lattices = [cand.lattice for cand in batch.candidates]
        widths, heights = (np.concatenate([getattr(lat, name) for lat in lattices]) for name in ("widths", "heights"))
        scores = segment_scores(widths, heights, log_p)  # every candidate of the batch at once
        firsts = np.cumsum([0, *counts]).tolist()
        chosen = [
            [first + s for s in best_path(lat, scores[first : first + len(lat.spans)])]
            for lat, first in zip(lattices, firsts)
        ]
        rows = [s for path in chosen for s in path]
        picked = probabilities[rows]
        if calibration is not None:
            picked = calibration(picked, None if paths is None else paths[rows])
        picked = picked.cpu().numpy().astype(np.float64)
    digits, confidences = picked.argmax(1).tolist(), np.round(picked.max(1), 6).tolist()
    # The line reader reads the lines where a mark was cut, and, as a second opinion, those the
    # segmentation is unsure of (the product of their digits' probabilities under SECOND_OPINION).
    sure, at = [], 0
    for path in chosen:
        sure.append(math.prod(confidences[at : at + len(path)]))
        at += len(path)
    second = (
        [] if line_model is None else [k for k, lat in enumerate(lattices) if lat.was_cut() or sure[k] < SECOND_OPINION]
    )
    cands = batch.candidates
    whole = dict(zip(second, read_whole_lines(line_model, [(cands[k].ink, lattices[k]) for k in second], device)))
    readings, features = _readings(
        chosen, firsts, cands, (digits, confidences, sure), whole, number_calibration is not None
    )
    if features:  # the numbers' confidences, all of the batch's in one call
        answered = [r for r in readings if isinstance(r, Reading)]
        for reading, probability in zip(answered, number_calibration(np.array(features)).tolist()):
            reading.confidence = probability
    return readings


def candidate_probabilities(
    model: torch.nn.Module, views: list[torch.Tensor], candidates: list[Candidates], device
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Lines' candidates, (n, 28, 28) views per line -> per candidate (N, 10) probabilities from one
    forward pass: of its view or, where the line had noise filtered out, of the more confident of
    its two views (inference.most_confident), as the digit model answers an image with several;
    and each candidate's calibration path (calibration.view_paths; None: one view each)."""
    stacks, counts = [], []
    for v, cand in zip(views, candidates):
        if cand.unfiltered is None:
            stacks.append(v)
            counts += [1] * len(v)
        else:  # each candidate's two views side by side: (2n, 28, 28)
            stacks.append(torch.stack((v, cand.unfiltered), 1).flatten(0, 1))
            counts += [2] * len(v)
    probabilities = torch.softmax(model(torch.cat(stacks)[:, None].to(device)), dim=1)
    best = most_confident(probabilities, counts)
    return probabilities[best], view_paths(probabilities, counts, best)


def _readings(
    chosen: list[list[int]],
    firsts: list[int],
    cands: list[Candidates],
    read_paths: tuple[list[int], list[float], list[float]],
    whole: dict[int, WholeLine],
    with_features: bool,
) -> tuple[list[Reading | RequestError], list[list[float]]]:
    """Per line its Reading (the product of its digits' probabilities as its confidence) or why it
    has none, from the batch's best paths (`chosen`; `read_paths`: their digits and probabilities,
    rows in path order, and per line their product) and the line reader's readings (`whole`, by
    line); and, `with_features`, each Reading's number_features."""
    digits, confidences, sure = read_paths
    readings: list[Reading | RequestError] = []
    features = []
    at = 0
    for k, (path, cand, first) in enumerate(zip(chosen, cands, firsts)):
        mine, local = slice(at, at + len(path)), [s - first for s in path]
        at += len(path)
        read = (digits[mine], confidences[mine], cand.lattice.boxes[local])  # the segmentation's
        line_read = k in whole and _line_reader_stands(cand.lattice, local, sure[k], whole[k])
        if line_read:
            read = (whole[k].digits, whole[k].confidences, whole[k].boxes())
        if len(read[0]) > MAX_DIGITS:
            readings.append(TooManyDigits("too_many_digits", f"more than {MAX_DIGITS} digits: read {len(read[0])}"))
        elif not read[0]:  # every mark left out as noise
            readings.append(NoDigitFound("no digit found: no mark in the image reads as a digit"))
        else:
            product = math.prod(read[1]) if line_read else sure[k]
            readings.append(Reading(read[0], read[1], _upload_boxes(read[2], cand.scale), product))
            if with_features:
                agree = k not in whole or whole[k].digits == digits[mine]
                features.append(number_features(cand.lattice, local, read[1], line_read, agree))
    return readings, features


def _line_reader_stands(lat: Lattice, path: list[int], sure: float, line: WholeLine) -> bool:
    """Whether the line reader's reading `line` stands rather than the segmentation's (its best path
    `path` and the product of its digits' calibrated probabilities, `sure`): where the
    segmentation read a piece cut out of a mark or counts other digits in a line it cut; else,
    where the segmentation is unsure (`sure` under SECOND_OPINION), where the line reader is
    surer. Where the segmentation read every mark whole and is sure, its digit network reads them
    better."""
    if lat.was_cut() and (any(lat.cut_piece(s) for s in path) or len(line.digits) != len(path)):
        return True
    return sure < SECOND_OPINION and math.prod(line.confidences) > sure


def _upload_boxes(boxes: np.ndarray, scale: tuple[float, float]) -> list[list[int]]:
    """(n, 4) working (top, left, bottom, right) boxes -> [x, y, width, height] each, in the
    upload's pixels."""
    sx, sy = scale
    corners = np.rint(boxes[:, [1, 0, 3, 2]] * np.array([sx, sy, sx, sy])).astype(int)  # x0, y0, x1, y1
    return np.concatenate([corners[:, :2], corners[:, 2:] - corners[:, :2]], 1).tolist()
