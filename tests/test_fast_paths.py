"""The fast paths (handler/fast_paths.py) against the public paths: the same bytes."""

from __future__ import annotations

import json
import socket
import struct
import threading

import pytest
import torch
from torch import nn
from ts.protocol import otf_message_handler as otf

from handler import fast_paths
from handler.served_model import NATIVE_CPU_MAX_BATCH, conv_relu_chain, served_network
from model import load_checkpoint

TORCHSERVE_READ = otf._retrieve_buffer, otf._retrieve_int


def _field(value: bytes) -> bytes:
    return struct.pack("!i", len(value)) + value


def inference_message(requests: list[dict]) -> bytes:
    """What the frontend writes for a batch (the frame format in otf_message_handler)."""
    msg = b"I"
    for request in requests:
        msg += _field(request["id"])
        for name, value in request["headers"]:
            msg += _field(name) + _field(value)
        msg += struct.pack("!i", -1)
        for name, content_type, body in request["inputs"]:
            msg += _field(name) + _field(content_type) + _field(body)
        msg += struct.pack("!i", -1)
    return msg + struct.pack("!i", -1)


def _batch(seed: int) -> list[dict]:
    png = bytes(range(256)) * (3 + seed)  # bodies only travel here: they need not be images
    return [
        {
            "id": f"req-{seed}-{i}".encode(),
            "headers": [(b"Host", b"127.0.0.1:8080"), (b"Content-Type", b"image/png"), (b"X-Seed", str(i).encode())],
            "inputs": [(b"body", b"image/png", png[i:])],
        }
        for i in range(5)
    ] + [
        {"id": b"json", "headers": [], "inputs": [(b"body", b"application/json", json.dumps({"k": seed}).encode())]},
        {"id": b"text", "headers": [], "inputs": [(b"body", b"text/plain", b"seven")]},
    ]


def _read_messages(reads, sender_chunks: list[bytes], count: int) -> list:
    """`count` messages read with otf.retrieve_msg through `reads` (a _retrieve_buffer and a
    _retrieve_int) while a thread sends the chunks."""
    ours, theirs = socket.socketpair()
    original = otf._retrieve_buffer, otf._retrieve_int
    otf._retrieve_buffer, otf._retrieve_int = reads
    try:
        sender = threading.Thread(target=lambda: [theirs.sendall(c) for c in sender_chunks])
        sender.start()
        messages = [otf.retrieve_msg(ours) for _ in range(count)]
        sender.join()
        return messages
    finally:
        otf._retrieve_buffer, otf._retrieve_int = original
        ours.close()
        theirs.close()


BUFFERED_READ = fast_paths.buffered_retrieve_buffer, fast_paths.buffered_retrieve_int


@pytest.mark.parametrize("chunking", ["whole", "bytewise", "odd"])
def test_buffered_reads_give_torchserves_own_messages(chunking):
    stream = b"".join(inference_message(_batch(seed)) for seed in range(3))
    chunks = {
        "whole": [stream],
        "bytewise": [stream[i : i + 1] for i in range(len(stream))],
        "odd": [stream[i : i + 997] for i in range(0, len(stream), 997)],
    }[chunking]
    expected = _read_messages(TORCHSERVE_READ, chunks, 3)
    assert _read_messages(BUFFERED_READ, chunks, 3) == expected
    assert [len(batch) for _, batch in expected] == [7, 7, 7]
    assert expected[0][1][5]["parameters"][0]["value"] == {"k": 0}  # JSON decoded as TorchServe does
    assert expected[0][1][6]["parameters"][0]["value"] == "seven"


def test_a_large_body_spans_many_refills():
    body = bytes(range(256)) * 4096  # 1 MiB, 16 refills
    message = inference_message([{"id": b"big", "headers": [], "inputs": [(b"body", b"image/jpeg", body)]}])
    [(command, batch)] = _read_messages(BUFFERED_READ, [message], 1)
    assert command == b"I" and batch[0]["parameters"][0]["value"] == body


