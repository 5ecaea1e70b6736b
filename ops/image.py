"""Build the service image with docker (if a daemon answers) or podman, and remove it.

    python -m ops.image build       # mnist-serve:<VERSION> and mnist-serve:latest (IMAGE= overrides the first)
    python -m ops.image remove      # both tags and the local base image, then a prune

The release tag comes from the VERSION file at the repository root; the manifests under deploy/
name the same tag (deploy/check.py keeps them equal).

Where no base image can be pulled (no registry), a Debian bookworm base is made with
`debootstrap --variant=minbase` (cached in ~/.cache/mnist-serve) and passed as BASE_IMAGE; the
Dockerfile's default stays the public debian:bookworm-slim. harness/container.py runs and checks
what this builds (`make image-test`, `make deploy-check`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from ops.paths import ROOT
from ops.version import release_version

REPOSITORY = "mnist-serve"
VERSION = release_version()
IMAGE = os.environ.get("IMAGE", f"{REPOSITORY}:{VERSION}")
PUBLIC_BASE = "debian:bookworm-slim"
LOCAL_BASE = "localhost/mnist-serve-base:bookworm"
BASE_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mnist-serve" / "bookworm-minbase.tar"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
# Debian's podman 4.3 needs runc on hosts with hybrid cgroups (crun fails) and no default rlimits.
PODMAN_CONF = ROOT / "deploy" / "podman" / "containers.conf"
PODMAN_PACKAGES = ("podman", "runc", "debootstrap")
COMMAND_TIMEOUT_S = 3600  # the build downloads and unpacks torch's CUDA build: 6 min alone, 25-30 min on 2 busy cores


class Engine:
    """docker if its daemon answers, else podman (installed with apt when missing and run as root)."""

    def __init__(self) -> None:
        self.name = "docker" if _docker_answers() else "podman"
        if self.name == "podman":
            _install_podman_if_missing()
            os.environ.setdefault("CONTAINERS_CONF", str(PODMAN_CONF))

    def cmd(self, *args: str) -> list[str]:
        return ["podman", "--runtime", "runc", *args] if self.name == "podman" else ["docker", *args]

    def run(
        self, *args: str, check: bool = True, capture: bool = False, timeout: float = 300, stdin=None
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.cmd(*args), check=check, timeout=timeout, stdin=stdin, capture_output=capture, text=capture
        )

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
        raise SystemExit(
            f"no docker daemon answers and {' '.join(missing)} are missing: "
            f"sudo apt-get install {' '.join(PODMAN_PACKAGES)}"
        )
    subprocess.run(["apt-get", "update", "-qq"], check=True, timeout=600)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", *PODMAN_PACKAGES],
        check=True,
        timeout=900,
        env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"),
    )


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
        subprocess.run(
            ["debootstrap", "--variant=minbase", "bookworm", rootfs, DEBIAN_MIRROR],
            check=True,
            timeout=900,
            stdout=subprocess.DEVNULL,
        )
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


def latest_tag(image: str) -> str:
    """The same repository tagged `latest` (a registry's port is not a tag: registry:5000/name)."""
    repository, _, tag = image.rpartition(":")
    return f"{repository}:latest" if repository and "/" not in tag else f"{image}:latest"


TAGS = (IMAGE, latest_tag(IMAGE))


def build_image(engine: Engine) -> float:
    """Build IMAGE, tagged with the release and `latest`; returns the build's wall seconds."""
    base = base_image(engine)
    started = time.monotonic()
    extra = ["--format", "docker"] if engine.name == "podman" else []  # OCI images drop HEALTHCHECK
    engine.run(
        "build",
        *extra,
        "--network=host",
        "--build-arg",
        f"BASE_IMAGE={base}",
        "--build-arg",
        f"VERSION={VERSION}",
        *(flag for tag in TAGS for flag in ("-t", tag)),
        str(ROOT),
        timeout=COMMAND_TIMEOUT_S,
    )
    seconds = time.monotonic() - started
    size = engine.run("image", "inspect", IMAGE, "--format", "{{.Size}}", capture=True).stdout.strip()
    print(f"built {' and '.join(TAGS)} from {base} in {seconds:.0f} s, {int(size) / 1e9:.2f} GB", flush=True)
    return seconds


def remove_images(engine: Engine) -> None:
    for image in (*TAGS, LOCAL_BASE):
        engine.run("rmi", "-f", image, check=False, capture=True)
    engine.run("image", "prune", "-f", check=False, capture=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["build", "remove"])
    a = p.parse_args(argv)
    engine = Engine()
    print(f"container engine: {engine.name}", flush=True)
    if a.command == "build":
        build_image(engine)
    else:
        remove_images(engine)


if __name__ == "__main__":
    main()
