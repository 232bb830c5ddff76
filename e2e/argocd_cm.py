#!/usr/bin/env python3
"""Prints config/argocd/argocd-cm-patch.yaml: the Lua health checks in config/argocd/ as
argocd-cm keys. `make argocd` regenerates it; e2e/test_chart.py fails when it drifts."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = {"DisasterRecoveryPlan": "health-plan.lua", "Failover": "health-failover.lua"}


def render():
    out = [
        "# Merge into Argo CD's argocd-cm ConfigMap, e.g.",
        "#   kubectl -n argocd patch configmap argocd-cm --patch-file config/argocd/argocd-cm-patch.yaml",
        "# Generated from config/argocd/health-*.lua by `make argocd`; do not edit.",
        "data:",
    ]
    for kind, script in SCRIPTS.items():
        out.append(f"  resource.customizations.health.drover.io_{kind}: |")
        for line in (ROOT / "config" / "argocd" / script).read_text().splitlines():
            out.append(f"    {line}" if line else "")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(render(), end="")
