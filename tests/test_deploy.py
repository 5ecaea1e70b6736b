"""deploy/ without a cluster or a container: the overlays as kustomize renders them, KServe's runtime
as harness/container.py starts it for each model's InferenceService, the ports and tags the pieces
must agree on, and deploy/check.py.

`make deploy-check` runs the containers themselves; these run in seconds, but for the one that asks
the tests' TorchServe the KServe routes deploy-run calls. The rendering tests need kustomize (`make
deploy-tools`), deploy/check.py its own environment (.venv-deploy): each is skipped, saying why,
where it is missing.
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest
import yaml

from harness.container import check_kserve_routes
from harness.pod_spec import deployment_run_args, kserve_run_args
from ops import manifests
from ops.entrypoint import effective_properties
from ops.host_settings import MODEL_NAMES, HostSettings
from ops.image import REPOSITORY, latest_tag
from ops.model_layout import layout_properties
from ops.paths import ROOT
from ops.version import release_version

VERSION = release_version()
RUNTIME = yaml.safe_load(manifests.KSERVE_RUNTIME.read_text())
ISVCS = {model: yaml.safe_load(path.read_text()) for model, path in manifests.INFERENCE_SERVICES.items()}
# Knative's queue-proxy, KServe's agent and KServe's own gRPC port in a predictor pod.
KSERVE_TAKEN = {8012, 8022, 9090, 9091, 9081, 8081}

try:
    manifests.kustomize()
    NO_KUSTOMIZE = ""
except FileNotFoundError as error:
    NO_KUSTOMIZE = str(error)
needs_kustomize = pytest.mark.skipif(bool(NO_KUSTOMIZE), reason=NO_KUSTOMIZE)


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {variant: manifests.render(variant) for variant in manifests.VARIANTS}


def _deployment(docs: list[dict]) -> dict:
    (found,) = [d for d in docs if d["kind"] == "Deployment"]
    return found


@needs_kustomize
def test_the_cpu_overlay_creates_no_gpu_object(rendered):
    cpu = rendered["cpu"]
    assert sorted(d["kind"] for d in cpu) == [
        "Deployment", "HorizontalPodAutoscaler", "NetworkPolicy", "PodDisruptionBudget", "Service"
    ]  # fmt: skip
    assert "gpu" not in json.dumps(cpu)
    deployment = _deployment(cpu)
    assert (deployment["metadata"]["name"], deployment["spec"]["replicas"]) == ("mnist-serve-cpu", 2)
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == f"{REPOSITORY}:{VERSION}"


@needs_kustomize
def test_the_gpu_overlay_is_the_cpu_deployment_on_one_gpu(rendered):
    cpu, gpu = _deployment(rendered["cpu"]), _deployment(rendered["gpu"])
    assert "HorizontalPodAutoscaler" not in {d["kind"] for d in rendered["gpu"]}
    assert (gpu["metadata"]["name"], gpu["spec"]["replicas"]) == ("mnist-serve-gpu", 1)
    for labels in (gpu["metadata"]["labels"], gpu["spec"]["selector"]["matchLabels"]):
        assert labels["app.kubernetes.io/variant"] == "gpu"
    pod, container = gpu["spec"]["template"]["spec"], gpu["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"] == {"cpu": "16", "memory": "16Gi", "nvidia.com/gpu": 1}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    # Everything else is the CPU Deployment's: the same container, probes, security and volumes.
    cpu_container = cpu["spec"]["template"]["spec"]["containers"][0]
    assert {**container, "resources": None} == {**cpu_container, "resources": None}
    same = ("securityContext", "volumes", "terminationGracePeriodSeconds", "automountServiceAccountToken")
    assert all(pod[key] == cpu["spec"]["template"]["spec"][key] for key in same)
    # The objects both variants share are the same objects: applying both keeps one Service.
    shared = {(d["kind"], d["metadata"]["name"]): d for d in rendered["cpu"] if d["kind"] != "Deployment"}
    for doc in rendered["gpu"]:
        if doc["kind"] != "Deployment":
            assert shared[(doc["kind"], doc["metadata"]["name"])] == doc


@needs_kustomize
def test_the_deployment_runs_as_its_rendered_spec_says(rendered):
    flags, command, spec = deployment_run_args(_deployment(rendered["cpu"]), "podman")
    assert command == [f"{REPOSITORY}:{VERSION}", "python", "-m", "ops.entrypoint"]
    for flag in (["--user", "1000:1000"], ["--cpus", "2"], ["--memory", "3g"], ["-e", "TOKEN_AUTH=off"]):
        assert any(flags[i : i + 2] == flag for i in range(len(flags))), flag
    assert {"--read-only", "--tmpfs"} <= set(flags) and spec["pod"]["terminationGracePeriodSeconds"] == 60


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_the_kserve_runtime_runs_as_its_spec_says(model):
    flags, command, ports = kserve_run_args(RUNTIME, ISVCS[model], "podman")
    assert command == [f"{REPOSITORY}:{VERSION}", "python", "-m", "ops.entrypoint", "--management-port", "8085"]
    # The InferenceService's model resources win over the runtime's, as KServe merges them.
    for flag in (["--user", "1000:1000"], ["--cpus", "2"], ["--memory", "3g"], ["-e", "TOKEN_AUTH=off"]):
        assert any(flags[i : i + 2] == flag for i in range(len(flags))), flag
    assert "--read-only" in flags and "/srv:rw,exec,U" in flags
    assert ports == {"inference": 8080, "management": 8085, "metrics": 8082, "grpc": 7070}
    assert not set(ports.values()) & KSERVE_TAKEN


def test_each_model_has_an_inference_service_named_after_it_on_the_one_runtime():
    """KServe's host names the InferenceService, TorchServe's route the model: they agree for every
    model the image serves. Each starts the same container, so deploy-run's one run stands for all."""
    assert tuple(ISVCS) == MODEL_NAMES
    for model, isvc in ISVCS.items():
        assert (isvc["kind"], isvc["metadata"]["name"]) == ("InferenceService", model)
        assert isvc["spec"]["predictor"]["model"]["runtime"] == RUNTIME["metadata"]["name"]
        assert "storageUri" not in isvc["spec"]["predictor"]["model"], (
            "the image's archives, as deploy/check.py requires"
        )
        assert kserve_run_args(RUNTIME, isvc, "podman") == kserve_run_args(RUNTIME, ISVCS["mnist"], "podman"), model


