"""Validate deploy/: the rendered Kubernetes variants against the API schemas, KServe's runtime and
InferenceService against KServe's SDK, the monitoring manifests and alert rules
(deploy/monitoring/rules.py, with promtool), and what no schema knows.

    .venv-deploy/bin/python deploy/check.py     # `make deploy-check` runs this first

Runs in its own virtual environment (deploy/requirements.txt): kserve's and kubernetes-validate's
dependencies clash with the service's pins. deploy/k8s's overlays are rendered by kustomize
(ops/manifests.py), as `kubectl apply -k` renders them; besides the schemas it checks that the pieces
agree with each other, with the release (VERSION) and with the auth design (docs/deploy.md).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import kserve.models
import kubernetes.client.models
import kubernetes_validate
import yaml
from kserve import ApiClient
from monitoring import rules as monitoring  # deploy/monitoring/rules.py

DEPLOY = Path(__file__).resolve().parent
ROOT = DEPLOY.parent
sys.path.insert(0, str(ROOT))
from ops.manifests import INFERENCE_SERVICES, KSERVE_RUNTIME, VARIANTS, kustomize_version, render  # noqa: E402
from ops.version import release_version  # noqa: E402

KUBERNETES_VERSION = "1.33.0"  # schemas bundled with kubernetes-validate; a current, supported release
INFERENCE_PORT, MANAGEMENT_PORT, METRICS_PORT, GRPC_PORT = 8080, 8081, 8082, 7070
VERSION = release_version()
# Taken in a KServe predictor pod: Knative's queue-proxy (8012, 8022, 9090, 9091), KServe's agent
# (9081) and KServe's own gRPC port (8081). The runtime's container serves on 8080, the routed port.
KSERVE_TAKEN_PORTS = {8012, 8022, 9090, 9091, 9081, 8081}
KSERVE_ROUTED_PORT = 8080


def load(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def validate_kubernetes(documents: list[dict]) -> None:
    for doc in documents:
        # strict: unknown fields are errors (a misspelt key would otherwise be ignored by the cluster).
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def sdk_round_trip(path: Path, klass: str):
    """The document through KServe's SDK model class; every field of ours must survive."""
    (doc,) = load(path)
    client = _KServeApiClient()

    class Response:  # ApiClient.deserialize reads an HTTP response's .data
        data = json.dumps(doc)

    model = client.deserialize(Response(), klass)
    # The SDK drops fields it does not know (and adds empty defaults such as the container's
    # name): every field of ours surviving the round trip means every field is real.
    lost = _diff(doc, client.sanitize_for_serialization(model))
    assert not lost, f"{path.name}: fields the KServe SDK does not know: {lost}"
    return doc, model


class _KServeApiClient(ApiClient):
    """KServe's models name Kubernetes types (V1ObjectMeta, V1ResourceRequirements, ...) that its
    ApiClient looks up in kserve.models only: let the kubernetes package's client read those."""

    _kubernetes = kubernetes.client.ApiClient()

    def _ApiClient__deserialize(self, data, klass):
        if isinstance(klass, str) and not hasattr(kserve.models, klass) and hasattr(kubernetes.client.models, klass):
            return self._kubernetes._ApiClient__deserialize(data, klass)
        return ApiClient._ApiClient__deserialize(self, data, klass)


def _diff(expected, actual, path: str = "") -> list[str]:
    if isinstance(expected, dict) and isinstance(actual, dict):
        return [d for k in expected for d in _diff(expected[k], actual.get(k), f"{path}.{k}")]
    if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        return [d for i, (e, a) in enumerate(zip(expected, actual)) for d in _diff(e, a, f"{path}[{i}]")]
    return [] if expected == actual else [path or "."]


