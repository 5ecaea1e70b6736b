"""The best path through a line's candidate segments: which of them are the digits.

A path goes from the line's start (node 0) to its end (node A), each step either a candidate
segment (read as the digit the network finds most probable) or one atom left out (noise). Its
score is the sum of its steps' scores, found by dynamic programming over the nodes, left to right
(LeCun, Bottou, Bengio and Haffner 1998, the segmentation graph and its Viterbi search):

    segment: log P(its digit) - WIDE x (width - WIDE_FROM)+ - SHORT x (SHORT_BELOW - height)+ + DIGIT
    node:    - CUT x (the ink a cut goes through there, in stroke widths)
    left out: - SKIP x (its area / the median atom's)

Widths and heights are in line heights (segments.py). The network was trained on digits alone and
finds a digit in anything; the penalties make a path of implausible shapes lose to one of
plausible ones: two digits read as one are too wide, a piece of a digit read as one too short,
and a cut through a stroke costs what it cuts. DIGIT (per digit read) balances the sum's
preference for fewer, larger segments. The weights were chosen on numbers written with MNIST
*training* digits (docs/numbers.md).
"""

from __future__ import annotations

import numpy as np

from handler.number.segments import Lattice

WIDE_FROM, WIDE = 0.8, 1.0
SHORT_BELOW, SHORT = 0.6, 4.0
CUT = 0.3
SKIP = 3.0
DIGIT = 0.0


def segment_scores(widths: np.ndarray, heights: np.ndarray, log_confidence: np.ndarray) -> np.ndarray:
    """Candidates' (S,) widths and heights (Lattice's, in line heights) and the log-probabilities of
    their most probable digits -> (S,) their steps' scores (the candidates of several lines at once)."""
    wide = np.maximum(widths - WIDE_FROM, 0)
    short = np.maximum(SHORT_BELOW - heights, 0)
    return log_confidence - WIDE * wide - SHORT * short + DIGIT


def best_path(lat: Lattice, scores: np.ndarray) -> list[int]:
    """The candidates (indices into lat.spans) on the best-scoring path, left to right."""
    count = len(lat.atoms)
    ending: list[list[int]] = [[] for _ in range(count + 1)]  # per node, the candidates that end there
    for s, (_, end) in enumerate(lat.spans):
        ending[end].append(s)
    best = np.full(count + 1, -np.inf)
    best[0] = 0.0
    step = [-1] * (count + 1)  # the candidate that reaches each node on its best path; -1: a skip
    for node in range(1, count + 1):
        best[node] = best[node - 1] - SKIP * lat.skips[node - 1]
        for s in ending[node]:
            start = lat.spans[s][0]
            score = best[start] + scores[s]
            if score > best[node]:
                best[node], step[node] = score, s
        best[node] -= CUT * lat.cuts[node]
    path, node = [], count
    while node > 0:
        s = step[node]
        if s >= 0:
            path.append(s)
            node = lat.spans[s][0]
        else:
            node -= 1
    return path[::-1]
