"""The repository root: the one place that computes it (model/ and handler/ are packed into the
archive and never need it)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
