"""Calibrated confidence (handler/calibration.py, train/calibrate.py): the fit, the transform, the
committed calibration, and the handler's answers in-process and through the real TorchServe."""

from __future__ import annotations

import json
import logging
import zipfile

import numpy as np
import pytest
import torch

from handler.calibration import (
    CALIBRATION_FILE,
    ONE_VIEW,
    PATHS,
    VIEWS_AGREE,
    VIEWS_DISAGREE,
    Calibration,
    CalibrationError,
    load_calibration,
    view_paths,
)
from handler.inference import read_views
from handler.preprocess.mnistify import views_of_bytes
from handler.served_model import served_network
from model import DEFAULT_WEIGHTS, load_checkpoint
from ops.paths import ROOT
from synthetic.families import generate
from tests.conftest import FIXTURES
from tests.test_train import needs_mnist
from train.calibrate import expected_calibration_error, fit_temperature, reliability

COMMITTED = ROOT / CALIBRATION_FILE


@pytest.mark.parametrize("temperature", [0.6, 1.0, 1.7])
def test_the_fit_recovers_a_known_temperature(temperature):
    """Labels drawn from softmax(z / T) of logits z: fitted on softmax(z), the temperature is T."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(40_000, 10, generator=g) * 3
    labels = torch.multinomial(torch.softmax(logits / temperature, 1), 1, generator=g)[:, 0]
    assert fit_temperature(torch.softmax(logits, 1), labels) == pytest.approx(temperature, rel=0.03)


def test_calibrated_probabilities_sum_to_one_and_keep_the_argmax():
    g = torch.Generator().manual_seed(1)
    p = torch.softmax(torch.randn(500, 10, generator=g) * torch.rand(500, 1, generator=g) * 8, 1)
    p[:5, 3] = 0.0  # underflowed classes stay at 0
    p = p / p.sum(1, keepdim=True)
    p[5] = 0.1  # an exact tie stays a tie, answered by its first digit
    paths = torch.randint(0, len(PATHS), (500,), generator=g)
    calibration = Calibration((0.5, 0.8, 1.6, 0.7))
    for q in (calibration(p, paths), calibration(p, None)):
        assert torch.allclose(q.sum(1), torch.ones(500), atol=1e-5)
        assert torch.equal(q.argmax(1), p.argmax(1)) and (q[:5, 3] == 0).all()
    q = calibration(p, paths)
    sharpened, softened = paths == 0, paths == 2  # T < 1 raises the top probability, T > 1 lowers it
    assert (q.amax(1)[sharpened] >= p.amax(1)[sharpened] - 1e-6).all()
    assert (q.amax(1)[softened] <= p.amax(1)[softened] + 1e-6).all()
    one = torch.tensor([[0.7, 0.2, 0.1] + [0.0] * 7])
    expected = torch.softmax(one.log() / 0.5, 1)
    assert torch.allclose(calibration(one, None), expected)
    assert torch.allclose(calibration(one, torch.tensor([ONE_VIEW])), expected)


def test_a_temperature_must_be_positive_and_one_per_path():
    for temperatures in ((0.5, 0.5, 0.5), (0.5, 0.0, 1.0, 1.0), (0.5, -1.0, 1.0, 1.0)):
        with pytest.raises(CalibrationError):
            Calibration(temperatures)


def test_each_image_takes_the_path_of_its_views():
    """One view; several read as one digit; several read as different digits."""
    p = torch.zeros(6, 10)
    p[[0, 1, 2, 4], 3] = 0.9
    p[3, 5], p[5, 3] = 0.9, 0.95
    counts, best = [1, 2, 1, 2], [0, 1, 3, 5]  # images: view 0; views 1-2; view 3; views 4-5
    assert view_paths(p, counts, best).tolist() == [ONE_VIEW, VIEWS_AGREE, ONE_VIEW, VIEWS_AGREE]
    p[4, 3], p[4, 8] = 0.0, 0.9
    assert view_paths(p, counts, best).tolist() == [ONE_VIEW, VIEWS_AGREE, ONE_VIEW, VIEWS_DISAGREE]
    assert view_paths(p[:2], [1, 1], slice(None)) is None  # one view each


def test_the_expected_calibration_error_of_known_answers():
    """15 equal-width bins, (i/15, (i+1)/15]; each weighted by its share of the answers."""
    conf = np.array([0.9] * 10 + [1.0] * 10)
    correct = np.array([1] * 9 + [0] + [1] * 5 + [0] * 5, dtype=bool)
    assert expected_calibration_error(conf, correct) == pytest.approx(0.5 * 0 + 0.5 * 0.5)
    bins = reliability(conf, correct)
    assert len(bins) == 15 and bins[13][0] == 10 and bins[14] == (10, 1.0, 0.5)  # 0.9 is in (13/15, 14/15]
    assert expected_calibration_error(np.array([0.5, 0.5]), np.array([True, False])) == 0


def test_the_committed_calibration_is_of_the_committed_weights_and_says_how_it_was_fitted():
    stored = json.loads(COMMITTED.read_text())
    calibration = load_calibration(COMMITTED, DEFAULT_WEIGHTS)
    assert calibration.as_dict() == stored["temperatures"] and set(stored["temperatures"]) == set(PATHS)
    assert stored["fit_set"]["images"] > 10_000 and stored["fit"]["ece_after"] < stored["fit"]["ece_before"]
    assert stored["fit"]["digits_changed"] == 0 and stored["stamp"]["commit"]


def test_a_calibration_of_other_weights_or_without_a_temperature_is_refused(tmp_path):
    stored = json.loads(COMMITTED.read_text())
    other = tmp_path / "calibration.json"
    other.write_text(json.dumps(stored | {"weights_sha256": "0" * 64}))
    with pytest.raises(CalibrationError, match="make calibrate"):
        load_calibration(other, DEFAULT_WEIGHTS)
    other.write_text(json.dumps(stored | {"temperatures": {"one_view": 0.5}}))
    with pytest.raises(CalibrationError, match="views_agree, views_disagree, turned"):
        load_calibration(other, DEFAULT_WEIGHTS)
    with pytest.raises(CalibrationError, match="cannot read"):
        load_calibration(tmp_path / "missing.json", DEFAULT_WEIGHTS)


def test_a_worker_with_a_calibration_of_other_weights_does_not_start(tmp_path):
    from harness.inprocess import load_handler

    other = tmp_path / "calibration.json"
    other.write_text(json.dumps(json.loads(COMMITTED.read_text()) | {"weights_sha256": "0" * 64}))
    with pytest.raises(CalibrationError):
        load_handler(calibration=other)


def test_the_calibration_travels_in_the_archive(model_store):
    with zipfile.ZipFile(model_store / "mnist.mar") as archive:
        assert archive.read(str(CALIBRATION_FILE)) == COMMITTED.read_bytes()


def _served(uploads: list[bytes]) -> tuple[torch.Tensor, torch.Tensor]:
    """The network's probabilities of the uploads as the handler reads them, and calibrated."""
    model = served_network(load_checkpoint(DEFAULT_WEIGHTS))
    reading = read_views(model, [views_of_bytes(u) for u in uploads])
    return reading.probabilities, reading.calibrated(load_calibration(COMMITTED, DEFAULT_WEIGHTS))


