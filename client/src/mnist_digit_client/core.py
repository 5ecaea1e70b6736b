"""ClientBase: the options, key and requests that DigitClient and AsyncDigitClient share; each of
them adds only its transport (requests with threads, aiohttp with asyncio)."""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any

from mnist_digit_client.calls import JSON, REQUEST_ID_HEADER, Request, RetryPolicy
from mnist_digit_client.errors import DigitServiceError
from mnist_digit_client.images import Image, encode_image
from mnist_digit_client.keys import read_inference_key
from mnist_digit_client.routes import Explanation, NumberReading, Prediction, Route, route_for

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_MODEL = "mnist"
NUMBER_MODEL = "number"  # the service's model that reads a number (read_number)

Result = Prediction | DigitServiceError


class ClientBase:
    """Options of both clients.

    url, model: the service and the model's name. route: "torchserve" (POST /predictions/{model},
    the default), "v1" (KServe v1) or "v2" (Open Inference Protocol), or a Route object.
    token / token_file: TorchServe's inference key, or the key_file.json to read it from (and re-read
    when the server refuses it); neither: no Authorization header, for a server with token
    authorization off. headers: sent on every request (a gateway's own headers). auth: called before
    every attempt for headers to add, e.g. a freshly refreshed OAuth token; headers and auth() win
    over the key's Authorization header where they name it.
    timeout: seconds per attempt; deadline: seconds for all attempts of one call; retries: retries
    after a 5xx answer (no answer at all is retried until the deadline). pool_size: connections
    pooled by DigitClient (AsyncDigitClient opens as many as requests are in flight).
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        token: str | None = None,
        token_file: str | os.PathLike[str] | None = None,
        timeout: float = RetryPolicy.timeout,
        retries: int = RetryPolicy.retries,
        deadline: float = RetryPolicy.deadline,
        model: str = DEFAULT_MODEL,
        pool_size: int = 16,
        *,
        route: str | Route = "torchserve",
        headers: Mapping[str, str] | None = None,
        auth: Callable[[], Mapping[str, str]] | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.model = model
        self.route = route_for(route)
        self.policy = RetryPolicy(retries=retries, timeout=timeout, deadline=deadline)
        self.token_file = token_file
        self.token = token if token is not None else (read_inference_key(token_file) if token_file else None)
        self.headers = dict(headers or {})
        self.auth = auth
        self.rng = random.Random()
        self.retried = 0  # attempts sent again after a retryable failure, over the client's life
        self._lock = threading.Lock()
        self._open(pool_size)

    def _open(self, pool_size: int) -> None:
        """The transport's own set-up."""

    # -- what Call asks of the client

    def attempt_headers(self, token: str | None, request_id: str, content_type: str | None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        _merge(headers, self.headers)
        if self.auth is not None:
            _merge(headers, self.auth())  # per attempt: a token refreshed meanwhile is picked up
        _merge(headers, {"Content-Type": content_type} if content_type else {})
        _merge(headers, {REQUEST_ID_HEADER: request_id})
        return headers

    def reread_key(self, refused: str | None) -> bool:
        """Take the key file's current key; True when it differs from the refused one (worth a retry)."""
        if not self.token_file:
            return False
        with self._lock:
            try:
                self.token = read_inference_key(self.token_file)
            except (OSError, ValueError, KeyError, TypeError):
                return False
            return self.token != refused

    def count_retry(self) -> None:
        with self._lock:
            self.retried += 1

    # -- the requests both clients send

    def _predict_request(self, image: Image) -> Request[Prediction]:
        route, data = self.route, encode_image(image)
        url = route.url(self.url, self.model)
        return Request("POST", url, route.read, partial(route.body, data), route.body_type(data))

    def _explain_request(self, image: Image) -> Request[Explanation]:
        """The same body as a prediction's, to the route's explanation URL."""
        route = self.route
        return Request(
            "POST",
            route.explain_url(self.url, self.model),
            route.read_explanation,
            partial(route.body, encode_image(image)),
            route.content_type,
        )

    def _number_request(self, image: Image, model: str) -> Request[NumberReading]:
        """As a prediction's, to the number model's URL."""
        route, data = self.route, encode_image(image)
        url = route.url(self.url, model)
        return Request("POST", url, route.read_number, partial(route.body, data), route.body_type(data))

    def _health_request(self) -> Request[JSON]:
        """TorchServe's /ping, whatever the route: TorchServe answers no v1/v2 health paths."""
        return Request("GET", f"{self.url}/ping", _as_is)


def _as_is(answer: JSON, request_id: str) -> JSON:
    return answer


def _merge(headers: dict[str, str], extra: Mapping[str, str]) -> None:
    """Set `extra` in `headers`, replacing a header of the same name in another case."""
    for name, value in extra.items():
        for same in [key for key in headers if key.lower() == name.lower()]:
            del headers[same]
        headers[name] = value


def as_result(error: DigitServiceError | OSError) -> DigitServiceError:
    """A failed image's place in predict_many: its error; an unreadable path is reported like a 4xx."""
    return error if isinstance(error, DigitServiceError) else DigitServiceError(f"cannot read the image: {error}")


def in_order(count: int, answered: Iterable[tuple[int, Result]]) -> list[Result]:
    """as_completed's (index, result) pairs put back in input order."""
    results: list[Any] = [None] * count
    for i, result in answered:
        results[i] = result
    return results
