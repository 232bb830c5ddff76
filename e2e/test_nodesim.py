"""Tests of the bed's pod emulator (e2e/nodesim.py), the euw1 member cluster and e2e/seed.py,
against a running sandbox (`e2e/sandbox.py up`; DROVER_SANDBOX_DIR and DROVER_AWS_PORT as in
its env.sh).

The writes-to tests start their own nodesim, limited to one namespace of the management
cluster (which the sandbox's nodesim does not watch), against a small HTTP server of their own,
so they do not depend on the AWS emulator's /_bed/writes.
"""

import base64
import functools
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import pytest

E2E = Path(__file__).resolve().parent
ROOT = E2E.parent
STATE = Path(os.environ.get("DROVER_SANDBOX_DIR", ROOT / "target" / "sandbox"))
sys.path.insert(0, str(E2E))
import bedclient  # noqa: E402
import nodesim  # noqa: E402
from bedclient import ENDPOINT, uid  # noqa: E402,F401

wait_for = functools.partial(bedclient.wait_for, poll=0.05)


@pytest.fixture(scope="module", autouse=True)
def sandbox():
    assert (STATE / "pids").exists(), f"sandbox not running in {STATE}; run e2e/sandbox.py up"


def cluster(name):
    return nodesim.Cluster(str(STATE / name / "admin.kubeconfig"))


def namespace(c, base):
    name = f"{base}-{uid()}"
    c.call("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    return name


def workload(kind, name, replicas, annotations):
    obj = {
        "apiVersion": "apps/v1", "kind": kind,
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name, "tier": "test"}},
                              "spec": {"containers": [{"name": "main", "image": f"example.test/{name}:1"}]}}},
    }
    if kind == "StatefulSet":
        obj["spec"]["serviceName"] = name
    return obj


def create(c, ns, obj):
    plural = obj["kind"].lower() + "s"
    return c.call("POST", f"/apis/apps/v1/namespaces/{ns}/{plural}", obj)


def get(c, ns, plural, name):
    return c.call("GET", f"/apis/apps/v1/namespaces/{ns}/{plural}/{name}")


def scale(c, ns, plural, name, replicas):
    """As Drover does: a merge patch of the scale subresource."""
    c.call("PATCH", f"/apis/apps/v1/namespaces/{ns}/{plural}/{name}/scale", {"spec": {"replicas": replicas}})


def pods(c, ns, app):
    return c.call("GET", f"/api/v1/namespaces/{ns}/pods?labelSelector=app%3D{app}")["items"]


def is_ready(pod):
    return any(cond["type"] == "Ready" and cond["status"] == "True"
               for cond in (pod.get("status") or {}).get("conditions") or [])


def terminating(pod):
    return bool(pod["metadata"].get("deletionTimestamp"))


def status(obj, field):
    return (obj.get("status") or {}).get(field, 0)


# ---- pods ------------------------------------------------------------------------------------
def test_deployment_pods_are_created_and_become_ready():
    c = cluster("use1")
    ns = namespace(c, "nodesim-pods")
    created_at = time.monotonic()
    d = create(c, ns, workload("Deployment", "web", 3, {"bed.drover.io/ready-delay-ms": "1000"}))

    first = wait_for("3 pods", lambda: (lambda ps: ps if len(ps) == 3 else None)(pods(c, ns, "web")), 5)
    for p in first:
        assert p["spec"]["nodeName"] == "bed-node"
        assert p["spec"]["automountServiceAccountToken"] is False
        assert p["spec"]["serviceAccountName"] == "default"
        assert p["metadata"]["labels"]["tier"] == "test"
        assert p["metadata"]["annotations"]["bed.drover.io/owner"] == f"Deployment/web/{d['metadata']['uid']}"
        assert [(k["name"], k["image"]) for k in p["spec"]["containers"]] == [("main", "example.test/web:1")]
    # ServiceAccount admission needed the namespace's default ServiceAccount: nodesim made it.
    assert c.call("GET", f"/api/v1/namespaces/{ns}/serviceaccounts/default")["metadata"]["name"] == "default"

    # Pods exist at once; readiness follows after the delay.
    early = get(c, ns, "deployments", "web")
    assert status(early, "readyReplicas") < 3
    done = wait_for("web ready at 3", lambda: (lambda d: d if status(d, "readyReplicas") == 3 else None)(
        get(c, ns, "deployments", "web")), 10)
    took = time.monotonic() - created_at
    assert took >= 0.9, f"ready after {took:.2f}s"
    assert took < 5, f"ready after {took:.2f}s"
    assert status(done, "replicas") == 3
    assert status(done, "availableReplicas") == 3
    assert status(done, "updatedReplicas") == 3
    assert status(done, "observedGeneration") == done["metadata"]["generation"]
    ready = pods(c, ns, "web")
    assert len(ready) == 3 and all(is_ready(p) and p["status"]["phase"] == "Running" for p in ready)
    assert {p["metadata"]["uid"] for p in ready} == {p["metadata"]["uid"] for p in first}


