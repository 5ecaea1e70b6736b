"""Run the service image (built by ops/image.py) and check it over REST, then remove it.

    python -m harness.container image-test      # run with published ports and JSON logs, REST subset,
                                                #   a refused request in the log stream, remove
    python -m harness.container deploy-run      # run the image as deploy/ does, REST subset, remove
                                                #   (the rendered CPU Deployment, KServe's runtime with
                                                #   both models' routes; needs kustomize and
                                                #   `make kserve-store`)

Both check the image as it is (`make image`, `python -m ops.image build`), building it first only
where it is missing or --build is given, and remove it afterwards unless --keep-image is given.
"""

from __future__ import annotations

import argparse
import base64
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import requests
import yaml

from harness.local_server import free_port
from harness.log_check import access_lines, find_refusal, refuse, unparsed_json
from harness.pod_spec import MODEL_MOUNT, deployment_run_args, kserve_run_args
from harness.rest_check import FIXTURES, Service, number_sample
from harness.rest_check import run as run_rest_check
from mnist_digit_client import read_inference_key
from ops import manifests
from ops.image import IMAGE, Engine, build_image, remove_images
from ops.paths import ROOT
from ops.polling import NotYet, wait_until
from ops.tsctl import bearer

CONTAINER_PORTS = {"inference": 8080, "management": 8081, "metrics": 8082, "grpc": 7070}
READY_TIMEOUT_S = 240
STOP_GRACE_S = 30


@contextmanager
def container(engine: Engine, run_args: list[str], name: str) -> Iterator[str]:
    """A detached container, removed afterwards; its log is printed if the body fails. The name carries
    this process's id: checks run side by side on one machine must not remove each other's containers."""
    name = f"{name}-{os.getpid()}"
    engine.run("rm", "-f", name, check=False, capture=True)
    engine.run("run", "-d", "--name", name, *run_args)
    try:
        yield name
    except BaseException:
        logs = engine.run("logs", "--tail", "60", name, check=False, capture=True)
        print(f"--- container log ({name})\n{logs.stdout}{logs.stderr}", file=sys.stderr)
        raise
    finally:
        engine.run("rm", "-f", "-t", "10", name, check=False, capture=True)


def publish(ports: dict[str, int]) -> tuple[list[str], dict[str, str]]:
    """`-p` flags on free loopback ports for the container's ports, and their URLs (host:port for gRPC)."""
    flags, urls = [], {}
    for role, container_port in ports.items():
        host_port = free_port()
        flags += ["-p", f"127.0.0.1:{host_port}:{container_port}"]
        urls[role] = f"127.0.0.1:{host_port}" if role == "grpc" else f"http://127.0.0.1:{host_port}"
    return flags, urls


def wait_healthy(
    engine: Engine, name: str, url: str, headers: Callable[[], dict[str, str]], timeout: float = READY_TIMEOUT_S
) -> None:
    """/ping answers Healthy, or TimeoutError; RuntimeError at once if the container stops."""

    def healthy() -> bool:
        inspect = engine.run("inspect", "--format", "{{.State.Status}}", name, check=False, capture=True)
        state = inspect.stdout.strip() if inspect.returncode == 0 else f"gone ({inspect.stderr.strip()})"
        if state != "running":
            raise RuntimeError(f"container {name} is {state}")
        response = requests.get(f"{url}/ping", headers=headers(), timeout=5)
        if response.ok and response.json().get("status") == "Healthy":
            return True
        raise NotYet(f"{response.status_code} {response.text[:200]}")

    wait_until(
        healthy,
        timeout,
        1,
        f"container {name} to be healthy",
        errors=(OSError, ValueError, requests.RequestException, subprocess.SubprocessError),
    )


def healthcheck_status(engine: Engine, name: str) -> str:
    """Run the image's HEALTHCHECK (podman runs it on demand; docker on its schedule)."""
    if engine.name == "podman":
        result = engine.run("healthcheck", "run", name, check=False, capture=True)
        return "healthy" if result.returncode == 0 else f"unhealthy: {result.stdout}{result.stderr}"

    def settled() -> str:
        status = engine.run("inspect", "--format", "{{.State.Health.Status}}", name, capture=True).stdout.strip()
        return "" if status == "starting" else status

    try:
        return wait_until(settled, 120, 2, f"the HEALTHCHECK of {name}")
    except TimeoutError:
        return "starting"


