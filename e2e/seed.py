#!/usr/bin/env python3
"""Seeds the sandbox for one failover scenario and prints its DisasterRecoveryPlan as JSON.

    seed.py NAME [--plan-namespace NS] [--missing-image WORKLOAD] [--lag SECONDS]
            [--fence-timeout DURATION] [--failing-health-check REGION]

Creates, all named after NAME:
  * in each member cluster, namespace NAME with 6 Deployments (one singleton, two writers),
    at active counts in use1 and standby counts in usw2, with a 1 s readiness delay;
  * in AWS: 2 RDS primaries in us-east-1 with cross-region replicas in us-west-2, an Aurora
    global database with a writer in us-east-1 and a secondary in us-west-2, replica lag
    metrics, a hosted zone with 4 records (2 failover, 1 weighted, 1 simple) pointing at use1,
    a health check per region on the api record (--failing-health-check makes one fail),
    and every image in ECR in both regions (except --missing-image in us-west-2).

    seed.py --rebuild-replica NAME REGION   recreate NAME's RDS instances in REGION as
                                            replicas of the other region (before failback)
"""

import argparse
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import boto3

ROOT = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("DROVER_SANDBOX_DIR", ROOT / "target" / "sandbox"))
ENDPOINT = f"http://127.0.0.1:{os.environ.get('DROVER_AWS_PORT', '15000')}"
ACCOUNT = "123456789012"
REGIONS = {"use1": "us-east-1", "usw2": "us-west-2"}
WORKLOADS = [
    # name, active, standby, singleton, writer
    ("web", 4, 1, False, False),
    ("api", 3, 1, False, False),
    ("orders-writer", 2, 0, False, True),
    ("payments-writer", 1, 0, False, True),
    ("worker", 2, 1, False, False),
    ("cron", 1, 0, True, False),
]
RDS_DBS = ["orders", "payments"]


