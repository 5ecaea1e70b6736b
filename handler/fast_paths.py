"""Every use of a private API on the serving hot path, in one place.

Each fast path gives what the public path gives, for less of the worker's CPU; each is checked
against the library versions it was read against (on others the public path runs), has a switch
in model-config.yaml's `handler:` section (handler/settings.py), and a test that both paths give
the same bytes (tests/test_fast_paths.py). What each saves of a worker's CPU, live: `make
fast-paths` (reports/fast-paths.md); those that saved under 3% were removed (docs/decisions.md).

1. Buffered worker socket (`buffered_socket`). TorchServe 0.12.0's Python worker reads every field
   of a batch with its own `recv` (ts/protocol/otf_message_handler.py, `_retrieve_buffer` and
   `_retrieve_int`): a 4-byte length, then the bytes it announces, for the request id, each
   header's name and value, each input's name, content type and body; a batch of 16 requests with
   six headers is over 400 system calls. `install_buffered_socket()` replaces those two functions
   with reads from a per-socket buffer refilled up to 64 KiB at a time: TorchServe's own parsing
   code runs unchanged on the same bytes, with a few system calls per batch.
2. Native convolutions for batches of one or two (`native_small_batches`). For them oneDNN's
   per-call setup outweighs the work; PyTorch's native kernel (`aten::thnn_conv2d`, what F.conv2d
   runs with oneDNN disabled) is called directly, so no process-wide switch is flipped per call.

One patch is here for correctness, not speed: 3. TorchServe's PredictionTime gauge
(`route_prediction_time`). TorchServe 0.12.0's worker records it after every batch with
`metrics.add_time(name, value)` (ts/service.py), which gives it the dimension values ["Error"]
against the declared ["ModelName", "Level"]: the gauge is never exported, and the worker logs an
error per batch. The patch records it with the handler's own metrics instead.
"""

from __future__ import annotations

import logging
import struct
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

logger = logging.getLogger(__name__)

# The versions whose private APIs these were read against.
TORCHSERVE_VERSIONS = ("0.12.0",)
TORCH_VERSIONS = ("2.14.",)  # prefixes of torch.__version__
_CHUNK = 64 * 1024
_INT = struct.Struct("!i")


def torch_checked() -> bool:
    """Whether this PyTorch is one the native convolution path was checked against."""
    return torch.__version__.startswith(TORCH_VERSIONS)


# ---------------------------------------------------------------- 1. buffered worker socket


class SocketReader:
    """Exact-length reads from a socket, `recv`ing at least _CHUNK bytes whenever it runs dry.

    Bytes read past the current message stay here for the next one, so once a socket is read
    through a SocketReader every later read of it must be too (install() sees to that: TorchServe
    reads the socket only through `_retrieve_buffer`).
    """

    def __init__(self, sock) -> None:
        self.sock = sock
        self.data = bytearray()
        self.pos = 0

    def read(self, length: int) -> bytearray:
        end = self.pos + length
        if end > len(self.data):
            self._fill(length)
            end = self.pos + length
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def read_int(self) -> int:
        """A 4-byte big-endian signed int, TorchServe's length and count fields."""
        if self.pos + 4 > len(self.data):
            self._fill(4)
        (value,) = _INT.unpack_from(self.data, self.pos)
        self.pos += 4
        return value

    def _fill(self, length: int) -> None:
        """Keep the unread bytes and receive until `length` of them are here."""
        del self.data[: self.pos]
        self.pos = 0
        while len(self.data) < length:
            packet = self.sock.recv(max(_CHUNK, length - len(self.data)))
            if not packet:  # what TorchServe's own reader does when the frontend goes away
                logging.info("Frontend disconnected.")
                sys.exit(0)
            self.data += packet


_reader: SocketReader | None = None  # a worker has one socket to its frontend


def reader_of(conn) -> SocketReader:
    global _reader
    if _reader is None or _reader.sock is not conn:
        _reader = SocketReader(conn)
    return _reader


def buffered_retrieve_buffer(conn, length: int) -> bytearray:
    """Drop-in for otf_message_handler._retrieve_buffer(conn, length): the next `length` bytes."""
    return reader_of(conn).read(length)


def buffered_retrieve_int(conn) -> int:
    """Drop-in for otf_message_handler._retrieve_int(conn)."""
    return reader_of(conn).read_int()


def in_torchserve_worker() -> bool:
    """Whether this process is a TorchServe worker (the frontend runs ts/model_service_worker.py)."""
    main = sys.modules.get("__main__")
    return Path(getattr(main, "__file__", None) or "").name == "model_service_worker.py"


def install_buffered_socket() -> bool:
    """Make this worker read its socket through buffered_retrieve_buffer and buffered_retrieve_int.
    Call it while TorchServe is loading the model (the handler's initialize): the load message has
    been read to its last byte then, so nothing is buffered anywhere else. False, and nothing
    changed, under a TorchServe version this was not checked against."""
    from ts.protocol import otf_message_handler
    from ts.version import __version__

    if __version__ not in TORCHSERVE_VERSIONS or not all(
        hasattr(otf_message_handler, name) for name in ("_retrieve_buffer", "_retrieve_int")
    ):
        logger.warning("TorchServe %s: its worker socket is read unbuffered", __version__)
        return False
    otf_message_handler._retrieve_buffer = buffered_retrieve_buffer
    otf_message_handler._retrieve_int = buffered_retrieve_int
    logger.info("worker socket: buffered reads")
    return True


# ---------------------------------------------------------------- 2. native small-batch convolutions


def native_conv_relu(x: torch.Tensor, convolutions: list[nn.Conv2d]) -> torch.Tensor:
    """Each convolution and its ReLU through PyTorch's native CPU kernel: the bytes F.conv2d gives
    with oneDNN disabled (torch.backends.mkldnn.flags(enabled=False)), without flipping that
    process-wide flag. Zero-padded, ungrouped, undilated convolutions only (ServedCNN checks)."""
    for conv in convolutions:
        x = torch.ops.aten.thnn_conv2d(x, conv.weight, conv.kernel_size, conv.bias, conv.stride, conv.padding).relu_()
    return x


# ---------------------------------------------------------------- 3. TorchServe's PredictionTime gauge


def route_prediction_time(metrics, observe: Callable[[float], None]) -> bool:
    """Make `metrics.add_time("PredictionTime", ms)` (TorchServe's call after each batch) call
    `observe(ms)`; any other timing keeps TorchServe's path. False, and nothing changed, under a
    TorchServe version this was not checked against."""
    from ts.metrics.metric_type_enum import MetricTypes
    from ts.version import __version__

    if __version__ not in TORCHSERVE_VERSIONS:
        logger.warning("TorchServe %s: its PredictionTime gauge is left as it records it", __version__)
        return False
    torchserve_add_time = metrics.add_time

    def add_time(name, value, idx=None, unit="ms", dimensions=None, metric_type=MetricTypes.GAUGE):
        if name == "PredictionTime" and idx is None and not dimensions and unit == "ms":
            observe(value)
        else:
            torchserve_add_time(name, value, idx, unit, dimensions or [], metric_type)

    metrics.add_time = add_time
    return True
