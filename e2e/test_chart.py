"""The Helm chart and the kustomize base: linted, rendered and installed on the bed's
management cluster through the official Helm SDK, and `kubectl apply -k` of config/default.

The install tests need the sandbox (`make sandbox-up`; `make test` starts it).
"""

import json
import os
import subprocess
import uuid
from pathlib import Path

import helm_python
import pytest
import yaml

import chart

ROOT = Path(__file__).resolve().parent.parent
FULL_VALUES = yaml.safe_load((ROOT / "charts/drover/ci/full-values.yaml").read_text())


def by_kind(objects, kind):
    return [o for o in objects if o["kind"] == kind]


def one(objects, kind):
    found = by_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {[o['metadata']['name'] for o in found]}"
    return found[0]


def container(objects):
    return one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]


def env_of(objects):
    return {e["name"]: e.get("value") for e in container(objects)["env"]}


def kubectl(*args, check=True):
    return subprocess.run(["kubectl", *args], capture_output=True, text=True, check=check)


def sandbox_kubeconfig():
    kubeconfig = os.environ.get("KUBECONFIG")
    if not kubeconfig or not Path(kubeconfig).exists():
        pytest.fail("sandbox not running: `make sandbox-up` and `source target/sandbox/env.sh`")
    return kubeconfig


def test_lint_is_clean_with_default_and_full_values():
    for values in (None, FULL_VALUES):
        report = chart.lint(values)
        assert report["errors"] == [], report
        assert [m for m in report["messages"] if m["severity"] >= 2] == [], report


def test_default_render_is_a_secure_two_replica_operator():
    objects = chart.render()
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == sorted([
        # The operator's ClusterRole, and the requester and approver roles for people.
        "ClusterRole", "ClusterRole", "ClusterRole", "ClusterRoleBinding", "ConfigMap",
        "Deployment", "PodDisruptionBudget", "Role", "Role", "RoleBinding", "RoleBinding",
        "Service", "ServiceAccount",
    ]), kinds
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    c = container(objects)
    assert c["image"] == "ghcr.io/drover-dr/drover:0.1.0"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sc["seccompProfile"]["type"] == "RuntimeDefault"
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["serviceAccountName"] == one(objects, "ServiceAccount")["metadata"]["name"]
    env = env_of(objects)
    assert env["DROVER_LEASE_NAME"] == "drover-leader"
    assert "DROVER_WATCH_NAMESPACE" not in env
    # Secrets are readable in the release namespace only.
    secret_roles = [r for r in by_kind(objects, "Role")
                    if any("secrets" in rule["resources"] for rule in r["rules"])]
    assert [r["metadata"]["namespace"] for r in secret_roles] == ["drover-system"]
    assert one(objects, "PodDisruptionBudget")["spec"]["minAvailable"] == 1


