import json
import os

import pytest
import torch

from model import load_checkpoint
from train.augment import AugmentConfig, augment, random_noise
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


def test_augmentation_keeps_shape_range_and_is_seeded():
    x = torch.rand(16, 1, 28, 28)
    cfg = AugmentConfig(degrees=10, translate=0.1, scale=0.1, noise_prob=0.5)
    a = augment(x, cfg, torch.Generator().manual_seed(0))
    b = augment(x, cfg, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1


def test_zero_augmentation_is_identity():
    x = torch.rand(4, 1, 28, 28)
    out = augment(x, AugmentConfig(degrees=0, translate=0, scale=0), torch.Generator().manual_seed(0))
    assert torch.allclose(out, x, atol=1e-5)
    assert torch.equal(random_noise(x, 0.0, torch.Generator().manual_seed(0)), x)


@needs_mnist
def test_dry_run_trains_and_writes_checkpoint_and_metrics(tmp_path):
    args = get_args_parser().parse_args(["--dry-run", "--no-progress", "--output", str(tmp_path / "w.pt"),
                                         "--metrics", str(tmp_path / "m.json")])
    metrics = fit(args)
    saved = json.loads((tmp_path / "m.json").read_text())
    assert saved["history"][0]["epoch"] == 1 and saved["train_images"] == 512
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and saved["images_per_s"] > 0
    model = load_checkpoint(tmp_path / "w.pt")
    assert model(torch.zeros(1, 1, 28, 28)).shape == (1, 10)
