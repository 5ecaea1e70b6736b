"""A TorchServe batch of number requests -> per image its reading: the number, its digits, their boxes.

    requests --batch.decode_requests, lines.decode_line--> lines
    --candidates.line_candidates--> candidate segments and their (28, 28) views
    --ONE forward pass for every candidate of every image--> probabilities --path.best_path--> digits
    (a noisy line: the segmentation of its filtered or of its unfiltered ink, BROKEN)
    lines where a mark was cut or the digits are unsure --line_reader.read_whole_lines--> digits
    read whole, where they stand
    --confidence.py--> the number's probability of being right
    (lines none of whose digits the open-set head finds a digit: refused, no_number.py)

Every candidate is brought to MNIST form the way the digit model frames a digit and read by the
same network in one batched pass, and their probabilities are calibrated as the digit model's are
(handler/calibration.py: a candidate of a line whose noise was filtered has two views, one from
the unfiltered line, and answers with the more confident, as the digit model does). No test-time
augmentation: the line reader's second opinion on unsure lines reads as many numbers right without
it, at less CPU (docs/decisions.md). The digit model's open-set head (handler/open_set.py) reads
the digits of each line's best path from the same pass: a line of letters, a drawing or a photo of
something else is refused (422 not_a_digit) instead of read as the digits it is least unlike. A bad
request never spoils the others: decoding errors are the client's 4xx, anything raised past
decoding that request's 500.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from handler import inference
from handler.calibration import Calibration, view_paths
from handler.errors import NoDigitFound, RequestError, TooManyDigits
from handler.inference import most_confident
from handler.number.candidates import MAX_DIGITS, Candidates, line_candidates
from handler.number.confidence import NumberCalibration, number_features
from handler.number.line_reader import WholeLine, read_whole_lines
from handler.number.lines import as_line, decode_line
from handler.number.no_number import no_digit_lines, refusal
from handler.number.path import best_path, segment_scores
from handler.number.segments import Lattice
from handler.open_set import OpenSet
from handler.preprocess.batch import RequestBatch, decode_requests

# The line reader also reads lines whose segmentation is less sure than this (the product of the
# digits' probabilities), chosen on numbers written with the training digits it was not trained on
# (docs/decisions.md, "Touching digits read whole").
SECOND_OPINION = 0.8
# A noisy line's unfiltered ink is read instead where the filtered one fell into this many times
# as many pieces and reads less surely: the filtering broke its strokes (candidates.py).
BROKEN = 2.0
NUMBER_OUTPUTS = ("number", "confidence", "length", "digit", "digit_confidence", "box")  # v2 answers' tensors


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
    found = line_candidates(lines)
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


def read_lines(
    model: torch.nn.Module,
    batch: NumberBatch,
    device,
    calibration: Calibration | None = None,
    number_calibration: NumberCalibration | None = None,
    line_model: torch.nn.Module | None = None,
    open_set: OpenSet | None = None,
) -> list[Reading | RequestError]:
    """Per image of the batch, its reading: one forward pass over every candidate, the best path of
    each line (on the network's own probabilities), then the chosen digits' calibration (None:
    the network's own probabilities) and the number's confidence (None: the product of the
    digits'). A noisy line's second segmentation, of its unfiltered ink (candidates.py), is read
    in the same pass and stands where the filtered ink fell into BROKEN times as many atoms and
    reads less surely. Lines whose marks had to be cut, and lines under SECOND_OPINION, are read
    whole by `line_model` (line_reader.py; None: not); _line_reader_stands says whose reading stands.
    Lines whose path's digits `open_set` finds none of them a digit are refused (None: none is),
    but where the line reader reads them as runs of touching digits (no_number.py)."""
    cands, views, n = list(batch.candidates), list(batch.views), len(batch.candidates)
    others = [k for k, cand in enumerate(cands) if cand.alternative is not None]
    for k in others:  # noisy lines' unfiltered segmentations, read with the rest, after them
        views.append(cands[k].alternative[0])
        cands.append(cands[k].alternative[1])
    chosen, firsts, read, no_digit = _best_paths(model, views, cands, device, calibration, open_set)
    sure = [math.prod(confidences) for _, confidences in read]  # the product of each path's digits'
    for k, j in zip(others, range(n, len(cands))):  # which segmentation of a noisy line stands
        if len(cands[k].lattice.atoms) >= BROKEN * len(cands[j].lattice.atoms) and sure[j] > sure[k]:
            for seq in (chosen, firsts, cands, read, sure, no_digit):
                seq[k] = seq[j]
    del chosen[n:], cands[n:], read[n:], sure[n:], no_digit[n:]
    lattices = [cand.lattice for cand in cands]
    # The line reader reads the lines where a mark was cut, and, as a second opinion, those the
    # segmentation is unsure of (the product of their digits' probabilities under SECOND_OPINION).
    second = (
        [] if line_model is None else [k for k, lat in enumerate(lattices) if lat.was_cut() or sure[k] < SECOND_OPINION]
    )
    whole = dict(zip(second, read_whole_lines(line_model, [(cands[k].ink, lattices[k]) for k in second], device)))
    readings, features = _readings(chosen, firsts, cands, read, sure, whole, number_calibration, no_digit)
    if features:  # the numbers' confidences, all of the batch's in one call
        answered = [r for r in readings if isinstance(r, Reading)]
        for reading, probability in zip(answered, number_calibration(np.array(features)).tolist()):
            reading.confidence = probability
    return readings


def _best_paths(
    model: torch.nn.Module,
    views: list[torch.Tensor],
    cands: list[Candidates],
    device,
    calibration: Calibration | None,
    open_set: OpenSet | None,
) -> tuple[list[list[int]], list[int], list[tuple[list[int], list[float]]], list[bool]]:
    """One forward pass over every candidate of every line, the best path of each line (on the
    network's own probabilities): per line its path (candidate rows of the batch), its first row,
    its digits with their probabilities (calibrated, given a `calibration`), and whether `open_set`
    finds none of them a digit (no_number.py; False without one)."""
    with torch.inference_mode():
        candidates = read_candidates(model, views, cands, device)
        probabilities, paths = candidates.probabilities, candidates.paths
        log_p = probabilities.amax(1).clamp_(min=1e-12).log_().cpu().numpy()
        lattices = [cand.lattice for cand in cands]
        widths, heights = (np.concatenate([getattr(lat, name) for lat in lattices]) for name in ("widths", "heights"))
        scores = segment_scores(widths, heights, log_p)  # every candidate of the batch at once
        firsts = np.cumsum([0, *(len(v) for v in views)]).tolist()
        chosen = [
            [first + s for s in best_path(lat, scores[first : first + len(lat.spans)])]
            for lat, first in zip(lattices, firsts)
        ]
        rows = [s for path in chosen for s in path]
        picked = probabilities[rows]
        if calibration is not None:
            picked = calibration(picked, None if paths is None else paths[rows])
        picked = picked.cpu().numpy().astype(np.float64)
        no_digit = no_digit_lines(open_set, candidates, chosen) if open_set is not None else [False] * len(chosen)
    digits, confidences = picked.argmax(1).tolist(), np.round(picked.max(1), 6).tolist()
    ends = np.cumsum([len(path) for path in chosen]).tolist()
    read = [(digits[end - len(path) : end], confidences[end - len(path) : end]) for path, end in zip(chosen, ends)]
    return chosen, firsts, read, no_digit


def read_candidates(
    model: torch.nn.Module, views: list[torch.Tensor], candidates: list[Candidates], device
) -> inference.Reading:
    """Lines' candidates, (n, 28, 28) views per line -> what one forward pass gives per candidate
    (handler/inference.py's Reading, a candidate for an image): the (N, 10) probabilities of its
    view or, where the line had noise filtered out, of the more confident of its two views
    (inference.most_confident), as the digit model answers an image with several; that view, its
    pooled features, its views' count, and its calibration path (calibration.view_paths; None: one
    view each)."""
    stacks, counts = [], []
    for v, cand in zip(views, candidates):
        if cand.unfiltered is None:
            stacks.append(v)
            counts += [1] * len(v)
        else:  # each candidate's two views side by side: (2n, 28, 28)
            stacks.append(torch.stack((v, cand.unfiltered), 1).flatten(0, 1))
            counts += [2] * len(v)
    inputs = torch.cat(stacks)[:, None].to(device)
    features, logits = model.features_and_logits(inputs)
    probabilities = torch.softmax(logits, dim=1)
    best = most_confident(probabilities, counts)
    paths = view_paths(probabilities, counts, best)
    return inference.Reading(probabilities[best], inputs[best], features[best], counts, paths)


def _readings(
    chosen: list[list[int]],
    firsts: list[int],
    cands: list[Candidates],
    read: list[tuple[list[int], list[float]]],
    sure: list[float],
    whole: dict[int, WholeLine],
    number_calibration: NumberCalibration | None,
    no_digit: list[bool],
) -> tuple[list[Reading | RequestError], list[list[float]]]:
    """Per line its Reading (the product of its digits' probabilities as its confidence) or why it
    has none, from the batch's best paths (`chosen`; `read`: per line their digits and
    probabilities, `sure`: their product; `no_digit`: whether none of them is a digit) and the
    line reader's readings (`whole`, by line); and, given a `number_calibration`, each Reading's
    number_features, and the line reader's digits' probabilities calibrated by it (the features
    keep its own: the number's fit saw those)."""
    readings: list[Reading | RequestError] = []
    features = []
    for k, (path, cand, first, (digits, confidences)) in enumerate(zip(chosen, cands, firsts, read)):
        local = [s - first for s in path]
        answer = (digits, confidences, cand.lattice.boxes[local])  # the segmentation's
        line_read = k in whole and _line_reader_stands(cand.lattice, local, sure[k], whole[k])
        refused = refusal(no_digit[k], path, whole[k] if line_read else None)
        if refused is not None:
            readings.append(refused)
            continue
        if line_read:
            answer = (whole[k].digits, whole[k].confidences, whole[k].boxes())
        if len(answer[0]) > MAX_DIGITS:
            readings.append(TooManyDigits("too_many_digits", f"more than {MAX_DIGITS} digits: read {len(answer[0])}"))
        elif not answer[0]:  # every mark left out as noise
            readings.append(NoDigitFound("no digit found: no mark in the image reads as a digit"))
        else:
            product = math.prod(answer[1]) if line_read else sure[k]
            shown = (
                number_calibration.line_digits(answer[1]) if line_read and number_calibration is not None else answer[1]
            )
            readings.append(Reading(answer[0], shown, _upload_boxes(answer[2], cand.scale), product))
            if number_calibration is not None:
                agree = k not in whole or whole[k].digits == digits
                features.append(number_features(cand.lattice, local, answer[1], line_read, agree))
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
