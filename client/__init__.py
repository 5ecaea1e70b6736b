"""Python client of the MNIST digit service: `from client import DigitClient`; CLI: `python -m client`."""

from client.core import DEFAULT_URL, DigitClient, Prediction, RetryPolicy, encode_image, read_inference_key, read_keys
from client.errors import (
    AuthorizationFailed,
    DeadlineExceeded,
    DigitServiceError,
    Overloaded,
    RequestRejected,
    ServerFault,
    ServiceUnreachable,
)

__all__ = [
    "DEFAULT_URL",
    "DigitClient",
    "Prediction",
    "RetryPolicy",
    "encode_image",
    "read_inference_key",
    "read_keys",
    "DigitServiceError",
    "RequestRejected",
    "AuthorizationFailed",
    "ServerFault",
    "Overloaded",
    "ServiceUnreachable",
    "DeadlineExceeded",
]
