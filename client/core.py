"""DigitClient: predictions from the digit service that survive worker restarts, scale-downs and key
rotation, with one typed error when they cannot."""

from __future__ import annotations

import io
import json
import os
import random
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from client.errors import (
    AuthorizationFailed,
    DeadlineExceeded,
    DigitServiceError,
    ServerFault,
    ServiceUnreachable,
    error_for,
)

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_MODEL = "mnist"
# Sent with every attempt and echoed by the service on its answer: an answer carrying another ID
# is another request's, and is retried (handler/mnist_handler.py, _echo_request_id).
REQUEST_ID_HEADER = "X-Client-Request-ID"  # not X-Request-ID: TorchServe sets that one to its own ID

# bytes of an image file, the path of one, or pixels (H x W or H x W x 3/4; uint8, or floats in 0-1)
Image = bytes | bytearray | memoryview | str | os.PathLike | Any


@dataclass(frozen=True)
class Prediction:
    digit: int
    confidence: float
    probabilities: tuple[float, ...]  # ten, one per digit

    @classmethod
    def from_answer(cls, answer: dict) -> Prediction:
        try:
            return cls(
                int(answer["digit"]), float(answer["confidence"]), tuple(float(p) for p in answer["probabilities"])
            )
        except (KeyError, TypeError, ValueError):
            raise ServerFault(f"the answer is not a prediction: {json.dumps(answer)[:200]}", 200) from None


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, bounded by an overall deadline.

    Jitter spreads the retries of callers that failed together (all of a killed worker's batch)
    so they do not hit the server again in one burst. Half of each delay is fixed, half random,
    so a retry never comes back at once.
    """

    retries: int = 4  # attempts after the first
    timeout: float = 10.0  # seconds per attempt: also what catches a batch dropped without an answer
    deadline: float = 30.0  # seconds for all attempts and backoffs together
    backoff: float = 0.1  # the first delay; doubled per retry
    max_backoff: float = 2.0

    def delay(self, retry: int, rng: random.Random) -> float:
        ceiling = min(self.max_backoff, self.backoff * 2**retry)
        return ceiling / 2 + rng.uniform(0, ceiling / 2)


def read_keys(key_file: str | os.PathLike) -> dict[str, str]:
    """{"inference": ..., "management": ..., "API": ...} from the key_file.json TorchServe writes
    (and rewrites on rotation): the one reader of that file's format, used by ops/ and harness/ too."""
    return {kind: entry["key"] for kind, entry in json.loads(Path(key_file).read_text()).items()}


def read_inference_key(key_file: str | os.PathLike) -> str:
    """The inference key from TorchServe's key_file.json."""
    return read_keys(key_file)["inference"]


def encode_image(image: Image) -> bytes:
    """Request body for one image: file bytes as they are, a path's contents, pixels as a PNG."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image)
    if isinstance(image, (str, os.PathLike)):
        return Path(image).read_bytes()
    if hasattr(image, "__array__"):
        return _png(image)
    raise TypeError(f"expected image bytes, a path or a numpy array, not {type(image).__name__}")


def _png(pixels: Any) -> bytes:
    import numpy as np
    from PIL import Image as PILImage

    array = np.asarray(pixels)
    if array.dtype != np.uint8:
        scale = 255.0 if array.size and float(array.max()) <= 1.0 else 1.0
        array = np.clip(np.rint(array.astype(np.float64) * scale), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    PILImage.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


class DigitClient:
    """Thread-safe client of one digit service.

        client = DigitClient(token_file="key_file.json")
        client.predict("seven.png").digit                      # 7
        client.predict_many(paths, concurrency=16)             # [Prediction | DigitServiceError, ...]

    Retried (predictions are idempotent): connection errors, attempts without an answer within
    `timeout`, 5xx and 503 back-pressure. Never retried: a 4xx. A refused key is re-read from
    `token_file` and the request sent once more with the new key.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        token: str | None = None,
        token_file: str | os.PathLike | None = None,
        timeout: float = RetryPolicy.timeout,
        retries: int = RetryPolicy.retries,
        deadline: float = RetryPolicy.deadline,
        model: str = DEFAULT_MODEL,
        pool_size: int = 16,
    ) -> None:
        self.url = url.rstrip("/")
        self.predictions_url = f"{self.url}/predictions/{model}"
        self.policy = RetryPolicy(retries=retries, timeout=timeout, deadline=deadline)
        self.token_file = token_file
        self._token = token if token is not None else (read_inference_key(token_file) if token_file else None)
        self._lock = threading.Lock()
        self._rng = random.Random()
        self.retried = 0  # attempts sent again after a retryable failure, over the client's life
        self._session = requests.Session()
        self.pool_size = 0
        self._ensure_pool(pool_size)

    # -- public API

    def predict(self, image: Image) -> Prediction:
        return Prediction.from_answer(self._request("POST", self.predictions_url, encode_image(image)))

    def as_completed(
        self, images: Iterable[Image], concurrency: int = 8
    ) -> Iterator[tuple[int, Prediction | DigitServiceError]]:
        """(index, Prediction or the error) for each image, in the order they are answered."""
        images = list(images)
        self._ensure_pool(concurrency)
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="digit-client") as pool:
            futures = {pool.submit(self._predict_or_error, image): i for i, image in enumerate(images)}
            for future in as_completed(futures):
                yield futures[future], future.result()

    def predict_many(self, images: Iterable[Image], concurrency: int = 8) -> list[Prediction | DigitServiceError]:
        """One result per image, in input order; a failed image gives its error, not an exception,
        so the others' answers are never lost."""
        images = list(images)
        results: list[Prediction | DigitServiceError | None] = [None] * len(images)
        for i, result in self.as_completed(images, concurrency):
            results[i] = result
        return results  # type: ignore[return-value]

    def health(self) -> dict:
        """TorchServe's /ping answer, e.g. {"status": "Healthy"}, with the same retries as predictions."""
        return self._request("GET", f"{self.url}/ping")

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> DigitClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- retries

    def _predict_or_error(self, image: Image) -> Prediction | DigitServiceError:
        try:
            return self.predict(image)
        except DigitServiceError as error:
            return error
        except OSError as error:  # an unreadable path: the caller's problem, reported like a 4xx
            return DigitServiceError(f"cannot read the image: {error}")

    def _request(self, method: str, url: str, body: bytes | None = None) -> dict:
        policy, started = self.policy, time.monotonic()
        deadline = started + policy.deadline
        attempts, retries, key_reread, last = 0, 0, False, None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._deadline_exceeded(last, attempts, started)
            token = self._token
            attempts += 1
            try:
                return self._attempt(method, url, body, token, min(policy.timeout, remaining))
            except AuthorizationFailed as error:
                error.attempts = attempts
                if key_reread or not self._reread_key(token):
                    raise
                key_reread = True  # once: a second refusal with a fresh key is the caller's to fix
                continue
            except DigitServiceError as error:
                error.attempts = attempts
                if not error.retryable or retries >= policy.retries:
                    raise
                last = error
            pause = policy.delay(retries, self._rng)
            if time.monotonic() + pause >= deadline:
                raise self._deadline_exceeded(last, attempts, started)
            time.sleep(pause)
            retries += 1
            with self._lock:
                self.retried += 1

    def _attempt(self, method: str, url: str, body: bytes | None, token: str | None, timeout: float) -> dict:
        request_id = uuid.uuid4().hex
        headers = {"Content-Type": "application/octet-stream"} if body is not None else {}
        headers[REQUEST_ID_HEADER] = request_id
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            response = self._session.request(method, url, data=body, headers=headers, timeout=timeout)
        except requests.Timeout:
            raise ServiceUnreachable(f"no answer within {timeout:.1f} s from {url}") from None
        except requests.RequestException as error:
            raise ServiceUnreachable(f"{type(error).__name__} talking to {url}: {error}") from None
        try:
            payload = response.json()
        except ValueError:
            payload = None
        echoed = response.headers.get(REQUEST_ID_HEADER)
        if response.status_code == 200 and echoed not in (None, request_id):
            # another request's answer (TorchServe 0.12, a worker scaled down mid-batch): never take it
            raise ServerFault(f"the answer belongs to another request ({REQUEST_ID_HEADER} {echoed})", 200)
        if response.status_code == 200 and isinstance(payload, dict):
            return payload
        if response.status_code == 200:
            raise ServerFault(f"the answer is not a JSON object: {response.text[:200]!r}", 200)
        raise error_for(response.status_code, payload, response.text)

    def _reread_key(self, refused: str | None) -> bool:
        """Take the key file's current key; True when it differs from the refused one (worth a retry)."""
        if not self.token_file:
            return False
        with self._lock:
            try:
                self._token = read_inference_key(self.token_file)
            except (OSError, ValueError, KeyError, TypeError):
                return False
            return self._token != refused

    def _deadline_exceeded(self, last: DigitServiceError | None, attempts: int, started: float) -> DeadlineExceeded:
        why = f": last {type(last).__name__} {last}" if last else ""
        error = DeadlineExceeded(
            f"no answer within the {self.policy.deadline:.1f} s deadline ({attempts} attempts in "
            f"{time.monotonic() - started:.1f} s){why}",
            last,
        )
        error.attempts = attempts
        return error

    def _ensure_pool(self, connections: int) -> None:
        """One pooled connection per concurrent caller, so none is opened and thrown away per request."""
        with self._lock:
            if connections <= self.pool_size:
                return
            adapter = HTTPAdapter(pool_connections=4, pool_maxsize=connections, max_retries=0)
            self._session.mount("http://", adapter)
            self._session.mount("https://", adapter)
            self.pool_size = connections
