#!/usr/bin/env python3
"""Failover benchmark on the sandbox (`make bench`). Not a test: it measures and reports.

Runs scenario 1 (planned use1 → usw2: 2 RDS, 1 Aurora global, 4 records, 6 workloads) with
fixed emulated delays, RUNS times, and reports per run:
  * RTO: the Failover's measured total (status.timings.totalSeconds);
  * the critical path of emulated waits: fence (fenced pods' termination grace, then the
    first lag datapoint published after the fence, as RDS publishes on a cadence)
    + max(warm-up, promotion) + DNS;
  * orchestration overhead = RTO - critical path;
  * slack per AWS wait (done → first describe that saw it) and describes per wait;
  * AWS calls per failover (all, and mutating).
Then it performs the same steps as a plain sequential runbook (the same calls one after
another, polling every 250 ms) and reports the ratio Drover / runbook.

    bench.py [--runs N] [--learn] [--binary PATH] [--promotion SECONDS]
        (expects `e2e/sandbox.py up`; starts its own operator). With --learn, runs after the
        first start from the step durations the previous run's plan learned (status
        .stepDurations), as one plan failing over again would: describes per wait then
        show the learned polling.
"""

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import datetime
from pathlib import Path

import boto3

sys.path.insert(0, str(Path(__file__).resolve().parent))
import nodesim  # noqa: E402  (the same small Kubernetes REST client)
import seed  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
STATE = seed.STATE
ENDPOINT = seed.ENDPOINT
PROMOTION, SWITCHOVER, DNS_SYNC, READY = 3.0, 3.0, 1.0, 1.0
GRACE = 0.5  # bed.drover.io/termination-grace-ms of the seeded workloads
RUNBOOK_POLL = 0.25


def bed(method, path, body=None):
    req = urllib.request.Request(f"{ENDPOINT}/_bed{path}", method=method, data=json.dumps(body or {}).encode())
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.load(r)


def calls():
    out = {}
    for c in bed("GET", "/calls")["calls"]:
        out[(c["operation"], c["mutating"])] = out.get((c["operation"], c["mutating"]), 0) + c["count"]
    return out


def call_delta(before, after):
    total = sum(after.values()) - sum(before.values())
    mutating = sum(v for (op, m), v in after.items() if m) - sum(v for (op, m), v in before.items() if m)
    return total, mutating


def kubectl(*args, stdin=None):
    return subprocess.run(["kubectl", "--kubeconfig", str(STATE / "mgmt" / "admin.kubeconfig"), *args],
                          input=stdin, text=True, check=True, capture_output=True).stdout


