#!/usr/bin/env python3
"""Steady-state cost benchmark (`make bench-steady`). Not a test: it measures and reports.

PLANS plans (default 200), each with WORKLOADS Deployments (default 50) in its own
namespace of each of the sandbox's three member clusters (use1 active, usw2 and euw1
standby) and one RDS database (primary in us-east-1, a cross-region read replica in each
standby region, lag published by the bed on CloudWatch's cadence), all Ready and re-checked
every RESYNC seconds (default 60). One operator process serves them all, as one would for a
platform team's 200 services on three clusters.

How it is simulated: the three member clusters are the sandbox's three real
kube-apiservers; every plan's workloads are real Deployment objects there (PLANS x
WORKLOADS per cluster), created with 0 replicas so the pod emulator has no pods to run.
The plans have no DNS records (plan checks read none). The pod emulator is paused
(SIGSTOP) during the measurement windows, so the API servers' request counts are the
operator's plus the servers' own, which the idle window before the operator starts
measures and which is subtracted.

Reports, over WINDOW seconds (default 180) after every plan was Ready and one more full
resync: the operator's RSS (peak of samples every 2 s), its CPU seconds per minute, API
requests per minute to each cluster (by verb), and AWS calls per minute (by operation).

    bench_steady.py [--plans N] [--workloads N] [--window SECONDS] [--resync SECONDS]
                    [--binary PATH]          (expects `e2e/sandbox.py up`)
"""

import argparse
import concurrent.futures
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402
import nodesim  # noqa: E402
import seed  # noqa: E402

ROOT = bench.ROOT
STATE = seed.STATE
MEMBERS = ["use1", "usw2", "euw1"]
CLUSTERS = ["mgmt"] + MEMBERS
TICKS = os.sysconf("SC_CLK_TCK")


def cluster(name):
    return nodesim.Cluster(str(STATE / name / "admin.kubeconfig"))


def create(c, path, body):
    """Creates an object; one that exists already is fine (the script can run again)."""
    try:
        c.call("POST", path, body, timeout=30)
    except Exception as e:  # noqa: BLE001 - HTTPError carries .code
        if getattr(e, "code", None) != 409:
            raise


def seed_cluster(region, plans, workloads):
    c = cluster(region)

    def one_plan(i):
        ns = f"steady-{i}"
        create(c, "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        for w in range(workloads):
            create(c, f"/apis/apps/v1/namespaces/{ns}/deployments", {
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": f"w{w}", "namespace": ns},
                "spec": {"replicas": 0, "selector": {"matchLabels": {"app": f"w{w}"}},
                         "template": {"metadata": {"labels": {"app": f"w{w}"}},
                                      "spec": {"containers": [{"name": "app", "image": "app:1"}]}}}})

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(one_plan, range(plans)))


def seed_databases(plans):
    primary = seed.aws("rds", seed.REGIONS["use1"])

    def one_plan(i):
        name = f"steady-{i}"
        try:
            arn = primary.create_db_instance(
                DBInstanceIdentifier=f"{name}-db-use1", DBInstanceClass="db.t3.micro", Engine="postgres",
                MasterUsername="admin", MasterUserPassword="password123",
                AllocatedStorage=20)["DBInstance"]["DBInstanceArn"]
        except primary.exceptions.DBInstanceAlreadyExistsFault:
            return
        for r in MEMBERS[1:]:
            seed.aws("rds", seed.REGIONS[r]).create_db_instance_read_replica(
                DBInstanceIdentifier=f"{name}-db-{r}", SourceDBInstanceIdentifier=arn)
            seed.bed("/lag", {"region": seed.REGIONS[r], "identifier": f"{name}-db-{r}", "seconds": 0})

    # One at a time: moto answers concurrent replica creations with 500s.
    for i in range(plans):
        one_plan(i)


