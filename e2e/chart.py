#!/usr/bin/env python3
"""Helm operations on charts/drover through the official Helm SDK (PyPI helm-python-sdk,
which binds Helm v4's Go SDK). There is no `helm` binary on this machine.

    chart.py install RELEASE NAMESPACE [--values FILE] [--set-json JSON]
"""

import argparse
import json
import os
import sys
from pathlib import Path

import helm_python
import yaml
from helm_python import _native
from helm_python.config import _loads_obj

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "drover"


def load():
    return helm_python.Chart.load(str(CHART))


def lint(values=None):
    return helm_python.lint(str(CHART), values, strict=True)


def render(values=None, release="drover", namespace="drover-system"):
    """Rendered objects, in template order, without empty documents."""
    manifests = load().render(values, name=release, namespace=namespace, is_install=True)
    objects = []
    for path, text in sorted(manifests.items()):
        if path.endswith(".yaml"):  # not NOTES.txt
            objects.extend(d for d in yaml.safe_load_all(text) if d)
    return objects


def install(kubeconfig, release, namespace, values=None):
    """Installs the chart as `release`, creating `namespace`. Returns the release summary.

    Helm 4 server-side applies by default, and a 1.20 API server (the bed's) rejects a
    server-side apply of a CRD that carries CEL rules. So this installs with server-side
    apply off, through the C ABI's `server_side_apply` option, which helm-python 0.2.2
    accepts but does not expose. Current EKS versions take the default.
    """
    with helm_python.Config(kubeconfig_path=str(kubeconfig), namespace=namespace) as cfg:
        options = {
            "namespace": namespace,
            "create_namespace": True,
            "timeout_seconds": 120,
            "server_side_apply": False,
        }
        payload = _native.call_string(
            "helm_install", cfg._raw(), _native.HANDLE(0), _native.HANDLE(0),
            str(CHART), release, json.dumps(values or {}), json.dumps(options),
        )
        return _loads_obj(payload)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    inst = sub.add_parser("install")
    inst.add_argument("release")
    inst.add_argument("namespace")
    inst.add_argument("--values", type=Path)
    inst.add_argument("--set-json", default="{}")
    args = parser.parse_args()
    values = yaml.safe_load(args.values.read_text()) if args.values else {}
    values.update(json.loads(args.set_json))
    kubeconfig = os.environ.get("KUBECONFIG")
    if not kubeconfig:
        sys.exit("KUBECONFIG is not set; `source target/sandbox/env.sh`")
    try:
        release = install(kubeconfig, args.release, args.namespace, values)
    except helm_python.HelmError as e:
        sys.exit(f"helm install {args.release}: {e}")
    print(json.dumps({k: release[k] for k in ("name", "namespace", "revision", "status")}))


if __name__ == "__main__":
    main()
