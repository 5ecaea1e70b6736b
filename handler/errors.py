"""Typed request errors: each carries its HTTP status and a short reason (the metrics label)."""
from __future__ import annotations


class InputError(Exception):
    """A request the service cannot answer with a digit; never a server fault."""

    status = 400

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    def body(self) -> dict:
        return {"code": self.status, "error": self.message}


class BadRequest(InputError):
    status = 400


class PayloadTooLarge(InputError):
    status = 413


class UnsupportedMediaType(InputError):
    status = 415


class NoDigitFound(InputError):
    """Decoded fine, but there is nothing to read (a blank or uniform image)."""

    status = 422
