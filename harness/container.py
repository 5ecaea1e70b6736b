"""Build and run the service image with docker (if a daemon answers) or podman.

    python -m harness.container image           # build mnist-serve:latest
    python -m harness.container image-test      # build, run with published ports, REST subset, remove
    python -m harness.container deploy-run      # run the image as deploy/ does, REST subset, remove
                                                #   (needs the image and `make kserve-store`)

Where no base image can be pulled (no registry), a Debian bookworm base is made with
`debootstrap --variant=minbase` (cached in ~/.cache/mnist-serve) and passed as BASE_IMAGE; the
Dockerfile's default stays the public debian:bookworm-slim.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import requests

from harness.local_server import free_port
from harness.rest_check import Service, run as run_rest_check
from ops.paths import ROOT
from ops.properties import read_properties
IMAGE = os.environ.get("IMAGE", "mnist-serve:latest")
PUBLIC_BASE = "debian:bookworm-slim"
LOCAL_BASE = "localhost/mnist-serve-base:bookworm"
BASE_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mnist-serve" / "bookworm-minbase.tar"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
# Debian's podman 4.3 needs runc on hosts with hybrid cgroups (crun fails) and no default rlimits.
PODMAN_CONF = ROOT / "deploy" / "podman" / "containers.conf"
PODMAN_PACKAGES = ("podman", "runc", "debootstrap")
CONTAINER_PORTS = {"inference": 8080, "management": 8081, "metrics": 8082}
READY_TIMEOUT_S = 240
STOP_GRACE_S = 30
COMMAND_TIMEOUT_S = 3600  # the build downloads and unpacks torch's CUDA build: 6 min alone, 25-30 min on 2 busy cores


class Engine:
    def __init__(self) -> None:
        self.name = "docker" if _docker_answers() else "podman"
        if self.name == "podman":
            _install_podman_if_missing()
            os.environ.setdefault("CONTAINERS_CONF", str(PODMAN_CONF))

    def cmd(self, *args: str) -> list[str]:
        return ["podman", "--runtime", "runc", *args] if self.name == "podman" else ["docker", *args]

    def run(self, *args: str, check: bool = True, capture: bool = False, timeout: float = 300,
            stdin=None) -> subprocess.CompletedProcess:
        return subprocess.run(self.cmd(*args), check=check, timeout=timeout, stdin=stdin,
                              capture_output=capture, text=capture)

    def image_exists(self, image: str) -> bool:
        return self.run("image", "inspect", image, check=False, capture=True).returncode == 0


def _docker_answers() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def _install_podman_if_missing() -> None:
    missing = [p for p in PODMAN_PACKAGES if not shutil.which(p) and not Path(f"/usr/sbin/{p}").exists()]
    if not missing:
        return
    if os.geteuid() != 0:
        raise SystemExit(f"no docker daemon answers and {' '.join(missing)} are missing: "
                         f"sudo apt-get install {' '.join(PODMAN_PACKAGES)}")
    subprocess.run(["apt-get", "update", "-qq"], check=True, timeout=600)
    subprocess.run(["apt-get", "install", "-y", "-qq", *PODMAN_PACKAGES], check=True, timeout=900,
                   env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))


def base_image(engine: Engine) -> str:
    """The public base if it can be pulled, else a local debootstrap one (imported from a cached tarball)."""
    if engine.image_exists(PUBLIC_BASE) or engine.run("pull", PUBLIC_BASE, check=False, capture=True).returncode == 0:
        return PUBLIC_BASE
    if not engine.image_exists(LOCAL_BASE):
        if not BASE_CACHE.exists():
            _debootstrap_tarball(BASE_CACHE)
        with open(BASE_CACHE, "rb") as tarball:
            engine.run("import", "-", LOCAL_BASE, stdin=tarball)
    return LOCAL_BASE


def _debootstrap_tarball(target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bookworm-", dir=target.parent) as rootfs:
        subprocess.run(["debootstrap", "--variant=minbase", "bookworm", rootfs, DEBIAN_MIRROR],
                       check=True, timeout=900, stdout=subprocess.DEVNULL)
        # The host's CAs (a proxy's included) for pip inside the build; Debian's ca-certificates
        # package in the Dockerfile keeps what is under /usr/local/share/ca-certificates.
        local_cas = Path("/usr/local/share/ca-certificates")
        if local_cas.is_dir():
            shutil.copytree(local_cas, Path(rootfs) / "usr/local/share/ca-certificates", dirs_exist_ok=True)
        bundle = Path("/etc/ssl/certs/ca-certificates.crt")
        if bundle.exists():
            (Path(rootfs) / "etc/ssl/certs").mkdir(parents=True, exist_ok=True)
            shutil.copy(bundle, Path(rootfs) / "etc/ssl/certs/ca-certificates.crt")
        partial = target.with_suffix(".partial")
        subprocess.run(["tar", "-C", rootfs, "-cf", str(partial), "."], check=True, timeout=600)
        partial.rename(target)


def build_image(engine: Engine) -> float:
    """Build IMAGE; returns the build's wall seconds."""
    base = base_image(engine)
    started = time.monotonic()
    extra = ["--format", "docker"] if engine.name == "podman" else []  # OCI images drop HEALTHCHECK
    engine.run("build", *extra, "--network=host", "--build-arg", f"BASE_IMAGE={base}", "-t", IMAGE, str(ROOT),
               timeout=COMMAND_TIMEOUT_S)
    seconds = time.monotonic() - started
    size = engine.run("image", "inspect", IMAGE, "--format", "{{.Size}}", capture=True).stdout.strip()
    print(f"built {IMAGE} from {base} in {seconds:.0f} s, {int(size) / 1e9:.2f} GB", flush=True)
    return seconds