def plan(i, workloads):
    name = f"steady-{i}"
    return {
        "apiVersion": "drover.io/v1alpha1", "kind": "DisasterRecoveryPlan",
        "metadata": {"name": name, "namespace": "drover-system"},
        "spec": {
            "regions": [
                {"name": r, "awsRegion": seed.REGIONS[r], "initialRole": "Active" if r == "use1" else "Standby",
                 "cluster": {"kubeconfigSecretRef": {"name": f"{r}-kubeconfig", "namespace": "drover-system"}}}
                for r in MEMBERS],
            "databases": [{"name": "db", "rds": {"instances": [
                {"region": r, "identifier": f"{name}-db-{r}"} for r in MEMBERS]}}],
            "workloads": [{"kind": "Deployment", "namespace": name, "name": f"w{w}",
                           "activeReplicas": 1, "standbyReplicas": 0} for w in range(workloads)],
            "objectives": {"rto": "5m", "rpo": "30s"},
        },
    }


def ready_count(mgmt):
    items = mgmt.call("GET", "/apis/drover.io/v1alpha1/namespaces/drover-system/disasterrecoveryplans",
                      timeout=60)["items"]
    ready = 0
    problems = {}
    for p in items:
        if not p["metadata"]["name"].startswith("steady-"):
            continue
        conds = {c["type"]: c for c in (p.get("status") or {}).get("conditions", [])}
        if conds.get("Ready", {}).get("status") == "True":
            ready += 1
        elif "Ready" in conds:
            problems[conds["Ready"]["message"][:160]] = problems.get(conds["Ready"]["message"][:160], 0) + 1
    return ready, problems


METRIC = re.compile(r'^apiserver_request_total\{(.*)\} ([0-9.e+]+)$')


def requests_by_verb(c):
    """apiserver_request_total summed by verb (every resource, code and scope)."""
    text = c.request("GET", "/metrics", timeout=30).read().decode()
    out = {}
    for line in text.splitlines():
        m = METRIC.match(line)
        if not m:
            continue
        verb = re.search(r'verb="([A-Z]+)"', m.group(1))
        key = verb.group(1) if verb else "?"
        out[key] = out.get(key, 0) + float(m.group(2))
    return out


def api_snapshot():
    return {name: requests_by_verb(cluster(name)) for name in CLUSTERS}


def aws_snapshot():
    out = {}
    for c in bench.bed("GET", "/calls")["calls"]:
        key = f'{c.get("service", "?")}:{c["operation"]}'
        out[key] = out.get(key, 0) + c["count"]
    return out


