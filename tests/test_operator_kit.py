"""The operator kit: Prometheus rules and scrape config, the Grafana dashboard.

promtool checks the rules, runs their unit tests (alerts.test.yml) and checks the scrape config;
every metric name the rules and the dashboard query is checked against a real node's /metrics,
and promtool lints that exposition.

Which metric names count as exported:
- scraped: the sample names in a scrape of the session node (tests/conftest.py) after traffic
  that makes the labelled counters appear (ok calls, a retried 503, a 429 that rotates and
  cools a model down), plus the sample names of every family the scrape announces in `# TYPE`;
- declared: for the families in DECLARED_ONLY, which that shared node cannot produce cheaply
  and which prometheus_client's multiprocess mode leaves out of the scrape until incremented,
  the sample names the declarations in app/observability/metrics.py export (counter `_total`,
  histogram `_bucket`/`_sum`/`_count`, gauge as is).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from app.observability import metrics
from tests.conftest import UPSTREAM_KEY
from tests.support.processes import ROOT, Service, wait_until
from tests.support.simulator_client import SimulatorControl

PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERT_TESTS = PROMETHEUS_DIR / "alerts.test.yml"
SCRAPE_CONFIG = PROMETHEUS_DIR / "scrape.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "l104-node.json"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"

ALERT_NAMES = {
    "L104CircuitBreakerOpen",
    "L104AllModelsUnavailable",
    "L104NoUsableModel",
    "L104HealStorm",
    "L104FrequentWorkerRecycles",
    "L104AllModelsCoolingDown",
    "L104HighUpstreamErrorRatio",
    "L104NodeAtCapacity",
    "L104UpstreamKeyDisabled",
    "L104NodeDown",
}
# A metric name of the node, not part of a recording rule's `level:metric:operations` name.
METRIC_NAME = re.compile(r"(?<![\w:])l104_[a-z0-9_]+(?![\w:])")
RECORDED_NAME = re.compile(r"(?<![\w:])[a-z_]+:[a-z0-9_:]+")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
# Counter families checked against app/observability/metrics.py instead of the scrape, and why.
DECLARED_ONLY = {
    "l104_circuit_breaks": "opening a breaker would leave it open on the shared node",
    "l104_circuit_breaker_transitions": "the same: a transition needs a breaker to open",
    "l104_connection_resets": "needs HTTP_CLIENT_ERROR_THRESHOLD connection errors or a heal",
    "l104_auto_heals": "needs AUTO_HEAL_ERROR_THRESHOLD node-side 5xx",
    "l104_heals": "needs ADMIN_TOKEN (the shared node has none) or an automatic heal",
    "l104_worker_recycles": "needs a worker to leave the shared node",
}
# Labelled counters the traffic in `exposition` must make appear.
PRODUCED = {
    "l104_requests_total",
    "l104_upstream_calls_total",
    "l104_retry_successes_total",
    "l104_model_rotations_total",
    "l104_model_cooldowns_total",
    "l104_request_duration_seconds_bucket",
    "l104_upstream_duration_seconds_bucket",
}
# Grafana's variables, replaced by something PromQL parses.
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
    "$instance": ".*",
    "$endpoint": ".*",
}
FIRST, SECOND = "gemini-3.8-flash", "gemini-3.5-flash"
PROMPT = {"contents": [{"parts": [{"text": "operator kit"}]}]}


def _promtool(
    *args: str, cwd: Path | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PROMTOOL, *args], cwd=cwd, input=stdin, capture_output=True, text=True, timeout=60
    )


def _output(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n{result.stdout}{result.stderr}"


# --- reading alerts.yml ----------------------------------------------------------------------


def _flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested keys joined with dots (`labels.severity`), values as text."""
    flat: dict[str, str] = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = str(value).strip()
    return flat


@pytest.fixture(scope="module")
def rules() -> list[dict[str, str]]:
    """The rules of alerts.yml."""
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [_flatten(rule) for group in groups for rule in group["rules"]]


def _alerts(rules: list[dict[str, str]]) -> dict[str, dict[str, str]]:
    return {rule["alert"]: rule for rule in rules if "alert" in rule}


# --- reading the dashboard -------------------------------------------------------------------


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    """The Grafana dashboard."""
    result: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return result


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside (collapsed) rows included."""
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _dashboard_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every templating query."""
    queries = [
        (f"panel {panel['title']!r} target {target['refId']}", target["expr"])
        for panel in _panels(dashboard["panels"])
        for target in panel.get("targets", [])
    ]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]
        text = query["query"] if isinstance(query, dict) else query
        match = re.fullmatch(r"label_values\((.+),\s*\w+\)", text.strip())
        assert match, f"variable {variable['name']}: not label_values(selector, label): {text}"
        queries.append((f"variable {variable['name']}", match[1]))
    return queries


# --- (a), (b): the rules ---------------------------------------------------------------------


