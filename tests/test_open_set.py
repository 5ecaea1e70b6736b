"""Uploads that are not one digit: the generators of synthetic/non_digits.py, the open-set head
(model/open_set.py, handler/open_set.py) in process, and its training command."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from handler.errors import REASONS, NoDigitFound, NotADigit, NotOneDigit, SeveralDigits
from handler.inference import digit_probabilities, read_views, to_batch
from handler.open_set import GEOMETRY, OpenSet, geometry, head_inputs
from handler.preprocess.mnistify import views_of_bytes
from handler.served_model import served_network
from harness.samples import not_one_digit_samples
from model import DEFAULT_WEIGHTS, load_checkpoint
from model.open_set import CLASSES, DEFAULT_OPEN_SET, load_head
from ops.paths import ROOT
from synthetic import non_digits
from synthetic.families import encode_image as png_bytes
from synthetic.fonts import font_files, split_fonts
from train.open_set import DIGIT_GROUPS, GROUPS, inputs_of, read_uploads


@pytest.fixture(scope="module")
def network():
    return served_network(load_checkpoint())


@pytest.fixture(scope="module")
def open_set():
    return OpenSet(DEFAULT_OPEN_SET, DEFAULT_WEIGHTS)


# -- the generators


def uploads(*args, **kwargs) -> list[bytes]:
    """non_digits.described's uploads, without what each shows."""
    return [data for data, _ in non_digits.described(*args, **kwargs)]


@pytest.mark.parametrize("kind", list(non_digits.KINDS))
def test_each_kind_is_reproducible_and_its_splits_differ(kind, mnist_sample):
    digits = mnist_sample[0]
    first = uploads(kind, 6, "eval", seed=3, mnist=digits)
    assert first == uploads(kind, 6, "eval", seed=3, mnist=digits)
    assert first != uploads(kind, 6, "eval", seed=4, mnist=digits)
    assert not set(first) & set(uploads(kind, 6, "train", seed=3, mnist=digits))
    for data in first:
        assert Image.open(io.BytesIO(data)).size[0] >= 28  # a real image file


def test_the_letter_kinds_leave_out_glyphs_written_like_digits_and_the_splits_share_no_font():
    assert not set(non_digits.GLYPH_SET) & set(non_digits.AMBIGUOUS)
    assert set(non_digits.AMBIGUOUS.values()) <= set("0123456789")
    training, held_out = split_fonts(font_files())
    assert not set(training) & set(held_out)
    uploads, glyphs = non_digits.ambiguous_glyphs(8, seed=1)
    assert len(uploads) == 8 and set(glyphs) <= set(non_digits.AMBIGUOUS)


def test_several_digits_are_side_by_side(mnist_sample):
    rng = np.random.default_rng(0)
    ink = non_digits.side_by_side(mnist_sample[0][:3], rng)
    assert ink.shape[1] > 2 * ink.shape[0]  # three digits: wider than tall
    assert 0 < ink.max() <= 1


# -- the features the head reads: one forward pass, digits unchanged


def test_features_and_logits_are_one_forward_pass_with_the_same_logits(network, mnist_sample):
    x = torch.from_numpy(mnist_sample[0][:16]).float()[:, None] / 255
    for model in (network, load_checkpoint()):
        with torch.inference_mode():
            features, logits = model.features_and_logits(x)
            assert torch.equal(logits, model(x))  # bit-identical: the digits cannot move
        assert features.shape == (16, 384)


def test_read_views_answers_what_digit_probabilities_always_did(network, mnist_sample):
    views = [views_of_bytes(png_bytes(d)) for d in mnist_sample[0][:20]]
    reading = read_views(network, views)
    inputs, _ = to_batch(views)
    with torch.inference_mode():
        plain = torch.softmax(network(inputs), 1)  # one view each here: no choice to make
    assert torch.equal(reading.probabilities, digit_probabilities(network, views))
    assert torch.equal(read_views(network, views, tta_below=None).probabilities, plain)  # bit for bit
    assert reading.views.shape == (20, 1, 28, 28) and reading.features.shape == (20, 384)
    assert reading.candidates == [len(v) for v in views]


