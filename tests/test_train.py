import json
import os

import numpy as np
import pytest
import torch

from model import load_checkpoint
from synthetic.corruptions import CORRUPTIONS, GEOMETRIC, LAYOUTS
from synthetic.fonts import fonts_available
from synthetic.geometry import Geometry
from train.augment import AugmentConfig, Augmenter
from train.train import RECIPES, fit, get_args_parser, resolve_args

needs_mnist = pytest.mark.skipif(
    not os.path.isdir(os.path.join(os.environ.get("MNIST_ROOT", "data"), "MNIST", "raw")),
    reason="MNIST not found: set MNIST_ROOT",
)


def test_card_recipe_defaults_are_the_model_cards():
    args = resolve_args(get_args_parser().parse_args(["--recipe", "card"]))
    assert (args.epochs, args.batch_size, args.lr, args.schedule) == (10, 32, 1e-3, "constant")
    assert (args.degrees, args.translate) == (10.0, 0.1)


def test_flags_override_the_recipe():
    args = resolve_args(get_args_parser().parse_args(["--recipe", "best", "--epochs", "3"]))
    assert args.epochs == 3 and args.batch_size == RECIPES["best"]["batch_size"]


def _augmenter(seed: int = 0, **config) -> Augmenter:
    return Augmenter(
        AugmentConfig(Geometry(**config.pop("geometry", {})), **config), torch.Generator().manual_seed(seed)
    )


def test_augmentation_keeps_shape_range_and_is_seeded():
    images, labels = torch.randint(0, 256, (32, 28, 28), dtype=torch.uint8), torch.arange(32) % 10
    config = dict(geometry=dict(degrees=10, shear=0.3, scale=0.1, translate=0.1), corrupt_prob=1.0, invert_prob=0.5)
    a, y = _augmenter(**config)(images, labels)
    b, _ = _augmenter(**config)(images, labels)
    assert a.shape == (32, 1, 28, 28) and torch.equal(a, b) and torch.equal(y, labels)
    assert a.min() >= 0 and a.max() <= 1


@pytest.mark.parametrize("name", sorted(CORRUPTIONS) + sorted(GEOMETRIC) + sorted(LAYOUTS))
def test_every_corruption_keeps_shape_and_range_at_any_strength(name):
    x = torch.rand(6, 1, 28, 28)
    corruption = CORRUPTIONS.get(name) or GEOMETRIC.get(name) or LAYOUTS[name]
    out = corruption(x, torch.tensor([0.0, 0.2, 0.4, 0.6, 0.8, 1.0]), torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1 + 1e-6


def test_zero_augmentation_is_identity():
    images, labels = torch.randint(0, 256, (4, 28, 28), dtype=torch.uint8), torch.arange(4)
    out, _ = _augmenter(geometry=dict(degrees=0, shear=0, scale=0, translate=0))(images, labels)
    assert torch.allclose(out[:, 0], images.float() / 255, atol=1e-5)


def test_training_sees_corrupted_images_through_the_serving_preprocessing():
    """serving_view gets the corrupted (and only the corrupted) images, as 8-bit (N, 28, 28) arrays."""
    seen = []

    def view(pixels, rng):
        seen.append(pixels.copy())
        return pixels * 0

    images, labels = torch.randint(0, 256, (64, 28, 28), dtype=torch.uint8), torch.arange(64) % 10
    augmenter = Augmenter(AugmentConfig(Geometry(0, 0, 0, 0), corrupt_prob=0.5), torch.Generator().manual_seed(0), view)
    out, _ = augmenter(images, labels)
    (pixels,) = seen
    assert 0 < len(pixels) < 64 and np.allclose(pixels * 255, np.round(pixels * 255), atol=1e-4)
    assert int((out.flatten(1).amax(1) == 0).sum()) >= len(pixels)


@needs_mnist
def test_dry_run_trains_and_writes_checkpoint_and_metrics(tmp_path):
    no_fonts = [] if fonts_available() else ["--printed-prob", "0"]  # make test installs them as root
    args = get_args_parser().parse_args(
        [
            "--dry-run",
            "--no-progress",
            "--output",
            str(tmp_path / "w.pt"),
            "--metrics",
            str(tmp_path / "m.json"),
            *no_fonts,
        ]
    )
    metrics = fit(args)
    saved = json.loads((tmp_path / "m.json").read_text())
    assert saved["history"][0]["epoch"] == 1 and saved["train_images"] == 512
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and saved["images_per_s"] > 0
    assert set(saved["stamp"]) >= {"commit", "command", "machine", "date"}  # ops/stamp.py
    model = load_checkpoint(tmp_path / "w.pt")
    assert model(torch.zeros(1, 1, 28, 28)).shape == (1, 10)


@needs_mnist
def test_the_line_reader_trains_with_ctc_and_writes_its_checkpoint(tmp_path):
    from model.line_network import HEIGHT, STRIDE, load_line_checkpoint
    from train import line_reader

    out = tmp_path / "line.pt"
    line_reader.main(line_reader.get_args_parser().parse_args(["--lines", "64", "--epochs", "1", "--out", str(out)]))
    model = load_line_checkpoint(out)
    checkpoint = torch.load(out, weights_only=True)
    assert checkpoint["training_lines"] > 0 and set(checkpoint["stamp"]) >= {"commit", "command", "machine"}
    p = model(torch.zeros(2, 1, HEIGHT, 10 * STRIDE)).exp()
    assert p.shape == (2, 10, 11) and torch.allclose(p.sum(-1), torch.ones(2, 10))
