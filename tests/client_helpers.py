"""Helpers of the client tests: one synchronous face for both clients, so each test runs against
DigitClient and AsyncDigitClient alike, and a real gateway (nginx) in front of the real service."""

from __future__ import annotations

import asyncio
import inspect
import json
import socket
import subprocess
from pathlib import Path
from typing import Any

from harness.local_server import free_port
from mnist_digit_client import AsyncDigitClient, DigitClient
from ops.polling import wait_until

KINDS = ["threaded", "asyncio"]


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


class Gateway:
    """A real gateway in front of the real service: nginx, as a team puts one before TorchServe.
    It refuses (401, {"error"}) a request without each header in `required`, and adds TorchServe's
    inference key itself, so callers send none. Its access log records which headers each caller
    sent. Started on `port` (default: a free one); needs nginx (`make gateway`)."""

    def __init__(self, server, folder: Path, port: int | None = None, required: dict[str, str] | None = None):
        self.folder, self.port = folder, port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = folder / "access.log"
        conf = folder / "nginx.conf"
        conf.write_text(_nginx_conf(self.port, server.inference, server.keys()["inference"], required or {}, folder))
        self.process = subprocess.Popen(["nginx", "-p", str(folder), "-c", str(conf)], stderr=subprocess.PIPE)
        wait_until(self._listening, 10, 0.05, f"nginx on {self.url}", errors=(OSError,))

    def _listening(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"nginx stopped: {self.process.stderr.read().decode()}")
        socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        return True

    def seen(self) -> list[dict]:
        """Per request: its path and whether it carried an Authorization and an X-Gateway header."""
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def _nginx_conf(port: int, upstream: str, key: str, required: dict[str, str], folder: Path) -> str:
    checks = "".join(
        f'if ($http_{name.lower().replace("-", "_")} != "{value}") {{ return 401 \'{{"error": '
        f'"the gateway refused the request"}}\'; }}\n'
        for name, value in required.items()
    )
    kinds = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    temp = " ".join(f"{kind}_temp_path {folder}/{kind};" for kind in kinds)
    return f"""daemon off; pid {folder}/nginx.pid; error_log {folder}/error.log; worker_processes 1;
events {{ worker_connections 256; }}
http {{
  {temp}
  log_format seen escape=json '{{"path": "$request_uri", "authorization": "$http_authorization", '
                              '"x_gateway": "$http_x_gateway"}}';
  access_log {folder}/access.log seen;
  default_type application/json;
  server {{
    listen 127.0.0.1:{port};
    location / {{
      {checks}
      proxy_set_header Authorization "Bearer {key}";
      proxy_pass {upstream};
    }}
  }}
}}
"""