def remove_images(engine: Engine) -> None:
    for image in (IMAGE, LOCAL_BASE):
        engine.run("rmi", "-f", image, check=False, capture=True)
    engine.run("image", "prune", "-f", check=False, capture=True)


@contextmanager
def container(engine: Engine, run_args: list[str], name: str) -> Iterator[str]:
    """A detached container, removed afterwards; its log is printed if the body fails."""
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
    """`-p` flags on free loopback ports for the container's ports, and their URLs."""
    flags, urls = [], {}
    for role, container_port in ports.items():
        host_port = free_port()
        flags += ["-p", f"127.0.0.1:{host_port}:{container_port}"]
        urls[role] = f"http://127.0.0.1:{host_port}"
    return flags, urls


def wait_healthy(engine: Engine, name: str, url: str, headers: Callable[[], dict[str, str]],
                 timeout: float = READY_TIMEOUT_S) -> None:
    deadline, last = time.monotonic() + timeout, "no answer"
    while time.monotonic() < deadline:
        state = engine.run("inspect", "--format", "{{.State.Status}}", name, capture=True).stdout.strip()
        if state != "running":
            raise RuntimeError(f"container {name} is {state}")
        try:
            response = requests.get(f"{url}/ping", headers=headers(), timeout=5)
            if response.ok and response.json().get("status") == "Healthy":
                return
            last = f"{response.status_code} {response.text[:200]}"
        except (OSError, ValueError, requests.RequestException, subprocess.SubprocessError) as error:
            last = repr(error)
        time.sleep(1)
    raise TimeoutError(f"container not healthy after {timeout:.0f} s: {last}")


def healthcheck_status(engine: Engine, name: str) -> str:
    """Run the image's HEALTHCHECK (podman runs it on demand; docker on its schedule)."""
    if engine.name == "podman":
        result = engine.run("healthcheck", "run", name, check=False, capture=True)
        return "healthy" if result.returncode == 0 else f"unhealthy: {result.stdout}{result.stderr}"
    for _ in range(60):
        status = engine.run("inspect", "--format", "{{.State.Health.Status}}", name, capture=True).stdout.strip()
        if status != "starting":
            return status
        time.sleep(2)
    return "starting"


def image_test(engine: Engine) -> bool:
    flags, urls = publish(CONTAINER_PORTS)
    with container(engine, [*flags, IMAGE], "mnist-serve-image-test") as name, tempfile.TemporaryDirectory() as tmp:
        key_file = Path(tmp) / "key_file.json"

        def copy_keys() -> dict[str, str]:
            # The container writes its own random keys; read them from inside, as a user would.
            key_file.write_text(engine.run("exec", name, "cat", "/srv/key_file.json", capture=True).stdout)
            return {"Authorization": f"Bearer {json.loads(key_file.read_text())['inference']['key']}"}

        wait_healthy(engine, name, urls["inference"], copy_keys)
        user = engine.run("exec", name, "id", "-u", capture=True).stdout.strip()
        health = healthcheck_status(engine, name)
        print(f"container user id {user}; HEALTHCHECK: {health}", flush=True)
        ok = run_rest_check(Service(urls["inference"], urls["management"], urls["metrics"], key_file))
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


