"""What both clients share, without sockets or sleeping: the attempts of one call, how an answer
is read, and whether and when to try again. DigitClient and AsyncDigitClient only send each
Attempt and sleep for the pause a Call decides:

    call = Call(client, request)
    while not call.settle(send(call.attempt())):
        sleep(call.pause)
    return call.result
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from mnist_digit_client.errors import (
    AuthorizationFailed,
    DeadlineExceeded,
    DigitServiceError,
    ServerFault,
    ServiceUnreachable,
    another_request,
    error_for,
)

if TYPE_CHECKING:
    from mnist_digit_client.core import ClientBase

# Sent with every attempt and echoed by the service on its answer: an answer carrying another ID
# is another request's, and is retried (handler/mnist_handler.py, _echo_request_id).
REQUEST_ID_HEADER = "X-Client-Request-ID"  # not X-Request-ID: TorchServe sets that one to its own ID
# On every answer of the service: the model that gave it, "<release>+<digest of the weights>".
MODEL_VERSION_HEADER = "X-Model-Version"

JSON = dict[str, Any]
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, bounded by an overall deadline.

    No answer at all (refused, reset, timed out: a server restarting) is retried until the deadline;
    `retries` caps only the retries after an answer that was a fault (5xx, 503 back-pressure).
    Jitter spreads the retries of callers that failed together (all of a killed worker's batch)
    so they do not hit the server again in one burst. Half of each delay is fixed, half random,
    so a retry never comes back at once.
    """

    retries: int = 4  # retries after a 5xx answer
    timeout: float = 10.0  # seconds per attempt: also what catches a batch dropped without an answer
    deadline: float = 30.0  # seconds for all attempts and backoffs together
    backoff: float = 0.1  # the first delay; doubled per retry
    max_backoff: float = 2.0

    def delay(self, retry: int, rng: random.Random) -> float:
        ceiling = min(self.max_backoff, self.backoff * 2.0**retry)
        return ceiling / 2 + rng.uniform(0, ceiling / 2)


@dataclass(frozen=True)
class Request(Generic[T]):
    """One call, sent again as a whole (with a fresh request ID) on each attempt."""

    method: str
    url: str
    read: Callable[[JSON, str], T]  # (the answer's JSON object, the request ID) -> the result
    body: Callable[[str], bytes] | None = None  # the request ID -> the body (v2 carries the ID in it)
    content_type: str | None = None


@dataclass(frozen=True)
class Attempt:
    """What one attempt sends; a transport turns it into an Outcome."""

    method: str
    url: str
    headers: dict[str, str] = field(repr=False)  # the key's in it
    body: bytes | None
    timeout: float
    request_id: str
    token: str | None = field(repr=False)


# (status, headers, body) of an HTTP answer, or the ServiceUnreachable of an attempt that got none
Outcome = tuple[int, Mapping[str, str], bytes] | DigitServiceError


def no_answer(attempt: Attempt, error: BaseException | None = None) -> ServiceUnreachable:
    """The error of an attempt without an HTTP answer: `error` from the transport, None for a timeout."""
    if error is None:
        return ServiceUnreachable(f"no answer within {attempt.timeout:.1f} s from {attempt.url}")
    return ServiceUnreachable(f"{type(error).__name__} talking to {attempt.url}: {error}")


def _header(headers: Mapping[str, str], name: str) -> str | None:
    return next((value for key, value in headers.items() if key.lower() == name.lower()), None)


def interpret(
    status: int, headers: Mapping[str, str], body: bytes, request_id: str, read: Callable[[JSON, str], T]
) -> T:
    """The result of one HTTP answer (`read` of its JSON object), or the typed error it stands for."""
    echoed = _header(headers, REQUEST_ID_HEADER)
    if status == 200 and echoed not in (None, request_id):
        raise another_request(f"{REQUEST_ID_HEADER} {echoed}")
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    text = body.decode("utf-8", "replace")
    if status != 200:
        raise error_for(status, payload, text)
    if not isinstance(payload, dict):
        raise ServerFault(f"the answer is not a JSON object: {text[:200]!r}", 200)
    return _with_model_version(read(payload, request_id), _header(headers, MODEL_VERSION_HEADER))


