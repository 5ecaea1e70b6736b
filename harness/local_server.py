"""Start a real TorchServe (Java frontend + Python workers) on free loopback ports, privately.

Used by the integration tests and the benchmarks. Each server gets its own folder and temp
folder, so several servers (and a user's `make serve`) never see each other.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import requests

from mnist_digit_client import read_keys
from ops.host_settings import stored_models
from ops.paths import ROOT
from ops.properties import read_properties, write_properties
from ops.tsctl import bearer, wait_ready


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LocalTorchServe:
    model_store: Path
    overrides: dict[str, str] = field(default_factory=dict)  # config.properties entries to change
    environ: dict[str, str] = field(default_factory=dict)  # environment entries to add (LOG_FORMAT, ...)
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="ts-")))
    process: subprocess.Popen | None = None

    def __post_init__(self) -> None:
        # the service's models whose archive the store holds: loaded, and waited for, at start
        self.models = stored_models(self.model_store)
        self._pick_ports()

    def _pick_ports(self) -> None:
        self.ports = {name: free_port() for name in ("inference", "management", "metrics", "grpc", "grpc_mgmt")}
        self.inference = f"http://127.0.0.1:{self.ports['inference']}"
        self.management = f"http://127.0.0.1:{self.ports['management']}"
        self.metrics = f"http://127.0.0.1:{self.ports['metrics']}"
        self.predictions = f"{self.inference}/predictions/mnist"

    def write_config(self) -> Path:
        """The repository's config.properties with this server's ports, store and absolute paths."""
        props = read_properties(ROOT / "config.properties")
        props.update(
            {
                "inference_address": self.inference,
                "management_address": self.management,
                "metrics_address": self.metrics,
                # TorchServe always starts its gRPC servers too (7070/7071 by default).
                "grpc_inference_port": str(self.ports["grpc"]),
                "grpc_management_port": str(self.ports["grpc_mgmt"]),
                "model_store": str(self.model_store),
                "load_models": ",".join(f"{name}={name}.mar" for name in self.models),
                "metrics_config": str(ROOT / props.get("metrics_config", "handler/metrics.yaml")),
                # The repository's relative log4j2.xml, made absolute: this server runs elsewhere.
                "vmargs": re.sub(
                    r"(-Dlog4j\.configurationFile=)(?!/)(\S+)",
                    lambda m: m.group(1) + str(ROOT / m.group(2)),
                    props.get("vmargs", ""),
                ),
            }
        )
        props.update(self.overrides)
        return write_properties(self.root / "config.properties", props)

    @property
    def env(self) -> dict[str, str]:
        tmp = self.root / "tmp"
        tmp.mkdir(exist_ok=True)
        bin_dir = str(Path(sys.executable).parent)
        # TS_CONFIG_FILE (set by the venv's activate script) would win over --ts-config.
        env = {k: v for k, v in os.environ.items() if k != "TS_CONFIG_FILE"}
        # TMPDIR holds the launcher's pid file; TEMP becomes the JVM's java.io.tmpdir, where the
        # worker sockets (.ts.sock.9000, ...) live. Both private, or servers fight over them.
        return dict(
            env,
            TMPDIR=str(tmp),
            TEMP=str(tmp),
            PATH=f"{bin_dir}:{env.get('PATH', '')}",
            LOG_LOCATION=str(self.root / "logs"),
            METRICS_LOCATION=str(self.root / "logs"),
            **self.environ,
        )

    def start(self, timeout: float = 180.0, attempts: int = 3) -> LocalTorchServe:
        """Start and wait until a prediction is answered. A port that another process took between
        free_port() and the frontend's bind (wrk's connections take ephemeral ports too) makes the
        frontend stop at once; then it starts again on fresh ports, up to `attempts` times."""
        attempt = 1
        while True:
            config = self.write_config()
            with open(self.root / "torchserve.out", "wb") as log:  # the launcher keeps its own copy
                self.process = subprocess.Popen(
                    [
                        shutil.which("torchserve", path=self.env["PATH"]) or "torchserve",
                        "--start",
                        "--foreground",
                        "--ncs",
                        "--ts-config",
                        str(config),
                    ],
                    cwd=self.root,
                    env=self.env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            try:
                for model in self.models:
                    wait_ready(
                        self.inference,
                        self.root / "key_file.json",
                        model,
                        timeout=timeout,
                        alive=lambda: self.process.poll() is None and not self._port_taken(),
                    )
                return self
            except TimeoutError as error:
                port_taken = self._port_taken()
                self.stop()
                if not port_taken or attempt == attempts:
                    raise RuntimeError(f"TorchServe did not start: {error}\n{self.log_tail()}") from None
            attempt += 1
            self._pick_ports()

    def _port_taken(self) -> bool:
        """Whether the frontend could not bind one of its ports."""
        out = self.root / "torchserve.out"
        return out.exists() and "Failed to bind to address" in out.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the launcher, the Java frontend and every worker at once, as a node failure or an
        OOM kill of the pod does: nothing is answered or closed cleanly."""
        _signal(self._family(), "kill")
        self.process.wait(timeout=10)
        self.process = None

    def _family(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.process.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def stop(self) -> None:
        """Stop the launcher, the Java frontend and every worker, also after a crash."""
        if self.process is None:
            return
        family = self._family()
        _signal(family, "terminate")
        _, alive = psutil.wait_procs(family, timeout=15)
        _signal(alive, "kill")
        self.process.wait(timeout=10)
        self.process = None

    def keys(self) -> dict[str, str]:
        return read_keys(self.root / "key_file.json")

    def headers(self, kind: str = "inference") -> dict[str, str]:
        return bearer(self.keys()[kind])

    def predict(
        self, body: bytes, content_type: str = "application/octet-stream", timeout: float = 30, path: str = "", **kwargs
    ) -> requests.Response:
        """POST to /predictions/mnist, or to `path` (e.g. /v2/models/mnist/infer)."""
        return requests.post(
            self.inference + path if path else self.predictions,
            data=body,
            timeout=timeout,
            headers={**self.headers(), "Content-Type": content_type},
            **kwargs,
        )

    def worker_pids(self, model: str = "mnist") -> list[int]:
        description = requests.get(
            f"{self.management}/models/{model}", headers=self.headers("management"), timeout=30
        ).json()[0]
        return [int(w["pid"]) for w in description["workers"] if w.get("pid")]

    def log_tail(self, lines: int = 60) -> str:
        texts = []
        for path in [self.root / "torchserve.out", *sorted((self.root / "logs").glob("*.log"))]:
            if path.exists():
                texts.append(f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(texts)


def _signal(processes: list[psutil.Process], method: str) -> None:
    """`terminate` or `kill` each process, those already gone included."""
    for proc in processes:
        try:
            getattr(proc, method)()
        except psutil.NoSuchProcess:
            pass