def _uploads(mnist_sample) -> list[bytes]:
    """The fixture seven (one view) and noisy digits (several views, some of them disagreeing)."""
    noisy = generate("crossing_lines_strong", mnist_sample[0][:12], seed=0)
    return [(FIXTURES / "seven.png").read_bytes(), *noisy]


def test_the_handler_answers_calibrated_confidences_and_counts_them_on_its_line(
    handler_and_context, mnist_sample, caplog
):
    handler, context = handler_and_context
    uploads = _uploads(mnist_sample)
    raw, calibrated = _served(uploads)
    with caplog.at_level(logging.INFO):
        out = [json.loads(a) for a in handler.handle([{"body": u} for u in uploads], context)]
    assert [a["digit"] for a in out] == raw.argmax(1).tolist()
    assert np.allclose([a["probabilities"] for a in out], calibrated.numpy(), atol=1e-6)
    assert not np.allclose([a["confidence"] for a in out], raw.amax(1).numpy(), atol=1e-3)
    unsure = sum(a["confidence"] < handler.settings.low_confidence for a in out)
    counted = [r.getMessage() for r in caplog.records if "[METRICS]LowConfidencePredictions." in r.getMessage()]
    assert unsure > 0 and any(f"LowConfidencePredictions.Count:{unsure}|" in line for line in counted), counted


@pytest.mark.integration
def test_the_server_answers_the_calibrated_confidence_of_the_networks_probabilities(server, mnist_sample):
    uploads = _uploads(mnist_sample)[:4]
    raw, calibrated = _served(uploads)
    for upload, p, q in zip(uploads, raw, calibrated):
        response = server.predict(upload, "image/png")
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["digit"] == int(p.argmax())
        assert answer["confidence"] == pytest.approx(float(q.max()), abs=1e-6)
        assert answer["probabilities"] == pytest.approx(q.tolist(), abs=1e-6)
        assert abs(answer["confidence"] - float(p.max())) > 1e-3  # calibrated, not the network's own


@needs_mnist
def test_a_small_fit_writes_a_calibration_the_handler_accepts(tmp_path):
    from train.calibrate import get_args_parser, main

    out = tmp_path / "calibration.json"
    result = main(get_args_parser().parse_args(["--per-family", "6", "--out", str(out)]))
    assert load_calibration(out, DEFAULT_WEIGHTS).as_dict() == result["temperatures"]
    assert result["fit_set"]["images"] == 6 * len(result["fit_set"]["families"])
