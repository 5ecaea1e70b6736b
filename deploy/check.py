"""Validate deploy/: Kubernetes manifests against the API schemas, the InferenceService against KServe's SDK,
the monitoring manifests and alert rules (deploy/monitoring/rules.py, with promtool).

    .venv-deploy/bin/python deploy/check.py     # `make deploy-check` runs this first

Runs in its own virtual environment (deploy/requirements.txt): kserve's and kubernetes-validate's
dependencies clash with the service's pins. Besides the schemas it checks what the schemas cannot:
that the pieces agree with each other and with the auth design (docs/deploy.md).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import kserve.models
import kubernetes.client.models
import kubernetes_validate
import yaml
from kserve import ApiClient, V1beta1InferenceService
from monitoring import rules as monitoring  # deploy/monitoring/rules.py

DEPLOY = Path(__file__).resolve().parent
KUBERNETES_VERSION = "1.33.0"  # schemas bundled with kubernetes-validate; a current, supported release
INFERENCE_PORT, MANAGEMENT_PORT, METRICS_PORT, GRPC_PORT = 8080, 8081, 8082, 7070


def load(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def validate_kubernetes(path: Path) -> list[dict]:
    documents = load(path)
    for doc in documents:
        # strict: unknown fields are errors (a misspelt key would otherwise be ignored by the cluster).
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    return documents


def validate_inference_service(path: Path) -> V1beta1InferenceService:
    (doc,) = load(path)
    client = _KServeApiClient()

    class Response:  # ApiClient.deserialize reads an HTTP response's .data
        data = json.dumps(doc)

    isvc = client.deserialize(Response(), "V1beta1InferenceService")
    # The SDK drops fields it does not know (and adds empty defaults such as the container's
    # name): every field of ours surviving the round trip means every field is real.
    lost = _diff(doc, client.sanitize_for_serialization(isvc))
    assert not lost, f"{path.name}: fields the KServe SDK does not know: {lost}"
    model = isvc.spec.predictor.model
    assert model.model_format.name == "pytorch" and model.runtime == "kserve-torchserve", "TorchServe runtime"
    assert model.storage_uri, "storageUri"
    return isvc


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
    return [] if expected == actual else [path or "."]


def check_consistency(docs: dict[str, list[dict]]) -> None:
    """What no schema knows: the Service, probes, policy and HPA fit the Deployments and the auth design."""
    deployments = [d for kind_docs in docs.values() for d in kind_docs if d["kind"] == "Deployment"]
    (service,) = [d for ds in docs.values() for d in ds if d["kind"] == "Service"]
    (policy,) = [d for ds in docs.values() for d in ds if d["kind"] == "NetworkPolicy"]
    (hpa,) = [d for ds in docs.values() for d in ds if d["kind"] == "HorizontalPodAutoscaler"]
    exposed = {p["targetPort"] for p in service["spec"]["ports"]}
    assert exposed == {"http", "grpc"}, "the Service exposes inference only"
    for deployment in deployments:
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
    names = {d["metadata"]["name"] for d in deployments}
    assert hpa["spec"]["scaleTargetRef"]["name"] in names, "HPA targets a Deployment"


def main() -> int:
    docs = {}
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        docs[path.name] = validate_kubernetes(path)
        print(
            f"ok  {path.relative_to(DEPLOY.parent)}: {', '.join(d['kind'] for d in docs[path.name])} "
            f"(Kubernetes {KUBERNETES_VERSION} schema, strict)"
        )
    for path in sorted((DEPLOY / "kserve").glob("*.yaml")):
        validate_inference_service(path)
        print(f"ok  {path.relative_to(DEPLOY.parent)}: InferenceService (KServe SDK model classes)")
    check_consistency(docs)
    print("ok  Service, probes, NetworkPolicy, HPA and preStop agree with each other and with the auth design")
    deployments = [d for kind_docs in docs.values() for d in kind_docs if d["kind"] == "Deployment"]
    print("\n".join(monitoring.check(deployments)))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (AssertionError, kubernetes_validate.ValidationError, monitoring.MonitoringError) as error:
        sys.exit(f"deploy check failed: {error}")
