"""TorchServe's key file: the one reader of its format, used by ops/ and harness/ too."""

from __future__ import annotations

import json
import os
from pathlib import Path


def read_keys(key_file: str | os.PathLike[str]) -> dict[str, str]:
    """{"inference": ..., "management": ..., "API": ...} from the key_file.json TorchServe writes
    (and rewrites on rotation)."""
    return {kind: entry["key"] for kind, entry in json.loads(Path(key_file).read_text()).items()}


def read_inference_key(key_file: str | os.PathLike[str]) -> str:
    """The inference key from TorchServe's key_file.json."""
    return read_keys(key_file)["inference"]
