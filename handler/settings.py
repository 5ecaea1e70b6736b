"""The handler's settings: model-config.yaml's `handler:` section, typed and checked when a worker
starts. An unknown key or a value of the wrong type stops the worker with a clear error, instead
of a silent default."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from handler.cuda_sync import SCHEDULES
from handler.inference import TTA_BELOW
from handler.preprocess.mnistify import GPU_MIN_PIXELS


class SettingsError(ValueError):
    """model-config.yaml's `handler:` section names an unknown setting or a wrong value."""


@dataclass(frozen=True)
class HandlerSettings:
    # PyTorch intra-op threads per worker: workers, not threads, are how this service scales on a
    # CPU; more threads per worker only fight each other for the same cores.
    torch_threads: int = 1
    # Answers whose (calibrated) confidence is below this, a probability of being right, are
    # counted in the LowConfidencePredictions metric: at 0.9, the answers a person should check.
    low_confidence: float = 0.9
    # Answers whose network probability, before calibration, is below this get test-time
    # augmentation (handler/inference.py; under its TURN_BELOW they are also read turned back);
    # null: none of either.
    tta_below: float | None = TTA_BELOW
    # Uploads that are not one digit are refused with 422 and a reason (handler/open_set.py), and
    # the number model's lines whose digits are none of them digits (handler/number/no_number.py);
    # false: every readable image gets a digit (a number), as before the open-set head.
    open_set: bool = True
    # On a GPU worker, images under this many pixels are preprocessed on the CPU (0: all on the GPU).
    gpu_min_pixels: int = GPU_MIN_PIXELS
    # How a GPU worker waits for its device (handler/cuda_sync.py): auto, spin, yield or block.
    cuda_sync: str = "auto"
    # Seconds between metric flushes from each worker (0: after every batch, which costs throughput).
    metrics_flush_seconds: float = 1.0
    # The fast paths of handler/fast_paths.py; false: the public path, same answers.
    buffered_socket: bool = True
    native_small_batches: bool = True
    # TorchServe's PredictionTime gauge through the handler's metrics (fast_paths.py explains why).
    route_prediction_time: bool = True

    def __post_init__(self) -> None:
        for f in fields(self):
            _check_type(f.name, getattr(self, f.name), f.type)
        if self.torch_threads < 1:
            raise SettingsError(f"handler.torch_threads must be at least 1, not {self.torch_threads}")
        if not 0 < self.low_confidence <= 1:
            raise SettingsError(f"handler.low_confidence must be a probability in (0, 1], not {self.low_confidence}")
        if self.gpu_min_pixels < 0 or self.metrics_flush_seconds < 0:
            raise SettingsError("handler.gpu_min_pixels and handler.metrics_flush_seconds must not be negative")
        if self.cuda_sync not in SCHEDULES:
            raise SettingsError(f"handler.cuda_sync must be one of {sorted(SCHEDULES)}, not {self.cuda_sync!r}")

    @classmethod
    def from_config(cls, section: dict[str, Any] | None) -> HandlerSettings:
        """model-config.yaml's `handler:` mapping (None or empty: every default)."""
        section = section or {}
        if not isinstance(section, dict):
            raise SettingsError(f"model-config.yaml's handler: must be a mapping, not {type(section).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(section) - known)
        if unknown:
            raise SettingsError(
                f"unknown setting(s) {', '.join(map(repr, unknown))} in model-config.yaml's "
                f"handler: section; known: {', '.join(sorted(known))}"
            )
        return cls(**section)


_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}


def _check_type(name: str, value: Any, annotation: str) -> None:
    """`annotation` as written in the dataclass ("float | None", ...); bool is no int here."""
    options = [part.strip() for part in str(annotation).split("|")]
    if value is None and "None" in options:
        return
    allowed = tuple(t for option in options for t in _TYPES.get(option, ()))
    if isinstance(value, bool) and bool not in allowed or not isinstance(value, allowed):
        raise SettingsError(f"handler.{name} must be {' or '.join(options)}, not {value!r}")
