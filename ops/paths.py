"""The repository root: the one place that computes it (model/ and handler/ are packed into the
archive and never need it)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def repository_path(path: str | Path) -> str:
    """`path` relative to the repository root when it is inside it (as reports name files), else absolute."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
