"""Drover's alert rules: promtool's checks and unit tests (config/prometheus/drover-rules.test.yaml),
the shipped copies in sync, the chart's PrometheusRule, and every alert's labels,
annotations and runbook section.
"""

import re
import subprocess
from pathlib import Path

import yaml

import chart
import rules

ROOT = Path(__file__).resolve().parent.parent
RULES_DIR = ROOT / "config" / "prometheus"
OPERATIONS = ROOT / "docs" / "operations.md"


def alerts():
    return [r for g in yaml.safe_load(rules.SOURCE.read_text())["groups"] for r in g["rules"]
            if "alert" in r]


def promtool(*args):
    return subprocess.run(["promtool", *args], cwd=RULES_DIR, capture_output=True, text=True)


def test_promtool_checks_the_rules_and_their_unit_tests_pass():
    checked = promtool("check", "rules", "drover-rules.yaml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", "drover-rules.test.yaml")
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_is_tested_firing_and_quiet():
    tests = yaml.safe_load((RULES_DIR / "drover-rules.test.yaml").read_text())["tests"]
    cases = [c for t in tests for c in t["alert_rule_test"]]
    for alert in alerts():
        name = alert["alert"]
        mine = [c for c in cases if c["alertname"] == name]
        assert any(c["exp_alerts"] for c in mine), f"{name} is never tested firing"
        assert any(not c["exp_alerts"] for c in mine), f"{name} is never tested quiet"


def github_anchor(heading):
    return re.sub(r"[^a-z0-9 _-]", "", heading.lower()).replace(" ", "-")


def test_every_alert_has_a_severity_a_summary_and_a_runbook_section():
    anchors = {github_anchor(h) for h in re.findall(r"^#+ (.+)$", OPERATIONS.read_text(), re.M)}
    for alert in alerts():
        name = alert["alert"]
        assert alert["labels"]["severity"] in ("critical", "warning", "info"), name
        notes = alert["annotations"]
        assert notes["summary"] and notes["description"], name
        url = notes["runbook_url"]
        assert url.startswith("https://github.com/drover-dr/drover/blob/main/docs/operations.md#"), url
        anchor = url.split("#", 1)[1]
        assert anchor == f"alert-{name.lower()}", url
        assert anchor in anchors, f"docs/operations.md has no section for {name} (#{anchor})"


def test_the_shipped_copies_are_generated_from_the_rules_file():
    for path, text in rules.expected().items():
        assert path.read_text() == text, f"{path} drifted: run `make rules`"


def test_the_chart_ships_the_rules_when_the_service_monitor_is_on():
    full = yaml.safe_load((ROOT / "charts/drover/ci/full-values.yaml").read_text())
    objects = chart.render(full, release="dr", namespace="platform")
    [rule] = [o for o in objects if o["kind"] == "PrometheusRule"]
    assert rule["metadata"]["namespace"] == "platform"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["spec"]["groups"] == yaml.safe_load(rules.SOURCE.read_text())["groups"]
    # Off by default (no ServiceMonitor), and off on request.
    assert not [o for o in chart.render() if o["kind"] == "PrometheusRule"]
    off = dict(full, metrics=dict(full["metrics"], prometheusRule={"enabled": False}))
    assert not [o for o in chart.render(off) if o["kind"] == "PrometheusRule"]