def check_log_stream(engine: Engine, name: str, service: Service, json_lines: bool) -> bool:
    """A request refused with 415, sent with an X-Client-Request-ID of its own, in the container's
    log stream (`docker logs`, what `kubectl logs` reads): the model log's line with its status and
    both IDs, and the access log's line; with JSON lines, none broken."""
    request_id, client_id = refuse(service.predictions, service.headers())

    def stream() -> str:
        result = engine.run("logs", name, check=False, capture=True)
        return result.stdout + result.stderr

    try:
        record = wait_until(
            lambda: find_refusal(stream(), request_id, client_id, 415), 30, 0.5, f"request {request_id} in the log"
        )
    except TimeoutError as error:
        print(f"FAIL log stream: {error}", flush=True)
        return False
    text = stream()
    access, broken = access_lines(text, "/predictions/mnist", 415), unparsed_json(text)
    ok = record.json == json_lines and bool(access) and not broken
    print(
        f"{'PASS' if ok else 'FAIL'} log stream ({'JSON' if record.json else 'text'} lines, {len(broken)} broken): "
        f"model log {record.message!r}; access log {access[-1].message if access else None!r}",
        flush=True,
    )
    return ok


def image_test(engine: Engine) -> bool:
    flags, urls = publish(CONTAINER_PORTS)
    run_args = [*flags, "-e", "LOG_FORMAT=json", IMAGE]
    with container(engine, run_args, "mnist-serve-image-test") as name, tempfile.TemporaryDirectory() as tmp:
        key_file = Path(tmp) / "key_file.json"

        def copy_keys() -> dict[str, str]:
            # The container writes its own random keys; read them from inside, as a user would.
            key_file.write_text(engine.run("exec", name, "cat", "/srv/key_file.json", capture=True).stdout)
            return bearer(read_inference_key(key_file))

        wait_healthy(engine, name, urls["inference"], copy_keys)
        user = engine.run("exec", name, "id", "-u", capture=True).stdout.strip()
        health = healthcheck_status(engine, name)
        print(f"container user id {user}; HEALTHCHECK: {health}", flush=True)
        service = Service(urls["inference"], urls["management"], urls["metrics"], key_file, urls["grpc"])
        ok = run_rest_check(service)
        ok = check_log_stream(engine, name, service, json_lines=True) and ok
        return stop_gracefully(engine, name, STOP_GRACE_S) and ok and user != "0" and health == "healthy"


def stop_gracefully(engine: Engine, name: str, grace: int) -> bool:
    """SIGTERM, then SIGKILL after `grace` seconds (docker stop, a pod's termination): the server
    must have exited by itself, so the engine reports no SIGKILL (exit code 137)."""
    started = time.monotonic()
    engine.run("stop", "-t", str(grace), name, timeout=grace + 60)
    seconds = time.monotonic() - started
    code = engine.run("inspect", "--format", "{{.State.ExitCode}}", name, capture=True).stdout.strip()
    print(f"stopped in {seconds:.0f} s (grace {grace} s), exit code {code}", flush=True)
    return code != "137" and seconds < grace


def run_as_deployment(engine: Engine, deployment: dict) -> bool:
    """The rendered Deployment's container spec under the container engine; REST subset with no key; preStop + stop."""
    flags, command, spec = deployment_run_args(deployment, engine.name)
    ports = {p["name"]: p["containerPort"] for p in spec["container"]["ports"]}
    roles = {"inference": "http", "management": "management", "metrics": "metrics", "grpc": "grpc"}
    publish_flags, urls = publish({role: ports[name] for role, name in roles.items()})
    print(f"deployment {deployment['metadata']['name']}: run {' '.join(flags + command)}", flush=True)
    with container(engine, [*flags, *publish_flags, *command], "mnist-serve-deploy-check") as name:
        wait_healthy(engine, name, urls["inference"], dict)
        ok = run_rest_check(Service(urls["inference"], urls["management"], urls["metrics"], None, urls["grpc"]))
        ok = _terminate_like_kubelet(engine, name, spec) and ok
    return ok


def _terminate_like_kubelet(engine: Engine, name: str, spec: dict) -> bool:
    """The preStop hook, then SIGTERM; both must fit in the pod's grace period."""
    grace = spec["pod"]["terminationGracePeriodSeconds"]
    started = time.monotonic()
    engine.run("exec", name, *spec["container"]["lifecycle"]["preStop"]["exec"]["command"], timeout=grace)
    pre_stop = time.monotonic() - started
    print(f"preStop took {pre_stop:.0f} s", flush=True)
    return stop_gracefully(engine, name, int(grace - pre_stop))