def test_alert_rules_pass_promtool_check_and_lint(rules: list[dict[str, str]]) -> None:
    result = _promtool("check", "rules", "--lint=all", "--lint-fatal", str(ALERTS))
    assert result.returncode == 0, _output(result)
    # promtool's count is the cross-check of `_rules`, the reader the other tests rely on.
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout, _output(result)
    assert all(rule.get("expr") for rule in rules), rules


def test_every_alert_has_for_severity_and_a_runbook(rules: list[dict[str, str]]) -> None:
    alerts = _alerts(rules)
    assert set(alerts) == ALERT_NAMES
    for name, alert in alerts.items():
        assert re.fullmatch(r"\d+[smh]", alert.get("for", "")), name
        assert alert.get("labels.severity") in ("warning", "critical"), name
        assert alert.get("annotations.summary"), name
        description = alert.get("annotations.description", "")
        assert re.search(r"/self/(status|heal)|/ready|/health", description), name
    assert alerts["L104AllModelsUnavailable"]["labels.severity"] == "critical"
    assert alerts["L104NodeDown"]["expr"] == 'up{job="l104-node"} == 0'


def test_alert_unit_tests_pass() -> None:
    # rule_files in the test file are relative to it.
    result = _promtool("test", "rules", ALERT_TESTS.name, cwd=PROMETHEUS_DIR)
    assert result.returncode == 0, _output(result)
    assert "SUCCESS" in result.stdout, _output(result)


def test_every_alert_has_a_firing_and_a_silent_unit_test() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    lines = [line.strip() for line in ALERT_TESTS.read_text().splitlines()]
    for index, line in enumerate(lines):
        if line.startswith("alertname:"):
            name = line.partition(":")[2].strip()
            expected = lines[index + 1]
            (silent if expected == "exp_alerts: []" else firing).add(name)
            assert expected.startswith("exp_alerts:"), f"{name}: {expected}"
    assert firing == ALERT_NAMES
    assert silent == ALERT_NAMES


# --- (c): the scrape config ------------------------------------------------------------------


def test_scrape_config_passes_promtool_check(rules: list[dict[str, str]]) -> None:
    """Its rule_files entry finds alerts.yml next to it, which promtool checks too."""
    result = _promtool("check", "config", str(SCRAPE_CONFIG))
    assert result.returncode == 0, _output(result)
    assert "SUCCESS: 1 rule files found" in result.stdout, _output(result)
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout, _output(result)
    text = SCRAPE_CONFIG.read_text()
    assert re.search(r"^\s+- job_name: l104-node\b", text, re.M)
    assert re.search(r"^\s+metrics_path: /metrics$", text, re.M)


def test_scrape_config_with_the_bearer_token_enabled_passes(tmp_path: Path) -> None:
    """The commented `authorization` block is valid once uncommented (METRICS_TOKEN set)."""
    token = tmp_path / "l104-metrics-token"
    token.write_text("metrics-token-0123456789\n")
    text = SCRAPE_CONFIG.read_text()
    block = r"^(\s*)# (authorization:|  type: Bearer|  credentials_file: )(\S*)$"
    enabled = re.sub(block, lambda m: m[1] + m[2] + (str(token) if m[3] else ""), text, flags=re.M)
    assert enabled.count("\n    authorization:\n      type: Bearer\n      credentials_file:") == 1
    (tmp_path / "scrape.yml").write_text(enabled)
    shutil.copy(ALERTS, tmp_path / ALERTS.name)
    result = _promtool("check", "config", str(tmp_path / "scrape.yml"))
    assert result.returncode == 0, _output(result)


# --- (d): the dashboard's shape and PromQL ---------------------------------------------------


def test_dashboard_is_grafana_json_with_the_expected_variables(dashboard: dict[str, Any]) -> None:
    assert dashboard["schemaVersion"] >= 36
    assert dashboard["uid"] and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    instance = variables["instance"]["query"]
    instance = instance["query"] if isinstance(instance, dict) else instance
    assert instance == "label_values(l104_build_info, instance)"
    assert variables["instance"]["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    panels = [p for p in _panels(dashboard["panels"]) if p["type"] != "row"]
    assert len(panels) >= 15
    assert len({p["id"] for p in _panels(dashboard["panels"])}) == len(
        list(_panels(dashboard["panels"]))
    )
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel
        assert panel["targets"], panel["title"]
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert 'instance=~"$instance"' in target["expr"], (panel["title"], target["expr"])


def test_dashboard_queries_are_valid_promql(dashboard: dict[str, Any], tmp_path: Path) -> None:
    """promtool parses each query (Grafana's variables replaced) as a recording rule."""
    rules = []
    for index, (where, expr) in enumerate(_dashboard_queries(dashboard)):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"{where}: unknown Grafana variable in {expr}"
        rules.append({"record": f"dashboard:query_{index}", "expr": expr})
    rule_file = tmp_path / "dashboard-queries.yml"
    # JSON is YAML: promtool reads this as a rules file.
    rule_file.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = _promtool("check", "rules", str(rule_file))
    assert result.returncode == 0, _output(result)


# --- (d), (e), (f): against a real node ------------------------------------------------------


@dataclass(frozen=True)
class Exported:
    """What the node exports: sample name -> family type."""

    scraped: dict[str, str]
    declared: dict[str, str]


def _sample_names(family: str, kind: str) -> set[str]:
    """The sample names the text format gives a family of this type."""
    if kind == "counter":
        return {f"{family}_total"}
    if kind == "histogram":
        return {family + suffix for suffix in HISTOGRAM_SUFFIXES}
    return {family}


def _family_of(name: str) -> tuple[str, str]:
    """The family and type a sample name implies: `_bucket`/`_sum`/`_count` a histogram's,
    `_total` a counter's (its sample name, not part of the family name), else a gauge."""
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix):
            return name.removesuffix(suffix), "histogram"
    if name.endswith("_total"):
        return name.removesuffix("_total"), "counter"
    return name, "gauge"


