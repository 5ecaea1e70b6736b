"""Typed request errors: each carries its HTTP status and a short reason (the metrics label)."""

from __future__ import annotations


class RequestError(Exception):
    """Why one request of a batch gets no digit; answered with `status` and `body()`."""

    status = 500

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    def body(self) -> dict:
        return {"code": self.status, "error": self.message}


class InputError(RequestError):
    """A request the service cannot answer with a digit; never a server fault."""

    status = 400


class BadRequest(InputError):
    status = 400


class PayloadTooLarge(InputError):
    status = 413


class UnsupportedMediaType(InputError):
    status = 415


class NoDigitFound(InputError):
    """Decoded fine, but there is nothing to read (a blank or uniform image)."""

    status = 422


class InternalError(RequestError):
    """A fault of ours (a bug in our own code on a readable input): 500, details only in the log."""

    status = 500

    def __init__(self, reason: str = "internal", message: str = "internal error") -> None:
        super().__init__(reason, message)


class TooManyDigits(InputError):
    """A line with more digits (or marks) than one number may have (handler/number/)."""

    status = 422
