"""What only AsyncDigitClient has: `async with`, `async for` over as_completed, the optional aiohttp.
The rest it shares with DigitClient is tested for both in tests/test_client.py."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from mnist_digit_client import AsyncDigitClient, Prediction, RequestRejected
from tests.conftest import FIXTURES

SEVEN = FIXTURES / "seven.png"


async def answered(client: AsyncDigitClient, images: list, concurrency: int = 4) -> dict:
    return {i: result async for i, result in client.as_completed(images, concurrency=concurrency)}


@pytest.mark.integration
def test_as_completed_yields_each_image_once_and_health_answers(server):
    async def main():
        async with AsyncDigitClient(server.inference, token_file=server.root / "key_file.json") as client:
            return await answered(client, [SEVEN] * 6, concurrency=2), await client.health()

    results, health = asyncio.run(main())
    assert sorted(results) == list(range(6)) and all(r.digit == 7 for r in results.values())
    assert health == {"status": "Healthy"}


def test_without_aiohttp_the_error_names_the_extra():
    code = "import sys; sys.modules['aiohttp'] = None; from mnist_digit_client import AsyncDigitClient"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "mnist-digit-client[asyncio]" in result.stderr
    threaded = subprocess.run(
        [sys.executable, "-c", code.replace("AsyncDigitClient", "DigitClient")], capture_output=True, timeout=60
    )
    assert threaded.returncode == 0, threaded.stderr  # the threaded client needs no aiohttp


@pytest.mark.integration
def test_async_client_against_the_real_service(server):
    images = [SEVEN, FIXTURES / "paper_seven.jpg", b"not an image", FIXTURES / "canvas_seven.png"]

    async def main():
        async with AsyncDigitClient(server.inference, token_file=server.root / "key_file.json", route="v1") as client:
            one, results = await asyncio.gather(client.predict(SEVEN), answered(client, images))
            return one, results, await client.health()

    one, results, health = asyncio.run(main())
    assert one.digit == 7 and health == {"status": "Healthy"}
    assert [results[i].digit for i in (0, 1, 3)] == [7, 7, 7] and isinstance(results[0], Prediction)
    assert isinstance(results[2], RequestRejected) and results[2].code == 415
