import torch
from torch import nn

from model import DEFAULT_WEIGHTS, DigitCNN, ModelConfig, fuse_batchnorm, load_checkpoint, save_checkpoint


def test_architecture_is_the_model_cards():
    model = DigitCNN()
    kinds = [type(m) for m in model.modules() if not isinstance(m, (nn.Sequential, DigitCNN))]
    assert kinds.count(nn.Conv2d) == 3
    assert kinds.count(nn.ReLU) == 3
    assert kinds.count(nn.AdaptiveAvgPool2d) == 1
    assert kinds.count(nn.Linear) == 1
    # each convolution (with its BatchNorm) is followed by a ReLU
    layers = list(model.features)
    for i, layer in enumerate(layers):
        if isinstance(layer, nn.Conv2d):
            after = layers[i + 1 : i + 3]
            assert any(isinstance(m, nn.ReLU) for m in after)


def test_forward_shapes():
    model = DigitCNN().eval()
    for n in (1, 7, 64):
        assert model(torch.zeros(n, 1, 28, 28)).shape == (n, 10)


def test_checkpoint_round_trip_keeps_config(tmp_path):
    config = ModelConfig(channels=(8, 16, 32), batch_norm=False, pool_size=1)
    model = DigitCNN(config).eval()
    save_checkpoint(model, tmp_path / "m.pt", note="x")
    loaded = load_checkpoint(tmp_path / "m.pt")
    assert loaded.config == config
    x = torch.randn(3, 1, 28, 28)
    with torch.inference_mode():  # weights are stored as fp16
        assert torch.allclose(model(x), loaded(x), atol=1e-2)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())


def test_committed_weights_load_and_are_small():
    assert DEFAULT_WEIGHTS.stat().st_size < 1_000_000
    model = load_checkpoint()
    assert not model.training
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_normalize_is_the_cards():
    assert torch.equal(DigitCNN().normalize(torch.tensor([0.0, 0.5, 1.0])), torch.tensor([-1.0, 0.0, 1.0]))


def test_normalization_travels_with_the_weights(tmp_path):
    """Checkpoints saved before mean/std were in the config load with the card's 0.5/0.5; new ones keep theirs."""
    old = torch.load(DEFAULT_WEIGHTS, weights_only=True)
    for key in ("mean", "std"):
        old["config"].pop(key, None)
    torch.save(old, tmp_path / "old.pt")
    assert (load_checkpoint(tmp_path / "old.pt").config.mean, load_checkpoint(tmp_path / "old.pt").config.std) == (
        0.5,
        0.5,
    )
    model = DigitCNN(ModelConfig(mean=0.1307, std=0.3081)).eval()
    save_checkpoint(model, tmp_path / "m.pt")
    loaded = load_checkpoint(tmp_path / "m.pt")
    assert (loaded.config.mean, loaded.config.std) == (0.1307, 0.3081)
    x = torch.rand(2, 1, 28, 28)
    with torch.inference_mode():
        assert torch.allclose(loaded(x), model(x), atol=1e-2)


def test_fused_batchnorm_gives_the_same_outputs():
    model = load_checkpoint()
    fused = fuse_batchnorm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the original is untouched
    x = torch.randn(8, 1, 28, 28)
    with torch.inference_mode():
        assert torch.allclose(model(x), fused(x), atol=1e-4)
