"""DigitClient: predictions from the digit service that survive worker restarts, scale-downs, server
restarts and key rotation, with one typed error when they cannot. Threads and requests."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed

import requests
from requests.adapters import HTTPAdapter

from mnist_digit_client.calls import JSON, Attempt, Call, Outcome, Request, T, no_answer
from mnist_digit_client.core import NUMBER_MODEL, ClientBase, Result, as_result, in_order
from mnist_digit_client.errors import DigitServiceError
from mnist_digit_client.images import Image
from mnist_digit_client.routes import Explanation, NumberReading, Prediction


class DigitClient(ClientBase):
    """Thread-safe client of one digit service.

        client = DigitClient(token_file="key_file.json")
        client.predict("seven.png").digit                      # 7
        client.predict_many(paths, concurrency=16)             # [Prediction | DigitServiceError, ...]
        client.read_number("meter.jpg").number                 # "4096"
        client.explain("seven.png").attributions               # 28 rows of 28 floats

    Retried (predictions are idempotent): attempts without an answer (refused or reset connections,
    no answer within `timeout`) until the deadline; 5xx and 503 back-pressure up to `retries` times.
    Never retried: a 4xx. A refused key is re-read from `token_file` and the request sent once more
    with the new key. Options: ClientBase.
    """

    def _open(self, pool_size: int) -> None:
        self._session = requests.Session()
        self.pool_size = 0
        self._ensure_pool(pool_size)

    # -- public API

    def predict(self, image: Image) -> Prediction:
        return self._call(self._predict_request(image))

    def read_number(self, image: Image, model: str = NUMBER_MODEL) -> NumberReading:
        """The number in the image (one line of 1 to 12 digits), from the service's number model;
        the same retries and errors as predict (no digit, or more than 12: RequestRejected, 422;
        letters, a drawing or a photo of something else: NotADigit)."""
        return self._call(self._number_request(image, model))

    def explain(self, image: Image) -> Explanation:
        """The prediction and what it was read from: the view the network read and each of its
        pixels' attribution. Retried as predict is; costs the service several predictions' CPU."""
        return self._call(self._explain_request(image))

    def as_completed(self, images: Iterable[Image], concurrency: int = 8) -> Iterator[tuple[int, Result]]:
        """(index, Prediction or the error) for each image, in the order they are answered."""
        images = list(images)
        self._ensure_pool(concurrency)
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="digit-client") as pool:
            futures = {pool.submit(self._predict_or_error, image): i for i, image in enumerate(images)}
            for future in as_completed(futures):
                yield futures[future], future.result()

    def predict_many(self, images: Iterable[Image], concurrency: int = 8) -> list[Result]:
        """One result per image, in input order; a failed image gives its error, not an exception,
        so the others' answers are never lost."""
        images = list(images)
        return in_order(len(images), self.as_completed(images, concurrency))

    def health(self) -> JSON:
        """TorchServe's /ping answer, e.g. {"status": "Healthy"}, with the same retries as predictions."""
        return self._call(self._health_request())

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> DigitClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport

    def _predict_or_error(self, image: Image) -> Result:
        try:
            return self.predict(image)
        except (DigitServiceError, OSError) as error:
            return as_result(error)

    def _call(self, request: Request[T]) -> T:
        call = Call(self, request)
        while not call.settle(self._send(call.attempt())):
            time.sleep(call.pause)
        return call.result

    def _send(self, attempt: Attempt) -> Outcome:
        try:
            response = self._session.request(
                attempt.method, attempt.url, data=attempt.body, headers=attempt.headers, timeout=attempt.timeout
            )
        except requests.Timeout:
            return no_answer(attempt)
        except requests.RequestException as error:
            return no_answer(attempt, error)
        return response.status_code, response.headers, response.content

    def _ensure_pool(self, connections: int) -> None:
        """One pooled connection per concurrent caller, so none is opened and thrown away per request."""
        with self._lock:
            if connections <= self.pool_size:
                return
            adapter = HTTPAdapter(pool_connections=4, pool_maxsize=connections, max_retries=0)
            self._session.mount("http://", adapter)
            self._session.mount("https://", adapter)
            self.pool_size = connections
