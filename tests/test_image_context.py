"""The image's build context is an allow-list (.dockerignore): a module the Dockerfile's COPY lines
need but the list leaves out is missing from the image only, where a worker that cannot import it
leaves its requests hanging."""

from __future__ import annotations

import subprocess
from fnmatch import fnmatchcase
from pathlib import PurePosixPath

from ops.paths import ROOT

COPIED = ("handler/", "model/", "ops/", "client/src/")  # the Dockerfile's COPY sources that hold code


def allowed(path: str, patterns: list[str]) -> bool:
    """Docker's matching: `*` stays within one path segment."""
    parts = PurePosixPath(path).parts
    for pattern in patterns:
        wanted = PurePosixPath(pattern).parts
        if len(wanted) == len(parts) and all(fnmatchcase(p, w) for p, w in zip(parts, wanted)):
            return True
    return False


def test_every_module_the_image_copies_is_in_its_build_context():
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line[1:] for line in lines if line.startswith("!")]
    tracked = subprocess.run(["git", "ls-files", *COPIED], cwd=ROOT, capture_output=True, text=True, check=True)
    modules = [path for path in tracked.stdout.split() if path.endswith(".py")]
    assert any(m.startswith("handler/number/") for m in modules)
    assert [m for m in modules if not allowed(m, patterns)] == []
