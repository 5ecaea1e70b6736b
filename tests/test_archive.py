"""What `make archive` packs: every source module of the packages, the weights and the data files at
their repository paths; and the Makefile rebuilds an archive when any of them changes."""

from __future__ import annotations

import json
import re
import zipfile

from ops.build_archive import DATA_FILES, PACKAGES
from ops.paths import ROOT


def makefile_sources() -> list[str]:
    """The Makefile's SOURCES, its wildcards expanded as make expands them."""
    line = next(x for x in (ROOT / "Makefile").read_text().splitlines() if x.startswith("SOURCES :="))
    wildcards = re.search(r"\$\(wildcard ([^)]*)\)", line)
    named = line[wildcards.end() :].split() if wildcards else line.split(":=", 1)[1].split()
    globbed = [str(p.relative_to(ROOT)) for w in (wildcards[1].split() if wildcards else []) for p in ROOT.glob(w)]
    return sorted(set(globbed) | set(named))


def package_sources() -> set[str]:
    """Every module of the packages the archive holds, by its repository path."""
    return {
        str(p.relative_to(ROOT)) for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py") if "__pycache__" not in p.parts
    }


def test_each_archive_holds_the_packages_source_and_the_data_files(model_store):
    source = package_sources()
    for mar in ("mnist.mar", "number.mar"):
        with zipfile.ZipFile(model_store / mar) as archive:
            names = set(archive.namelist())
            manifest = json.loads(archive.read("MAR-INF/MANIFEST.json"))["model"]
        assert source <= names, (mar, sorted(source - names))
        assert {str(f) for f in DATA_FILES} <= names, mar
        assert manifest["serializedFile"] == "mnist_cnn.pt" and "mnist_cnn.pt" in names


def test_the_makefile_rebuilds_an_archive_when_anything_it_packs_changes():
    sources = set(makefile_sources())
    packed = {str(f) for f in DATA_FILES} | {"model/mnist_cnn.pt", "model-config.yaml", "VERSION"} | package_sources()
    assert packed <= sources, sorted(packed - sources)
