"""The test harness's TorchServe: started afresh on fresh ports when one of its ports is taken."""

from __future__ import annotations

import socket

from harness.local_server import LocalTorchServe
from ops.paths import ROOT


def test_a_taken_port_is_retried_on_fresh_ports(model_store):
    server = LocalTorchServe(model_store)
    with socket.socket() as taken:  # another process on the inference port, as wrk's connections can be
        taken.bind(("127.0.0.1", server.ports["inference"]))
        taken.listen()
        first = server.inference
        server.start(timeout=120)
        try:
            assert server.inference != first
            assert server.predict((ROOT / "tests" / "fixtures" / "seven.png").read_bytes()).json()["digit"] == 7
        finally:
            server.stop()