def test_statefulset_pods_have_ordinals():
    c = cluster("use1")
    ns = namespace(c, "nodesim-sts")
    create(c, ns, workload("StatefulSet", "db", 2, {"bed.drover.io/ready-delay-ms": "300",
                                                     "bed.drover.io/termination-grace-ms": "1500"}))
    wait_for("db ready at 2", lambda: status(get(c, ns, "statefulsets", "db"), "readyReplicas") == 2, 10)
    assert sorted(p["metadata"]["name"] for p in pods(c, ns, "db")) == ["db-0", "db-1"]

    # Scale-down removes the highest ordinal, gracefully.
    scale(c, ns, "statefulsets", "db", 1)
    wait_for("db at 1 replica", lambda: status(get(c, ns, "statefulsets", "db"), "replicas") == 1, 5)
    left = {p["metadata"]["name"]: terminating(p) for p in pods(c, ns, "db")}
    assert left == {"db-0": False, "db-1": True}
    wait_for("db-1 gone", lambda: [p["metadata"]["name"] for p in pods(c, ns, "db")] == ["db-0"], 10)


def test_scale_down_leaves_pods_terminating_for_the_grace_period():
    c = cluster("use1")
    ns = namespace(c, "nodesim-grace")
    grace = 3.0
    create(c, ns, workload("Deployment", "api", 3, {"bed.drover.io/ready-delay-ms": "300",
                                                     "bed.drover.io/termination-grace-ms": str(int(grace * 1000))}))
    wait_for("api ready at 3", lambda: status(get(c, ns, "deployments", "api"), "readyReplicas") == 3, 10)

    scaled_at = time.monotonic()
    scale(c, ns, "deployments", "api", 1)
    # Status already shows 1 replica (terminating pods are not counted, as in Kubernetes)...
    d = wait_for("status at 1 replica", lambda: (lambda d: d if status(d, "replicas") == 1 else None)(
        get(c, ns, "deployments", "api")), 5)
    assert status(d, "readyReplicas") == 1
    assert status(d, "observedGeneration") == d["metadata"]["generation"]
    # ... while the 2 removed pods are still there, Terminating.
    now = pods(c, ns, "api")
    assert time.monotonic() - scaled_at < grace, "the check came too late to mean anything"
    assert len(now) == 3
    assert sorted(terminating(p) for p in now) == [False, True, True]
    for p in now:
        if terminating(p):
            assert p["metadata"]["deletionGracePeriodSeconds"] == 3

    # They go away after the grace period.
    wait_for("terminating pods gone", lambda: len(pods(c, ns, "api")) == 1, grace + 5)
    took = time.monotonic() - scaled_at
    assert took >= grace - 0.2, f"gone after {took:.2f}s, grace {grace}s"
    assert took < grace + 3, f"gone after {took:.2f}s, grace {grace}s"
    assert status(get(c, ns, "deployments", "api"), "replicas") == 1

    # Scaling back up creates new pods at once, though old ones may still be terminating.
    scale(c, ns, "deployments", "api", 0)
    wait_for("status at 0", lambda: status(get(c, ns, "deployments", "api"), "replicas") == 0, 5)
    assert [terminating(p) for p in pods(c, ns, "api")] == [True]
    scale(c, ns, "deployments", "api", 2)
    wait_for("api ready at 2", lambda: status(get(c, ns, "deployments", "api"), "readyReplicas") == 2, 10)
    wait_for("2 pods left", lambda: len(pods(c, ns, "api")) == 2, grace + 5)