def test_the_worker_gives_the_head_the_networks_probabilities_and_answers_calibrated_ones(
    handler_and_context, network, mnist_sample, monkeypatch
):
    """The head was trained on the network's own probabilities after TTA: the worker passes it
    those, not the calibrated ones it answers with (handler/calibration.py)."""
    handler, context = handler_and_context
    uploads = [png_bytes(d) for d in mnist_sample[0][:8]]
    seen = []
    refusals = handler.open_set.refusals
    monkeypatch.setattr(handler.open_set, "refusals", lambda reading: seen.append(reading) or refusals(reading))
    answered = [json.loads(a) for a in handler.handle([{"body": u} for u in uploads], context)]
    raw = read_views(network, [views_of_bytes(u) for u in uploads]).probabilities
    (reading,) = seen
    assert torch.allclose(reading.probabilities, raw, atol=1e-6)
    calibrated = torch.tensor([a["probabilities"] for a in answered])
    assert torch.allclose(calibrated, reading.calibrated(handler.calibration), atol=1e-6)
    assert not torch.allclose(calibrated, raw, atol=1e-3)  # the calibration moves them


def test_geometry_counts_runs_of_ink_and_the_aspect():
    views = torch.zeros(3, 1, 28, 28)
    views[0, 0, 4:24, 12:16] = 1  # one upright bar: tall, one run each way
    views[1, 0, 10:18, 2:10] = 1  # two blocks side by side: wide, two column runs
    views[1, 0, 10:18, 16:26] = 1
    # the third stays empty
    g = geometry(views)
    assert g.shape == (3, len(GEOMETRY))
    assert g[0, 0] < 0 and g[1, 0] > 0  # log(columns / rows)
    assert g[0, 1:3].tolist() == [1, 1] and g[1, 1:3].tolist() == [2, 1]
    assert g[2].tolist() == [0, 0, 0, 0, 0]


# -- the head


def test_the_committed_head_is_small_and_says_where_it_came_from():
    assert DEFAULT_OPEN_SET.stat().st_size < 256_000  # well under a megabyte
    checkpoint = torch.load(DEFAULT_OPEN_SET, weights_only=True)
    assert checkpoint["config"]["network"] == hashlib.sha256(DEFAULT_WEIGHTS.read_bytes()).hexdigest()
    provenance = checkpoint["provenance"]
    assert provenance["stamp"]["command"].startswith("python -m train.open_set")
    assert set(provenance["training_uploads"]) == set(GROUPS)
    assert set(GROUPS) - set(DIGIT_GROUPS) <= set(provenance["held_out"]) and "rotation" in provenance["held_out"]
    head = load_head()
    assert head.config.inputs == 384 + 10 + 2 + len(GEOMETRY) + 1 and 0 < head.config.digit_below < 1


def test_a_head_trained_on_another_network_stops_the_worker(tmp_path):
    other = tmp_path / "other.pt"
    other.write_bytes(DEFAULT_WEIGHTS.read_bytes() + b"\0")
    with pytest.raises(ValueError, match="another digit network"):
        OpenSet(DEFAULT_OPEN_SET, other)


def test_real_digits_are_answered(network, open_set, mnist_sample):
    views = [views_of_bytes(png_bytes(d)) for d in mnist_sample[0]]
    assert open_set.refusals(read_views(network, views)) == [None] * len(views)


@pytest.mark.parametrize("name", ["letter", "doodle", "several_digits"])
def test_a_letter_a_doodle_and_several_digits_are_refused_with_their_reason(network, open_set, name):
    data, reason = not_one_digit_samples()[name]
    (refusal,) = open_set.refusals(read_views(network, [views_of_bytes(data)]))
    assert isinstance(refusal, NotOneDigit) and refusal.status == 422 and refusal.reason == reason
    assert refusal.body() == {"code": 422, "reason": reason, "error": refusal.message}


