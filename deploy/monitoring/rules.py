"""Check deploy/monitoring/: the PrometheusRule and PodMonitor manifests, and the alert rules with promtool.

    python deploy/monitoring/rules.py          # `make monitoring-check`; `make deploy-check` runs it too

The Prometheus Operator's custom resources are unknown to Kubernetes' schemas, so their structure is
checked here: apiVersion, kind, required fields and no unknown ones, every alert's severity, summary,
description and runbook entry, and that the PodMonitor selects the pods of deploy/k8s on their
`metrics` port under the job the rules select. promtool reads plain rule groups: they are taken
from the PrometheusRule's `spec` into a temporary file, beside copies of tests/*.yaml (promtool's
unit tests, which name that file), so the manifest is the only copy of the rules.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PROMETHEUS_RULE = HERE / "prometheusrule.yaml"
POD_MONITOR = HERE / "podmonitor.yaml"
DASHBOARD = HERE / "dashboard.json"
RULE_TESTS = HERE / "tests"
RULES_FILE = "mnist-serve.rules.yaml"  # what the unit tests' rule_files name
RUNBOOK = ROOT / "docs" / "operations.md"
API_VERSION = "monitoring.coreos.com/v1"
SEVERITIES = {"critical", "warning", "info"}
DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")
# Fields of the Prometheus Operator's CRDs (v1) this check accepts; anything else is a typo.
RULE_GROUP_FIELDS = {"name", "interval", "rules", "limit", "partial_response_strategy", "query_offset", "labels"}
RULE_FIELDS = {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}
POD_MONITOR_SPEC_FIELDS = {
    "jobLabel", "podTargetLabels", "podMetricsEndpoints", "selector", "namespaceSelector",
    "sampleLimit", "targetLimit", "labelLimit", "labelNameLengthLimit", "labelValueLengthLimit",
    "keepDroppedTargets", "attachMetadata", "scrapeProtocols", "scrapeClass",
}  # fmt: skip
ENDPOINT_FIELDS = {
    "port", "portNumber", "path", "scheme", "params", "interval", "scrapeTimeout", "honorLabels",
    "honorTimestamps", "trackTimestampsStaleness", "relabelings", "metricRelabelings", "enableHttp2",
    "followRedirects", "filterRunning", "proxyUrl", "basicAuth", "authorization", "oauth2", "tlsConfig",
}  # fmt: skip


class MonitoringError(Exception):
    pass


def load(path: Path) -> dict:
    (doc,) = [d for d in yaml.safe_load_all(path.read_text()) if d]
    return doc


def alerts(rule: dict) -> list[dict]:
    return [r for group in rule["spec"]["groups"] for r in group["rules"] if "alert" in r]


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise MonitoringError(message)


def _known(fields: dict, allowed: set[str], where: str) -> None:
    unknown = set(fields) - allowed
    _expect(not unknown, f"{where}: unknown fields {sorted(unknown)}")


def _resource(doc: dict, kind: str) -> dict:
    _known(doc, {"apiVersion", "kind", "metadata", "spec"}, kind)
    _expect(doc.get("apiVersion") == API_VERSION, f"{kind}: apiVersion must be {API_VERSION}")
    _expect(doc.get("kind") == kind, f"kind must be {kind}, not {doc.get('kind')}")
    _expect(isinstance(doc.get("metadata", {}).get("name"), str), f"{kind}: metadata.name")
    _expect(isinstance(doc.get("spec"), dict), f"{kind}: spec")
    return doc["spec"]


def anchors(markdown: Path) -> set[str]:
    """The heading anchors GitHub makes: lowercased, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+ +(.+?) *$", markdown.read_text(), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def validate_prometheus_rule(doc: dict) -> None:
    spec = _resource(doc, "PrometheusRule")
    _known(spec, {"groups"}, "PrometheusRule spec")
    groups = spec.get("groups")
    _expect(isinstance(groups, list) and groups, "PrometheusRule: spec.groups is a non-empty list")
    runbook_anchors = anchors(RUNBOOK)
    names = [g.get("name") for g in groups]
    _expect(all(isinstance(n, str) for n in names) and len(set(names)) == len(names), "group names: unique")
    for group in groups:
        _known(group, RULE_GROUP_FIELDS, f"group {group['name']}")
        _expect(isinstance(group.get("rules"), list) and group["rules"], f"group {group['name']}: rules")
        for rule in group["rules"]:
            name = rule.get("alert") or rule.get("record")
            _known(rule, RULE_FIELDS, f"rule {name}")
            _expect(("alert" in rule) != ("record" in rule), f"rule {name}: exactly one of alert and record")
            _expect(isinstance(rule.get("expr"), str) and rule["expr"].strip(), f"rule {name}: expr")
            for key in ("for", "keep_firing_for"):
                _expect(key not in rule or bool(DURATION.match(str(rule[key]))), f"rule {name}: {key} is a duration")
            for key in ("labels", "annotations"):
                values = rule.get(key, {})
                _expect(all(isinstance(v, str) for v in values.values()), f"rule {name}: {key} are strings")
            if "alert" in rule:
                _expect(rule.get("labels", {}).get("severity") in SEVERITIES, f"{name}: severity in {SEVERITIES}")
                notes = rule.get("annotations", {})
                for key in ("summary", "description", "runbook_url"):
                    _expect(bool(notes.get(key)), f"{name}: annotation {key}")
                page, _, anchor = notes["runbook_url"].partition("#")
                _expect(page == "docs/operations.md", f"{name}: runbook_url points into docs/operations.md")
                _expect(anchor in runbook_anchors, f"{name}: no heading #{anchor} in docs/operations.md")
    alert_names = [a["alert"] for a in alerts(doc)]
    _expect(len(set(alert_names)) == len(alert_names), "alert names: unique")


