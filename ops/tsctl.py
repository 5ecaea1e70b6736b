"""Small operator CLI for a running TorchServe started from this repository.

python -m ops.tsctl key inference          # print a key from key_file.json
python -m ops.tsctl wait                   # block until /ping is healthy and every model answers
python -m ops.tsctl ping                   # exit 0 if /ping is Healthy (the image's HEALTHCHECK)
python -m ops.tsctl scale 3                # PUT /models/{mnist,number}?min_worker=3&synchronous=true
python -m ops.tsctl scale 3 --model number # one model only
python -m ops.tsctl describe               # GET /models/mnist (--model number: the number model)
python -m ops.tsctl rotate inference       # new inference key (old one stops working)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import requests

from mnist_digit_client import read_keys
from ops.host_settings import MODEL_NAMES
from ops.paths import ROOT
from ops.polling import NotYet, wait_until


def bearer(key: str | None) -> dict[str, str]:
    """The Authorization header for a key; none without one (token authorization off)."""
    return {"Authorization": f"Bearer {key}"} if key else {}


def wait_ready(
    inference_url: str,
    key_file: Path,
    model: str = "mnist",
    timeout: float = 180.0,
    alive: Callable[[], bool] | None = None,
) -> None:
    """Healthy /ping and one answered prediction, or TimeoutError: after `timeout` seconds, or as
    soon as `alive()` (when given) says the server has gone."""
    last = "no answer"

    def ready() -> bool:
        nonlocal last
        if alive is not None and not alive():
            raise TimeoutError(f"TorchServe exited before it was ready: {last}")
        try:
            headers = bearer(read_keys(key_file)["inference"])
            ping = requests.get(f"{inference_url}/ping", headers=headers, timeout=5)
            if not (ping.ok and ping.json().get("status") == "Healthy"):
                last = f"ping: {ping.status_code} {ping.text[:200]}"
            else:
                answer = requests.post(f"{inference_url}/predictions/{model}", json=_PROBE, timeout=10, headers=headers)
                if answer.status_code == 200:
                    return True
                last = f"prediction: {answer.status_code} {answer.text[:200]}"
        except (OSError, ValueError, KeyError, requests.RequestException) as e:
            last = repr(e)
        raise NotYet(last)

    wait_until(ready, timeout, 0.5, f"TorchServe at {inference_url} to answer a prediction")


def wait_for_workers(
    management_url: str,
    key: str | None,
    count: int,
    without: int | None = None,
    model: str = "mnist",
    timeout: float = 120.0,
) -> list[int]:
    """The worker pids once exactly `count` workers are READY and none has pid `without` (a killed
    worker's replacement, a scale that has settled); TimeoutError otherwise."""

    def settled() -> tuple[list[int]]:
        workers = describe(management_url, key, model)["workers"]
        pids = [w.get("pid") for w in workers]
        if len(workers) == count and without not in pids and all(w["status"] == "READY" for w in workers):
            return (pids,)  # truthy, also for no workers
        raise NotYet(f"workers {[(w.get('pid'), w['status']) for w in workers]}")

    return wait_until(settled, timeout, 0.2, f"{count} READY workers of {model}")[0]


# A "1" (a 3 px vertical stroke, rows 4-24) as a JSON "instances" array: no image encoder needed;
# every model reads it (the number model as the number "1").
_PROBE = {"instances": [[[255 if 4 <= row <= 24 and 13 <= col <= 15 else 0 for col in range(28)] for row in range(28)]]}


def ping(inference_url: str, key_file: Path) -> None:
    """Healthy /ping or SystemExit; sends the inference key only if a key file exists (token auth on)."""
    headers = bearer(read_keys(key_file)["inference"]) if key_file.exists() else {}
    response = requests.get(f"{inference_url}/ping", headers=headers, timeout=4)
    if not (response.ok and response.json().get("status") == "Healthy"):
        raise SystemExit(f"unhealthy: {response.status_code} {response.text[:200]}")


def scale(
    management_url: str, key: str, workers: int, model: str = "mnist", timeout: float = 120, attempts: int = 3
) -> dict:
    """Set min and max workers to `workers` and wait for TorchServe to get there. A 5xx is tried
    again (the request is idempotent): TorchServe 0.12's frontend can answer 500 when a worker it
    stops is in the middle of a batch (a ConcurrentModificationException in
    BatchAggregator.sendError, seen in tests/test_zero_loss.py's scale-down under load)."""
    for attempt in range(1, attempts + 1):
        response = requests.put(
            f"{management_url}/models/{model}",
            headers=bearer(key),
            timeout=timeout,
            params={"min_worker": workers, "max_worker": workers, "synchronous": "true"},
        )
        if response.status_code < 500 or attempt == attempts:
            break
        time.sleep(1)
    response.raise_for_status()
    return response.json()


def describe(management_url: str, key: str | None, model: str = "mnist") -> dict:
    response = requests.get(f"{management_url}/models/{model}", headers=bearer(key), timeout=30)
    response.raise_for_status()
    return response.json()[0]


def registered(management_url: str, key: str | None) -> list[str]:
    """The service's models (MODEL_NAMES) that the server has registered, in that order."""
    response = requests.get(f"{management_url}/models", headers=bearer(key), timeout=30)
    response.raise_for_status()
    names = {model["modelName"] for model in response.json()["models"]}
    return [name for name in MODEL_NAMES if name in names]


def rotate(management_url: str, api_key: str, kind: str) -> None:
    """Replace the inference or management key; TorchServe rewrites key_file.json."""
    response = requests.post(f"{management_url}/token", params={"type": kind}, headers=bearer(api_key), timeout=30)
    response.raise_for_status()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--inference", default="http://127.0.0.1:8080", help="inference API address")
    p.add_argument("--management", default="http://127.0.0.1:8081", help="management API address")
    p.add_argument("--key-file", default=str(ROOT / "key_file.json"), help="TorchServe key file")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("key").add_argument("kind", choices=["inference", "management", "API"])
    sub.add_parser("wait").add_argument("--timeout", type=float, default=180.0)
    sub.add_parser("ping")
    scaled = sub.add_parser("scale")
    scaled.add_argument("workers", type=int)
    scaled.add_argument("--model", choices=MODEL_NAMES, default=None, help="default: every model registered")
    sub.add_parser("describe").add_argument("--model", choices=MODEL_NAMES, default="mnist")
    sub.add_parser("rotate").add_argument("kind", choices=["inference", "management"])
    args = p.parse_args(argv)

    if args.command == "key":
        print(read_keys(args.key_file)[args.kind])
    elif args.command == "wait":
        for model in MODEL_NAMES:
            wait_ready(args.inference, Path(args.key_file), model, timeout=args.timeout)
    elif args.command == "ping":
        ping(args.inference, Path(args.key_file))
    elif args.command == "scale":
        key = read_keys(args.key_file)["management"]
        for model in [args.model] if args.model else registered(args.management, key):
            print(json.dumps(scale(args.management, key, args.workers, model)))
            print(json.dumps(_workers(describe(args.management, key, model))))
    elif args.command == "rotate":
        rotate(args.management, read_keys(args.key_file)["API"], args.kind)
        print(f"new {args.kind} key written to {args.key_file}")
    elif args.command == "describe":
        print(json.dumps(describe(args.management, read_keys(args.key_file)["management"], args.model), indent=2))


def _workers(description: dict) -> list[dict]:
    return [{k: w[k] for k in ("id", "status", "gpu")} for w in description["workers"]]


if __name__ == "__main__":
    try:
        main()
    except (TimeoutError, requests.RequestException, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
