"""Lines that are no number: the digit model's open-set head (handler/open_set.py) on the digits
of each line's best path, read from the number model's one forward pass (reader.read_candidates).

The network was trained on digits alone and reads a digit in anything: without the head a word, a
drawing or a photo of something else is answered as the digits it is least unlike, most of them
0.9 sure. A line is refused (422 not_a_digit) only where none of its digits is surely a digit to
the head: one mark's verdict is wrong too often to drop it from a number (docs/decisions.md, "Signs
in a line"), every mark's together rarely is.
"""

from __future__ import annotations

from handler import inference
from handler.errors import NotADigit
from handler.number.line_reader import WholeLine
from handler.open_set import OpenSet
from model.open_set import CLASSES

# A digit is not a digit to the head where its not_a_digit probability is over this: a line is read
# only where the head gives one of its marks at least 0.8 of being a digit or several. Chosen on
# training data (docs/decisions.md): at 0.5, "likelier not a digit", a photo of something else was
# still read a quarter of the time, through one mark the head half took for a digit. A digit cut
# out of touching ones is often "several digits", no reason here.
NOT_A_NUMBER = 0.2
# No line is refused where the line reader's reading stands with at least this many digits more than
# the path has: its marks are runs of touching digits, which the head, trained on single uploads,
# takes for a scribble. A letter or a drawing the line reader reads as two digits is still refused.
TOUCHING_RUN = 2
_NOT_A_DIGIT = CLASSES.index("not_a_digit")


def refusal(no_digit: bool, path: list[int], line_read: WholeLine | None) -> NotADigit | None:
    """The 422 of a line none of whose digits is a digit to the head (`no_digit`, no_digit_lines),
    None where it is read: always, but where the line reader's reading stands (`line_read`; None:
    the segmentation's does) with TOUCHING_RUN digits more than the path's."""
    if not no_digit or (line_read is not None and len(line_read.digits) >= len(path) + TOUCHING_RUN):
        return None
    return NotADigit("not a number: what the image shows does not look like digits")


def no_digit_lines(open_set: OpenSet, candidates: inference.Reading, chosen: list[list[int]]) -> list[bool]:
    """Per line (its path's candidate rows, `chosen`), whether `open_set` finds none of them a digit
    (NOT_A_NUMBER). The head first reads each line's surest row only: a number's is a digit, and
    the line is read; the rest of a line's rows are read only where that one is not a digit."""
    confidence = candidates.probabilities.amax(1).tolist()
    surest = [max(path, key=confidence.__getitem__) for path in chosen if path]
    first = iter(_not_digits(open_set, candidates, surest))
    refused = [bool(path) and next(first) for path in chosen]
    rest = [r for path, no in zip(chosen, refused) if no for r in path]
    others = iter(_not_digits(open_set, candidates, rest))
    return [no and all([next(others) for _ in path]) for path, no in zip(chosen, refused)]


def _not_digits(open_set: OpenSet, candidates: inference.Reading, rows: list[int]) -> list[bool]:
    """Per candidate row of `rows`, whether `open_set` finds it not a digit (NOT_A_NUMBER). The head
    reads the rows as the digit model's images: the network's own probabilities, the view read,
    its pooled features and its views' count."""
    if not rows:
        return []
    picked = inference.Reading(
        candidates.probabilities[rows],
        candidates.views[rows],
        candidates.features[rows],
        [candidates.candidates[r] for r in rows],
        None,
    )
    return (open_set.probabilities(picked)[:, _NOT_A_DIGIT] > NOT_A_NUMBER).tolist()