def aws(service, region):
    return boto3.client(service, region_name=region, endpoint_url=ENDPOINT,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def bed(path, body):
    req = urllib.request.Request(f"{ENDPOINT}/_bed{path}", method="POST", data=json.dumps(body).encode())
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.load(r)


def kubectl(cluster, *args, stdin=None):
    subprocess.run(["kubectl", "--kubeconfig", str(STATE / cluster / "admin.kubeconfig"), *args],
                   input=stdin, text=True, check=True, capture_output=True)


def image(name, workload):
    return f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/{name}/{workload}:1.0.0"


def seed_workloads(name):
    for region in REGIONS:
        objects = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}]
        for w, active, standby, singleton, _writer in WORKLOADS:
            replicas = active if region == "use1" else (0 if singleton else standby)
            objects.append({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": w, "namespace": name,
                             "annotations": {"bed.drover.io/ready-delay-ms": "1000"}},
                "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": w}},
                         "template": {"metadata": {"labels": {"app": w}},
                                      "spec": {"containers": [{"name": w, "image": image(name, w)}]}}},
            })
        kubectl(region, "apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))


def seed_aws(name, missing_image, lag):
    east, west = aws("rds", "us-east-1"), aws("rds", "us-west-2")
    for db in RDS_DBS:
        primary = east.create_db_instance(
            DBInstanceIdentifier=f"{name}-{db}-use1", DBInstanceClass="db.t3.micro",
            Engine="postgres", MasterUsername="admin", MasterUserPassword="password123",
            AllocatedStorage=20)["DBInstance"]
        west.create_db_instance_read_replica(
            DBInstanceIdentifier=f"{name}-{db}-usw2", SourceDBInstanceIdentifier=primary["DBInstanceArn"])
        bed("/lag", {"region": "us-west-2", "identifier": f"{name}-{db}-usw2", "seconds": lag})
    gc = f"{name}-catalog"
    east.create_global_cluster(GlobalClusterIdentifier=gc, Engine="aurora-postgresql", EngineVersion="15.4")
    east.create_db_cluster(DBClusterIdentifier=f"{name}-catalog-use1", Engine="aurora-postgresql",
                           EngineVersion="15.4", GlobalClusterIdentifier=gc,
                           MasterUsername="admin", MasterUserPassword="password123")
    west.create_db_cluster(DBClusterIdentifier=f"{name}-catalog-usw2", Engine="aurora-postgresql",
                           EngineVersion="15.4", GlobalClusterIdentifier=gc)
    bed("/lag", {"region": "us-west-2", "identifier": f"{name}-catalog-usw2", "seconds": lag, "kind": "aurora"})

    for region in REGIONS.values():
        ecr = aws("ecr", region)
        for w, *_ in WORKLOADS:
            repo = f"{name}/{w}"
            ecr.create_repository(repositoryName=repo)
            if region == "us-west-2" and missing_image == w:
                continue
            ecr.put_image(repositoryName=repo, imageTag="1.0.0", imageManifest=json.dumps({
                "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 2,
                           "digest": "sha256:" + "c" * 64},
                "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                            "size": 3, "digest": "sha256:" + (w.encode().hex() * 64)[:64]}]}))

    r53 = aws("route53", "us-east-1")
    domain = f"{name}.example."
    zone = r53.create_hosted_zone(Name=domain, CallerReference=name)["HostedZone"]["Id"].split("/")[-1]
    return zone, domain


def records(domain):
    def targets(value_for):
        return [{"region": r, "values": [value_for(r)]} for r in REGIONS]
    ips = {"use1": "10.1.0.", "usw2": "10.2.0."}
    return [
        {"name": f"api.{domain}", "type": "A", "routing": "Failover", "ttl": 60,
         "targets": targets(lambda r: ips[r] + "10")},
        {"name": f"admin.{domain}", "type": "A", "routing": "Failover", "ttl": 60,
         "targets": targets(lambda r: ips[r] + "11")},
        {"name": f"www.{domain}", "type": "A", "routing": "Weighted", "ttl": 60,
         "targets": targets(lambda r: ips[r] + "12")},
        {"name": f"static.{domain}", "type": "CNAME", "routing": "Simple", "ttl": 60,
         "targets": targets(lambda r: f"static-{r}.cdn.example.")},
    ]


def add_health_checks(name, recs, failing_region):
    """A Route 53 health check per region on the api record, as failover records have;
    the one in `failing_region` reports unhealthy."""
    r53 = aws("route53", "us-east-1")
    for t in recs[0]["targets"]:
        hc = r53.create_health_check(CallerReference=f"{name}-{t['region']}", HealthCheckConfig={
            "IPAddress": t["values"][0], "Port": 443, "Type": "HTTPS", "ResourcePath": "/healthz",
        })["HealthCheck"]["Id"]
        t["healthCheckId"] = hc
        if t["region"] == failing_region:
            bed("/health-checks", {"id": hc, "healthy": False})


def point_records(zone, recs, active_region):
    """Points the zone's records at one region in a single UPSERT batch."""
    changes = []
    for rec in recs:
        for t in rec["targets"]:
            active = t["region"] == active_region
            rrs = {"Name": rec["name"], "Type": rec["type"], "TTL": rec["ttl"],
                   "ResourceRecords": [{"Value": v} for v in t["values"]]}
            if "healthCheckId" in t:
                rrs["HealthCheckId"] = t["healthCheckId"]
            if rec["routing"] == "Failover":
                rrs.update(SetIdentifier=t["region"], Failover="PRIMARY" if active else "SECONDARY")
            elif rec["routing"] == "Weighted":
                rrs.update(SetIdentifier=t["region"], Weight=100 if active else 0)
            elif not active:
                continue
            changes.append({"Action": "UPSERT", "ResourceRecordSet": rrs})
    r53 = aws("route53", "us-east-1")
    return r53.change_resource_record_sets(HostedZoneId=zone, ChangeBatch={"Changes": changes})["ChangeInfo"]["Id"]


def plan(name, namespace, zone, recs, fence_timeout):
    return {
        "apiVersion": "drover.io/v1alpha1", "kind": "DisasterRecoveryPlan",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "regions": [
                {"name": r, "awsRegion": aws_region, "initialRole": "Active" if r == "use1" else "Standby",
                 "cluster": {"kubeconfigSecretRef": {"name": f"{r}-kubeconfig", "namespace": "drover-system"}}}
                for r, aws_region in REGIONS.items()],
            "databases": [
                {"name": db, "rds": {"instances": [
                    {"region": r, "identifier": f"{name}-{db}-{r}"} for r in REGIONS]}}
                for db in RDS_DBS] + [
                {"name": "catalog", "auroraGlobal": {
                    "globalClusterIdentifier": f"{name}-catalog",
                    "members": [{"region": r, "identifier": f"{name}-catalog-{r}"} for r in REGIONS]}}],
            "dns": [{"hostedZoneId": zone, "records": recs}],
            "workloads": [
                {"kind": "Deployment", "namespace": name, "name": w, "activeReplicas": active,
                 "standbyReplicas": standby, "singleton": singleton, "writer": writer}
                for w, active, standby, singleton, writer in WORKLOADS],
            "objectives": {"rto": "5m", "rpo": "30s"},
            "timeouts": {"fence": fence_timeout, "promotion": "60s", "warmUp": "60s", "dns": "60s"},
        },
    }


def rebuild_replica(name, region):
    """Deletes NAME's RDS instances in REGION and recreates them as replicas of the other region."""
    other = next(r for r in REGIONS if r != region)
    here, there = aws("rds", REGIONS[region]), aws("rds", REGIONS[other])
    for db in RDS_DBS:
        here.delete_db_instance(DBInstanceIdentifier=f"{name}-{db}-{region}", SkipFinalSnapshot=True)
        source = there.describe_db_instances(DBInstanceIdentifier=f"{name}-{db}-{other}")["DBInstances"][0]
        here.create_db_instance_read_replica(DBInstanceIdentifier=f"{name}-{db}-{region}",
                                             SourceDBInstanceIdentifier=source["DBInstanceArn"])
        bed("/lag", {"region": REGIONS[region], "identifier": f"{name}-{db}-{region}", "seconds": 0})
    bed("/lag", {"region": REGIONS[region], "identifier": f"{name}-catalog-{region}", "seconds": 0, "kind": "aurora"})


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name")
    parser.add_argument("region", nargs="?")
    parser.add_argument("--plan-namespace", default="drover-system")
    parser.add_argument("--missing-image")
    parser.add_argument("--lag", type=float, default=0.0)
    parser.add_argument("--fence-timeout", default="20s")
    parser.add_argument("--rebuild-replica", action="store_true")
    parser.add_argument("--failing-health-check", metavar="REGION")
    args = parser.parse_args()
    if args.rebuild_replica:
        rebuild_replica(args.name, args.region)
        return
    seed_workloads(args.name)
    zone, domain = seed_aws(args.name, args.missing_image, args.lag)
    recs = records(domain)
    add_health_checks(args.name, recs, args.failing_health_check)
    point_records(zone, recs, "use1")  # as it stands before any failover
    json.dump(plan(args.name, args.plan_namespace, zone, recs, args.fence_timeout), sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