def test_template_change_rolls_out_new_pods():
    c = cluster("use1")
    ns = namespace(c, "nodesim-roll")
    create(c, ns, workload("Deployment", "web", 2, {"bed.drover.io/ready-delay-ms": "300",
                                                     "bed.drover.io/termination-grace-ms": "200"}))
    wait_for("web ready at 2", lambda: status(get(c, ns, "deployments", "web"), "readyReplicas") == 2, 10)
    c.call("PATCH", f"/apis/apps/v1/namespaces/{ns}/deployments/web",
           {"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "example.test/web:2"}]}}}})

    def rolled():
        d = get(c, ns, "deployments", "web")
        ps = pods(c, ns, "web")
        return (status(d, "updatedReplicas") == 2 and status(d, "readyReplicas") == 2 and len(ps) == 2
                and all(p["spec"]["containers"][0]["image"] == "example.test/web:2" for p in ps))
    wait_for("rolled out to web:2", rolled, 10)


# ---- writes reported to the AWS emulator -----------------------------------------------------
class FakeBed:
    """Answers POST /_bed/writes (200, or 404 as an emulator without it would) and records
    each body with the time it arrived."""

    def __init__(self, status=200):
        self.posts = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                fake.posts.append((time.monotonic(), self.path, body))
                self.send_response(status if self.path == "/_bed/writes" else 404)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *_):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def states(self, identifier):
        return [b["writing"] for _, path, b in self.posts
                if path == "/_bed/writes" and b["identifier"] == identifier]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class OwnNodesim:
    """A nodesim limited to one namespace of the management cluster; stopped by PID."""

    def __init__(self, ns, endpoint, tmp_path):
        self.log = tmp_path / f"nodesim-{ns}.log"
        env = dict(os.environ, NODESIM_AWS_ENDPOINT=endpoint, NODESIM_TERMINATION_GRACE_MS="1000")
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, str(E2E / "nodesim.py"), "--namespace", ns,
                 str(STATE / "mgmt" / "admin.kubeconfig")],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)

    def text(self):
        return self.log.read_text()

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def fake_bed():
    fake = FakeBed()
    yield fake
    fake.stop()


@pytest.fixture
def mgmt_namespace():
    c = cluster("mgmt")
    return c, namespace(c, "nodesim-writes")


def test_writes_to_transitions_reach_the_emulator(fake_bed, mgmt_namespace, tmp_path):
    c, ns = mgmt_namespace
    targets = "us-east-1/orders-db, us-east-1/catalog-cluster"
    create(c, ns, workload("Deployment", "writer", 0, {"bed.drover.io/ready-delay-ms": "500",
                                                        "bed.drover.io/termination-grace-ms": "2000",
                                                        "bed.drover.io/writes-to": targets}))
    create(c, ns, workload("Deployment", "reader", 1, {"bed.drover.io/ready-delay-ms": "100"}))
    sim = OwnNodesim(ns, fake_bed.url, tmp_path)
    try:
        # On start: the state of every annotated workload's databases (not writing, at 0).
        wait_for("initial states", lambda: fake_bed.states("orders-db") == [False]
                 and fake_bed.states("catalog-cluster") == [False], 10)
        assert all(b["region"] == "us-east-1" for _, _, b in fake_bed.posts)
        wait_for("reader ready", lambda: status(get(c, ns, "deployments", "reader"), "readyReplicas") == 1, 10)

        scaled_at = time.monotonic()
        scale(c, ns, "deployments", "writer", 2)
        wait_for("writing", lambda: fake_bed.states("orders-db") == [False, True]
                 and fake_bed.states("catalog-cluster") == [False, True], 10)
        first_true = min(t for t, _, b in fake_bed.posts if b["writing"])
        assert first_true - scaled_at >= 0.45, "writing before any pod was ready"
        assert any(is_ready(p) for p in pods(c, ns, "writer"))

        # Scaled to 0: not writing as soon as no ready pod is left that is not terminating
        # (pods still Terminating for the 2 s grace do not count).
        scale(c, ns, "deployments", "writer", 0)
        wait_for("not writing", lambda: fake_bed.states("orders-db") == [False, True, False]
                 and fake_bed.states("catalog-cluster") == [False, True, False], 10)
        assert pods(c, ns, "writer") and all(terminating(p) for p in pods(c, ns, "writer"))
        wait_for("writer pods gone", lambda: not pods(c, ns, "writer"), 10)
        # Only transitions are reported, and the reader (no annotation) reports nothing.
        assert fake_bed.states("orders-db") == [False, True, False]
        assert {b["identifier"] for _, _, b in fake_bed.posts} == {"orders-db", "catalog-cluster"}
    finally:
        sim.stop()