def test_full_values_render_every_option():
    objects = chart.render(FULL_VALUES, release="dr", namespace="platform")
    sa = one(objects, "ServiceAccount")
    assert sa["metadata"]["name"] == "drover-operator"
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith(":role/drover")
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "drover-operator"
    assert pod["imagePullSecrets"] == [{"name": "ecr-pull"}]
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert pod["tolerations"][0]["key"] == "dedicated"
    assert "podAntiAffinity" in pod["affinity"]
    assert deployment["spec"]["template"]["metadata"]["labels"]["team"] == "platform"
    c = container(objects)
    assert c["image"].endswith("/drover:0.1.0-rc1")
    assert c["ports"][0]["containerPort"] == 9090
    env = env_of(objects)
    assert env["DROVER_WATCH_NAMESPACE"] == "dr-plans"
    assert env["DROVER_HTTP_ADDR"] == "0.0.0.0:9090"
    assert env["DROVER_LEASE_DURATION_SECONDS"] == "20"
    assert env["AWS_REGION"] == "us-east-1"
    assert env["AWS_STS_REGIONAL_ENDPOINTS"] == "regional"
    assert env["DROVER_LOG_FORMAT"] == "text"
    assert json.loads(env["DROVER_AWS_RATE_LIMITS"]) == {"route53": {"perSecond": 3, "burst": 4}}
    monitor = one(objects, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["endpoints"][0]["interval"] == "15s"
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True
    policy = one(objects, "NetworkPolicy")
    assert policy["spec"]["ingress"][0]["from"][0]["namespaceSelector"]
    assert {p["port"] for p in policy["spec"]["egress"][1]["ports"]} == {443, 6443}
    secret_roles = sorted(r["metadata"]["namespace"] for r in by_kind(objects, "Role")
                          if any("secrets" in rule["resources"] for rule in r["rules"]))
    assert secret_roles == ["dr-kubeconfigs", "dr-plans", "platform"]
    # Watching one namespace: the Drover kinds are granted there only.
    assert by_kind(objects, "ClusterRoleBinding") == []
    grant = [b for b in by_kind(objects, "RoleBinding") if b["roleRef"]["kind"] == "ClusterRole"]
    assert [(b["metadata"]["namespace"], b["roleRef"]["name"]) for b in grant] == [("dr-plans", "dr-drover")]
    dashboards = one(objects, "ConfigMap")
    assert dashboards["metadata"]["annotations"]["grafana_folder"] == "Disaster recovery"
    assert one(objects, "PodDisruptionBudget")["spec"]["minAvailable"] == 2


@pytest.mark.parametrize("values, message", [
    ({"replicaCount": 0}, "/replicaCount': minimum: got 0, want 1"),
    ({"operator": {"logFormat": "xml"}}, "/operator/logFormat': value must be one of"),
    ({"operatr": {}}, "additional properties 'operatr' not allowed"),
    ({"operator": {"secretNamespaces": ["Kube_System"]}},
     "/operator/secretNamespaces/0': 'Kube_System' does not match pattern"),
    ({"metrics": {"port": "8080"}}, "/metrics/port': got string, want integer"),
    ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy': value must be one of"),
    ({"operator": {"awsRateLimits": {"route53": {"perSecond": 0, "burst": 5}}}},
     "/operator/awsRateLimits/route53/perSecond': minimum: got 0, want 0.01"),
])
def test_schema_rejects_bad_values_naming_the_key(values, message):
    with pytest.raises(helm_python.HelmValuesError) as err:
        chart.load().validate_schema(values)
    assert message in str(err.value)
    with pytest.raises(helm_python.HelmError):
        chart.render(values)


def test_chart_crds_are_the_top_level_crds():
    assert (ROOT / "charts/drover/crds/drover.io.yaml").read_bytes() == \
        (ROOT / "crds/drover.io.yaml").read_bytes()


def test_dashboard_ships_as_a_sidecar_configmap():
    cm = one(chart.render(), "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads(cm["data"]["drover.json"])
    assert shipped == json.loads((ROOT / "charts/drover/dashboards/drover.json").read_text())


def rbac_rules(objects):
    """kind/name -> rules (release "drover" gives the chart the kustomize names)."""
    return {f"{o['kind']}/{o['metadata']['name']}": o["rules"]
            for o in objects if o["kind"] in ("ClusterRole", "Role")}


def test_rbac_is_least_privilege_and_the_same_in_chart_and_kustomize():
    rendered = chart.render()
    kustomized = [d for d in yaml.safe_load_all(kubectl("kustomize", str(ROOT / "config/default")).stdout) if d]
    for objects in (rendered, kustomized):
        for role in [o for o in objects if o["kind"] in ("ClusterRole", "Role")]:
            for rule in role["rules"]:
                for field in ("apiGroups", "resources", "verbs"):
                    assert "*" not in rule.get(field, []), (role["metadata"]["name"], rule)
                assert "secrets" not in rule["resources"] or role["kind"] == "Role", role
                assert set(rule["verbs"]) <= {"get", "list", "watch", "create", "patch", "delete"}
    assert rbac_rules(rendered) == rbac_rules(kustomized)


def can_i(verb, resource, namespace, user):
    resource, _, subresource = resource.partition("/")
    extra = [f"--subresource={subresource}"] if subresource else []
    out = kubectl("auth", "can-i", verb, resource, *extra, "-n", namespace, f"--as={user}",
                  check=False)
    return out.stdout.strip() == "yes"


def assert_operator_permissions(user, own_namespace):
    assert can_i("watch", "failovers.drover.io", "any-team", user)
    assert can_i("patch", "disasterrecoveryplans.drover.io/status", "any-team", user)
    assert can_i("create", "events.events.k8s.io", "any-team", user)
    assert can_i("get", "secrets", own_namespace, user)
    assert can_i("create", "leases.coordination.k8s.io", own_namespace, user)
    assert not can_i("get", "secrets", "default", user)
    assert not can_i("list", "secrets", own_namespace, user)
    assert not can_i("create", "leases.coordination.k8s.io", "default", user)
    assert not can_i("patch", "failovers.drover.io", "any-team", user)
    assert not can_i("delete", "disasterrecoveryplans.drover.io", "any-team", user)
    assert not can_i("patch", "deployments.apps", own_namespace, user)


def test_chart_installs_into_the_management_cluster():
    kubeconfig = sandbox_kubeconfig()
    suffix = uuid.uuid4().hex[:6]
    release, namespace = f"drover-{suffix}", f"drover-chart-{suffix}"
    result = chart.install(kubeconfig, release, namespace,
                           {"operator": {"secretNamespaces": ["drover-system"]}})
    assert result["status"] == "deployed"
    deployment = json.loads(kubectl("get", "deployment", release, "-n", namespace, "-o", "json").stdout)
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == release
    kubectl("get", "clusterrole", release)
    kubectl("get", "clusterrolebinding", release)
    kubectl("get", "role", f"{release}-leader", "-n", namespace)
    kubectl("get", "role", f"{release}-kubeconfigs", "-n", "drover-system")
    kubectl("get", "service", f"{release}-metrics", "-n", namespace)
    kubectl("get", "poddisruptionbudget", release, "-n", namespace)
    kubectl("get", "configmap", f"{release}-dashboards", "-n", namespace)
    for crd in ("disasterrecoveryplans.drover.io", "failovers.drover.io"):
        kubectl("get", "crd", crd)
    user = f"system:serviceaccount:{namespace}:{release}"
    assert_operator_permissions(user, namespace)
    assert can_i("get", "secrets", "drover-system", user)


def test_kustomize_base_applies_with_kubectl():
    sandbox_kubeconfig()
    # --validate=false: the 1.32 client's schema check rejects CEL fields the 1.20 server lacks.
    out = kubectl("apply", "-k", str(ROOT / "config/default"), "--validate=false")
    assert "deployment.apps/drover" in out.stdout, out.stdout
    deployment = json.loads(kubectl("get", "deployment", "drover", "-n", "drover-system", "-o", "json").stdout)
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "drover"
    for crd in ("disasterrecoveryplans.drover.io", "failovers.drover.io"):
        kubectl("get", "crd", crd)
    assert_operator_permissions("system:serviceaccount:drover-system:drover", "drover-system")


def test_argocd_cm_patch_carries_the_health_scripts():
    import argocd_cm
    committed = (ROOT / "config/argocd/argocd-cm-patch.yaml").read_text()
    assert committed == argocd_cm.render(), "stale: run `make argocd`"
    data = yaml.safe_load(committed)["data"]
    for kind, script in argocd_cm.SCRIPTS.items():
        assert data[f"resource.customizations.health.drover.io_{kind}"] == \
            (ROOT / "config/argocd" / script).read_text()