def deployment_run_args(manifest: Path, engine_name: str) -> tuple[list[str], list[str], dict]:
    """`run` flags and command for the Deployment's pod spec, as the kubelet would start it."""
    import yaml

    pod = yaml.safe_load(manifest.read_text())["spec"]["template"]["spec"]
    (spec,) = pod["containers"]
    pod_security, security = pod.get("securityContext", {}), spec.get("securityContext", {})
    flags = ["--user", f"{pod_security['runAsUser']}:{pod_security.get('runAsGroup', pod_security['runAsUser'])}"]
    if security.get("readOnlyRootFilesystem"):
        flags.append("--read-only")
    if "ALL" in security.get("capabilities", {}).get("drop", []):
        flags += ["--cap-drop", "ALL"]
    if security.get("allowPrivilegeEscalation") is False:
        flags += ["--security-opt", "no-new-privileges"]
    # An emptyDir is writable by the pod's user: docker honours mode=1777 on a tmpfs; podman 4.3
    # gives it the image folder's owner and mode instead, and `U` makes it the container user's.
    writable = "U" if engine_name == "podman" else "mode=1777"
    empty_dirs = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v}
    for mount in spec.get("volumeMounts", []):
        if mount["name"] in empty_dirs:
            flags += ["--tmpfs", f"{mount['mountPath']}:rw,exec,{writable}"]
    for env in spec.get("env", []):
        flags += ["-e", f"{env['name']}={env['value']}"]
    limits = spec.get("resources", {}).get("limits", {})
    if "cpu" in limits:
        flags += ["--cpus", str(limits["cpu"])]
    if "memory" in limits:
        flags += ["--memory", limits["memory"].replace("Gi", "g").replace("Mi", "m")]
    return flags, [spec["image"], *spec.get("command", []), *spec.get("args", [])], {"pod": pod, "container": spec}


def run_as_deployment(engine: Engine, manifest: Path) -> bool:
    """The Deployment's container spec under the container engine; REST subset with no key; preStop + stop."""
    flags, command, spec = deployment_run_args(manifest, engine.name)
    ports = {p["name"]: p["containerPort"] for p in spec["container"]["ports"]}
    publish_flags, urls = publish({"inference": ports["http"], "management": ports["management"],
                                   "metrics": ports["metrics"]})
    print(f"deployment {manifest.name}: run {' '.join(flags + command)}", flush=True)
    with container(engine, [*flags, *publish_flags, *command], "mnist-serve-deploy-check") as name:
        wait_healthy(engine, name, urls["inference"], dict)
        ok = run_rest_check(Service(urls["inference"], urls["management"], urls["metrics"], key_file=None))
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


def run_as_kserve(engine: Engine, store: Path) -> bool:
    """The image with the KServe layout mounted at /mnt/models, started the way KServe's TorchServe
    runtime starts it (its args plus --foreground: that runtime's own image keeps the pod alive).
    KServe's model server (the proxy in front, on 8080) is not part of this image and not simulated."""
    props = read_properties(store / "config" / "config.properties")
    port = {name: int(props[f"{name}_address"].rsplit(":", 1)[1]) for name in ("inference", "management", "metrics")}
    publish_flags, urls = publish(port)
    command = ["torchserve", "--start", "--foreground", "--ncs", "--model-store=/mnt/models/model-store",
               "--ts-config=/mnt/models/config/config.properties"]
    print(f"kserve layout {store}: run {' '.join(command)}", flush=True)
    with container(engine, ["-v", f"{store.resolve()}:/mnt/models:ro", *publish_flags, IMAGE, *command],
                   "mnist-serve-kserve-check") as name:
        wait_healthy(engine, name, urls["inference"], dict)
        ok = run_rest_check(Service(urls["inference"], urls["management"], urls["metrics"], key_file=None))
        # KServe's v1 protocol path as the proxy forwards it: {"instances": [...]} -> {"predictions": [...]}.
        v1 = requests.post(f"{urls['inference']}/v1/models/mnist:predict", timeout=30,
                           json={"instances": [[[0] * 28] * 10 + [[0] * 12 + [255] * 4 + [0] * 12] * 18]})
        v1_ok = v1.status_code == 200 and len(v1.json()["predictions"]) == 1
        print(f"{'PASS' if v1_ok else 'FAIL'} v1 predict: {v1.status_code} {v1.text[:120]}", flush=True)
    return ok and v1_ok


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["image", "image-test", "deploy-run", "clean"])
    p.add_argument("--store", type=Path, default=ROOT / "kserve-store", help="deploy-run: `make kserve-store` output")
    p.add_argument("--keep-image", action="store_true", help="image-test: leave the image for a rerun")
    a = p.parse_args(argv)
    engine = Engine()
    print(f"container engine: {engine.name}", flush=True)
    if a.command == "clean":
        remove_images(engine)
        return
    build_image(engine)
    if a.command == "image":
        return
    try:
        if a.command == "image-test":
            ok = image_test(engine)
        else:
            ok = run_as_deployment(engine, ROOT / "deploy" / "k8s" / "deployment-cpu.yaml")
            ok = run_as_kserve(engine, a.store) and ok
    finally:
        if not a.keep_image:
            remove_images(engine)
    print(f"{a.command}:", "passed" if ok else "FAILED", flush=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