def test_a_socket_is_read_in_a_few_calls_not_one_per_field():
    stream = inference_message(_batch(0))
    ours, theirs = socket.socketpair()
    theirs.sendall(stream)
    calls = []

    class Counting:
        def recv(self, n):
            calls.append(n)
            return ours.recv(n)

    reader = fast_paths.SocketReader(Counting())
    original = otf._retrieve_buffer, otf._retrieve_int
    otf._retrieve_buffer, otf._retrieve_int = (
        (lambda conn, length: reader.read(length)),
        (lambda conn: reader.read_int()),
    )
    try:
        command, batch = otf.retrieve_msg(None)
    finally:
        otf._retrieve_buffer, otf._retrieve_int = original
        ours.close()
        theirs.close()
    assert command == b"I" and len(batch) == 7
    assert len(calls) <= 2, calls  # TorchServe's own reader: one call per field, here 132


def test_the_frontend_going_away_ends_the_worker_as_torchserve_does():
    ours, theirs = socket.socketpair()
    theirs.sendall(b"I" + struct.pack("!i", 9) + b"req")  # cut off inside the request id
    theirs.close()
    with pytest.raises(SystemExit) as exit_:
        fast_paths.SocketReader(ours).read(1 + 4 + 9)
    ours.close()
    assert exit_.value.code == 0


def test_install_replaces_the_reads_of_torchserve_0_12_only(monkeypatch):
    monkeypatch.setattr(otf, "_retrieve_buffer", otf._retrieve_buffer)  # both restored after the test
    monkeypatch.setattr(otf, "_retrieve_int", otf._retrieve_int)
    assert fast_paths.install_buffered_socket()
    assert (otf._retrieve_buffer, otf._retrieve_int) == BUFFERED_READ
    monkeypatch.setattr(otf, "_retrieve_buffer", "unchanged")
    monkeypatch.setattr("ts.version.__version__", "0.13.0")
    assert not fast_paths.install_buffered_socket()
    assert otf._retrieve_buffer == "unchanged"


def test_only_a_torchserve_worker_installs_it(handler_and_context):
    assert not fast_paths.in_torchserve_worker()  # pytest's process: the handler left TorchServe alone
    assert (otf._retrieve_buffer, otf._retrieve_int) == TORCHSERVE_READ


# ---------------------------------------------------------------- convolutions


def test_served_network_gives_the_same_outputs_and_leaves_onednn_switched_on():
    model = load_checkpoint()
    served = served_network(model)
    assert served.network.features[0].weight.is_contiguous(memory_format=torch.channels_last)
    for batch in (1, NATIVE_CPU_MAX_BATCH, NATIVE_CPU_MAX_BATCH + 1, 16):  # native, then oneDNN
        x = torch.rand(batch, 1, 28, 28)
        with torch.inference_mode():
            assert torch.allclose(model(x), served(x), atol=1e-4)
        assert torch.backends.mkldnn.enabled  # no process-wide flag flipped per call


def test_native_small_batches_give_the_bytes_of_conv2d_without_onednn():
    """The fast path calls PyTorch's native kernel directly; the public way to reach it is to
    switch oneDNN off for the whole process, which the test may do and the handler must not."""
    served = served_network(load_checkpoint())
    assert served.native and len(served.convolutions) == 3
    x = torch.rand(NATIVE_CPU_MAX_BATCH, 1, 28, 28)
    with torch.inference_mode():
        out = served(x)
        with torch.backends.mkldnn.flags(enabled=False):
            assert torch.equal(out, served.network(x))


def test_a_network_that_is_not_conv_relu_throughout_runs_as_its_modules():
    odd = served_network(load_checkpoint())
    odd.network.features.append(nn.Tanh())
    odd.convolutions = conv_relu_chain(odd.network)
    assert odd.convolutions is None
    x = torch.rand(3, 1, 28, 28)
    with torch.inference_mode():
        assert torch.equal(odd(x), odd.network(x))


def test_switched_off_small_batches_take_onednn_with_the_same_digits():
    served, public = served_network(load_checkpoint()), served_network(load_checkpoint(), native=False)
    assert not public.native
    x = torch.rand(1, 1, 28, 28)
    with torch.inference_mode():
        a, b = served(x), public(x)
    assert torch.equal(a.argmax(1), b.argmax(1)) and torch.allclose(a, b, atol=1e-4)


def test_native_small_batches_stand_down_on_an_unchecked_torch(monkeypatch):
    monkeypatch.setattr(torch, "__version__", "2.99.0")
    assert not served_network(load_checkpoint()).native