def _declared_families() -> dict[str, str]:
    """Family name -> type of every metric app/observability/metrics.py declares."""
    families: dict[str, str] = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            for family in value.describe():
                families[family.name] = family.type
    return families


def _generate(node: Service, model: str = FIRST) -> requests.Response:
    return requests.post(
        f"{node.url}/v1beta/models/{model}:generateContent", json=PROMPT, timeout=15
    )


@pytest.fixture(scope="module")
def exposition(node: Service, simulator_service: Service) -> Iterator[str]:
    """GET /metrics of the session node after traffic that makes the labelled counters appear.

    Module-scoped, so it drives the simulator itself (the `simulator` fixture is per test), and
    leaves the shared node as it found it: the cooldown it causes lasts one second.
    """
    simulator = SimulatorControl(simulator_service.url, UPSTREAM_KEY)
    simulator.reset()
    try:
        assert _generate(node).status_code == 200
        simulator.fault("503", model=FIRST, count=1)  # retried: a retry success
        retried = _generate(node)
        assert (retried.status_code, retried.headers["X-L104-Model"]) == (200, FIRST)
        simulator.fault("429", model=FIRST, count=1, retry_delay="1s")  # cooldown, rotation
        rotated = _generate(node)
        assert (rotated.status_code, rotated.headers["X-L104-Model"]) == (200, SECOND)
        response = requests.get(f"{node.url}/metrics", timeout=5)
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        yield response.text
    finally:
        simulator.reset()
        wait_until(
            lambda: (
                FIRST not in requests.get(f"{node.url}/ready", timeout=5).json()["unusable_models"]
            ),
            5,
            f"the cooldown of {FIRST} to end",
        )


@pytest.fixture(scope="module")
def exported(exposition: str) -> Exported:
    """The sample names of the real scrape and, for DECLARED_ONLY, of
    app/observability/metrics.py."""
    scraped: dict[str, str] = {}
    for family in text_string_to_metric_families(exposition):
        for name in _sample_names(family.name, family.type):  # announced by `# TYPE`
            scraped[name] = family.type
        for sample in family.samples:
            scraped[sample.name] = family.type
    declared_families = _declared_families()
    assert set(DECLARED_ONLY) <= set(declared_families), "DECLARED_ONLY names a lost family"
    declared = {
        name: kind
        for family, kind in declared_families.items()
        if family in DECLARED_ONLY
        for name in _sample_names(family, kind)
    }
    missing = PRODUCED - set(scraped)
    assert not missing, f"the traffic did not produce {missing}:\n{exposition}"
    return Exported(scraped, declared)


def _unknown_metric_names(queries: list[tuple[str, str]], exported: Exported) -> list[str]:
    problems = []
    for where, expr in queries:
        for name in METRIC_NAME.findall(expr):
            if name in exported.scraped or name in exported.declared:
                continue
            family, kind = _family_of(name)
            known = {n for n in exported.scraped if _family_of(n)[0] == family}
            problems.append(f"{where}: {name} (read as a {kind} sample; exported: {known or None})")
    return problems


def test_dashboard_queries_name_only_exported_metrics(
    dashboard: dict[str, Any], exported: Exported
) -> None:
    queries = _dashboard_queries(dashboard)
    assert not _unknown_metric_names(queries, exported)
    assert not [q for q in queries if RECORDED_NAME.search(q[1])], "needs alerts.yml's rules"
    named = {name for _, expr in queries for name in METRIC_NAME.findall(expr)}
    assert "l104_request_duration_seconds_bucket" in named
    assert "l104_model_cooldown_seconds" in named


def test_alert_rules_name_only_exported_metrics(
    rules: list[dict[str, str]], exported: Exported
) -> None:
    queries = [(rule.get("alert") or rule["record"], rule["expr"]) for rule in rules]
    assert not _unknown_metric_names(queries, exported)
    recorded = {rule["record"] for rule in rules if "record" in rule}
    used = {name for _, expr in queries for name in RECORDED_NAME.findall(expr)}
    assert used <= recorded, f"not recorded in alerts.yml: {used - recorded}"


def test_promtool_accepts_the_nodes_exposition(exposition: str) -> None:
    """promtool check metrics: no complaint at all about the real /metrics body."""
    result = _promtool("check", "metrics", stdin=exposition)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", ""), _output(result)
