"""Typed errors: each carries the HTTP status and the server's {"code", "error"} when there was one,
and for an upload that is not one digit the 422's reason, as a class of its own per reason."""

from __future__ import annotations

import json
from typing import Literal

# Why a readable image got no digit: the service's 422 bodies name one of these.
Reason = Literal["no_digit", "not_a_digit", "several_digits"]


class DigitServiceError(Exception):
    """A prediction that did not come back; `status` is None when no HTTP answer arrived."""

    retryable = False

    def __init__(self, error: str, status: int | None = None, code: int | None = None) -> None:
        super().__init__(f"{status}: {error}" if status else error)
        self.status = status
        self.code = code if code is not None else status  # the server's "code" field, else the status
        self.error = error  # the server's "error" (or TorchServe's "message"), else what went wrong
        self.attempts = 1

    def body(self) -> dict[str, object]:
        """The same {"code", "error"} shape the service answers with."""
        return {"code": self.code, "error": self.error}


class RequestRejected(DigitServiceError):
    """4xx: the request itself is wrong (not an image, no digit, too large); retrying cannot help."""


class NotOneDigit(RequestRejected):
    """422: the image was read, but it is not one digit; `reason` says what it is instead, so that a
    caller can route it (to a person, or back to whoever sent it). One subclass per reason."""

    reason: Reason

    def body(self) -> dict[str, object]:
        return {"code": self.code, "reason": self.reason, "error": self.error}


class NoDigit(NotOneDigit):
    """Nothing to read: the image is blank or uniform."""

    reason: Reason = "no_digit"


class NotADigit(NotOneDigit):
    """Something other than a digit: a letter, a symbol, a drawing, a photo of something else."""

    reason: Reason = "not_a_digit"


class SeveralDigits(NotOneDigit):
    """Two or more digits in one image: the digit model reads one; read_number reads a line of them."""

    reason: Reason = "several_digits"


NOT_ONE_DIGIT: dict[str, type[NotOneDigit]] = {cls.reason: cls for cls in (NoDigit, NotADigit, SeveralDigits)}


class AuthorizationFailed(RequestRejected):
    """The key was refused. TorchServe answers 400 "Token Authorization failed", not 401; a gateway
    401 or 403."""


class ServerFault(DigitServiceError):
    """5xx: a fault on the server's side (a killed worker's batch, an overloaded queue): retried."""

    retryable = True


class Overloaded(ServerFault):
    """503: the model's job queue is full; back-pressure, retried after a backoff."""


class ServiceUnreachable(DigitServiceError):
    """No answer: connection refused or reset, or the per-attempt timeout passed (a scale-down drops
    the batch of the worker it stops without answering it, pytorch/serve#1101): retried until the
    deadline, so callers see it as DeadlineExceeded's `last`."""

    retryable = True


class DeadlineExceeded(DigitServiceError):
    """The overall deadline passed before any attempt was answered; `last` is the last failure."""

    def __init__(self, error: str, last: DigitServiceError | None) -> None:
        super().__init__(error, status=last.status if last else None, code=last.code if last else None)
        self.last = last


TOKEN_FAILED = "Token Authorization failed"


def error_for(status: int, payload: object, text: str) -> DigitServiceError:
    """The typed error for a non-200 answer; the service's body is {"code", "error"} ({"error"} on
    v2), with "reason" on a 422 for an image that is not one digit; TorchServe's own is {"code",
    "type", "message"}."""
    fields = payload if isinstance(payload, dict) else {}
    message = str(fields.get("error") or fields.get("message") or text.strip() or f"HTTP {status}")
    code = fields.get("code") if isinstance(fields.get("code"), int) else status
    if status == 422 and fields.get("reason") in NOT_ONE_DIGIT:
        return NOT_ONE_DIGIT[fields["reason"]](message, status, code)
    if status == 503:
        return Overloaded(message, status, code)
    if status >= 500:
        return ServerFault(message, status, code)
    if TOKEN_FAILED in message or status in (401, 403):
        return AuthorizationFailed(message, status, code)
    if status >= 400:
        return RequestRejected(message, status, code)
    return ServerFault(f"unexpected HTTP {status}: {message}", status, code)


def another_request(evidence: str) -> ServerFault:
    """A 200 answer that belongs to another request (TorchServe 0.12 has handed a batch's answers to
    other requests when a worker was scaled down mid-batch): never taken, retried like a 5xx."""
    return ServerFault(f"the answer belongs to another request ({evidence})", 200)


def not_a_prediction(answer: object, what: str = "a prediction") -> ServerFault:
    """A 200 answer that does not hold `what` ("a prediction", "an explanation"): retried like a 5xx."""
    return ServerFault(f"the answer is not {what}: {json.dumps(answer, default=str)[:200]}", 200)
