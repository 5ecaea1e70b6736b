"""deploy/monitoring/: the alert rules and dashboard parse, every alert has promtool tests that
pass, and every metric they use is one a real TorchServe with this handler exports."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import requests
import yaml

from deploy.monitoring import metric_names, rules
from deploy.monitoring.metric_names import dashboard, exported, promql_names, used_expressions
from harness.local_server import free_port
from ops.polling import NotYet, wait_until
from tests.conftest import FIXTURES


def test_the_promql_parser_finds_metrics_labels_and_nothing_else():
    names, selectors, grouping = promql_names(
        'histogram_quantile(0.99, sum by (pod, le) (rate(BatchTime_bucket{job="a", pod=~"$pod"}[$__rate_interval])))'
        " / ignoring (Reason) group_left sum(rate(Requests2XX[5m] offset 1d)) > 1e6 and on (pod) up"
    )
    assert names == {"BatchTime_bucket", "Requests2XX", "up"}
    assert selectors == {"BatchTime_bucket": {"job", "pod"}}
    assert grouping == {"pod", "le", "Reason"}


def test_the_manifests_and_the_dashboard_parse_and_hold_together():
    rules.validate_prometheus_rule(rules.load(rules.PROMETHEUS_RULE))
    rules.validate_pod_monitor(
        rules.load(rules.POD_MONITOR), rules.deployments(), rules.selected_jobs(rules.load(rules.PROMETHEUS_RULE))
    )
    board = dashboard()
    assert board["schemaVersion"] >= 36  # Grafana 9.3 and later, 10 and 11 among them
    (source,) = [v for v in board["templating"]["list"] if v["type"] == "datasource"]
    assert source["query"] == "prometheus"
    datasource = {"type": "prometheus", "uid": f"${{{source['name']}}}"}
    graphs = [p for p in board["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])
    for panel in graphs:
        assert panel["datasource"] == datasource and panel["targets"], panel["title"]
        assert all(t["datasource"] == datasource and t["expr"].strip() for t in panel["targets"]), panel["title"]
    containers = {c["name"] for d in rules.deployments() for c in d["spec"]["template"]["spec"]["containers"]}
    for where, expr in used_expressions().items():
        assert set(re.findall(r'container="([^"]+)"', expr)) <= containers, where


def _first_alert(doc: dict) -> dict:
    return doc["spec"]["groups"][0]["rules"][0]


@pytest.mark.parametrize(
    "mutate, error",
    [
        (lambda d: d.update(apiVersion="monitoring.coreos.com/v1alpha1"), "apiVersion"),
        (lambda d: _first_alert(d).update(anotations={}), r"unknown fields \['anotations'\]"),
        (lambda d: _first_alert(d)["labels"].update(severity="page"), "severity"),
        (lambda d: _first_alert(d).update({"for": "5 minutes"}), "duration"),
        (lambda d: _first_alert(d)["annotations"].pop("description"), "annotation description"),
        (lambda d: _first_alert(d)["annotations"].update(runbook_url="docs/operations.md#nope"), "no heading"),
        (lambda d: d["spec"]["groups"][1]["rules"].append(_first_alert(d)), "alert names: unique"),
    ],
)
def test_the_rule_check_catches(mutate, error):
    doc = rules.load(rules.PROMETHEUS_RULE)
    mutate(doc)
    with pytest.raises(rules.MonitoringError, match=error):
        rules.validate_prometheus_rule(doc)


@pytest.mark.parametrize(
    "mutate, error",
    [
        (lambda spec: spec["podMetricsEndpoints"][0].update(port="http"), "port `metrics`"),
        (lambda spec: spec["podMetricsEndpoints"][0].update(targetPort=8082), "unknown fields"),
        (lambda spec: spec["selector"]["matchLabels"].update({"app.kubernetes.io/name": "other"}), "selects the pods"),
        (lambda spec: spec.update(jobLabel="app.kubernetes.io/variant"), "jobLabel"),
    ],
)
def test_the_pod_monitor_check_catches(mutate, error):
    doc = rules.load(rules.POD_MONITOR)
    mutate(doc["spec"])
    with pytest.raises(rules.MonitoringError, match=error):
        rules.validate_pod_monitor(doc, rules.deployments(), {"mnist-serve"})


def test_every_alert_has_promtool_cases_where_it_fires_and_where_it_does_not():
    firing, quiet = set(), set()
    for path in rules.RULE_TESTS.glob("*.yaml"):
        test_file = yaml.safe_load(path.read_text())
        assert test_file["rule_files"] == [rules.RULES_FILE], path.name
        for case in test_file["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    alerts = {a["alert"] for a in rules.alerts(rules.load(rules.PROMETHEUS_RULE))}
    assert alerts - firing == set(), "alerts never tested firing"
    assert alerts - quiet == set(), "alerts never tested quiet"
    assert firing | quiet <= alerts, "tests of alerts that do not exist"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="no promtool: `make promtool` installs it (as root)")
def test_promtool_checks_the_rules_and_their_unit_tests_pass():
    out = rules.run_promtool()
    assert "SUCCESS" in out and "FAILED" not in out


@pytest.mark.integration
def test_every_metric_in_the_rules_and_the_dashboard_is_exported(server):
    for body in [(FIXTURES / "seven.png").read_bytes()] * 3 + [b"", b"not an image"]:
        server.predict(body)

    def flushed() -> str:  # the handler's metrics leave each worker once a second
        text = requests.get(f"{server.metrics}/metrics", timeout=10).text
        if not re.search(r'^RejectedInputs\{.*Reason="empty"', text, re.MULTILINE) or "BatchTime_bucket{" not in text:
            raise NotYet("the handler's metrics are not in /metrics yet")
        return text

    assert metric_names.problems(wait_until(flushed, 30, 0.5, "the handler's metrics")) == {}


def panel_queries(namespace: str, rate_interval: str) -> dict[str, str]:
    """The dashboard's queries as Grafana sends them, its variables filled in."""
    fill = {"$namespace": namespace, "$pod": ".*", "$__rate_interval": rate_interval}
    queries = {}
    for where, expr in used_expressions().items():
        for variable, value in fill.items():
            expr = expr.replace(variable, value)
        queries[where] = expr
    return queries


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("prometheus") is None, reason="no prometheus: `make promtool` installs it (as root)")
def test_a_real_prometheus_scrapes_the_service_and_evaluates_every_rule_and_query(server, tmp_path):
    """Debian's Prometheus scrapes the test TorchServe every second, as the PodMonitor's job, and
    loads the rules: every rule evaluates without error, and every dashboard and alert query runs
    and, where the service has samples of all its metrics, returns series."""
    rules_file = tmp_path / rules.RULES_FILE
    rules_file.write_text(yaml.safe_dump({"groups": rules.load(rules.PROMETHEUS_RULE)["spec"]["groups"]}))
    scrape = {"targets": [server.metrics.removeprefix("http://")], "labels": {"namespace": "test", "pod": "local"}}
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules_file)],
        "scrape_configs": [{"job_name": "mnist-serve", "static_configs": [scrape]}],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    api = f"http://127.0.0.1:{free_port()}/api/v1"
    log = open(tmp_path / "prometheus.log", "wb")
    prometheus = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address={api.split('/')[2]}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )

    def query(expr: str) -> list:
        answer = requests.get(f"{api}/query", params={"query": expr}, timeout=10).json()
        assert answer["status"] == "success", (expr, answer)
        return answer["data"]["result"]

    def scraped_twice() -> bool:  # rates need two samples
        for body in [(FIXTURES / "seven.png").read_bytes(), b""]:
            server.predict(body)
        return bool(query('count_over_time(BatchTime_count{job="mnist-serve"}[1m]) >= 2'))

    try:
        ready = api.removesuffix("/api/v1") + "/-/ready"  # it answers 503 in plain text until then
        wait_until(lambda: requests.get(ready, timeout=5).ok, 60, 0.5, "Prometheus", errors=(requests.ConnectionError,))
        wait_until(scraped_twice, 60, 1, "Prometheus to scrape the service twice")
        _, labels = exported(requests.get(f"{server.metrics}/metrics", timeout=10).text)
        empty = []
        for where, expr in panel_queries("test", "10s").items():
            metrics = promql_names(expr)[0]
            if not query(expr) and metrics <= set(labels) | {"up"} and not where.startswith("alert"):
                empty.append(where)
        assert empty == [], "queries without a result although every metric they read has samples"
        alerts = {a["alert"] for a in rules.alerts(rules.load(rules.PROMETHEUS_RULE))}

        def evaluated() -> bool:  # health is "unknown" until a rule's first evaluation, "err" on an error
            groups = requests.get(f"{api}/rules", timeout=10).json()["data"]["groups"]
            health = {r["name"]: (r["health"], r.get("lastError", "")) for g in groups for r in g["rules"]}
            if set(health) != alerts or any(h != ("ok", "") for h in health.values()):
                raise NotYet(str(health))
            return True

        wait_until(evaluated, 30, 1, "every rule to evaluate without error")
    finally:
        prometheus.terminate()
        prometheus.wait(timeout=30)
        log.close()
