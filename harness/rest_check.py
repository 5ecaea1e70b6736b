"""The REST and gRPC subset a deployed service must pass: `make image-test` and `make deploy-check` run it.

    python -m harness.rest_check --inference http://127.0.0.1:8080 --management http://127.0.0.1:8081 \
        --metrics http://127.0.0.1:8082 [--grpc 127.0.0.1:7070] [--key-file key_file.json]

Without --key-file the service is expected to run with token authorization off (behind a
gateway); with it, requests carry the keys and a request without a key must be refused.
Prints one line per check and exits non-zero if any fails.
"""

from __future__ import annotations

import argparse
import base64
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import requests

from deploy.monitoring import metric_names
from harness.grpc_stubs import bearer as grpc_bearer
from harness.grpc_stubs import generate_stubs
from mnist_digit_client import read_keys
from ops.paths import ROOT
from ops.polling import wait_until
from ops.tsctl import bearer, wait_for_workers
from synthetic.families import encode_image
from synthetic.numbers import mnist_row

FIXTURES = ROOT / "tests" / "fixtures"
TIMEOUT_S = 30


class Service:
    def __init__(self, inference: str, management: str, metrics: str, key_file: Path | None, grpc: str | None = None):
        self.inference, self.management, self.metrics = inference.rstrip("/"), management.rstrip("/"), metrics
        self.key_file = key_file
        self.grpc = grpc  # host:port of the gRPC inference API; None: not checked
        self.predictions = f"{self.inference}/predictions/mnist"

    def keys(self) -> dict[str, str]:
        return read_keys(self.key_file)

    def headers(self, kind: str = "inference") -> dict[str, str]:
        return bearer(self.keys()[kind]) if self.key_file else {}

    def post(self, **kwargs) -> requests.Response:
        extra = kwargs.pop("headers", {})
        return requests.post(self.predictions, headers={**self.headers(), **extra}, timeout=TIMEOUT_S, **kwargs)


def _digit(response: requests.Response) -> int:
    assert response.status_code == 200, f"{response.status_code} {response.text[:200]}"
    return response.json()["digit"]


def check_ping(s: Service) -> None:
    response = requests.get(f"{s.inference}/ping", headers=s.headers(), timeout=TIMEOUT_S)
    assert response.status_code == 200 and response.json()["status"] == "Healthy", response.text


def check_each_input_kind(s: Service) -> None:
    sample = np.load(FIXTURES / "mnist_test_100.npz")
    image, label = sample["images"][0], int(sample["labels"][0])
    png = encode_image(image)
    b64 = base64.b64encode(png).decode()
    for name in ("seven.png", "paper_seven.jpg", "canvas_seven.png"):
        body = (FIXTURES / name).read_bytes()
        assert _digit(s.post(data=body, headers={"Content-Type": "application/octet-stream"})) == 7, name
    assert _digit(s.post(data=png, headers={"Content-Type": "image/png"})) == label
    assert _digit(s.post(files={"file": ("digit.png", png, "image/png")})) == label
    assert _digit(s.post(json={"data": f"data:image/png;base64,{b64}"})) == label
    batch = s.post(json={"instances": [image.tolist(), {"b64": b64}]})
    assert batch.status_code == 200, batch.text[:200]
    assert [p["digit"] for p in batch.json()["predictions"]] == [label, label]


def check_open_inference(s: Service) -> None:
    """The Open Inference Protocol over REST: a PNG as BYTES, and the server's readiness."""
    ready = requests.get(f"{s.inference}/v2/health/ready", headers=s.headers(), timeout=TIMEOUT_S)
    assert ready.status_code == 200 and ready.json() == {"ready": True}, ready.text[:200]
    seven = base64.b64encode((FIXTURES / "seven.png").read_bytes()).decode()
    body = {"id": "check", "inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": [seven]}]}
    response = requests.post(f"{s.inference}/v2/models/mnist/infer", json=body, headers=s.headers(), timeout=TIMEOUT_S)
    assert response.status_code == 200, response.text[:200]
    assert response.json()["id"] == "check" and response.json()["outputs"][0]["data"] == [7], response.text[:200]


def number_sample() -> tuple[bytes, str]:
    """Four MNIST test digits in a row, as a PNG, and the number they write."""
    sample = np.load(FIXTURES / "mnist_test_100.npz")
    images, labels = sample["images"][4:8], sample["labels"][4:8]
    return encode_image(mnist_row(images)), "".join(map(str, labels))


def check_number(s: Service) -> None:
    """The number model beside the digit model (number_sample)."""
    png, text = number_sample()
    response = requests.post(
        f"{s.inference}/predictions/number",
        data=png,
        headers={**s.headers(), "Content-Type": "image/png"},
        timeout=TIMEOUT_S,
    )
    assert response.status_code == 200, f"{response.status_code} {response.text[:200]}"
    assert response.json()["number"] == text, response.text[:300]