@pytest.mark.parametrize("answer", ["404", "refused"])
def test_missing_writes_endpoint_is_logged_once(mgmt_namespace, tmp_path, answer):
    c, ns = mgmt_namespace
    fake = None
    if answer == "404":
        fake = FakeBed(status=404)
        endpoint = fake.url
    else:
        with socket.socket() as s:  # a port nothing listens on
            s.bind(("127.0.0.1", 0))
            endpoint = f"http://127.0.0.1:{s.getsockname()[1]}"
    create(c, ns, workload("Deployment", "writer", 1, {"bed.drover.io/ready-delay-ms": "200",
                                                        "bed.drover.io/termination-grace-ms": "200",
                                                        "bed.drover.io/writes-to": "us-east-1/a,us-west-2/b"}))
    sim = OwnNodesim(ns, endpoint, tmp_path)
    try:
        wait_for("writer ready", lambda: status(get(c, ns, "deployments", "writer"), "readyReplicas") == 1, 10)
        scale(c, ns, "deployments", "writer", 0)
        wait_for("writer pods gone", lambda: not pods(c, ns, "writer"), 10)
        scale(c, ns, "deployments", "writer", 1)
        wait_for("writer ready again", lambda: status(get(c, ns, "deployments", "writer"), "readyReplicas") == 1, 10)
        if fake:
            wait_for("4 posts", lambda: len(fake.posts) >= 4, 5)
        logged = wait_for("the log line", lambda: [line for line in sim.text().splitlines()
                                                   if "writes are not reported" in line], 5)
        assert len(logged) == 1, logged
    finally:
        sim.stop()
        if fake:
            fake.stop()


# ---- the third member region -----------------------------------------------------------------
def test_euw1_is_reachable_with_its_member_kubeconfig_secret(tmp_path):
    secret = cluster("mgmt").call("GET", "/api/v1/namespaces/drover-system/secrets/euw1-kubeconfig")
    kubeconfig = json.loads(base64.b64decode(secret["data"]["kubeconfig"]))
    path = tmp_path / "euw1.kubeconfig"
    path.write_text(json.dumps(kubeconfig))
    member = nodesim.Cluster(str(path))
    admin = json.loads((STATE / "euw1" / "admin.kubeconfig").read_text())
    assert member.server == admin["clusters"][0]["cluster"]["server"]
    others = {json.loads((STATE / r / "admin.kubeconfig").read_text())["clusters"][0]["cluster"]["server"]
              for r in ("mgmt", "use1", "usw2")}
    assert member.server not in others

    names = {d["metadata"]["name"] for d in member.call("GET", "/apis/apps/v1/namespaces/shop/deployments")["items"]}
    assert {"web", "orders-writer", "cron"} <= names
    member.call("GET", "/api/v1/pods")  # the member role may list pods
    with pytest.raises(urllib.error.HTTPError) as denied:
        member.call("GET", "/api/v1/secrets")  # and nothing else
    assert denied.value.code == 403

    # The sandbox's nodesim watches euw1 too.
    c = cluster("euw1")
    ns = namespace(c, "nodesim-euw1")
    create(c, ns, workload("Deployment", "web", 1, {"bed.drover.io/ready-delay-ms": "200"}))
    wait_for("web ready in euw1", lambda: status(get(c, ns, "deployments", "web"), "readyReplicas") == 1, 10)