@pytest.mark.integration
def test_the_kserve_routes_deploy_run_checks_answer_for_every_model(server):
    """harness/container.py's v1 and v2 calls on the routed port, asked of the tests' TorchServe
    (which wants a key; KServe's pods do not)."""
    assert check_kserve_routes(server.inference, server.headers())


def test_the_entrypoint_moves_management_and_nothing_else():
    settings = HostSettings(cpus=2, gpus=0, workers=2, batch_delay_ms=5, source="host")
    base = ROOT / "config.properties"
    moved = effective_properties(base, settings, {}, management_port=8085)
    assert moved["management_address"] == "http://127.0.0.1:8085"
    unchanged = effective_properties(base, settings, {})
    assert {k: v for k, v in moved.items() if k != "management_address"} == {
        k: v for k, v in unchanged.items() if k != "management_address"
    }
    assert unchanged["management_address"] == "http://127.0.0.1:8081"


def test_a_storage_layout_serves_on_the_runtimes_ports():
    """`make kserve-store`'s config, mounted over /mnt/models by a storageUri: the runtime's ports, no key."""
    settings = HostSettings(cpus=2, gpus=0, workers=2, batch_delay_ms=5, source="static")
    props = layout_properties("kserve", "/mnt/models", settings)
    _, _, ports = kserve_run_args(RUNTIME, ISVCS["mnist"], "podman")
    for role in ("inference", "management", "metrics"):
        assert props[f"{role}_address"] == f"http://0.0.0.0:{ports[role]}", role
    assert int(props["grpc_inference_port"]) == ports["grpc"]
    assert props["disable_token_authorization"] == "true" and props["model_store"] == "/mnt/models/model-store"


def test_the_image_is_tagged_with_the_release_and_latest():
    assert re.fullmatch(r"\d+\.\d+\.\d+", VERSION), VERSION
    assert latest_tag(f"{REPOSITORY}:{VERSION}") == f"{REPOSITORY}:latest"
    assert latest_tag("registry.example:5000/team/mnist-serve:1.2.3") == "registry.example:5000/team/mnist-serve:latest"
    assert latest_tag("registry.example:5000/team/mnist-serve") == "registry.example:5000/team/mnist-serve:latest"
    assert RUNTIME["spec"]["containers"][0]["image"] == f"{REPOSITORY}:{VERSION}"


DEPLOY_PYTHON = ROOT / ".venv-deploy" / "bin" / "python"


@needs_kustomize
@pytest.mark.skipif(not DEPLOY_PYTHON.exists(), reason="no .venv-deploy (make deploy-check makes it)")
def test_deploy_check_passes():
    result = subprocess.run(
        [str(DEPLOY_PYTHON), "deploy/check.py"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ServingRuntime" in result.stdout and "overlays/gpu" in result.stdout
    assert all(f"InferenceService {model}" in result.stdout for model in MODEL_NAMES), result.stdout