def validate_pod_monitor(doc: dict, deployments: list[dict], jobs: set[str]) -> None:
    """`jobs`: the job label values the rules select."""
    spec = _resource(doc, "PodMonitor")
    _known(spec, POD_MONITOR_SPEC_FIELDS, "PodMonitor spec")
    selector = spec.get("selector", {}).get("matchLabels")
    _expect(bool(selector), "PodMonitor: spec.selector.matchLabels")
    endpoints = spec.get("podMetricsEndpoints")
    _expect(isinstance(endpoints, list) and endpoints, "PodMonitor: spec.podMetricsEndpoints")
    _expect(bool(deployments), "no Deployment to scrape")
    for deployment in deployments:
        pod = deployment["spec"]["template"]
        labels = pod["metadata"]["labels"]
        name = deployment["metadata"]["name"]
        _expect(all(labels.get(k) == v for k, v in selector.items()), f"PodMonitor selects the pods of {name}")
        _expect({labels.get(spec.get("jobLabel"))} == jobs, f"the jobLabel of {name}'s pods gives {jobs}")
        ports = {p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}
        for endpoint in endpoints:
            _known(endpoint, ENDPOINT_FIELDS, "PodMonitor endpoint")
            _expect(endpoint.get("port") == "metrics" and "metrics" in ports, f"{name}: scraped on port `metrics`")
            _expect(endpoint.get("path", "/metrics") == "/metrics", "TorchServe serves /metrics")
            _expect(bool(DURATION.match(endpoint.get("interval", "30s"))), "endpoint interval is a duration")


def selected_jobs(rule: dict) -> set[str]:
    return {job for a in alerts(rule) for job in re.findall(r'\bjob="([^"]+)"', a["expr"])}


def run_promtool() -> str:
    """`promtool check rules` on the PrometheusRule's groups, then `promtool test rules` on tests/."""
    promtool = shutil.which("promtool")
    if promtool is None:
        raise MonitoringError("promtool is missing: `make promtool` installs Debian's prometheus package (as root)")
    groups = {"groups": load(PROMETHEUS_RULE)["spec"]["groups"]}
    tests = sorted(RULE_TESTS.glob("*.yaml"))
    _expect(bool(tests), f"no promtool tests in {RULE_TESTS}")
    with tempfile.TemporaryDirectory(prefix="mnist-rules-") as tmp:
        (Path(tmp) / RULES_FILE).write_text(yaml.safe_dump(groups, sort_keys=False))
        copies = [shutil.copy(test, tmp) for test in tests]
        out = []
        for args in (["check", "rules", RULES_FILE], ["test", "rules", *map(str, copies)]):
            run = subprocess.run([promtool, *args], cwd=tmp, capture_output=True, text=True)
            out.append(run.stdout + run.stderr)
            _expect(run.returncode == 0, f"promtool {' '.join(args[:2])} failed:\n{out[-1]}")
    return "".join(out)


def deployments() -> list[dict]:
    """The kustomize base's Deployment (deploy/check.py passes the rendered overlays' instead)."""
    base = HERE.parent / "k8s" / "base"
    docs = [d for path in sorted(base.glob("*.yaml")) for d in yaml.safe_load_all(path.read_text())]
    return [d for d in docs if d and d["kind"] == "Deployment"]


def check(deployment_docs: list[dict] | None = None) -> list[str]:
    """Every check of this folder; the lines to print. Raises MonitoringError."""
    rule = load(PROMETHEUS_RULE)
    validate_prometheus_rule(rule)
    pods = deployments() if deployment_docs is None else deployment_docs
    validate_pod_monitor(load(POD_MONITOR), pods, selected_jobs(rule))
    summary = run_promtool()
    tests = sum(len(load(path)["tests"]) for path in RULE_TESTS.glob("*.yaml"))
    return [
        f"ok  deploy/monitoring/prometheusrule.yaml: {len(alerts(rule))} alerts, runbook entries in docs/operations.md",
        "ok  deploy/monitoring/podmonitor.yaml: the Deployments' pods on port `metrics`, the job the rules select",
        f"ok  promtool check rules, promtool test rules ({tests} test groups): {summary.strip().splitlines()[-1]}",
    ]


if __name__ == "__main__":
    try:
        print("\n".join(check()))
    except MonitoringError as error:
        sys.exit(f"monitoring check failed: {error}")