# ---- seed.py ---------------------------------------------------------------------------------
def seed(*args):
    out = subprocess.run([sys.executable, str(E2E / "seed.py"), *args], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout) if out.stdout.strip() else None


def aws(service, region="us-east-1"):
    return boto3.client(service, region_name=region, endpoint_url=ENDPOINT,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def zone_records(zone):
    """Every record set of the zone, paging without MaxItems."""
    r53, out, kw = aws("route53"), [], {}
    for _ in range(1000):
        page = r53.list_resource_record_sets(HostedZoneId=zone, **kw)
        out += page["ResourceRecordSets"]
        if not page["IsTruncated"]:
            return out
        kw = {"StartRecordName": page["NextRecordName"], "StartRecordType": page["NextRecordType"]}
        if page.get("NextRecordIdentifier"):
            kw["StartRecordIdentifier"] = page["NextRecordIdentifier"]
    raise AssertionError("ListResourceRecordSets does not end")


def test_seed_three_regions():
    name = f"tri{uid()}"
    plan = seed(name, "--regions", "use1,usw2,euw1", "--plan-namespace", "drover-system")
    spec = plan["spec"]
    assert [(r["name"], r["awsRegion"], r["initialRole"]) for r in spec["regions"]] == [
        ("use1", "us-east-1", "Active"), ("usw2", "us-west-2", "Standby"), ("euw1", "eu-west-1", "Standby")]
    assert spec["regions"][2]["cluster"]["kubeconfigSecretRef"]["name"] == "euw1-kubeconfig"
    for db in spec["databases"]:
        members = db["rds"]["instances"] if "rds" in db else db["auroraGlobal"]["members"]
        assert [m["region"] for m in members] == ["use1", "usw2", "euw1"]
    for rec in spec["dns"][0]["records"]:
        assert [t["region"] for t in rec["targets"]] == ["use1", "usw2", "euw1"]
    assert all("healthCheckId" in t for t in spec["dns"][0]["records"][0]["targets"])

    # Workloads in euw1 at standby counts, writers annotated with euw1's own databases.
    c = cluster("euw1")
    deployments = {d["metadata"]["name"]: d for d in
                   c.call("GET", f"/apis/apps/v1/namespaces/{name}/deployments")["items"]}
    assert {w: d["spec"]["replicas"] for w, d in deployments.items()} == {
        "web": 1, "api": 1, "orders-writer": 0, "payments-writer": 0, "worker": 1, "cron": 0}
    ann = {w: d["metadata"]["annotations"] for w, d in deployments.items()}
    assert ann["orders-writer"]["bed.drover.io/writes-to"] == \
        f"eu-west-1/{name}-orders-euw1,eu-west-1/{name}-catalog-euw1"
    assert ann["payments-writer"]["bed.drover.io/writes-to"] == f"eu-west-1/{name}-payments-euw1"
    assert "bed.drover.io/writes-to" not in ann["web"]
    assert all(a["bed.drover.io/termination-grace-ms"] == "500" for a in ann.values())
    active = cluster("use1").call("GET", f"/apis/apps/v1/namespaces/{name}/deployments/orders-writer")
    assert active["spec"]["replicas"] == 2
    assert active["metadata"]["annotations"]["bed.drover.io/writes-to"] == \
        f"us-east-1/{name}-orders-use1,us-east-1/{name}-catalog-use1"

    # AWS: replicas of the active region's primaries and Aurora secondaries in eu-west-1, images.
    rds = aws("rds", "eu-west-1")
    replica = rds.describe_db_instances(DBInstanceIdentifier=f"{name}-orders-euw1")["DBInstances"][0]
    assert f"{name}-orders-use1" in replica["ReadReplicaSourceDBInstanceIdentifier"]
    assert rds.describe_db_clusters(DBClusterIdentifier=f"{name}-catalog-euw1")["DBClusters"]
    aws("ecr", "eu-west-1").describe_images(repositoryName=f"{name}/web", imageIds=[{"imageTag": "1.0.0"}])

    # DNS points at use1; failover records keep to one PRIMARY and one SECONDARY.
    records = zone_records(spec["dns"][0]["hostedZoneId"])
    api = [r for r in records if r["Name"] == f"api.{name}.example."]
    assert sorted((r["SetIdentifier"], r["Failover"]) for r in api) == [("use1", "PRIMARY"), ("usw2", "SECONDARY")]
    static = [r for r in records if r["Name"] == f"static.{name}.example."]
    assert [v["Value"] for r in static for v in r["ResourceRecords"]] == ["static-use1.cdn.example."]

    # Where the AWS emulator already takes /_bed/writes, the sandbox's nodesim told it that
    # use1's databases are written (its writers are ready) and euw1's are not.
    if emulator_writes() is not None:
        want = {("us-east-1", f"{name}-orders-use1"): True, ("us-east-1", f"{name}-catalog-use1"): True,
                ("us-east-1", f"{name}-payments-use1"): True, ("eu-west-1", f"{name}-orders-euw1"): False,
                ("eu-west-1", f"{name}-catalog-euw1"): False, ("eu-west-1", f"{name}-payments-euw1"): False}
        wait_for("writes reported", lambda: all(emulator_writes().get(k) == v for k, v in want.items()), 15)


def emulator_writes():
    """(region, identifier) -> writing, as the AWS emulator holds them; None if it has no such view."""
    try:
        with urllib.request.urlopen(f"{ENDPOINT}/_bed/replication", timeout=5) as r:
            view = json.load(r)
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        raise
    if "writes" not in view:
        return None
    return {(w["region"], w["identifier"].lower()): w["writing"] for w in view["writes"]}


def test_seed_defaults_to_two_regions():
    name = f"duo{uid()}"
    plan = seed(name)
    assert [r["name"] for r in plan["spec"]["regions"]] == ["use1", "usw2"]
    assert all(len(rec["targets"]) == 2 for rec in plan["spec"]["dns"][0]["records"])
    euw1_namespaces = {n["metadata"]["name"] for n in cluster("euw1").call("GET", "/api/v1/namespaces")["items"]}
    assert name not in euw1_namespaces


def test_rebuild_replica_from_the_named_source():
    """After a failover to euw1, the old use1 primaries are rebuilt as replicas of euw1."""
    name = f"reb{uid()}"
    seed(name, "--regions", "use1,usw2,euw1")
    west = aws("rds", "eu-west-1")
    for db in ("orders", "payments"):
        west.promote_read_replica(DBInstanceIdentifier=f"{name}-{db}-euw1")
    for db in ("orders", "payments"):
        wait_for(f"{db} promoted in euw1", lambda: (lambda d: d["DBInstanceStatus"] == "available" and not d.get(
            "ReadReplicaSourceDBInstanceIdentifier"))(west.describe_db_instances(
                DBInstanceIdentifier=f"{name}-{db}-euw1")["DBInstances"][0]), 60)

    seed(name, "use1", "--rebuild-replica", "--source", "euw1")
    for db in ("orders", "payments"):
        replica = aws("rds", "us-east-1").describe_db_instances(
            DBInstanceIdentifier=f"{name}-{db}-use1")["DBInstances"][0]
        assert f"{name}-{db}-euw1" in replica["ReadReplicaSourceDBInstanceIdentifier"]
    # euw1 is neither use1 nor usw2: it has no default source.
    out = subprocess.run([sys.executable, str(E2E / "seed.py"), name, "euw1", "--rebuild-replica"],
                         capture_output=True, text=True)
    assert out.returncode != 0 and "--source" in out.stderr


def test_seed_extra_records_in_batches():
    name = f"big{uid()}"
    n = 1100
    plan = seed(name, "--records", str(n))
    recs = plan["spec"]["dns"][0]["records"]
    assert len(recs) == 4 + n
    assert recs[-1]["name"] == f"r{n - 1}.{name}.example." and recs[-1]["routing"] == "Simple"
    assert [t["region"] for t in recs[-1]["targets"]] == ["use1", "usw2"]
    records = zone_records(plan["spec"]["dns"][0]["hostedZoneId"])
    extra = {r["Name"]: r["ResourceRecords"][0]["Value"] for r in records if r["Name"].startswith("r")}
    assert len(extra) == n
    want = {r["name"]: r["targets"][0]["values"][0] for r in recs[4:]}
    assert extra == want