def delta(before, after):
    return {k: after.get(k, 0) - before.get(k, 0) for k in set(before) | set(after)
            if after.get(k, 0) - before.get(k, 0)}


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def rss_mb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def nodesim_pids():
    out = subprocess.run(["pgrep", "-f", "e2e/nodesim.py"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def paused_window(seconds, pid=None):
    """Request counts per minute over `seconds` with the pod emulator paused, and the
    operator's CPU and peak RSS when `pid` is given."""
    sims = nodesim_pids()
    for p in sims:
        os.kill(p, signal.SIGSTOP)
    try:
        api0, aws0 = api_snapshot(), aws_snapshot()
        cpu0 = cpu_seconds(pid) if pid else 0.0
        started = time.monotonic()
        peak = 0.0
        while time.monotonic() - started < seconds:
            if pid:
                peak = max(peak, rss_mb(pid))
            time.sleep(2)
        took = time.monotonic() - started
        api1, aws1 = api_snapshot(), aws_snapshot()
        cpu1 = cpu_seconds(pid) if pid else 0.0
    finally:
        for p in sims:
            os.kill(p, signal.SIGCONT)
    per_min = 60.0 / took
    return {
        "seconds": took,
        "api_per_min": {c: {v: n * per_min for v, n in delta(api0[c], api1[c]).items()} for c in CLUSTERS},
        "aws_per_min": {k: n * per_min for k, n in delta(aws0, aws1).items()},
        "cpu_s_per_min": (cpu1 - cpu0) * per_min,
        "rss_peak_mb": peak,
        "rss_end_mb": rss_mb(pid) if pid else 0.0,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plans", type=int, default=200)
    parser.add_argument("--workloads", type=int, default=50)
    parser.add_argument("--window", type=float, default=180.0)
    parser.add_argument("--resync", type=int, default=60)
    parser.add_argument("--binary", default=str(ROOT / "target" / "release" / "drover"))
    args = parser.parse_args()

    bench.kubectl("apply", "--validate=false", "-f", str(ROOT / "crds" / "drover.io.yaml"))
    t = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(len(MEMBERS) + 1) as pool:
        jobs = [pool.submit(seed_cluster, r, args.plans, args.workloads) for r in MEMBERS]
        jobs.append(pool.submit(seed_databases, args.plans))
        for j in jobs:
            j.result()
    print(f"seeded {args.plans} plans x {args.workloads} Deployments x {len(MEMBERS)} clusters "
          f"and {args.plans} RDS databases with {2 * args.plans} replicas in {time.monotonic() - t:.0f} s",
          flush=True)
    mgmt = cluster("mgmt")
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: create(mgmt, "/apis/drover.io/v1alpha1/namespaces/drover-system/"
                                       "disasterrecoveryplans", plan(i, args.workloads)), range(args.plans)))

    baseline = paused_window(30)
    print(f"baseline (no operator, pod emulator paused, 30 s): API requests per minute "
          f"{ {c: round(sum(v.values())) for c, v in baseline['api_per_min'].items()} }", flush=True)

    port = bench.free_port()
    log = open(ROOT / "target" / "bench-steady-operator.log", "w")
    env = dict(os.environ)
    for line in (STATE / "env.sh").read_text().splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value
    env["DROVER_PLAN_RESYNC_SECONDS"] = str(args.resync)
    env.setdefault("RUST_LOG", "drover=warn")
    operator = subprocess.Popen([args.binary, "run", "--http-addr", f"127.0.0.1:{port}",
                                 "--lease-namespace", "drover-system", "--watch-namespace", "drover-system",
                                 "--identity", "bench-steady"], stdout=log, stderr=log, env=env)
    try:
        bench.wait("operator ready", lambda: bench._ready(port), timeout=60)
        started = time.monotonic()
        last = (0, {})

        def all_ready():
            nonlocal last
            last = ready_count(mgmt)
            return last[0] >= args.plans

        try:
            bench.wait(f"{args.plans} plans Ready", all_ready, timeout=900, poll=5)
        except Exception:
            print(f"only {last[0]} of {args.plans} Ready; not ready because: {json.dumps(last[1], indent=1)}")
            raise
        print(f"all {args.plans} plans Ready {time.monotonic() - started:.0f} s after the operator was",
              flush=True)
        time.sleep(args.resync)  # one full resync of every plan before measuring
        w = paused_window(args.window, operator.pid)
        ready_after, _ = ready_count(mgmt)
    finally:
        operator.send_signal(signal.SIGTERM)
        try:
            operator.wait(timeout=30)
        except subprocess.TimeoutExpired:
            operator.kill()
            operator.wait()
    api = {}
    for c in CLUSTERS:
        verbs = delta(baseline["api_per_min"][c], w["api_per_min"][c])
        api[c] = {v: round(n) for v, n in sorted(verbs.items()) if round(n)}
    report = {
        "plans": args.plans, "workloads": args.workloads, "resync_s": args.resync,
        "window_s": round(w["seconds"]), "binary": args.binary,
        "plans_ready_after_window": ready_after,
        "rss_peak_mb": round(w["rss_peak_mb"], 1), "rss_end_mb": round(w["rss_end_mb"], 1),
        "cpu_s_per_min": round(w["cpu_s_per_min"], 2),
        "api_requests_per_min_net_of_baseline": api,
        "api_requests_per_min_total": {c: sum(v.values()) for c, v in api.items()},
        "aws_calls_per_min": round(sum(w["aws_per_min"].values())),
        "aws_calls_per_min_by_operation": {k: round(v, 1) for k, v in sorted(w["aws_per_min"].items())},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