def validate_serving_runtime(path: Path) -> dict:
    doc, _ = sdk_round_trip(path, "V1alpha1ServingRuntime")
    assert doc["kind"] == "ServingRuntime", "a namespaced ServingRuntime, applied with the InferenceService"
    spec = doc["spec"]
    (container,) = spec["containers"]
    assert container["name"] == "kserve-container", "KServe merges the predictor into kserve-container"
    assert container["ports"] == [{"name": "http1", "containerPort": KSERVE_ROUTED_PORT, "protocol": "TCP"}], (
        "one port (Knative allows one), REST on the port KServe routes to"
    )
    assert {"v1", "v2"} <= set(spec["protocolVersions"]), spec["protocolVersions"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env.get("TOKEN_AUTH") == "off", "KServe's gateway authenticates"
    args = container["args"]
    management = int(args[args.index("--management-port") + 1])
    metrics = int(spec["annotations"]["prometheus.kserve.io/port"])
    for port in (management, metrics, GRPC_PORT):
        assert port not in KSERVE_TAKEN_PORTS | {KSERVE_ROUTED_PORT}, f"port {port} is KServe's or routed"
    assert metrics == METRICS_PORT, "Prometheus scrapes TorchServe's metrics port"
    assert "serving.kserve.io/server-type" not in doc["metadata"].get("annotations", {}), "no -gpu image suffix"
    assert container["readinessProbe"]["httpGet"] == {"path": "/ping", "port": KSERVE_ROUTED_PORT}
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True and security["readOnlyRootFilesystem"] is True
    empty_dirs = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
    assert {m["name"] for m in container["volumeMounts"]} <= empty_dirs, "writable folders are emptyDirs"
    return doc


def validate_inference_service(path: Path, runtime: dict, model_name: str) -> dict:
    """`model_name`: TorchServe's model, which the InferenceService is named after."""
    doc, isvc = sdk_round_trip(path, "V1beta1InferenceService")
    model = isvc.spec.predictor.model
    assert doc["metadata"]["name"] == model_name, "KServe's routes name the InferenceService; TorchServe's the model"
    assert model.runtime == runtime["metadata"]["name"], f"runtime {model.runtime!r} is not servingruntime.yaml's"
    formats = {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    assert model.model_format.name in formats, f"model format {model.model_format.name} not in {formats}"
    assert model.protocol_version in runtime["spec"]["protocolVersions"], model.protocol_version
    # The archive is the image's: a storageUri would be mounted over /mnt/models and hide it.
    assert not model.storage_uri, "no storageUri: the runtime serves the archive baked into its image"
    assert not model.runtime_version, "runtimeVersion would replace the image's release tag"
    return doc


def check_consistency(docs: list[dict]) -> None:
    """What no schema knows: the Service, probes, policy and HPA fit the Deployment and the auth design."""
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    (service,) = [d for d in docs if d["kind"] == "Service"]
    (policy,) = [d for d in docs if d["kind"] == "NetworkPolicy"]
    exposed = {p["targetPort"] for p in service["spec"]["ports"]}
    assert exposed == {"http", "grpc"}, "the Service exposes inference only"
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in service["spec"]["selector"].items()), "Service selects pods"
    assert all(labels.get(k) == v for k, v in policy["spec"]["podSelector"]["matchLabels"].items()), (
        "NetworkPolicy covers the pods"
    )
    (container,) = pod["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    assert env.get("TOKEN_AUTH") == "off", "auth is the gateway's: probes call /ping without a key"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    expected = {"http": INFERENCE_PORT, "management": MANAGEMENT_PORT, "metrics": METRICS_PORT, "grpc": GRPC_PORT}
    assert ports == expected, ports
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/ping", "port": "http"}, probe
    grace = pod["spec"]["terminationGracePeriodSeconds"]
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep" and int(pre_stop[1]) < grace, "preStop fits in the grace period"
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    opened = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    assert opened == {INFERENCE_PORT, GRPC_PORT, METRICS_PORT}, f"NetworkPolicy opens {opened}: never management"
    assert all(rule.get("from") for rule in policy["spec"]["ingress"]), "every ingress rule names its peers"
    for hpa in [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]:
        assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"], "HPA targets the Deployment"


def check_variants(rendered: dict[str, list[dict]]) -> str:
    """CPU: nothing that needs a GPU. GPU: one GPU per pod, on GPU nodes, no HPA. One image, the release's."""
    kinds = {variant: sorted(d["kind"] for d in docs) for variant, docs in rendered.items()}
    shared = ["Deployment", "NetworkPolicy", "PodDisruptionBudget", "Service"]
    assert kinds == {"cpu": sorted([*shared, "HorizontalPodAutoscaler"]), "gpu": shared}, kinds
    assert "nvidia.com/gpu" not in json.dumps(rendered["cpu"]), "the CPU variant asks for no GPU"
    pods = {v: next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"] for v, docs in rendered.items()}
    gpu = pods["gpu"]["spec"]
    assert gpu["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1, "one GPU per pod"
    assert any(t["key"] == "nvidia.com/gpu" for t in gpu["tolerations"]) and gpu["nodeSelector"], "GPU nodes"
    images = {c["image"] for pod in pods.values() for c in pod["spec"]["containers"]}
    (image,) = images
    assert image.rpartition(":")[2] == VERSION, f"image {image}: the tag is the release, {VERSION} (VERSION)"
    base = yaml.safe_load((DEPLOY / "k8s" / "base" / "kustomization.yaml").read_text())
    assert [i["newTag"] for i in base["images"]] == [VERSION], "base/kustomization.yaml's images: newTag is VERSION"
    return image


def check_kubectl_agrees(rendered: dict[str, list[dict]]) -> str:
    """`kubectl apply -k` renders with kubectl's own kustomize: where kubectl is installed, the same objects."""
    if not shutil.which("kubectl"):
        return "kubectl not installed: not compared"
    for variant, docs in rendered.items():
        assert render(variant, ["kubectl", "kustomize"]) == docs, f"kubectl kustomize renders {variant} differently"
    return "kubectl kustomize renders the same objects"


def main() -> int:
    rendered = {variant: render(variant) for variant in VARIANTS}
    for variant, docs in rendered.items():
        validate_kubernetes(docs)
        check_consistency(docs)
        print(
            f"ok  deploy/k8s/overlays/{variant} (kustomize {kustomize_version()}): "
            f"{', '.join(d['kind'] for d in docs)} (Kubernetes {KUBERNETES_VERSION} schema, strict; "
            "Service, probes, NetworkPolicy, HPA and preStop agree with the auth design)"
        )
    image = check_variants(rendered)
    print(f"ok  cpu variant asks for no GPU, gpu variant for one per pod; image {image} (VERSION {VERSION})")
    print(f"ok  {check_kubectl_agrees(rendered)}")
    runtime = validate_serving_runtime(KSERVE_RUNTIME)
    print(f"ok  deploy/kserve/{KSERVE_RUNTIME.name}: ServingRuntime (KServe SDK model classes), ports off KServe's")
    for model_name, path in INFERENCE_SERVICES.items():
        validate_inference_service(path, runtime, model_name)
        print(f"ok  deploy/kserve/{path.name}: InferenceService {model_name} (KServe SDK classes) on that runtime")
    (container,) = runtime["spec"]["containers"]
    assert container["image"] == image, f"the ServingRuntime runs {container['image']}, the Deployments {image}"
    print(f"ok  the ServingRuntime runs the Deployments' image, {image}")
    deployments = [d for docs in rendered.values() for d in docs if d["kind"] == "Deployment"]
    print("\n".join(monitoring.check(deployments)))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (
        AssertionError,
        kubernetes_validate.ValidationError,
        RuntimeError,
        FileNotFoundError,
        monitoring.MonitoringError,
    ) as error:
        sys.exit(f"deploy check failed: {error}")
