"""Python client of the MNIST digit service.

    from mnist_digit_client import DigitClient        # threads, over requests
    from mnist_digit_client import AsyncDigitClient   # asyncio, over aiohttp (the `asyncio` extra)

    DigitClient().read_number("meter.jpg")             # a number: NumberReading

Command line: `mnist-digit` or `python -m mnist_digit_client`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mnist_digit_client.calls import MODEL_VERSION_HEADER, REQUEST_ID_HEADER, RetryPolicy
from mnist_digit_client.core import DEFAULT_MODEL, DEFAULT_URL, NUMBER_MODEL
from mnist_digit_client.errors import (
    AuthorizationFailed,
    DeadlineExceeded,
    DigitServiceError,
    NoDigit,
    NotADigit,
    NotOneDigit,
    Overloaded,
    Reason,
    RequestRejected,
    ServerFault,
    ServiceUnreachable,
    SeveralDigits,
)
from mnist_digit_client.images import Image, encode_image
from mnist_digit_client.keys import read_inference_key, read_keys
from mnist_digit_client.routes import (
    ROUTES,
    DigitRead,
    Explanation,
    KServeV1,
    NumberReading,
    OpenInferenceV2,
    Prediction,
    Route,
)
from mnist_digit_client.threaded import DigitClient

if TYPE_CHECKING:
    from mnist_digit_client.aio import AsyncDigitClient

__version__ = "1.0.0"

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_URL",
    "NUMBER_MODEL",
    "REQUEST_ID_HEADER",
    "MODEL_VERSION_HEADER",
    "DigitClient",
    "AsyncDigitClient",
    "Prediction",
    "Explanation",
    "NumberReading",
    "DigitRead",
    "RetryPolicy",
    "Route",
    "KServeV1",
    "OpenInferenceV2",
    "ROUTES",
    "Image",
    "encode_image",
    "read_inference_key",
    "read_keys",
    "DigitServiceError",
    "RequestRejected",
    "NotOneDigit",
    "NoDigit",
    "NotADigit",
    "SeveralDigits",
    "Reason",
    "AuthorizationFailed",
    "ServerFault",
    "Overloaded",
    "ServiceUnreachable",
    "DeadlineExceeded",
]


def __getattr__(name: str) -> Any:
    """AsyncDigitClient on first use: aiohttp is an optional dependency (the `asyncio` extra)."""
    if name == "AsyncDigitClient":
        from mnist_digit_client.aio import AsyncDigitClient

        return AsyncDigitClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
