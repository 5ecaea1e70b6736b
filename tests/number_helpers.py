"""The number reader without a server, for tests: a batch of uploads read as the handler reads it."""

from __future__ import annotations

import torch

from handler.number.reader import read_lines, read_requests

# Sample digits (tests/fixtures/mnist_test_100.npz) that the network reads right, as a number.
NUMBER = slice(4, 9)


def read_bodies(
    served: torch.nn.Module,
    bodies: list[bytes],
    calibration=None,
    number_calibration=None,
    line_model=None,
    open_set=None,
) -> list:
    """Per upload, its Reading or the RequestError it was refused with; the calibrations, the line
    reader and the open-set head as the handler passes them to read_lines (by default none). No
    forward pass where every upload was refused, as in the handler."""
    batch = read_requests([{"body": body} for body in bodies])
    parts = (calibration, number_calibration, line_model, open_set)
    read = read_lines(served, batch, "cpu", *parts) if batch.views else []
    readings = iter(read)
    return [next(readings) if isinstance(outcome, slice) else outcome for outcome in batch.outcomes]