def _with_model_version(result: T, version: str | None) -> T:
    """A result with a `model_version` field (a Prediction) gets the answer's X-Model-Version; without
    the header (a gateway that drops it) it keeps what its body said, if anything."""
    if version is None or not dataclasses.is_dataclass(result) or isinstance(result, type):
        return result
    if not any(f.name == "model_version" for f in dataclasses.fields(result)):
        return result
    return dataclasses.replace(result, model_version=version)


class Call(Generic[T]):
    """The attempts of one request: builds each, reads its outcome, decides the pause before the next.

    A 4xx ends the call; a refused key is re-read from the key file once. No answer is retried until
    the deadline; a 5xx (or another request's answer) at most `retries` times.
    """

    result: T  # set by the settle() that answers the call

    def __init__(self, client: ClientBase, request: Request[T], clock: Callable[[], float] = time.monotonic) -> None:
        self.client, self.request, self.clock = client, request, clock
        self.policy = client.policy
        self.started = clock()
        self.deadline = self.started + self.policy.deadline
        self.attempts = self.retries = self.server_retries = 0
        self.key_reread = False
        self.last: DigitServiceError | None = None
        self.current: Attempt | None = None
        self.pause = 0.0

    def attempt(self) -> Attempt:
        """The next attempt, with a fresh request ID; DeadlineExceeded when no time is left for one."""
        remaining = self.deadline - self.clock()
        if remaining <= 0:
            raise self._deadline_exceeded()
        self.attempts += 1
        request, request_id, token = self.request, uuid.uuid4().hex, self.client.token
        headers = self.client.attempt_headers(token, request_id, request.content_type)
        body = request.body(request_id) if request.body else None
        timeout = min(self.policy.timeout, remaining)
        self.current = Attempt(request.method, request.url, headers, body, timeout, request_id, token)
        return self.current

    def settle(self, outcome: Outcome) -> bool:
        """True when the current attempt's outcome answered the call (`result`); False when another
        attempt should follow after `pause` seconds. Raises the error that ends the call."""
        assert self.current is not None, "settle() follows attempt()"
        try:
            if isinstance(outcome, DigitServiceError):
                raise outcome
            self.result = interpret(*outcome, self.current.request_id, self.request.read)
            return True
        except DigitServiceError as error:
            error.attempts = self.attempts
            self.pause = self._after_refusal(error) if isinstance(error, AuthorizationFailed) else self._backoff(error)
            return False

    def _after_refusal(self, error: AuthorizationFailed) -> float:
        assert self.current is not None
        if self.key_reread or not self.client.reread_key(self.current.token):
            raise error
        self.key_reread = True  # once: a second refusal with a fresh key is the caller's to fix
        return 0.0

    def _backoff(self, error: DigitServiceError) -> float:
        if not error.retryable:
            raise error
        if error.status is not None:  # an answer, and a faulty one: a bounded number of retries
            if self.server_retries >= self.policy.retries:
                raise error
            self.server_retries += 1
        self.last = error
        pause = self.policy.delay(self.retries, self.client.rng)
        if self.clock() + pause >= self.deadline:
            raise self._deadline_exceeded()
        self.retries += 1
        self.client.count_retry()
        return pause

    def _deadline_exceeded(self) -> DeadlineExceeded:
        last = self.last
        why = f": last {type(last).__name__} {last}" if last else ""
        error = DeadlineExceeded(
            f"no answer within the {self.policy.deadline:.1f} s deadline ({self.attempts} attempts in "
            f"{self.clock() - self.started:.1f} s){why}",
            last,
        )
        error.attempts = self.attempts
        return error