def seed_plan(name):
    out = subprocess.run([sys.executable, str(ROOT / "e2e" / "seed.py"), name], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(what, check, timeout=120.0, poll=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = check()
        if v:
            return v
        time.sleep(poll)
    raise SystemExit(f"timed out waiting for {what}")


def plan_ready(name):
    out = kubectl("-n", "drover-system", "get", "drp", name, "-o",
                  'jsonpath={.status.conditions[?(@.type=="Ready")].status}')
    return out == "True"


class FenceWatch:
    """Watches the source region's workloads and pods of one plan and records when each
    watch event arrived, so that the fence's emulated wait (first fenced Deployment scaled
    to 0 -> last of its pods deleted) is measured as the readiness emulator performed it,
    like the AWS waits, instead of assumed to be the termination grace."""

    def __init__(self, name, fenced):
        self.cluster = nodesim.Cluster(str(STATE / "use1" / "admin.kubeconfig"))
        self.name, self.fenced = name, set(fenced)
        self.scaled_at, self.gone_at = None, None
        self.live = {}  # pod name -> the fenced workload it belongs to
        self.stop = threading.Event()
        resources = ("apis/apps/v1/namespaces/{}/deployments", "api/v1/namespaces/{}/pods")
        self.watching = [threading.Event() for _ in resources]
        for r, watching in zip(resources, self.watching):
            threading.Thread(target=self.follow, args=(r, watching), daemon=True).start()
        for watching in self.watching:
            if not watching.wait(10):
                raise SystemExit(f"could not watch {name} in use1")

    def follow(self, resource, watching):
        path = "/" + resource.format(self.name)
        listed = self.cluster.call("GET", path)
        if resource.endswith("pods"):
            for p in listed["items"]:
                owner = p["metadata"].get("annotations", {}).get("bed.drover.io/owner", "")
                if owner.split("/")[1:2] and owner.split("/")[1] in self.fenced:
                    self.live[p["metadata"]["name"]] = owner.split("/")[1]
        url = f"{path}?watch=true&resourceVersion={listed['metadata']['resourceVersion']}&timeoutSeconds=300"
        with self.cluster.request("GET", url, timeout=330) as stream:
            watching.set()
            for line in stream:
                if self.stop.is_set():
                    return
                arrived = time.time()
                event = json.loads(line)
                obj = event.get("object") or {}
                name = obj.get("metadata", {}).get("name")
                if resource.endswith("deployments"):
                    if (name in self.fenced and obj.get("spec", {}).get("replicas") == 0
                            and self.scaled_at is None):
                        self.scaled_at = arrived
                elif event.get("type") == "DELETED" and self.live.pop(name, None):
                    if not self.live:
                        self.gone_at = arrived

    def wait(self):
        """Seconds from the first fenced scale-down to the last fenced pod gone."""
        self.stop.set()
        if self.scaled_at is None or self.gone_at is None:
            return None
        return self.gone_at - self.scaled_at


PLANS = "/apis/drover.io/v1alpha1/namespaces/drover-system/disasterrecoveryplans"


def drover_run(name, learned=None):
    """One failover of a fresh plan; `learned` (a plan's status.stepDurations from an
    earlier run) is set on it first, as if it were the same plan failing over again."""
    plan = seed_plan(name)
    kubectl("apply", "-f", "-", stdin=json.dumps(plan))
    wait(f"plan {name} Ready", lambda: plan_ready(name))
    if learned:
        nodesim.Cluster(str(STATE / "mgmt" / "admin.kubeconfig")).call(
            "PATCH", f"{PLANS}/{name}/status", {"status": {"stepDurations": learned}})
    # Let the readiness emulator settle the seeded workloads first.
    time.sleep(2 * READY)
    fence = FenceWatch(name, [w["name"] for w in plan["spec"]["workloads"]
                              if w.get("singleton") or w.get("writer")])
    bed("POST", "/waits/reset")
    before = calls()
    fo = {"apiVersion": "drover.io/v1alpha1", "kind": "Failover",
          "metadata": {"name": f"{name}-go", "namespace": "drover-system"},
          "spec": {"planRef": name, "targetRegion": "usw2", "mode": "Planned"}}
    # Created and polled over one kept-alive connection: a kubectl process (~0.1 s of CPU
    # on this 2-core machine) would take CPU from the operator and the bed while they are
    # being measured.
    mgmt = nodesim.Cluster(str(STATE / "mgmt" / "admin.kubeconfig"))
    failovers = "/apis/drover.io/v1alpha1/namespaces/drover-system/failovers"
    mgmt.call("GET", failovers)  # opens the connection before the clock starts
    mgmt.call("POST", failovers, fo)
    path = f"{failovers}/{name}-go"

    def done():
        s = mgmt.call("GET", path).get("status", {})
        return s if s.get("phase") in ("Succeeded", "Failed", "RolledBack", "Rejected") else None

    status = wait("failover", done, timeout=180 + 3 * PROMOTION, poll=0.2)
    if status["phase"] != "Succeeded":
        raise SystemExit(f"failover {name} ended {status['phase']}: {json.dumps(status)[:2000]}")
    total, mutating = call_delta(before, calls())
    waits = bed("GET", "/waits")["waits"]
    if os.environ.get("BENCH_DEBUG"):
        print(json.dumps(waits, indent=1))
    return status, total, mutating, waits, fence


def iso_seconds(stamp):
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def datapoint_wait(name, status):
    """How long after the fence (status.fencedAt) the first lag datapoint of every standby
    replica was published: an emulated wait on RDS's publishing cadence."""
    fenced = iso_seconds(status["fencedAt"])
    cw = seed.aws("cloudwatch", "us-west-2")
    firsts = []
    for metric, dim, ident in [("ReplicaLag", "DBInstanceIdentifier", f"{name}-{db}-usw2")
                               for db in seed.RDS_DBS] + [
            ("AuroraGlobalDBReplicationLag", "DBClusterIdentifier", f"{name}-catalog-usw2")]:
        out = cw.get_metric_data(MetricDataQueries=[{"Id": "lag", "MetricStat": {
            "Metric": {"Namespace": "AWS/RDS", "MetricName": metric,
                       "Dimensions": [{"Name": dim, "Value": ident}]},
            "Period": 1, "Stat": "Maximum"}}], StartTime=fenced - 60, EndTime=fenced + 120,
            ScanBy="TimestampAscending")
        stamps = [t.timestamp() for t in out["MetricDataResults"][0]["Timestamps"]]
        firsts.append(min((t for t in stamps if t >= fenced), default=fenced) - fenced)
    return max(firsts)


def breakdown(status, waits, fence, datapoint):
    """Where one run's time went, in order along the critical path: each emulated wait as
    the emulator timed it, and Drover's time between them. None where a mark is missing."""
    start = iso_seconds(status["timings"]["startedAt"])
    end = iso_seconds(status["timings"]["finishedAt"])
    fenced = iso_seconds(status["fencedAt"])
    dbs = [w for w in waits if w["kind"] in ("rds", "aurora") and w["wait"] is not None]
    dns = [w for w in waits if w["kind"] == "dns" and w["wait"] is not None]
    if fence.scaled_at is None or fence.gone_at is None or not dbs or not dns:
        return None
    db_asked = min(w["requested_at"] for w in dbs)
    db_done = max(w["requested_at"] + w["wait"] for w in dbs)
    dns_asked, dns_done = dns[-1]["requested_at"], dns[-1]["requested_at"] + dns[-1]["wait"]
    marks = [
        ("drover: start -> first fence scale (preflight)", start, fence.scaled_at),
        ("emulated: fenced pods gone", fence.scaled_at, fence.gone_at),
        ("drover: pods gone -> fencedAt recorded", fence.gone_at, fenced),
        ("emulated: first lag datapoint after fencedAt", fenced, fenced + datapoint),
        ("drover: datapoint -> first promotion call", fenced + datapoint, db_asked),
        ("emulated: promotions (first call -> last done)", db_asked, db_done),
        ("drover: last promotion done -> DNS change", db_done, dns_asked),
        ("emulated: DNS change until INSYNC", dns_asked, dns_done),
        ("drover: INSYNC -> Complete (noticing, Verify)", dns_done, end),
    ]
    return [(label, b - a) for label, a, b in marks]


class Runbook:
    """The same steps as a sequential script: one call after another."""

    def __init__(self, name, plan):
        self.name = name
        self.plan = plan
        self.k8s = {r: nodesim.Cluster(str(STATE / r / "admin.kubeconfig")) for r in seed.REGIONS}
        self.rds = {r: seed.aws("rds", a) for r, a in seed.REGIONS.items()}
        self.cw = seed.aws("cloudwatch", "us-west-2")
        self.r53 = seed.aws("route53", "us-east-1")

    def scale(self, region, workload, replicas):
        path = f"/apis/apps/v1/namespaces/{self.name}/deployments/{workload}/scale"
        self.k8s[region].call("PATCH", path, {"spec": {"replicas": replicas}})

    def wait_deploy(self, region, workload, replicas):
        path = f"/apis/apps/v1/namespaces/{self.name}/deployments/{workload}"

        def ok():
            d = self.k8s[region].call("GET", path)
            s = d.get("status", {})
            return (s.get("observedGeneration", 0) >= d["metadata"]["generation"]
                    and s.get("readyReplicas", 0) >= replicas and s.get("replicas", 0) <= replicas)
        wait(f"{workload} in {region}", ok, poll=RUNBOOK_POLL)

    def run(self):
        started = time.monotonic()
        workloads = self.plan["spec"]["workloads"]
        for w in workloads:  # fence
            if w["singleton"] or w["writer"]:
                self.scale("use1", w["name"], 0)
                self.wait_deploy("use1", w["name"], 0)
        for db in self.plan["spec"]["databases"]:  # lag check
            member = next(m for m in (db.get("rds") or db.get("auroraGlobal"))[
                "instances" if "rds" in db else "members"] if m["region"] == "usw2")
            dim = "DBInstanceIdentifier" if "rds" in db else "DBClusterIdentifier"
            metric = "ReplicaLag" if "rds" in db else "AuroraGlobalDBReplicationLag"
            now = time.time()
            self.cw.get_metric_data(MetricDataQueries=[{"Id": "lag", "MetricStat": {
                "Metric": {"Namespace": "AWS/RDS", "MetricName": metric,
                           "Dimensions": [{"Name": dim, "Value": member["identifier"]}]},
                "Period": 1, "Stat": "Maximum"}}], StartTime=now - 300, EndTime=now + 60)
        for db in self.plan["spec"]["databases"]:  # promote, one at a time
            if "rds" in db:
                ident = next(m["identifier"] for m in db["rds"]["instances"] if m["region"] == "usw2")
                self.rds["usw2"].promote_read_replica(DBInstanceIdentifier=ident)

                def promoted():
                    d = self.rds["usw2"].describe_db_instances(DBInstanceIdentifier=ident)["DBInstances"][0]
                    return d["DBInstanceStatus"] == "available" and not d.get("ReadReplicaSourceDBInstanceIdentifier")
                wait(ident, promoted, poll=RUNBOOK_POLL)
            else:
                g = db["auroraGlobal"]
                ident = next(m["identifier"] for m in g["members"] if m["region"] == "usw2")
                arn = self.rds["usw2"].describe_db_clusters(DBClusterIdentifier=ident)["DBClusters"][0]["DBClusterArn"]
                self.rds["usw2"].switchover_global_cluster(GlobalClusterIdentifier=g["globalClusterIdentifier"],
                                                           TargetDbClusterIdentifier=arn)

                def switched():
                    gc = self.rds["usw2"].describe_global_clusters(
                        GlobalClusterIdentifier=g["globalClusterIdentifier"])["GlobalClusters"][0]
                    writer = [m["DBClusterArn"] for m in gc["GlobalClusterMembers"] if m["IsWriter"]]
                    return gc["Status"] == "available" and writer == [arn]
                wait(ident, switched, poll=RUNBOOK_POLL)
        for w in workloads:  # warm up
            self.scale("usw2", w["name"], w["activeReplicas"])
            self.wait_deploy("usw2", w["name"], w["activeReplicas"])
        zone = self.plan["spec"]["dns"][0]
        change = seed.point_records(zone["hostedZoneId"], zone["records"], "usw2")
        wait("INSYNC", lambda: self.r53.get_change(Id=change)["ChangeInfo"]["Status"] == "INSYNC", poll=RUNBOOK_POLL)
        for w in workloads:  # old region to standby
            self.scale("use1", w["name"], 0 if w["singleton"] else w["standbyReplicas"])
        return time.monotonic() - started


def main():
    global PROMOTION, SWITCHOVER
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--learn", action="store_true",
                        help="give each run's plan the step durations the previous run's plan learned")
    parser.add_argument("--binary", default=str(ROOT / "target" / "debug" / "drover"),
                        help="the drover binary to run (make bench uses the release build)")
    parser.add_argument("--promotion", type=float, default=PROMOTION,
                        help="the emulated promotion and switchover time in seconds (at most 50: "
                             "the seeded plan's promotion timeout is 60 s); with longer ones the "
                             "runbook comparison is skipped")
    args = parser.parse_args()
    if not 0 < args.promotion <= 50:
        raise SystemExit("--promotion must be above 0 and at most 50 seconds")
    PROMOTION = SWITCHOVER = args.promotion
    long_waits = PROMOTION > 3.0
    bed("POST", "/config", {"promotion_delay": PROMOTION, "switchover_delay": SWITCHOVER,
                            "dns_sync_delay": DNS_SYNC})
    bed("DELETE", "/faults")
    kubectl("apply", "--validate=false", "-f", str(ROOT / "crds" / "drover.io.yaml"))
    port = free_port()
    log = open(ROOT / "target" / "bench-operator.log", "w")
    env = dict(os.environ)
    for line in (STATE / "env.sh").read_text().splitlines():  # the sandbox's AWS and kube env
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value
    operator = subprocess.Popen([args.binary, "run", "--http-addr", f"127.0.0.1:{port}",
                                 "--lease-namespace", "drover-system", "--watch-namespace", "drover-system",
                                 "--identity", "bench"], stdout=log, stderr=log, env=env)
    try:
        wait("operator ready", lambda: _ready(port), timeout=60)
        # Fixed part; the wait for a lag datapoint after the fence is measured per run.
        critical_fixed = GRACE + max(READY, PROMOTION, SWITCHOVER) + DNS_SYNC
        rows, runbook_times = [], []
        stamp = int(time.time()) % 100000
        learned = None
        for i in range(args.runs):
            status, total_calls, mutating, waits, fence = drover_run(f"bench{stamp}-{i}", learned)
            if args.learn:
                mgmt = nodesim.Cluster(str(STATE / "mgmt" / "admin.kubeconfig"))
                learned = wait("the plan to learn its step durations", lambda: (
                    mgmt.call("GET", f"{PLANS}/bench{stamp}-{i}").get("status", {}).get("stepDurations")))
            fence_wait = fence.wait()
            rto = status["timings"]["totalSeconds"]
            slacks = [w["slack"] for w in waits if w["slack"] is not None]
            describes = [w["describes"] for w in waits]
            steps = {s["name"]: s for s in status["steps"]}
            # The emulator's own timing of each AWS wait (request → done), which includes its
            # timer and Python scheduling delays.
            db_waits = [w["wait"] for w in waits if w["kind"] in ("rds", "aurora") and w["wait"]]
            dns_waits = [w["wait"] for w in waits if w["kind"] == "dns" and w["wait"]]
            datapoint = datapoint_wait(f"bench{stamp}-{i}", status)
            critical = critical_fixed + datapoint
            # The fence as the readiness emulator performed it (its own latency included),
            # when the watch saw both ends; the grace otherwise.
            measured = ((fence_wait or GRACE) + datapoint + max([READY] + db_waits)
                        + max(dns_waits or [DNS_SYNC]))
            rows.append({"measured_critical": measured, "overhead_measured": rto - measured,
                         "fence_wait": fence_wait, "breakdown": breakdown(status, waits, fence, datapoint),
                         "db_waits": db_waits, "dns_waits": dns_waits,
                         "rto": rto, "overhead": rto - critical, "max_slack": max(slacks),
                         "critical": critical, "datapoint": datapoint,
                         "mean_slack": statistics.mean(slacks), "describes": describes,
                         "calls": total_calls, "mutating": mutating, "waits": len(waits),
                         "steps": steps})
            if long_waits:
                runbook_times.append(float("nan"))
            else:
                rb_name = f"rbk{stamp}-{i}"
                plan = seed_plan(rb_name)
                kubectl("apply", "-f", "-", stdin=json.dumps(plan))
                wait(f"plan {rb_name} Ready", lambda: plan_ready(rb_name))
                time.sleep(2 * READY)
                runbook_times.append(Runbook(rb_name, plan).run())
            print(f"run {i + 1}: drover RTO {rto:.2f}s, overhead {rto - critical:.2f}s, "
                  f"slack max {max(slacks):.2f}s, describes per wait {describes}, "
                  f"waits {[round(w['wait'] or 0, 2) for w in waits]}s, "
                  f"AWS calls {total_calls} ({mutating} mutating); "
                  f"runbook {runbook_times[-1]:.2f}s", flush=True)
        med = lambda xs: statistics.median(xs)  # noqa: E731
        rto = med([r["rto"] for r in rows])
        rb = med(runbook_times)
        datapoints = ", ".join(f"{r['datapoint']:.2f}" for r in rows)
        print()
        print(f"emulated delays: promotion {PROMOTION}s, switchover {SWITCHOVER}s, DNS {DNS_SYNC}s, "
              f"workload readiness {READY}s, termination grace {GRACE}s; critical path "
              f"{critical_fixed:.1f}s + the lag datapoint after the fence "
              f"({datapoints} s per run)")
        print("| metric (median of %d runs) | value |" % args.runs)
        print("| --- | --- |")
        print(f"| Drover RTO (status.timings.totalSeconds) | {rto:.2f} s |")
        print(f"| orchestration overhead (RTO - critical path) | {med([r['overhead'] for r in rows]):.2f} s |")
        fences = ", ".join("-" if r["fence_wait"] is None else f"{r['fence_wait']:.2f}" for r in rows)
        print(f"| fence as the readiness emulator performed it (scale to 0 -> pods gone), per run | {fences} s |")
        print(f"| AWS waits as the emulator timed them (promotions; DNS) | "
              f"{', '.join(f'{w:.2f}' for w in rows[0]['db_waits'])} s; "
              f"{', '.join(f'{w:.2f}' for w in rows[0]['dns_waits'])} s |")
        print(f"| overhead against those measured waits | {med([r['overhead_measured'] for r in rows]):.2f} s |")
        print(f"| slack per AWS wait, max / mean | {med([r['max_slack'] for r in rows]):.2f} s / "
              f"{med([r['mean_slack'] for r in rows]):.2f} s |")
        print(f"| describe calls per AWS wait | {rows[len(rows) // 2]['describes']} |")
        print(f"| AWS calls per failover (mutating) | {med([r['calls'] for r in rows])} "
              f"({med([r['mutating'] for r in rows])}) |")
        print(f"| sequential runbook (same calls, 250 ms polls) | {rb:.2f} s |")
        print(f"| Drover / runbook | {rto / rb:.2f} |")
        print()
        print("steps of the median run:")
        mid = sorted(rows, key=lambda r: r["rto"])[len(rows) // 2]
        for name, s in mid["steps"].items():
            print(f"  {name}: {s.get('durationSeconds', 0):.2f}s, {s.get('attempts', 0)} calls")
        print()
        print("where the time went, per run (the drover lines are the overhead; they sum to the RTO):")
        labels = [label for label, _ in next((r["breakdown"] for r in rows if r["breakdown"]), [])]
        for k, label in enumerate(labels):
            cells = ["-" if not r["breakdown"] else f"{r['breakdown'][k][1]:.2f}" for r in rows]
            print(f"  {label}: {', '.join(cells)} s")
        sums = ["-" if not r["breakdown"] else f"{sum(v for l, v in r['breakdown'] if l.startswith('drover')):.2f}"
                for r in rows]
        print(f"  drover, summed: {', '.join(sums)} s")
    finally:
        operator.send_signal(signal.SIGTERM)
        operator.wait(timeout=30)


def _ready(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
            return r.status == 200
    except OSError:  # refused, or 503 (HTTPError is an OSError)
        return False


if __name__ == "__main__":
    main()
