"""AsyncDigitClient: DigitClient for asyncio, over aiohttp (`pip install 'mnist-digit-client[asyncio]'`).

The same options, retries, deadline, request-ID check, typed errors and key re-read: the decisions
are calls.Call's, shared with DigitClient; only sending and sleeping are asyncio's here. An image
path is read synchronously (image files are small), pixels are encoded as a PNG synchronously too.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable

try:
    import aiohttp
except ImportError as error:  # pragma: no cover - depends on the installation
    raise ImportError("AsyncDigitClient needs aiohttp: pip install 'mnist-digit-client[asyncio]'") from error

from mnist_digit_client.calls import JSON, Attempt, Call, Outcome, Request, T, no_answer
from mnist_digit_client.core import NUMBER_MODEL, ClientBase, Result, as_result, in_order
from mnist_digit_client.errors import DigitServiceError
from mnist_digit_client.images import Image
from mnist_digit_client.routes import Explanation, NumberReading, Prediction


class AsyncDigitClient(ClientBase):
    """asyncio client of one digit service; use it from one event loop.

        async with AsyncDigitClient(token_file="key_file.json") as client:
            (await client.predict("seven.png")).digit                  # 7
            (await client.read_number("meter.jpg")).number             # "4096"
            await client.predict_many(paths, concurrency=16)           # [Prediction | DigitServiceError, ...]
            (await client.explain("seven.png")).attributions           # 28 rows of 28 floats
            async for i, result in client.as_completed(paths):         # as each is answered
                ...

    Options and retries: ClientBase and DigitClient.
    """

    _session: aiohttp.ClientSession | None

    def _open(self, pool_size: int) -> None:
        self.pool_size = pool_size
        self._session = None  # made on first use, inside the running loop

    # -- public API

    async def predict(self, image: Image) -> Prediction:
        return await self._call(self._predict_request(image))

    async def read_number(self, image: Image, model: str = NUMBER_MODEL) -> NumberReading:
        """The number in the image, from the service's number model (DigitClient.read_number)."""
        return await self._call(self._number_request(image, model))

    async def explain(self, image: Image) -> Explanation:
        """DigitClient.explain: the prediction, the view the network read and its attributions."""
        return await self._call(self._explain_request(image))

    async def as_completed(self, images: Iterable[Image], concurrency: int = 8) -> AsyncIterator[tuple[int, Result]]:
        """(index, Prediction or the error) for each image, in the order they are answered."""
        slots = asyncio.Semaphore(max(1, concurrency))

        async def one(i: int, image: Image) -> tuple[int, Result]:
            async with slots:
                return i, await self._predict_or_error(image)

        tasks = [asyncio.ensure_future(one(i, image)) for i, image in enumerate(images)]
        try:
            for answered in asyncio.as_completed(tasks):
                yield await answered
        finally:  # the caller stopped early: no request goes on without it
            for task in tasks:
                task.cancel()

    async def predict_many(self, images: Iterable[Image], concurrency: int = 8) -> list[Result]:
        """One result per image, in input order; a failed image gives its error, not an exception."""
        images = list(images)
        return in_order(len(images), [pair async for pair in self.as_completed(images, concurrency)])

    async def health(self) -> JSON:
        """TorchServe's /ping answer, e.g. {"status": "Healthy"}, with the same retries as predictions."""
        return await self._call(self._health_request())

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> AsyncDigitClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- transport

    async def _predict_or_error(self, image: Image) -> Result:
        try:
            return await self.predict(image)
        except (DigitServiceError, OSError) as error:
            return as_result(error)

    async def _call(self, request: Request[T]) -> T:
        call = Call(self, request)
        while not call.settle(await self._send(call.attempt())):
            await asyncio.sleep(call.pause)
        return call.result

    async def _send(self, attempt: Attempt) -> Outcome:
        if self._session is None:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        timeout = aiohttp.ClientTimeout(total=attempt.timeout)
        try:
            async with self._session.request(
                attempt.method, attempt.url, data=attempt.body, headers=attempt.headers, timeout=timeout
            ) as response:
                return response.status, response.headers, await response.read()
        except asyncio.TimeoutError:
            return no_answer(attempt)
        except aiohttp.ClientError as error:
            return no_answer(attempt, error)
