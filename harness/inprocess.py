"""Run DigitHandler (or NumberHandler) in this process, without TorchServe: for unit tests and the
in-process benchmark."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from harness.settings import model_config
from ops.paths import ROOT
from ops.version import release_version


class InProcessContext:
    """What DigitHandler uses of TorchServe's Context, recording per-request statuses. The manifest
    is the archive's as ops.build_archive writes it (the release's version); TorchServe's request
    IDs are `request_ids` (index -> ID), empty unless a test sets them."""

    def __init__(self, model_dir: Path, gpu_id: int | None = None, model_name: str = "mnist", **settings):
        from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl

        self.model_name = model_name
        config = model_config()
        self.system_properties = {"model_dir": str(model_dir), "gpu_id": gpu_id, "batch_size": config["batchSize"]}
        self.manifest = {"model": {"serializedFile": "mnist_cnn.pt", "modelVersion": release_version()}}
        self.model_yaml_config = {"handler": {**config.get("handler", {}), **settings}}
        self.metrics = MetricsCacheYamlImpl(str(ROOT / "handler" / "metrics.yaml"))
        self.metrics.initialize_cache()
        self.statuses: dict[int, tuple[int, str]] = {}
        self.content_types: dict[int, str] = {}
        self.request_headers: dict[int, dict[str, str]] = {}  # what a test sends, per request index
        self.response_headers: dict[int, dict[str, str]] = {}
        self.request_ids: dict[int, str] = {}

    def set_response_status(self, code: int = 200, phrase: str = "", idx: int = 0) -> None:
        self.statuses[idx] = (code, phrase)

    def set_response_content_type(self, idx: int, value: str) -> None:
        self.content_types[idx] = value

    def get_request_id(self, idx: int = 0) -> str | None:
        return self.request_ids.get(idx)

    def get_all_request_header(self, idx: int) -> dict[str, str]:
        return self.request_headers.get(idx, {})

    def set_response_header(self, idx: int, key: str, value: str) -> None:
        self.response_headers.setdefault(idx, {})[key] = value


def load_handler(
    weights: Path = ROOT / "model" / "mnist_cnn.pt",
    gpu_id: int | None = None,
    model_dir: Path | None = None,
    model_name: str = "mnist",
    calibration: Path = ROOT / "model" / "calibration.json",
    **settings,
):
    """(initialized handler, its InProcessContext), with the weights and the archive's data files
    (ops.build_archive.DATA_FILES: calibration, open-set head, the number's confidence model, line
    reader) laid out as in an archive: DigitHandler, or NumberHandler for `model_name` "number";
    `settings` override model-config.yaml's `handler:` section."""
    from handler.calibration import CALIBRATION_FILE
    from handler.mnist_handler import DigitHandler
    from handler.number_handler import NumberHandler
    from ops.build_archive import DATA_FILES

    model_dir = Path(model_dir or tempfile.mkdtemp(prefix="mnist-model-"))
    shutil.copy(weights, model_dir / "mnist_cnn.pt")
    for packed in DATA_FILES:  # the repository's, but for the calibration given
        (model_dir / packed).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(calibration if packed == CALIBRATION_FILE else ROOT / packed, model_dir / packed)
    context = InProcessContext(model_dir, gpu_id=gpu_id, model_name=model_name, **settings)
    handler = NumberHandler() if model_name == "number" else DigitHandler()
    handler.initialize(context)
    return handler, context
