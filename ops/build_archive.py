"""Build model_store/mnist.mar (the digit model) or number.mar (the number model) with torch-model-archiver.

    python -m ops.build_archive [--export-path model_store] [--model-name mnist|number]
                                [--config-file model-config.yaml]

Both archives hold the committed weights: the number model reads digits that stand apart with the
digit model's network (and touching ones with its line reader). An archive holds its handler entry
point (HANDLERS), the weights, the model config, the `handler/` and `model/` packages as packages,
so that `from handler.preprocess import ...` works the same in the repository and inside a
TorchServe worker, and, at the paths they have in the repository, the weights' calibration
(model/calibration.json, handler/calibration.py), the open-set head (model/open_set.pt,
handler/open_set.py), the number's confidence (model/number_calibration.json,
handler/number/confidence.py) and the line reader's weights (model/line_reader.pt,
model/line_network.py). Its version is the release's (the VERSION file, ops/version.py) unless
--version says otherwise.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from handler.calibration import CALIBRATION_FILE
from handler.number.confidence import NUMBER_CALIBRATION_FILE
from model.line_network import LINE_READER_FILE
from model.open_set import OPEN_SET_FILE
from ops.paths import ROOT
from ops.version import release_version

PACKAGES = ("handler", "model")
# The files the archive holds besides the packages' source, weights and model config, at their
# repository paths (the Makefile's SOURCES must name each: tests/test_archive.py checks).
DATA_FILES = (CALIBRATION_FILE, OPEN_SET_FILE, NUMBER_CALIBRATION_FILE, LINE_READER_FILE)
# The models the service serves -> their handler entry points.
HANDLERS = {"mnist": ROOT / "handler" / "mnist_handler.py", "number": ROOT / "handler" / "number_handler.py"}


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--export-path", default=str(ROOT / "model_store"), help="folder for the .mar")
    p.add_argument("--model-name", default="mnist", help=f"archive and model name: {', '.join(HANDLERS)}")
    p.add_argument("--config-file", default=str(ROOT / "model-config.yaml"), help="model-config.yaml to pack")
    p.add_argument("--weights", default=str(ROOT / "model" / "mnist_cnn.pt"), help="checkpoint to pack")
    p.add_argument("--calibration", default=str(ROOT / CALIBRATION_FILE), help="the weights' calibration to pack")
    p.add_argument("--open-set", default=str(ROOT / OPEN_SET_FILE), help="open-set head to pack (model/open_set.pt)")
    p.add_argument(
        "--number-calibration",
        default=str(ROOT / NUMBER_CALIBRATION_FILE),
        help="the number's confidence model to pack (model/number_calibration.json)",
    )
    p.add_argument("--line-reader", default=str(ROOT / LINE_READER_FILE), help="line reader weights to pack")
    p.add_argument("--handler", default=None, help="handler entry file (default: the model's, HANDLERS)")
    p.add_argument("--version", default=None, help="model version (default: the VERSION file)")
    return p


def build_archive(
    export_path: str | Path,
    model_name: str = "mnist",
    config_file: str | Path | None = None,
    weights: str | Path | None = None,
    handler: str | Path | None = None,
    version: str | None = None,
    calibration: str | Path | None = None,
    open_set: str | Path | None = None,
    number_calibration: str | Path | None = None,
    line_reader: str | Path | None = None,
) -> Path:
    args = get_args_parser().parse_args([])
    config_file, weights, handler = (
        config_file or args.config_file,
        weights or args.weights,
        handler or HANDLERS[model_name],
    )
    calibration, open_set = calibration or args.calibration, open_set or args.open_set
    number_calibration = number_calibration or args.number_calibration
    line_reader = line_reader or args.line_reader
    version = version or release_version()
    export_path = Path(export_path)
    export_path.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mar-build-") as tmp:
        # The archiver copies a directory's children into the archive root: stage the packages
        # one level down so they keep their names. Only source files: the network's weights go in
        # once (--serialized-file); the calibrations, the open-set head and the line reader are not source, so staged
        # by name where the handler reads them.
        stage = Path(tmp) / "src"
        for package in PACKAGES:
            shutil.copytree(ROOT / package, stage / package, ignore=_not_source)
        for source, packed in zip((calibration, open_set, number_calibration, line_reader), DATA_FILES, strict=True):
            shutil.copy(source, stage / packed)
        # It also scratches in $TMPDIR/<model-name> and deletes it: give it a private TMPDIR.
        env = dict(os.environ, TMPDIR=tmp)
        archiver = Path(sys.executable).with_name("torch-model-archiver")
        subprocess.run(
            [
                str(archiver if archiver.exists() else "torch-model-archiver"),
                "--model-name",
                model_name,
                "--version",
                version,
                "--serialized-file",
                str(weights),
                "--handler",
                str(handler),
                "--extra-files",
                str(stage),
                "--config-file",
                str(config_file),
                "--export-path",
                str(export_path),
                "--force",
            ],
            check=True,
            env=env,
        )
    return export_path / f"{model_name}.mar"


def _not_source(folder: str, names: list[str]) -> list[str]:
    return [n for n in names if not (n.endswith((".py", ".yaml")) or (Path(folder) / n).is_dir()) or n == "__pycache__"]


if __name__ == "__main__":
    a = get_args_parser().parse_args()
    print(
        build_archive(
            a.export_path,
            a.model_name,
            a.config_file,
            a.weights,
            a.handler,
            a.version,
            a.calibration,
            a.open_set,
            a.number_calibration,
            a.line_reader,
        )
    )
