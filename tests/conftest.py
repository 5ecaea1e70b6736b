from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scripts.build_archive import build_archive
from scripts.local_server import LocalTorchServe

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"


def png_bytes(pixels: np.ndarray, **save) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=save.pop("format", "PNG"), **save)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def mnist_sample() -> tuple[np.ndarray, np.ndarray]:
    """100 real MNIST test digits, (100, 28, 28) uint8, and their labels."""
    data = np.load(FIXTURES / "mnist_test_100.npz")
    return data["images"], data["labels"]


@pytest.fixture(scope="session")
def model_store(tmp_path_factory) -> Path:
    store = tmp_path_factory.mktemp("model_store")
    build_archive(store)
    return store


@pytest.fixture(scope="session")
def server(model_store):
    """The real service: the built archive under TorchServe with the repository's config."""
    ts = LocalTorchServe(model_store)
    ts.start()
    yield ts
    if logging.getLogger().isEnabledFor(logging.DEBUG):
        print(ts.log_tail())
    ts.stop()


class FakeContext:
    """What DigitHandler uses of TorchServe's Context, recording per-request statuses."""

    def __init__(self, model_dir: Path, batch_size: int = 16, gpu_id=None):
        from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl

        self.model_name = "mnist"
        self.system_properties = {"model_dir": str(model_dir), "gpu_id": gpu_id, "batch_size": batch_size}
        self.manifest = {"model": {"serializedFile": "mnist_cnn.pt"}}
        self.model_yaml_config = {"handler": {"torch_threads": 1, "low_confidence": 0.6}}
        self.metrics = MetricsCacheYamlImpl(str(ROOT / "handler" / "metrics.yaml"))
        self.metrics.initialize_cache()
        self.statuses: dict[int, tuple[int, str]] = {}
        self.content_types: dict[int, str] = {}

    def set_response_status(self, code: int = 200, phrase: str = "", idx: int = 0) -> None:
        self.statuses[idx] = (code, phrase)

    def set_response_content_type(self, idx: int, value: str) -> None:
        self.content_types[idx] = value


@pytest.fixture()
def handler_and_context(tmp_path):
    """An initialized DigitHandler over the committed weights, with a fake context."""
    import shutil

    from handler.mnist_handler import DigitHandler

    shutil.copy(ROOT / "model" / "mnist_cnn.pt", tmp_path / "mnist_cnn.pt")
    context = FakeContext(tmp_path)
    handler = DigitHandler()
    handler.initialize(context)
    return handler, context
