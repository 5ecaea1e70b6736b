"""Helpers of the client tests: one synchronous face for both clients, so each test runs against
DigitClient and AsyncDigitClient alike, and a small HTTP server standing in for a gateway."""

from __future__ import annotations

import asyncio
import inspect
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from mnist_digit_client import REQUEST_ID_HEADER, AsyncDigitClient, DigitClient

KINDS = ["threaded", "asyncio"]
PROBABILITIES = [0.01] * 7 + [0.91] + [0.01] * 2


class Blocking:
    """An AsyncDigitClient whose coroutine methods run to completion on a private event loop."""

    def __init__(self, client: AsyncDigitClient) -> None:
        self.client = client
        self.loop = asyncio.new_event_loop()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.client, name)
        if inspect.iscoroutinefunction(attr):
            return lambda *args, **kwargs: self.loop.run_until_complete(attr(*args, **kwargs))
        return attr

    def close(self) -> None:
        self.loop.run_until_complete(self.client.close())
        self.loop.close()

    def __enter__(self) -> Blocking:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_client(kind: str, url: str, **options: Any) -> DigitClient | Blocking:
    return DigitClient(url, **options) if kind == "threaded" else Blocking(AsyncDigitClient(url, **options))


def answer_for(path: str, body: bytes) -> dict:
    """What the service answers on each route, as the digit 7."""
    prediction = {"digit": 7, "confidence": 0.91, "probabilities": PROBABILITIES}
    if path.endswith(":predict"):
        return {"predictions": [prediction]}
    if path.endswith("/infer"):
        outputs = [
            {"name": "probabilities", "datatype": "FP32", "shape": [1, 10], "data": PROBABILITIES},
            {"name": "digit", "datatype": "INT64", "shape": [1], "data": [7]},
            {"name": "confidence", "datatype": "FP32", "shape": [1], "data": [0.91]},
        ]
        return {"id": json.loads(body)["id"], "model_name": "mnist", "model_version": "1.0", "outputs": outputs}
    return {"status": "Healthy"} if path == "/ping" else prediction


class Gateway(ThreadingHTTPServer):
    """A gateway in front of the service: answers 401 {"error"} unless each header in `required` is
    sent, records every request's headers and body, and answers each route as the service would."""

    daemon_threads = True

    def __init__(self, port: int = 0, required: dict[str, str] | None = None) -> None:
        super().__init__(("127.0.0.1", port), GatewayHandler)
        self.required = required or {}
        self.seen: list[tuple[str, dict[str, str], bytes]] = []
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class GatewayHandler(BaseHTTPRequestHandler):
    server: Gateway

    def do_GET(self) -> None:
        self.do_POST()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = dict(self.headers.items())
        self.server.seen.append((self.path, headers, body))
        if any(self.headers.get(name) != value for name, value in self.server.required.items()):
            self.send(401, {"error": "the gateway refused the request"})
        else:
            self.send(200, answer_for(self.path, body))

    def send(self, status: int, answer: dict) -> None:
        payload = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header(REQUEST_ID_HEADER, self.headers.get(REQUEST_ID_HEADER, ""))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:  # quiet in the test output
        pass
