"""Draw-a-digit demo: serves the page and forwards each drawing to TorchServe with the inference key:
a digit to the `mnist` model for a prediction (/api/predict) or an explanation (/api/explain: the
view the network read and the attributions of its pixels), a number drawn on the wider pad to
`number` (/api/number).

    python -m demo.server [--port 8000] [--url http://127.0.0.1:8080] [--token-file key_file.json]

The key stays in this process: the browser only ever talks to this server, on 127.0.0.1.

Why the standard library (http.server.ThreadingHTTPServer) and not Flask or FastAPI: the demo has
a handful of routes and no templates, sessions or forms; one thread per request is plenty for a person
drawing, and nothing new has to be pinned, installed or patched. It is a local demo, not a public
server: it binds to loopback by default and refuses bodies over TorchServe's own size limit.
"""

from __future__ import annotations

import argparse
import json
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from mnist_digit_client import (
    DEFAULT_URL,
    AuthorizationFailed,
    DigitClient,
    DigitServiceError,
    Explanation,
    NumberReading,
    Prediction,
    RequestRejected,
)
from ops.paths import ROOT
from ops.properties import max_request_size

STATIC = Path(__file__).resolve().parent / "static"
PAGES = {"/": "index.html", "/app.js": "app.js", "/number.js": "number.js", "/style.css": "style.css"}
# POST path -> the DigitClient method it calls
ENDPOINTS = {"/api/predict": "predict", "/api/explain": "explain", "/api/number": "read_number"}
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
# No script, style or image from anywhere but this server; uploads are previewed as blob: URLs.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class DemoHandler(BaseHTTPRequestHandler):
    client: DigitClient  # set by serve()
    max_body: int

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in PAGES:
            file = STATIC / PAGES[path]
            self.send(HTTPStatus.OK, file.read_bytes(), TYPES[file.suffix])
        elif path == "/api/health":
            try:
                self.send_json(HTTPStatus.OK, self.client.health())
            except DigitServiceError as error:
                self.send_json(HTTPStatus.BAD_GATEWAY, {"code": 502, "error": f"TorchServe: {error.error}"})
        else:
            self.send_json(HTTPStatus.NOT_FOUND, {"code": 404, "error": f"no such page: {path}"})

    def do_POST(self) -> None:
        if self.path not in ENDPOINTS:
            return self.send_json(HTTPStatus.NOT_FOUND, {"code": 404, "error": f"no such endpoint: {self.path}"})
        length = int(self.headers.get("Content-Length") or -1)
        if length < 0:
            return self.send_json(HTTPStatus.LENGTH_REQUIRED, {"code": 411, "error": "send a Content-Length"})
        if length > self.max_body:
            return self.send_json(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                {"code": 413, "error": f"the image is over {self.max_body // 2**20} MiB"},
            )
        body = self.rfile.read(length)
        try:
            answer = getattr(self.client, ENDPOINTS[self.path])(body)
        except AuthorizationFailed:
            # The demo's own key was refused (even after re-reading the key file): our fault, not the drawing's.
            return self.send_json(HTTPStatus.BAD_GATEWAY, {"code": 502, "error": "TorchServe refused the demo's key"})
        except RequestRejected as error:
            return self.send_json(error.status or HTTPStatus.BAD_REQUEST, error.body())
        except DigitServiceError as error:
            return self.send_json(HTTPStatus.BAD_GATEWAY, {"code": 502, "error": f"TorchServe: {error.error}"})
        self.send_json(HTTPStatus.OK, answer_json(answer))

    def send_json(self, status: int, payload: dict) -> None:
        self.send(status, json.dumps(payload).encode(), "application/json")

    def send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # one short line per request, no key in it
        print(f"{self.address_string()} {format % args}", flush=True)


def answer_json(answer: Prediction | Explanation | NumberReading) -> dict:
    """What the page reads: the service's own answer (an explanation adds "view" and "attributions";
    a number is its number, confidence and digits with their boxes)."""
    if isinstance(answer, NumberReading):
        digits = [{"digit": d.digit, "confidence": d.confidence, "box": list(d.box)} for d in answer.digits]
        return {"number": answer.number, "confidence": answer.confidence, "digits": digits}
    fields = {"digit": answer.digit, "confidence": answer.confidence, "probabilities": list(answer.probabilities)}
    if isinstance(answer, Explanation):
        fields |= {"view": answer.view, "attributions": answer.attributions}
    return fields


def make_server(client: DigitClient, host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    # a bigger body would be refused by TorchServe anyway, so it is refused here
    handler = type("BoundDemoHandler", (DemoHandler,), {"client": client, "max_body": max_request_size()})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--url", default=DEFAULT_URL, help="TorchServe inference address")
    p.add_argument("--token-file", default=str(ROOT / "key_file.json"), help="TorchServe key file")
    args = p.parse_args(argv)
    # A person is waiting: fewer, shorter attempts than the library's defaults.
    client = DigitClient(args.url, token_file=args.token_file, timeout=5, retries=2, deadline=10)
    server = make_server(client, args.host, args.port)
    print(f"demo on http://{args.host}:{server.server_address[1]}/  (TorchServe: {args.url}; Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        client.close()


if __name__ == "__main__":
    main()
