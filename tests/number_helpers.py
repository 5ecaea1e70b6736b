"""The number reader without a server, for tests: a batch of uploads read as the handler reads it."""

from __future__ import annotations

import torch

from handler.number.reader import read_lines, read_requests

# Sample digits (tests/fixtures/mnist_test_100.npz) that the network reads right, as a number.
NUMBER = slice(4, 9)


def read_bodies(served: torch.nn.Module, bodies: list[bytes]) -> list:
    """Per upload, its Reading or the RequestError it was refused with (no calibrations)."""
    batch = read_requests([{"body": body} for body in bodies])
    readings = iter(read_lines(served, batch, "cpu") if batch.views else [])
    return [next(readings) if isinstance(outcome, slice) else outcome for outcome in batch.outcomes]
