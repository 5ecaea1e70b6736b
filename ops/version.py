"""The release version: the one place that holds it is the VERSION file at the repository root (in
the image: /opt/mnist/VERSION). The archive's version (torch-model-archiver --version), the
model_snapshot that registers it, the image's tag and the answers' model version all come from it
(the answers' through the archive's manifest).

Not the client's version: the client (client/, its own package) is released on its own schedule,
and a retrained model is a new service release without a new client.
"""

from __future__ import annotations

import re
from pathlib import Path

from ops.paths import ROOT

VERSION_FILE = ROOT / "VERSION"
# What torch-model-archiver accepts and what a container tag may hold: digits, letters, . _ -
_VERSION = re.compile(r"[0-9A-Za-z][0-9A-Za-z._-]{0,63}")


def release_version(path: Path = VERSION_FILE) -> str:
    version = path.read_text().strip()
    if not _VERSION.fullmatch(version):
        raise ValueError(f"{path}: {version!r} is not a version (digits, letters, '.', '_', '-')")
    return version


if __name__ == "__main__":
    print(release_version())