def test_the_reasons_and_their_errors():
    assert REASONS == ("no_digit",) + CLASSES[1:]
    assert [e().reason for e in (NoDigitFound, NotADigit, SeveralDigits)] == list(REASONS)
    assert "one digit per image" in SeveralDigits().message


def test_the_head_reads_a_batch_as_it_reads_each_image(network, open_set, mnist_sample):
    samples = not_one_digit_samples()
    uploads = [png_bytes(d) for d in mnist_sample[0][:5]] + [data for data, _ in samples.values()]
    views = [views_of_bytes(d) for d in uploads]
    together = [r and r.reason for r in open_set.refusals(read_views(network, views))]
    alone = [r and r.reason for v in views for r in open_set.refusals(read_views(network, [v]))]
    assert together == alone == [None] * 5 + [reason for _, reason in samples.values()]
    x = head_inputs(read_views(network, views))
    assert x.shape == (len(uploads), open_set.head.config.inputs) and torch.isfinite(x).all()


# -- training


def test_the_served_head_gives_the_trained_heads_probabilities(network, open_set, mnist_sample):
    """The worker folds the inputs' standardization into the first layer: the same probabilities."""
    uploads = [png_bytes(d) for d in mnist_sample[0][:8]] + [data for data, _ in not_one_digit_samples().values()]
    reading = read_views(network, [views_of_bytes(d) for d in uploads])
    with torch.inference_mode():
        trained = open_set.head(head_inputs(reading)).exp()
    assert torch.allclose(open_set.probabilities(reading), trained, atol=1e-5)


def test_training_reads_each_upload_as_the_head_judges_it(network, mnist_sample):
    """Digits at a slant, some answered with a turned view: training keeps each as first read
    (Reading.as_first_read), the view and probabilities the head judges in serving, and the
    head's inputs made from what it keeps are serving's. A blank upload is left out, as served."""
    digits = [
        np.array(Image.fromarray(d).rotate(40 * (-1) ** i, resample=Image.BILINEAR))
        for i, d in enumerate(mnist_sample[0])
    ]
    uploads = [png_bytes(d) for d in digits] + [png_bytes(np.zeros((28, 28), np.uint8))]
    read, kept = read_uploads(network, uploads)
    served = read_views(network, [views_of_bytes(d) for d in uploads[:-1]])
    assert kept == list(range(len(digits))) and served.first_read is not None  # some were turned
    first = served.as_first_read()
    assert np.array_equal(read["views"], first.views[:, 0].half().numpy())
    assert np.array_equal(read["probabilities"], first.probabilities.numpy())
    assert not np.array_equal(read["views"], served.views[:, 0].half().numpy())
    # the views kept in float16: features within 1e-3, a pixel's tone at a bound within 1%
    assert np.allclose(inputs_of(network, read), head_inputs(served).numpy(), atol=0.01)


def test_the_training_command_writes_a_head_the_handler_loads(tmp_path):
    """A small run (a few hundred uploads) of `python -m train.open_set`, from the uploads to the file."""
    out = tmp_path / "open_set.pt"
    command = [sys.executable, "-m", "train.open_set", "--scale", "0.003", "--workers", "1", "--members", "2"]
    subprocess.run([*command, "--output", str(out)], cwd=ROOT, check=True, timeout=600)
    head = OpenSet(out, DEFAULT_WEIGHTS)
    provenance = torch.load(out, weights_only=True)["provenance"]
    assert set(GROUPS) - set(DIGIT_GROUPS) <= set(provenance["held_out"]) and "clean" in provenance["held_out"]
    assert 0 <= head.digit_below <= 1 and head.head.config.members == 2
