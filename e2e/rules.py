#!/usr/bin/env python3
"""Drover's alert rules in their three shipped forms, all from config/prometheus/drover-rules.yaml:
the plain rules file, the chart's copy (charts/drover/rules/, read by its PrometheusRule
template) and kustomize's PrometheusRule (config/prometheus/prometheusrule.yaml).

    rules.py        writes the two copies (`make rules`); e2e/test_rules.py fails on drift
"""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "config" / "prometheus" / "drover-rules.yaml"
CHART_COPY = ROOT / "charts" / "drover" / "rules" / "drover-rules.yaml"
KUSTOMIZE = ROOT / "config" / "prometheus" / "prometheusrule.yaml"
HEADER = ("# Generated from drover-rules.yaml by `make rules` (e2e/rules.py): edit that file.\n"
          "# Apply with the Prometheus Operator's CRDs installed: `kubectl apply -k config/prometheus`.\n")


def prometheus_rule():
    groups = yaml.safe_load(SOURCE.read_text())["groups"]
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "drover", "labels": {"app.kubernetes.io/name": "drover"}},
        "spec": {"groups": groups},
    }


def expected():
    """Each generated file's path and the text it must hold."""
    return {
        CHART_COPY: SOURCE.read_text(),
        KUSTOMIZE: HEADER + yaml.safe_dump(prometheus_rule(), sort_keys=False, width=100),
    }


def main():
    for path, text in expected().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
