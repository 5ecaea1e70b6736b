"""Test-time augmentation (handler/inference.py): small turns averaged, wider ones read back."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from handler.calibration import ONE_VIEW, TURNED
from handler.inference import TURNED_SURE, read_views, tta
from handler.preprocess.mnistify import views_of_bytes
from handler.served_model import served_network
from model import DEFAULT_WEIGHTS, load_checkpoint
from synthetic.families import encode_image as png_bytes


class _Recorder(torch.nn.Module):
    """A stand-in network that records its inputs and answers uniform probabilities, except for the
    rows given in `sure`, which it reads as a sure 7; its features are the inputs' sums."""

    def __init__(self, sure: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.inputs = []
        self.sure = list(sure)

    def features_and_logits(self, x):
        self.inputs.append(x.clone())
        logits = torch.zeros(len(x), 10, device=x.device)
        logits[[i for i in self.sure if i < len(x)], 7] = 10.0
        return x.sum((1, 2, 3))[:, None], logits


def _sure_and_unsure(n: int, unsure: list[int], second: float = 0.4) -> torch.Tensor:
    p = torch.zeros(n, 10)
    p[:, 3] = 1.0
    p[unsure] = torch.tensor([1 - second - 0.1, second] + [0.0125] * 8)
    return p


def _stroke(n: int) -> torch.Tensor:
    images = torch.zeros(n, 1, 28, 28)
    images[:, :, 4:24, 13:15] = 1  # a vertical stroke, symmetric left to right
    return images


def test_sure_answers_get_no_tta():
    model, p = _Recorder(), _sure_and_unsure(4, [])
    out, turned = tta(model, torch.rand(4, 1, 28, 28), p)
    assert torch.equal(out, p) and turned is None and model.inputs == []


def test_unsure_answers_are_averaged_with_the_reading_turned_either_way():
    model, images = _Recorder(), _stroke(3)
    p = _sure_and_unsure(3, [1])
    out, turned = tta(model, images, p)
    assert torch.equal(out[[0, 2]], p[[0, 2]]) and turned is None
    assert torch.allclose(out[1], (p[1] + 2 * torch.full((10,), 0.1)) / 3)  # the recorder answers 0.1 each
    (x,) = model.inputs
    assert x.shape == (4, 1, 28, 28)  # +10, -10, +20 and -20 degrees
    assert not torch.allclose(x[0], images[1]) and torch.allclose(x[0].sum(), images[1].sum(), rtol=0.05)
    assert torch.allclose(x[0], x[1].flip(-1), atol=1e-5)  # each turn and its mirror
    assert torch.allclose(x[2], x[3].flip(-1), atol=1e-5) and not torch.allclose(x[0], x[2], atol=0.1)


def test_answers_between_the_two_lines_are_read_turned_but_not_averaged():
    model, images = _Recorder(), _stroke(2)
    p = _sure_and_unsure(2, [0], second=0.25)  # 0.65: under TURN_BELOW, over TTA_BELOW
    out, turned = tta(model, images, p)
    assert len(model.inputs) == 1 and torch.equal(out, p) and turned is None


def test_a_turn_read_sure_is_the_turned_views_reading():
    p = _sure_and_unsure(3, [0, 2])
    model = _Recorder(sure=(2 * 2 + 1,))  # rows of the re-read: turn by turn, so -20 degrees of the 2nd unsure
    out, turned = tta(model, _stroke(3), p)
    (x,) = model.inputs
    assert turned.rows == [2] and turned.probabilities.argmax(1).tolist() == [7]
    assert turned.probabilities.max() > TURNED_SURE and torch.equal(turned.views, x[5:6])
    assert turned.features.tolist() == [[x[5].sum().item()]]
    assert torch.allclose(out[0], (p[0] + 2 * torch.full((10,), 0.1)) / 3)  # averaged, both
    assert torch.allclose(out[2], (p[2] + 2 * torch.full((10,), 0.1)) / 3)


def test_a_turned_answer_keeps_the_first_read_for_the_open_set_head():
    images, p = _stroke(3), _sure_and_unsure(3, [0, 2])
    network = _Recorder(sure=(2 * 2 + 1,))
    network.features_and_logits = _first_then(network.features_and_logits, p)
    reading = read_views(network, [[v[0]] for v in images])
    (_, x) = network.inputs
    assert reading.paths.tolist() == [ONE_VIEW, ONE_VIEW, TURNED] and reading.probabilities[2].argmax() == 7
    assert torch.equal(reading.views[2], x[5]) and torch.equal(reading.views[:2], images[:2])
    first = reading.as_first_read()
    assert torch.equal(first.views, images) and first.first_read is None and first.probabilities[2].argmax() == 0
    assert torch.equal(first.features, images.sum((1, 2, 3))[:, None])


def _first_then(read, p: torch.Tensor):
    """A features_and_logits that answers `p` (as logits) on its first call, then as `read` does."""
    calls = []

    def features_and_logits(x):
        calls.append(x)
        features, logits = read(x)
        return (features, p.log()) if len(calls) == 1 else (features, logits)

    return features_and_logits


def test_tta_grids_are_the_turns_of_each_image():
    from handler.inference import _TURNS, _turn_grids

    n = 3  # turned images are ordered turn by turn: n turned one way, then n the other
    grids = F.affine_grid(_TURNS.repeat_interleave(n, 0), [4 * n, 1, 28, 28], align_corners=False)
    assert torch.equal(_turn_grids(torch.device("cpu")).repeat_interleave(n, 0), grids)


def test_digits_written_at_a_slant_are_read_turned_back(mnist_sample):
    """Real digits turned by 40 degrees: the network reads more of them right once TTA turns the
    unsure ones back, and those it turns are answered on the "turned" calibration path."""
    network = served_network(load_checkpoint(DEFAULT_WEIGHTS))
    digits, labels = mnist_sample
    turns = [40 * (-1) ** i for i in range(len(digits))]  # degrees, either way
    slanted = [np.array(Image.fromarray(d).rotate(a, resample=Image.BILINEAR)) for d, a in zip(digits, turns)]
    views = [views_of_bytes(png_bytes(d)) for d in slanted]
    plain, turned = read_views(network, views, tta_below=None), read_views(network, views)
    right = [int((r.probabilities.argmax(1).numpy() == labels).sum()) for r in (plain, turned)]
    on_path = turned.paths == TURNED
    assert right[1] > right[0] and on_path.sum() >= 10
    assert (turned.probabilities[on_path].argmax(1).numpy() == labels[on_path.numpy()]).mean() >= 0.9


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_tta_runs_on_the_images_device():
    model = _Recorder()
    images = torch.rand(2, 1, 28, 28, device="cuda")
    out, _ = tta(model, images, _sure_and_unsure(2, [0]).cuda())
    assert out.is_cuda and model.inputs[0].is_cuda
