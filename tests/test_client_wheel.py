"""The client as others install it: its wheel built from client/, installed with the asyncio extra
into a fresh virtual environment outside the repository, used there against a real TorchServe.

Needs PyPI (or a configured index): pip fetches setuptools to build and the dependencies to install.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, ROOT

pytestmark = pytest.mark.integration

LEFTOVERS = ("build", "dist", "*.egg-info", "__pycache__")

ASYNC_PREDICT = """
import asyncio, sys
from mnist_digit_client import AsyncDigitClient

async def main(url, key_file, image):
    async with AsyncDigitClient(url, token_file=key_file) as client:
        print((await client.predict(image)).digit)

asyncio.run(main(*sys.argv[1:]))
"""


def run(*command: str | Path, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    result = subprocess.run(
        [str(part) for part in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"{command}: {result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    return result.stdout


def test_the_wheel_installs_alone_and_its_clients_work(server, tmp_path):
    wheels, venv, image = tmp_path / "wheels", tmp_path / "venv", FIXTURES / "seven.png"
    # Built from a copy: setuptools' build/ in the tree would keep modules deleted since, and litter it.
    source = shutil.copytree(ROOT / "client", tmp_path / "client", ignore=shutil.ignore_patterns(*LEFTOVERS))
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", source, "-w", wheels, cwd=tmp_path)
    (wheel,) = wheels.glob("mnist_digit_client-1.0.0-*.whl")
    assert "mnist_digit_client/py.typed" in zipfile.ZipFile(wheel).namelist()

    run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    run(python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", f"{wheel}[asyncio]", cwd=tmp_path)
    where = run(python, "-c", "import mnist_digit_client as m; print(m.__file__)", cwd=tmp_path)
    assert Path(where.strip()).is_relative_to(venv)
    no_torch = "import importlib.util as u; print([m for m in ('torch', 'numpy') if u.find_spec(m)])"
    assert run(python, "-c", no_torch, cwd=tmp_path).strip() == "[]"

    key_file = server.root / "key_file.json"
    cli = run(
        venv / "bin" / "mnist-digit",
        "predict",
        image,
        "--url",
        server.inference,
        "--token-file",
        key_file,
        cwd=tmp_path,
    )
    assert '"digit": 7' in cli
    assert run(python, "-c", ASYNC_PREDICT, server.inference, key_file, image, cwd=tmp_path).strip() == "7"