def check_grpc(s: Service) -> None:
    """TorchServe's gRPC Predictions and the Open Inference Protocol's ModelInfer, stubs generated
    from TorchServe's own .proto files."""
    if not s.grpc:
        return
    seven = (FIXTURES / "seven.png").read_bytes()
    metadata = grpc_bearer(s.keys()["inference"] if s.key_file else None)
    with tempfile.TemporaryDirectory() as folder, grpc.insecure_channel(s.grpc) as channel:
        stubs = generate_stubs(Path(folder))
        request = stubs.inference_messages.PredictionsRequest(model_name="mnist", input={"data": seven})
        answer = stubs.inference.InferenceAPIsServiceStub(channel).Predictions(request, metadata=metadata, timeout=30)
        assert b'"digit": 7' in answer.prediction, answer.prediction[:200]
        infer = stubs.open_inference_messages.ModelInferRequest(model_name="mnist", id="check")
        infer.inputs.add(name="image", datatype="BYTES", shape=[1]).contents.bytes_contents.append(seven)
        service = stubs.open_inference.GRPCInferenceServiceStub(channel)
        response = service.ModelInfer(infer, metadata=metadata, timeout=30)
        assert list(response.outputs[0].contents.int64_contents) == [7], response


def check_bad_input_is_4xx_json(s: Service) -> None:
    response = s.post(
        data=b"\x00\x01 definitely not an image \xff" * 4, headers={"Content-Type": "application/octet-stream"}
    )
    assert response.status_code == 415, response.status_code
    assert response.json()["code"] == 415 and "image" in response.json()["error"]


def check_auth(s: Service) -> None:
    if not s.key_file:
        return
    response = requests.post(s.predictions, data=encode_image(np.eye(28, dtype=np.uint8) * 255), timeout=TIMEOUT_S)
    assert response.status_code in (400, 401, 403) and "Token Authorization failed" in response.text


def check_metrics(s: Service) -> None:
    # Handler metrics leave each worker once a second.
    wait_until(
        lambda: all(
            name in requests.get(f"{s.metrics}/metrics", timeout=TIMEOUT_S).text
            for name in ("ts_inference_requests_total", "DigitPredictions")
        ),
        20,
        0.5,
        "ts_inference_requests_total and DigitPredictions in /metrics",
    )


def check_monitoring_metrics(s: Service) -> None:
    """Every metric and label the alert rules and the dashboard (deploy/monitoring/) use is exported,
    after the checks above sent good and bad requests."""

    def flushed() -> str:
        text = requests.get(f"{s.metrics}/metrics", timeout=TIMEOUT_S).text
        return text if "RejectedInputs{" in text and "BatchTime_bucket{" in text else ""

    found = metric_names.problems(wait_until(flushed, 20, 0.5, "RejectedInputs and BatchTime in /metrics"))
    assert found == {}, found


def check_scale(s: Service) -> None:
    """One worker more, then back; each step waits until every worker is READY."""
    key = s.keys()["management"] if s.key_file else None
    url, headers = f"{s.management}/models/mnist", bearer(key)
    before = len(requests.get(url, headers=headers, timeout=TIMEOUT_S).json()[0]["workers"])
    for workers in (before + 1, before):
        response = requests.put(
            url,
            headers=headers,
            timeout=120,
            params={"min_worker": workers, "max_worker": workers, "synchronous": "true"},
        )
        assert response.status_code == 200, response.text[:200]
        # A synchronous scale-up can answer before the new worker has loaded the model, and removing
        # a worker that is still loading fails in TorchServe 0.12 ("Failed to start workers").
        wait_for_workers(s.management, key, workers)
    assert _digit(s.post(data=(FIXTURES / "seven.png").read_bytes(), headers={"Content-Type": "image/png"})) == 7


CHECKS: list[Callable[[Service], None]] = [
    check_ping,
    check_each_input_kind,
    check_open_inference,
    check_number,
    check_grpc,
    check_bad_input_is_4xx_json,
    check_auth,
    check_metrics,
    check_monitoring_metrics,
    check_scale,
]


def run(service: Service) -> bool:
    ok = True
    for check in CHECKS:
        try:
            check(service)
            print(f"PASS {check.__name__}", flush=True)
        except (AssertionError, TimeoutError, requests.RequestException, grpc.RpcError, ValueError, KeyError) as error:
            ok = False
            print(f"FAIL {check.__name__}: {error!r}", flush=True)
    return ok


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--inference", required=True)
    p.add_argument("--management", required=True)
    p.add_argument("--metrics", required=True)
    p.add_argument("--grpc", default=None, help="host:port of the gRPC inference API (default: not checked)")
    p.add_argument("--key-file", type=Path, default=None, help="TorchServe's key file (token auth on)")
    a = p.parse_args(argv)
    sys.exit(0 if run(Service(a.inference, a.management, a.metrics, a.key_file, a.grpc)) else 1)


if __name__ == "__main__":
    main()
