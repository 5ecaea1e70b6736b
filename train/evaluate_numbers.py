"""The evaluation's Numbers section: each number family (synthetic/numbers.py) read as the `number`
model reads it (handler/number/), its whole-number and per-digit accuracy, and the goals; and
uploads that are not numbers (synthetic/non_digits.py: letters, drawings, photos), how many the
model refuses.

    python -m train.evaluate_numbers --per-family 200     # this section alone, printed
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from handler.calibration import Calibration
from handler.errors import RequestError
from handler.number.confidence import NumberCalibration
from handler.number.reader import Reading, read_lines, read_requests
from handler.open_set import OpenSet
from synthetic.fonts import fonts_available
from synthetic.non_digits import KINDS, described
from synthetic.numbers import LENGTHS, NUMBER_FAMILIES, number_family
from train.calibrate import ECE_BINS, expected_calibration_error

# family -> minimum whole-number accuracy (every digit right, none missing or extra)
NUMBER_GOALS = {"gaps": 0.98, "paper_photo": 0.95, "printed": 0.99, "touching": 0.90}
DIGIT_GOALS = {"gaps": 0.99}  # family -> minimum per-digit accuracy
BATCH = 16  # uploads per handler batch, as TorchServe's batchSize
NOT_NUMBERS = [kind for kind, (reason, _) in KINDS.items() if reason == "not_a_digit"]  # several digits are a number
CONFIDENT = 0.9  # a number answered at least this sure is taken as right by a caller who routes by confidence


def _edit_costs(a: str, b: str) -> list[list[int]]:
    """Levenshtein's table: [i][j] the fewest digits replaced, missing or extra from a[:i] to b[:j]."""
    cost = [list(range(len(b) + 1))]
    for i, x in enumerate(a, 1):
        row = [i]
        for j, y in enumerate(b, 1):
            row.append(min(cost[-1][j] + 1, row[j - 1] + 1, cost[-1][j - 1] + (x != y)))
        cost.append(row)
    return cost


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance: digits replaced, missing or extra."""
    return _edit_costs(a, b)[-1][-1]


def aligned_right(written: str, read: str) -> list[bool]:
    """Per digit read, whether it is right: paired with the digit written at its place in a least-edit
    alignment (edit_distance's) and equal to it; an extra digit is wrong."""
    cost = _edit_costs(written, read)
    right, i, j = [False] * len(read), len(written), len(read)
    while i and j:  # back along the alignment: a pairing, else a digit read extra, else one missing
        if cost[i][j] == cost[i - 1][j - 1] + (written[i - 1] != read[j - 1]):
            right[j - 1] = written[i - 1] == read[j - 1]
            i, j = i - 1, j - 1
        elif cost[i][j] == cost[i][j - 1] + 1:
            j -= 1
        else:
            i -= 1
    return right


def read_numbers(
    model,
    uploads: list[bytes],
    calibration: Calibration | None = None,
    number_calibration: NumberCalibration | None = None,
    line_model: torch.nn.Module | None = None,
    open_set: OpenSet | None = None,
) -> tuple[list[Reading | RequestError], float]:
    """Each upload read as the handler reads it, BATCH at a time (read_batch), and the ms per upload."""
    out: list[Reading | RequestError] = []
    parts = (calibration, number_calibration, line_model, open_set)
    start = time.perf_counter()
    for i in range(0, len(uploads), BATCH):
        out += read_batch(model, uploads[i : i + BATCH], *parts)
    return out, (time.perf_counter() - start) * 1000 / max(1, len(uploads))


def read_batch(
    model: torch.nn.Module,
    uploads: list[bytes],
    calibration: Calibration | None = None,
    number_calibration: NumberCalibration | None = None,
    line_model: torch.nn.Module | None = None,
    open_set: OpenSet | None = None,
) -> list[Reading | RequestError]:
    """One batch of uploads read as the handler reads it: per upload its Reading or the error it
    was refused with; its digits' probabilities calibrated with `calibration` (None: the network's
    own), the number's confidence with `number_calibration` (None: the product of the digits'),
    lines whose marks were cut read by `line_model` (None: by the segmentation) and lines of no
    digit refused by `open_set` (None: read). No forward pass where every upload was refused, as
    in the handler."""
    batch = read_requests([{"body": data} for data in uploads])
    parts = (calibration, number_calibration, line_model, open_set)
    readings = iter(read_lines(model, batch, "cpu", *parts) if batch.views else [])
    return [next(readings) if isinstance(outcome, slice) else outcome for outcome in batch.outcomes]


def family_scores(
    model,
    family: str,
    digits: np.ndarray,
    labels: np.ndarray,
    count: int,
    seed: int,
    calibration: Calibration | None,
    number_calibration: NumberCalibration | None = None,
    line_model: torch.nn.Module | None = None,
    open_set: OpenSet | None = None,
) -> dict:
    samples = number_family(family, digits, labels, count, seed)
    parts = (calibration, number_calibration, line_model, open_set)
    outcomes, ms = read_numbers(model, [data for data, _ in samples], *parts)
    readings = [r if isinstance(r, Reading) else None for r in outcomes]
    texts = [text for _, text in samples]
    answers = [r.number if r else "" for r in readings]
    edits = sum(edit_distance(text, answer) for text, answer in zip(texts, answers))
    confidences = [r.confidence for r in readings if r]
    right = [r.number == text for r, text in zip(readings, texts) if r]
    digit_confidences = [c for r in readings if r for c in r.confidences]
    digits_right = [ok for r, text in zip(readings, texts) if r for ok in aligned_right(text, r.number)]
    return {
        "numbers": len(samples),
        "whole_number_accuracy": float(np.mean([a == t for a, t in zip(answers, texts)])),
        "per_digit_accuracy": max(0.0, 1 - edits / sum(map(len, texts))),
        "refused": sum(r is None for r in readings),
        "mean_confidence": float(np.mean(confidences)) if confidences else 0.0,
        "ece": expected_calibration_error(np.array(confidences), np.array(right, float)) if confidences else 0.0,
        "digit_ece": expected_calibration_error(np.array(digit_confidences), np.array(digits_right, float))
        if digit_confidences
        else 0.0,
        "candidates_per_number": round(float(np.mean([len(r.digits) for r in readings if r] or [0])), 2),
        "ms_per_number": round(ms, 2),
        "description": NUMBER_FAMILIES[family],
    }


def numbers_report(
    model,
    digits: np.ndarray,
    labels: np.ndarray,
    count: int,
    seed: int = 0,
    names: list[str] | None = None,
    calibration: Calibration | None = None,
    number_calibration: NumberCalibration | None = None,
    line_model: torch.nn.Module | None = None,
    open_set: OpenSet | None = None,
) -> dict:
    """{"families": per family (`names`, default all) its scores, "goals": the goals' rows,
    "not_numbers": per kind of upload that is no number, how it was answered}, written with
    `digits` (the evaluation's: MNIST test); the digits' confidences calibrated with
    `calibration` and the number's with `number_calibration`, touching digits read by
    `line_model` and lines of no digit refused by `open_set`, as the service answers them (None:
    the network's own, their product, the segmentation alone, and no refusal)."""
    parts = (calibration, number_calibration, line_model, open_set)
    families = {}
    for family in names or NUMBER_FAMILIES:
        if family == "printed" and not fonts_available():
            print("numbers, printed: skipped, no fonts under /usr/share/fonts", flush=True)
            continue
        families[family] = row = family_scores(model, family, digits, labels, count, seed, *parts)
        print(
            f"numbers {family:18s} whole {row['whole_number_accuracy']:.2%}, per digit "
            f"{row['per_digit_accuracy']:.2%}, refused {row['refused']}, {row['ms_per_number']} ms",
            flush=True,
        )
    goals = {}
    for family, goal in NUMBER_GOALS.items():
        if family in families:
            goals[f"numbers, {family}: whole number"] = (goal, families[family]["whole_number_accuracy"])
    for family, goal in DIGIT_GOALS.items():
        if family in families:
            goals[f"numbers, {family}: per digit"] = (goal, families[family]["per_digit_accuracy"])
    return {
        "families": families,
        "goals": {name: {"goal": g, "measured": m, "met": m >= g} for name, (g, m) in goals.items()},
        "not_numbers": not_numbers(model, count, seed, *parts),
    }


def not_numbers(model, count: int, seed: int, *parts) -> dict:
    """Per kind of NOT_NUMBERS, `count` evaluation-split uploads (synthetic/non_digits.py) read as
    the number model reads them (`parts`: read_numbers'): how many were refused, as not_a_digit
    or otherwise, and how many answered with a number, at least CONFIDENT sure."""
    out = {}
    for kind in NOT_NUMBERS:
        outcomes, _ = read_numbers(model, [data for data, _ in described(kind, count, "eval", seed)], *parts)
        answered = [r for r in outcomes if isinstance(r, Reading)]
        refused = [r for r in outcomes if not isinstance(r, Reading)]
        out[kind] = row = {
            "uploads": len(outcomes),
            "refused": len(refused) / len(outcomes),
            "not_a_digit": sum(getattr(r, "reason", None) == "not_a_digit" for r in refused) / len(outcomes),
            "answered": len(answered) / len(outcomes),
            "answered_confident": sum(r.confidence >= CONFIDENT for r in answered) / len(outcomes),
        }
        print(
            f"not a number {kind:20s} refused {row['refused']:.1%} ({row['not_a_digit']:.1%} not_a_digit)", flush=True
        )
    return out


def markdown(section: dict) -> list[str]:
    """The report's Numbers section."""
    lines = [
        "## Numbers",
        "",
        f"The `number` model (`handler/number/`) on numbers of {LENGTHS[0]} to {LENGTHS[1]} digits "
        "(`synthetic/numbers.py`): handwritten ones written with MNIST **test** digits drawn at random from "
        "the whole test set, printed ones in the held-out fonts. *Whole number*: every digit right, none "
        "missing or extra; *per digit*: 1 - (digits replaced, missing or extra) / digits written; refusals "
        "count as wrong. *Mean confidence*: the answers' `confidence`, the probability that the whole number "
        "is right (`handler/number/confidence.py`), as the service answers them: compare it with the "
        "whole-number accuracy; *ECE*: its expected calibration error over the family's answered numbers "
        f"({ECE_BINS} bins); *digit ECE*: the same for the answered digits' `confidence`, a digit right where "
        "a least-edit alignment pairs it with the digit written there.",
        "",
        "| family | numbers | whole number | per digit | refused | mean confidence | ECE | digit ECE | ms/number "
        "| what it is |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in section["families"].items():
        lines.append(
            f"| {name} | {row['numbers']:,} | {row['whole_number_accuracy']:.2%} | {row['per_digit_accuracy']:.2%} | "
            f"{row['refused']} | {row['mean_confidence']:.3f} | {row.get('ece', 0.0):.3f} | "
            f"{row.get('digit_ece', 0.0):.3f} | {row['ms_per_number']} | {row['description']} |"
        )
    return lines + [""] + not_numbers_markdown(section.get("not_numbers", {}))


def not_numbers_markdown(kinds: dict) -> list[str]:
    """The Numbers section's table of uploads that are no number."""
    if not kinds:
        return []
    lines = [
        "### Not a number",
        "",
        "Uploads that are no number, sent to the `number` model: the evaluation split of the digit model's "
        "not-one-digit kinds (`synthetic/non_digits.py`). *Refused*: answered 4xx (*not_a_digit*: the open-set "
        "head found none of the line's digits a digit); *answered*: read as a number, and at least "
        f"{CONFIDENT:g} sure.",
        "",
        "| kind | uploads | refused | of which not_a_digit | answered | answered, confidence >= " + f"{CONFIDENT:g} |",
        "|---|---|---|---|---|---|",
    ]
    for kind, row in kinds.items():
        lines.append(
            f"| {kind} | {row['uploads']:,} | {row['refused']:.1%} | {row['not_a_digit']:.1%} | "
            f"{row['answered']:.1%} | {row['answered_confident']:.1%} |"
        )
    return lines + [""]


if __name__ == "__main__":
    from handler.calibration import CALIBRATION_FILE, load_calibration
    from handler.number.confidence import NUMBER_CALIBRATION_FILE, load_number_calibration
    from handler.served_model import served_line_network, served_network
    from model import DEFAULT_WEIGHTS, load_checkpoint
    from model.line_network import load_line_checkpoint
    from model.open_set import DEFAULT_OPEN_SET
    from ops.paths import ROOT
    from train.data import load_mnist

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--per-family", type=int, default=200, help="numbers per family")
    p.add_argument("--families", nargs="+", default=None, help="only these families")
    p.add_argument("--train-digits", action="store_true", help="write with MNIST training digits (for tuning)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.set_num_threads(1)
    net = served_network(load_checkpoint(DEFAULT_WEIGHTS))
    x, y = load_mnist(train=a.train_digits)
    calibrated = load_calibration(ROOT / CALIBRATION_FILE, DEFAULT_WEIGHTS)
    whole = load_number_calibration(ROOT / NUMBER_CALIBRATION_FILE, DEFAULT_WEIGHTS)
    line = served_line_network(load_line_checkpoint())
    head = OpenSet(DEFAULT_OPEN_SET, DEFAULT_WEIGHTS)
    parts = (calibrated, whole, line, head)
    report = numbers_report(net, x.numpy(), y.numpy(), a.per_family, a.seed, a.families, *parts)
    print("\n".join(markdown(report)))
    for name, goal in report["goals"].items():
        print(
            f"{name}: goal {goal['goal']:.0%}, measured {goal['measured']:.2%}, {'met' if goal['met'] else 'NOT met'}"
        )
