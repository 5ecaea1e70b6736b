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


class NotOneDigit(InputError):
    """Decoded fine, but not one digit: 422, and the body names the reason (REASONS), which
    clients read to route the upload (to a person, or back to its sender)."""

    status = 422

    def body(self) -> dict:
        return {"code": self.status, "reason": self.reason, "error": self.message}


class NoDigitFound(NotOneDigit):
    """Nothing to read: a blank or uniform image."""

    def __init__(self, message: str = "no digit found: the image is blank or has no contrast") -> None:
        super().__init__("no_digit", message)


class NotADigit(NotOneDigit):
    """Something that is not a digit: a letter, a symbol, a drawing, a photo of something else."""

    def __init__(self, message: str = "that does not look like a digit") -> None:
        super().__init__("not_a_digit", message)


class SeveralDigits(NotOneDigit):
    """Two or more digits in one image: this model reads one digit per image, the number model a line of them."""

    def __init__(
        self,
        message: str = (
            "several digits in one image: this model reads one digit per image; send each alone, "
            "or the whole number to the number model (/predictions/number)"
        ),
    ) -> None:
        super().__init__("several_digits", message)


REASONS = ("no_digit", "not_a_digit", "several_digits")  # NotOneDigit's reasons, as the 422 bodies name them


class InternalError(RequestError):
    """A fault of ours (a bug in our own code on a readable input): 500, details only in the log."""

    status = 500

    def __init__(self, reason: str = "internal", message: str = "internal error") -> None:
        super().__init__(reason, message)


class TooManyDigits(InputError):
    """A line with more digits (or marks) than one number may have (handler/number/)."""

    status = 422


class SeveralLines(InputError):
    """Digits on more than one line, one above the other: the number model reads one line (handler/number/)."""

    status = 422
