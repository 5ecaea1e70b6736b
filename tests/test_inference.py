"""Test-time augmentation (handler/inference.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from handler.inference import tta


class _Recorder(torch.nn.Module):
    """A stand-in network that records its inputs and answers uniform probabilities."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs = []

    def forward(self, x):
        self.inputs.append(x.clone())
        return torch.zeros(len(x), 10, device=x.device)


def _sure_and_unsure(n: int, unsure: list[int]) -> torch.Tensor:
    p = torch.zeros(n, 10)
    p[:, 3] = 1.0
    p[unsure] = torch.tensor([0.5, 0.4] + [0.0125] * 8)
    return p


def test_sure_answers_get_no_tta():
    model = _Recorder()
    p = _sure_and_unsure(4, [])
    assert torch.equal(tta(model, torch.rand(4, 1, 28, 28), p), p) and model.inputs == []


def test_unsure_answers_are_averaged_with_the_reading_turned_either_way():
    model = _Recorder()
    images = torch.zeros(3, 1, 28, 28)
    images[:, :, 4:24, 13:15] = 1  # a vertical stroke, symmetric left to right
    p = _sure_and_unsure(3, [1])
    out = tta(model, images, p)
    assert torch.equal(out[[0, 2]], p[[0, 2]])
    assert torch.allclose(out[1], (p[1] + 2 * torch.full((10,), 0.1)) / 3)  # the recorder answers 0.1 each
    (turned,) = model.inputs
    assert turned.shape == (2, 1, 28, 28)
    assert not torch.allclose(turned[0], images[1]) and torch.allclose(turned[0].sum(), images[1].sum(), rtol=0.05)
    assert torch.allclose(turned[0], turned[1].flip(-1), atol=1e-5)  # +10 and -10 degrees mirror each other


def test_tta_grids_are_the_turns_of_each_image():
    from handler.inference import _TURNS, _turn_grids

    n = 3  # turned images are ordered turn by turn: n turned one way, then n the other
    grids = F.affine_grid(_TURNS.repeat_interleave(n, 0), [2 * n, 1, 28, 28], align_corners=False)
    assert torch.equal(_turn_grids(torch.device("cpu")).repeat_interleave(n, 0), grids)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_tta_runs_on_the_images_device():
    model = _Recorder()
    out = tta(model, torch.rand(2, 1, 28, 28, device="cuda"), _sure_and_unsure(2, [0]).cuda())
    assert out.is_cuda and model.inputs[0].is_cuda