def run_as_kserve(engine: Engine, store: Path | None = None, full: bool = True) -> bool:
    """deploy/kserve's ServingRuntime container as KServe starts it for the InferenceService: same image,
    command, args, env, user, read-only root with emptyDirs, the model's CPU and memory limits, nothing
    mounted at /mnt/models (no storageUri), or `store` mounted read-only there as a storageUri would be.
    Every model's InferenceService starts this same container (tests/test_deploy.py): `mnist`'s is run.
    `full`: the REST and gRPC subset and a stop besides. Always: v1 and v2 of both models on the routed port."""
    runtime = yaml.safe_load(manifests.KSERVE_RUNTIME.read_text())
    isvc = yaml.safe_load(manifests.INFERENCE_SERVICES["mnist"].read_text())
    flags, command, ports = kserve_run_args(runtime, isvc, engine.name)
    if store is not None:
        flags += ["-v", f"{store.resolve()}:{MODEL_MOUNT}:ro"]
    publish_flags, urls = publish(ports)
    print(f"kserve runtime {runtime['metadata']['name']}: run {' '.join(flags + command)}", flush=True)
    with container(engine, [*flags, *publish_flags, *command], "mnist-serve-kserve-check") as name:
        wait_healthy(engine, name, urls["inference"], dict)
        ok = _serves_the_store(engine, name, store) if store is not None else True
        if full:
            service = Service(urls["inference"], urls["management"], urls["metrics"], None, urls["grpc"])
            ok = run_rest_check(service) and ok
        ok = check_kserve_routes(urls["inference"]) and ok
        if full:
            ok = stop_gracefully(engine, name, STOP_GRACE_S) and ok
    return ok


def _serves_the_store(engine: Engine, name: str, store: Path) -> bool:
    """The mount hides the image's own /mnt/models: the config there is the store's (ops.model_layout's header)."""
    config = f"{MODEL_MOUNT}/config/config.properties"
    mounted = "--flavor kserve" in engine.run("exec", name, "head", "-n", "2", config, capture=True).stdout
    print(f"{'PASS' if mounted else 'FAIL'} {MODEL_MOUNT} holds {store.name}/, not the image's own", flush=True)
    return mounted


def check_kserve_routes(url: str, headers: dict[str, str] | None = None) -> bool:
    """KServe's v1 and v2 (Open Inference Protocol) calls as KServe forwards them to the routed port,
    for each model (deploy/kserve names an InferenceService after each); `headers`: a key, for a
    server with token authorization on."""
    number, text = number_sample()
    # per model: an image, the answer's field (v1) or output (v2) that reads it, and what it must say
    expected = {"mnist": ((FIXTURES / "seven.png").read_bytes(), "digit", 7), "number": (number, "number", text)}
    ok = True
    for model, (image, field, answer) in expected.items():
        b64 = base64.b64encode(image).decode()
        v1 = requests.post(
            f"{url}/v1/models/{model}:predict", json={"instances": [{"b64": b64}]}, headers=headers, timeout=30
        )
        v1_ok = v1.status_code == 200 and [p[field] for p in v1.json()["predictions"]] == [answer]
        print(f"{'PASS' if v1_ok else 'FAIL'} kserve v1 {model}:predict: {v1.status_code} {v1.text[:100]}", flush=True)
        body = {"id": "kserve", "inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": [b64]}]}
        v2 = requests.post(f"{url}/v2/models/{model}/infer", json=body, headers=headers, timeout=30)
        outputs = {o["name"]: o["data"] for o in v2.json()["outputs"]} if v2.status_code == 200 else {}
        v2_ok = v2.status_code == 200 and v2.json()["id"] == "kserve" and outputs.get(field) == [answer]
        print(f"{'PASS' if v2_ok else 'FAIL'} kserve v2 {model}/infer: {v2.status_code} {v2.text[:100]}", flush=True)
        ok = ok and v1_ok and v2_ok
    return ok


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["image-test", "deploy-run"])
    p.add_argument("--store", type=Path, default=ROOT / "kserve-store", help="deploy-run: `make kserve-store` output")
    p.add_argument("--keep-image", action="store_true", help="leave the image for a rerun or the next check")
    p.add_argument("--build", action="store_true", help="build the image first even where it exists")
    a = p.parse_args(argv)
    engine = Engine()
    print(f"container engine: {engine.name}", flush=True)
    if a.build or not engine.image_exists(IMAGE):
        build_image(engine)
    try:
        if a.command == "image-test":
            ok = image_test(engine)
        else:
            ok = run_as_deployment(engine, manifests.deployment("cpu"))
            ok = run_as_kserve(engine) and ok
            # What a storageUri holding `make kserve-store`'s layout would serve instead of the baked one.
            ok = run_as_kserve(engine, a.store, full=False) and ok
    finally:
        if not a.keep_image:
            remove_images(engine)
    print(f"{a.command}:", "passed" if ok else "FAILED", flush=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
