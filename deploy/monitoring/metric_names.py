"""The metric names the alert rules and the dashboard use, against what a running service exports.

    problems(metrics_text) -> {}            # text: a scrape of TorchServe's /metrics

Used by tests/test_monitoring.py against a local TorchServe and by harness/rest_check.py against the
image as `make image-test` and `make deploy-check` run it: a rule or a panel naming a metric or a
label that the service does not export would never fire or show anything.
"""

from __future__ import annotations

import json
import re

from deploy.monitoring import rules

# Metrics the rules or the dashboard use that the service does not export, and why.
NOT_EXPORTED = {
    "up": "Prometheus' own, per scraped target",
    "container_cpu_usage_seconds_total": "cAdvisor's, from the kubelet: TorchServe's CPUUtilization is the node's",
    "container_memory_working_set_bytes": "cAdvisor's, from the kubelet: TorchServe's MemoryUsed is the node's",
}
# Labels Prometheus adds to every scraped series (podmonitor.yaml), and cAdvisor's container label.
TARGET_LABELS = {"job", "namespace", "pod", "instance", "container"}
# Families TorchServe lists (# TYPE) but gives a sample only on their first event.
FIRST_EVENT_ONLY = {"Requests5XX"}
KEYWORDS = {"and", "or", "unless", "offset", "bool", "group_left", "group_right", "inf", "nan"}


def promql_names(expr: str) -> tuple[set[str], dict[str, set[str]], set[str]]:
    """Loosely: (metric names, label names in each metric's selector, grouping labels) of a PromQL
    expression. Metric names are identifiers before `{` or `[`, or bare; not functions (before `(`),
    keywords, or what is inside strings, selectors, ranges and by/on/ignoring/without clauses."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    selectors: dict[str, set[str]] = {}
    for name, body in re.findall(r"([A-Za-z_:][\w:]*)\s*\{([^}]*)\}", expr):
        selectors.setdefault(name, set()).update(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", body))
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", expr)
    grouping = set()
    for labels in re.findall(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", expr):
        grouping.update(label.strip() for label in labels.split(",") if label.strip())
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = {
        name
        for name, call in re.findall(r"(?<![\w.$])([A-Za-z_:][\w:]*)\s*(\()?", expr)
        if not call and name.lower() not in KEYWORDS
    }
    return names, selectors, grouping


def dashboard() -> dict:
    return json.loads(rules.DASHBOARD.read_text())


def used_expressions() -> dict[str, str]:
    """Every PromQL expression of the rules and the dashboard: where -> expression."""
    found = {f"alert {a['alert']}": a["expr"] for a in rules.alerts(rules.load(rules.PROMETHEUS_RULE))}
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            found[f"panel {panel['title']!r} {target['refId']}"] = target["expr"]
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":  # label_values(<selector>, <label>)
            selector = re.fullmatch(r"label_values\((.*),\s*\w+\)", variable["definition"])
            found[f"variable {variable['name']}"] = selector[1]
    return found


def exported(text: str) -> tuple[set[str], dict[str, set[str]]]:
    """(series names TorchServe's /metrics lists, labels of the sampled ones). A family is listed by
    its `# TYPE` line even before its first sample; a histogram's series are NAME_bucket/_sum/_count."""
    names: set[str] = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE):
        names.add(name)
        if kind == "histogram":
            names.update(f"{name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
    labels: dict[str, set[str]] = {}
    for name, body in re.findall(r"^([A-Za-z_:][\w:]*)\{(.*)\} \S+$", text, re.MULTILINE):
        labels.setdefault(name, set()).update(re.findall(r'(\w+)="', body))
    return names, labels


def problems(text: str) -> dict[str, dict]:
    """What is wrong with `text` (a /metrics scrape after good and bad requests) for the rules and
    the dashboard: metrics not exported, metrics without a sample, labels no metric of the
    expression has; each with where it is used. Empty when all is well."""
    names, labels = exported(text)
    unknown, unsampled, bad_labels = {}, {}, {}
    for where, expr in used_expressions().items():
        metrics, selectors, grouping = promql_names(expr)
        for metric in metrics - set(NOT_EXPORTED):
            if metric not in names:
                unknown.setdefault(metric, []).append(where)
            elif metric not in labels and metric not in FIRST_EVENT_ONLY:
                unsampled.setdefault(metric, []).append(where)
        known = TARGET_LABELS | {label for m in metrics for label in labels.get(m, ())}
        for label in grouping | {label for m, ls in selectors.items() if m in labels for label in ls}:
            if label not in known and not metrics & (set(unsampled) | FIRST_EVENT_ONLY):
                bad_labels.setdefault(label, []).append(where)
    found = {"not exported": unknown, "no sample": unsampled, "unknown labels": bad_labels}
    return {kind: where for kind, where in found.items() if where}
