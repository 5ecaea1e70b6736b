from model.network import DEFAULT_WEIGHTS, DigitCNN, ModelConfig, fuse_batchnorm, load_checkpoint, save_checkpoint

__all__ = ["DEFAULT_WEIGHTS", "DigitCNN", "ModelConfig", "fuse_batchnorm", "load_checkpoint", "save_checkpoint"]
