from model.network import (
    DEFAULT_WEIGHTS,
    DigitCNN,
    ModelConfig,
    fuse_batchnorm,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)

__all__ = [
    "DEFAULT_WEIGHTS",
    "DigitCNN",
    "ModelConfig",
    "fuse_batchnorm",
    "load_checkpoint",
    "model_from_checkpoint",
    "save_checkpoint",
]
