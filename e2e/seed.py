#!/usr/bin/env python3
"""Seeds the sandbox for one failover scenario and prints its DisasterRecoveryPlan as JSON.

    seed.py NAME [--regions use1,usw2[,euw1]] [--plan-namespace NS] [--missing-image WORKLOAD]
            [--missing-secret WORKLOAD] [--unreplicated-secrets] [--capped-autoscalers]
            [--cron-jobs] [--config] [--lag SECONDS] [--fence-timeout DURATION] [--failing-health-check REGION]
            [--records N] [--postgres] [--probes]

The first of --regions (default use1,usw2) is the active one; the others are standbys.
Creates, all named after NAME:
  * in each listed member cluster, namespace NAME with 6 Deployments (one singleton, two
    writers), at active counts in the active region and standby counts elsewhere, with a
    1 s readiness delay and a 0.5 s termination grace (bed.drover.io/termination-grace-ms);
    each writer is annotated bed.drover.io/writes-to with the databases of its own region;
    each takes its environment from a Secret WORKLOAD-creds (envFrom) and mounts the
    ConfigMap app-config, both in every region (except --missing-secret's Secret in the
    standby regions); in every region an HPA on web (4..10), a KEDA ScaledObject on
    orders-writer (not paused) and the HPA KEDA would own for it (1..1);
  * in AWS: per region a DB subnet group NAME-db-REGION, parameter group NAME-pg-REGION,
    security group NAME-db-REGION and KMS key alias/NAME-REGION; 2 RDS primaries
    (encrypted) in the active region with cross-region replicas in each standby region,
    each placed with its own region's groups and key, an Aurora global database with the writer in the active region and a
    secondary in each standby region, replica lag metrics, a hosted zone with 4 records
    (2 failover, 1 weighted, 1 simple) pointing at the active region, a health check per
    region on the api record (--failing-health-check makes one fail), and every image in
    ECR in every listed region (except --missing-image in the standby regions);
  * in Secrets Manager: NAME/db-password in the active region, replicated to each standby
    region; with --unreplicated-secrets also NAME/api-token (no replica) and
    NAME/signing-key (replication Failed: a separate secret of that name already exists in
    the standby regions, as AWS refuses to overwrite); the plan lists them all;
  * --cron-jobs: in each member cluster CronJobs report (runningJobs: Wait) and sweeper
    (Stop), resumed in the active region and suspended elsewhere, both in the plan;
  * --config: spec.config with ConfigMap app-config key ACTIVE_REGION (per region; restarts
    web) and Secret db key ORDERS_HOST (the orders database's endpoint; restarts
    orders-writer; its key PASSWORD must never be printed), bound for Drover to write;
  * --records N: N more Simple A records r{i}.NAME.example. pointing at the active region,
    for large-zone tests, sent in batches of at most 500 changes;
  * --probes: each region's probes (user-visible recovery): the bed's app endpoint
    (awsbed/app.py), answering while that region's orders writer has ready pods and its
    database takes writes and the api record sends users there, and the region's Route 53
    health check on the api record.

    seed.py --rebuild-replica NAME REGION [--source REGION]
        recreate NAME's RDS instances in REGION as replicas of --source (the region active
        now; default the other of use1/usw2), as before a failback
"""

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import boto3
import botocore.config
import botocore.exceptions

ROOT = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("DROVER_SANDBOX_DIR", ROOT / "target" / "sandbox"))
ENDPOINT = f"http://127.0.0.1:{os.environ.get('DROVER_AWS_PORT', '15000')}"
ACCOUNT = "123456789012"
# Every region the sandbox has (cluster name -> AWS region); a plan uses some of them.
REGIONS = {"use1": "us-east-1", "usw2": "us-west-2", "euw1": "eu-west-1"}
DEFAULT_REGIONS = ["use1", "usw2"]
SUBNETS = {"use1": "10.1", "usw2": "10.2", "euw1": "10.3"}
WORKLOADS = [
    # name, active, standby, singleton, writer
    ("web", 4, 1, False, False),
    ("api", 3, 1, False, False),
    ("orders-writer", 2, 0, False, True),
    ("payments-writer", 1, 0, False, True),
    ("worker", 2, 1, False, False),
    ("cron", 1, 0, True, False),
]
# --cron-jobs: name, runningJobs (what suspending it does with its running Jobs)
CRON_JOBS = [("report", "Wait"), ("sweeper", "Stop")]
RDS_DBS = ["orders", "payments"]
# Writer workload -> the databases it writes to in its own region (RDS instances, then the
# Aurora cluster "catalog").
WRITES = {"orders-writer": ["orders", "catalog"], "payments-writer": ["payments"]}
READY_DELAY_MS = "1000"
TERMINATION_GRACE_MS = "500"
# Route 53 batching: UPSERT counts twice against the 1,000-record limit per request.
R53_BATCH = 500
R53_RETRYABLE = {"Throttling", "ThrottlingException", "PriorRequestNotComplete", "RequestLimitExceeded"}
R53_CONFIG = botocore.config.Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=30)


def aws(service, region, config=None):
    return boto3.client(service, region_name=region, endpoint_url=ENDPOINT,
                        aws_access_key_id="testing", aws_secret_access_key="testing", config=config)


def r53_call(fn, deadline=120.0, **kwargs):
    """Calls a Route 53 operation, retrying throttling (5 requests/s per account) and
    PriorRequestNotComplete (a change to the zone still pending) with backoff."""
    end = time.monotonic() + deadline
    pause = 0.2
    while True:
        try:
            return fn(**kwargs)
        except botocore.exceptions.ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            if code not in R53_RETRYABLE or time.monotonic() + pause > end:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 5.0)


def wait_insync(r53, change_id, deadline=120.0):
    """Polls GetChange until the change is INSYNC (AWS: within 60 s normally)."""
    end = time.monotonic() + deadline
    pause = 0.2
    while True:
        status = r53_call(r53.get_change, Id=change_id)["ChangeInfo"]["Status"]
        if status == "INSYNC":
            return
        if time.monotonic() + pause > end:
            raise SystemExit(f"Route 53 change {change_id} still {status} after {deadline:.0f}s")
        time.sleep(pause)
        pause = min(pause * 1.5, 2.0)


def change_records(zone, changes, wait=True):
    """Sends `changes` to the zone in batches of at most R53_BATCH, each INSYNC before the
    next. Returns the last change id."""
    r53 = aws("route53", "us-east-1", R53_CONFIG)
    change_id = None
    for i in range(0, len(changes), R53_BATCH):
        if change_id is not None:
            wait_insync(r53, change_id)
        change_id = r53_call(r53.change_resource_record_sets, HostedZoneId=zone,
                             ChangeBatch={"Changes": changes[i:i + R53_BATCH]})["ChangeInfo"]["Id"]
    if wait and change_id is not None:
        wait_insync(r53, change_id)
    return change_id


def bed(path, body):
    req = urllib.request.Request(f"{ENDPOINT}/_bed{path}", method="POST", data=json.dumps(body).encode())
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.load(r)


def kubectl(cluster, *args, stdin=None):
    subprocess.run(["kubectl", "--kubeconfig", str(STATE / cluster / "admin.kubeconfig"), *args],
                   input=stdin, text=True, check=True, capture_output=True)


def image(name, workload):
    return f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/{name}/{workload}:1.0.0"


def writes_to(name, region, workload):
    """The bed.drover.io/writes-to value of a writer in `region`: its own region's databases."""
    return ",".join(f"{REGIONS[region]}/{name}-{db}-{region}" for db in WRITES.get(workload, []))


def secret_value(workload):
    """A value that must never show in Drover's status, Events or logs."""
    return f"s3cr3t-{workload}-do-not-print"


def seed_workloads(name, regions, missing_secret=None, capped_autoscalers=False):
    for region in regions:
        objects = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
                   # Drover's preflight reads the referenced objects' metadata in this
                   # namespace only, as docs/operations.md says to bind it.
                   {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                    "metadata": {"name": "drover-member-preflight", "namespace": name},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                "name": "drover-member-preflight"},
                    "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                                  "name": "drover-member"}]},
                   {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app-config", "namespace": name},
                    "data": {"region": region}}]
        for w, active, standby, singleton, writer in WORKLOADS:
            if not (missing_secret == w and region != regions[0]):
                objects.append({"apiVersion": "v1", "kind": "Secret",
                                "metadata": {"name": f"{w}-creds", "namespace": name},
                                "stringData": {"PASSWORD": secret_value(w)}})
            replicas = active if region == regions[0] else (0 if singleton else standby)
            annotations = {"bed.drover.io/ready-delay-ms": READY_DELAY_MS,
                           "bed.drover.io/termination-grace-ms": TERMINATION_GRACE_MS}
            if writer:
                annotations["bed.drover.io/writes-to"] = writes_to(name, region, w)
            objects.append({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": w, "namespace": name, "annotations": annotations},
                "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": w}},
                         "template": {"metadata": {"labels": {"app": w}},
                                      "spec": {"containers": [{"name": w, "image": image(name, w),
                                                               "envFrom": [{"secretRef": {"name": f"{w}-creds"}}],
                                                               "volumeMounts": [{"name": "config",
                                                                                 "mountPath": "/etc/app"}]}],
                                               "volumes": [{"name": "config",
                                                            "configMap": {"name": "app-config"}}]}}},
            })
        # In every region: an HPA on web whose bounds hold its active count (preflight
        # passes), and a ScaledObject on orders-writer, not paused. Drover drives them when
        # it scales those workloads; the bed runs no autoscaler, so they hold what it sets.
        objects.append({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
                        "metadata": {"name": "web", "namespace": name},
                        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                                    "name": "web"},
                                 "minReplicas": 4, "maxReplicas": 10}})
        objects.append({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
                        "metadata": {"name": "orders-writer", "namespace": name},
                        "spec": {"scaleTargetRef": {"name": "orders-writer"},
                                 "triggers": [{"type": "cpu", "metadata": {"value": "50"}}]}})
        if capped_autoscalers and region != regions[0]:
            # In the standbys: an HPA capping api (active 3) at 2, a ScaledObject capping
            # worker (active 2) at 1.
            objects.append({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
                            "metadata": {"name": "api", "namespace": name},
                            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                                        "name": "api"},
                                     "minReplicas": 1, "maxReplicas": 2}})
            objects.append({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
                            "metadata": {"name": "worker", "namespace": name},
                            "spec": {"scaleTargetRef": {"name": "worker"}, "maxReplicaCount": 1,
                                     "triggers": [{"type": "cpu", "metadata": {"value": "50"}}]}})
        kubectl(region, "apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))
        keda_owned_hpa(name, region)


def keda_owned_hpa(name, region):
    """The HPA KEDA would make for orders-writer's ScaledObject, owned by it; its maximum
    is below the active count, so a reader that did not skip it would report (or drive) it."""
    uid = subprocess.run(["kubectl", "--kubeconfig", str(STATE / region / "admin.kubeconfig"),
                          "-n", name, "get", "scaledobject", "orders-writer", "-o",
                          "jsonpath={.metadata.uid}"],
                         text=True, check=True, capture_output=True).stdout
    hpa = {"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
           "metadata": {"name": "keda-hpa-orders-writer", "namespace": name,
                        "ownerReferences": [{"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
                                             "name": "orders-writer", "uid": uid, "controller": True}]},
           "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                       "name": "orders-writer"},
                    "minReplicas": 1, "maxReplicas": 1}}
    kubectl(region, "apply", "-f", "-", stdin=json.dumps(hpa))


def seed_cron_jobs(name, regions):
    """CronJobs resumed in the active region only. batch/v1beta1: the bed is Kubernetes 1.20."""
    for region in regions:
        objects = [{
            "apiVersion": "batch/v1beta1", "kind": "CronJob",
            "metadata": {"name": cj, "namespace": name},
            "spec": {"schedule": "*/5 * * * *", "suspend": region != regions[0],
                     "jobTemplate": {"spec": {"template": {
                         "metadata": {"labels": {"app": cj}},
                         "spec": {"restartPolicy": "Never",
                                  "containers": [{"name": cj, "image": image(name, "worker"),
                                                  "volumeMounts": [{"name": "config", "mountPath": "/etc/app"}]}],
                                  "volumes": [{"name": "config", "configMap": {"name": "app-config"}}]}}}}},
        } for cj, _ in CRON_JOBS]
        kubectl(region, "apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))


def seed_config(name, regions):
    """--config: what spec.config lists, bound for Drover to write (RoleBinding per namespace)."""
    for region in regions:
        objects = [
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
             "metadata": {"name": "drover-member-config", "namespace": name},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                         "name": "drover-member-config"},
             "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                           "name": "drover-member"}]},
            # The active region's values at first, as a real setup would hold them.
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": name},
             "stringData": {"PASSWORD": secret_value("db"), "ORDERS_HOST": "set-by-hand"}},
        ]
        kubectl(region, "apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))
        # app-config exists already (seed_workloads): its region key says where it is.
        kubectl(region, "patch", "configmap", "app-config", "-n", name, "--type", "merge",
                "-p", json.dumps({"data": {"ACTIVE_REGION": regions[0]}}))


def config_spec(name, regions):
    return [
        {"kind": "ConfigMap", "namespace": name, "name": "app-config", "restart": ["web"],
         "keys": [{"key": "ACTIVE_REGION", "values": {r: r for r in regions}}]},
        {"kind": "Secret", "namespace": name, "name": "db", "restart": ["orders-writer"],
         "keys": [{"key": "ORDERS_HOST", "databaseEndpoint": "orders"}]},
    ]


def seed_network(name, region):
    """NAME's database network in a region, as a real setup has one: a DB subnet group and a
    security group in the region's default VPC, a parameter group and a KMS key (alias
    alias/NAME-REGION), all named after the region, so a replica placed with another
    region's groups (or none) shows."""
    ec2, rds = aws("ec2", REGIONS[region]), aws("rds", REGIONS[region])
    vpc = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    subnets = [s["SubnetId"] for s in ec2.describe_subnets(
        Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]][:2]
    rds.create_db_subnet_group(DBSubnetGroupName=f"{name}-db-{region}", SubnetIds=subnets,
                               DBSubnetGroupDescription=f"{name} databases in {region}")
    rds.create_db_parameter_group(DBParameterGroupName=f"{name}-pg-{region}", DBParameterGroupFamily="postgres16",
                                  Description=f"{name} databases in {region}")
    ec2.create_security_group(GroupName=f"{name}-db-{region}", Description=f"{name} databases", VpcId=vpc)
    kms = aws("kms", REGIONS[region])
    key = kms.create_key(Description=f"{name} databases in {region}")["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName=f"alias/{name}-{region}", TargetKeyId=key)


def placement(name, region):
    """How NAME's instances in a region are placed (seed_network): CreateDBInstance and
    CreateDBInstanceReadReplica arguments."""
    ec2 = aws("ec2", REGIONS[region])
    sg = ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [f"{name}-db-{region}"]}])["SecurityGroups"][0]["GroupId"]
    key = aws("kms", REGIONS[region]).describe_key(KeyId=f"alias/{name}-{region}")["KeyMetadata"]["Arn"]
    return {"DBSubnetGroupName": f"{name}-db-{region}", "DBParameterGroupName": f"{name}-pg-{region}",
            "VpcSecurityGroupIds": [sg], "KmsKeyId": key}


def create_standby(name, db, region, source_arn):
    """NAME's DB in REGION as a cross-Region read replica of SOURCE_ARN, placed with the
    region's groups and key. AWS takes no parameter group for a cross-Region PostgreSQL
    replica (it gets the default one): the region's own group is set on it afterwards."""
    placed = placement(name, region)
    group = placed.pop("DBParameterGroupName")
    rds = aws("rds", REGIONS[region])
    rds.create_db_instance_read_replica(DBInstanceIdentifier=f"{name}-{db}-{region}",
                                        SourceDBInstanceIdentifier=source_arn, **placed)
    rds.modify_db_instance(DBInstanceIdentifier=f"{name}-{db}-{region}", DBParameterGroupName=group,
                           ApplyImmediately=True)


def secret_names(name, unreplicated):
    return [f"{name}/db-password"] + ([f"{name}/api-token", f"{name}/signing-key"] if unreplicated else [])


def seed_secrets(name, regions, unreplicated):
    active, standbys = regions[0], regions[1:]
    primary = aws("secretsmanager", REGIONS[active])
    replicas = [{"Region": REGIONS[r]} for r in standbys]
    primary.create_secret(Name=f"{name}/db-password", SecretString=secret_value("db"), AddReplicaRegions=replicas)
    if unreplicated:
        primary.create_secret(Name=f"{name}/api-token", SecretString=secret_value("api"))
        for r in standbys:
            aws("secretsmanager", REGIONS[r]).create_secret(Name=f"{name}/signing-key",
                                                           SecretString="an older, separate copy")
        primary.create_secret(Name=f"{name}/signing-key", SecretString=secret_value("signing"),
                              AddReplicaRegions=replicas)


def seed_aws(name, regions, missing_image, lag, shared_zone=None):
    active, standbys = regions[0], regions[1:]
    for r in regions:
        seed_network(name, r)
    primary_rds = aws("rds", REGIONS[active])
    for db in RDS_DBS:
        primary = primary_rds.create_db_instance(
            DBInstanceIdentifier=f"{name}-{db}-{active}", DBInstanceClass="db.t3.micro",
            Engine="postgres", MasterUsername="admin", MasterUserPassword="password123",
            AllocatedStorage=20, StorageEncrypted=True, **placement(name, active))["DBInstance"]
        for r in standbys:
            create_standby(name, db, r, primary["DBInstanceArn"])
            bed("/lag", {"region": REGIONS[r], "identifier": f"{name}-{db}-{r}", "seconds": lag})
    for db in RDS_DBS:
        for r in standbys:
            wait_instance(aws("rds", REGIONS[r]), f"{name}-{db}-{r}", "available")
    gc = f"{name}-catalog"
    primary_rds.create_global_cluster(GlobalClusterIdentifier=gc, Engine="aurora-postgresql",
                                      EngineVersion="15.4")
    primary_rds.create_db_cluster(DBClusterIdentifier=f"{name}-catalog-{active}", Engine="aurora-postgresql",
                                  EngineVersion="15.4", GlobalClusterIdentifier=gc,
                                  MasterUsername="admin", MasterUserPassword="password123")
    for r in standbys:
        aws("rds", REGIONS[r]).create_db_cluster(DBClusterIdentifier=f"{name}-catalog-{r}",
                                                 Engine="aurora-postgresql", EngineVersion="15.4",
                                                 GlobalClusterIdentifier=gc)
        bed("/lag", {"region": REGIONS[r], "identifier": f"{name}-catalog-{r}", "seconds": lag, "kind": "aurora"})

    for r in regions:
        ecr = aws("ecr", REGIONS[r])
        for w, *_ in WORKLOADS:
            repo = f"{name}/{w}"
            ecr.create_repository(repositoryName=repo)
            if r != active and missing_image == w:
                continue
            ecr.put_image(repositoryName=repo, imageTag="1.0.0", imageManifest=json.dumps({
                "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 2,
                           "digest": "sha256:" + "c" * 64},
                "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                            "size": 3, "digest": "sha256:" + (w.encode().hex() * 64)[:64]}]}))

    r53 = aws("route53", "us-east-1", R53_CONFIG)
    if shared_zone:
        # Plans of one company sharing a zone: NAME's records under NAME.SHARED.
        shared = shared_zone.rstrip(".") + "."
        found = r53_call(r53.list_hosted_zones_by_name, DNSName=shared, MaxItems="1")["HostedZones"]
        if found and found[0]["Name"] == shared:
            zone = found[0]["Id"].split("/")[-1]
        else:
            zone = r53_call(r53.create_hosted_zone, Name=shared,
                            CallerReference=shared)["HostedZone"]["Id"].split("/")[-1]
        return zone, f"{name}.{shared}"
    domain = f"{name}.example."
    zone = r53_call(r53.create_hosted_zone, Name=domain,
                    CallerReference=name)["HostedZone"]["Id"].split("/")[-1]
    return zone, domain


def records(domain, regions=DEFAULT_REGIONS, extra=0):
    def targets(value_for):
        return [{"region": r, "values": [value_for(r)]} for r in regions]
    ips = {r: f"{SUBNETS[r]}.0." for r in regions}
    return [
        {"name": f"api.{domain}", "type": "A", "routing": "Failover", "ttl": 60,
         "targets": targets(lambda r: ips[r] + "10")},
        {"name": f"admin.{domain}", "type": "A", "routing": "Failover", "ttl": 60,
         "targets": targets(lambda r: ips[r] + "11")},
        {"name": f"www.{domain}", "type": "A", "routing": "Weighted", "ttl": 60,
         "targets": targets(lambda r: ips[r] + "12")},
        {"name": f"static.{domain}", "type": "CNAME", "routing": "Simple", "ttl": 60,
         "targets": targets(lambda r: f"static-{r}.cdn.example.")},
    ] + [
        {"name": f"r{i}.{domain}", "type": "A", "routing": "Simple", "ttl": 60,
         "targets": targets(lambda r: f"{SUBNETS[r]}.{1 + i // 250}.{1 + i % 250}")}
        for i in range(extra)
    ]


def add_health_checks(name, recs, failing_region):
    """A Route 53 health check per region on the api record, as failover records have;
    the one in `failing_region` reports unhealthy. Each fails from every checker while its
    region is lost (a bed outage)."""
    r53 = aws("route53", "us-east-1", R53_CONFIG)
    for t in recs[0]["targets"]:
        hc = r53_call(r53.create_health_check, CallerReference=f"{name}-{t['region']}", HealthCheckConfig={
            "IPAddress": t["values"][0], "Port": 443, "Type": "HTTPS", "ResourcePath": "/healthz",
        })["HealthCheck"]["Id"]
        t["healthCheckId"] = hc
        bed("/health-checks", {"id": hc, "endpoint_region": REGIONS[t["region"]]})
        if t["region"] == failing_region:
            bed("/health-checks", {"id": hc, "healthy": False})


def point_records(zone, recs, active_region, wait=False):
    """Points the zone's records at one region with UPSERTs, in batches of at most R53_BATCH
    changes (each INSYNC before the next); returns the last change's id.

    Failover routing allows one PRIMARY and one SECONDARY per name: the active region's
    target is PRIMARY and the first other target SECONDARY; further regions get no failover
    record."""
    changes = []
    for rec in recs:
        secondary = next((t["region"] for t in rec["targets"] if t["region"] != active_region), None)
        for t in rec["targets"]:
            active = t["region"] == active_region
            rrs = {"Name": rec["name"], "Type": rec["type"], "TTL": rec["ttl"],
                   "ResourceRecords": [{"Value": v} for v in t["values"]]}
            if "healthCheckId" in t:
                rrs["HealthCheckId"] = t["healthCheckId"]
            if rec["routing"] == "Failover":
                if not active and t["region"] != secondary:
                    continue
                rrs.update(SetIdentifier=t["region"], Failover="PRIMARY" if active else "SECONDARY")
            elif rec["routing"] == "Weighted":
                rrs.update(SetIdentifier=t["region"], Weight=100 if active else 0)
            elif not active:
                continue
            changes.append({"Action": "UPSERT", "ResourceRecordSet": rrs})
    return change_records(zone, changes, wait=wait)


def probes(name, recs, region):
    """A region's probes: the bed's app endpoint for it, and its health check on the api record."""
    api = recs[0]
    target = next(t for t in api["targets"] if t["region"] == region)
    query = urllib.parse.urlencode({"region": REGIONS[region], "writes-to": f"{name}-orders-{region}",
                                    "name": api["name"], "answer": target["values"][0]})
    out = [{"url": f"{ENDPOINT}/_bed/app?{query}"}]
    if "healthCheckId" in target:
        out.append({"route53HealthCheckId": target["healthCheckId"]})
    return out


def plan(name, namespace, zone, recs, fence_timeout, regions=DEFAULT_REGIONS, secrets=(), cron_jobs=False,
         config=False, with_probes=False):
    return {
        "apiVersion": "drover.io/v1alpha1", "kind": "DisasterRecoveryPlan",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "regions": [
                {"name": r, "awsRegion": REGIONS[r], "initialRole": "Active" if r == regions[0] else "Standby",
                 "cluster": {"kubeconfigSecretRef": {"name": f"{r}-kubeconfig", "namespace": "drover-system"}},
                 **({"probes": probes(name, recs, r)} if with_probes else {})}
                for r in regions],
            "databases": [
                {"name": db, "rds": {"instances": [
                    {"region": r, "identifier": f"{name}-{db}-{r}"} for r in regions]}}
                for db in RDS_DBS] + [
                {"name": "catalog", "auroraGlobal": {
                    "globalClusterIdentifier": f"{name}-catalog",
                    "members": [{"region": r, "identifier": f"{name}-catalog-{r}"} for r in regions]}}],
            "dns": [{"hostedZoneId": zone, "records": recs}],
            "workloads": [
                {"kind": "Deployment", "namespace": name, "name": w, "activeReplicas": active,
                 "standbyReplicas": standby, "singleton": singleton, "writer": writer}
                for w, active, standby, singleton, writer in WORKLOADS] + [
                # No apiVersion: Drover finds batch/v1beta1 where batch/v1 has no CronJob.
                {"kind": "CronJob", "namespace": name, "name": cj, "activeReplicas": 1,
                 "runningJobs": running}
                for cj, running in (CRON_JOBS if cron_jobs else [])],
            "awsSecrets": [{"name": s} for s in secrets],
            "config": config_spec(name, regions) if config else [],
            "objectives": {"rto": "5m", "rpo": "30s"},
            "timeouts": {"fence": fence_timeout, "promotion": "60s", "warmUp": "60s", "dns": "60s"},
        },
    }


def wait_instance(client, ident, status, timeout=30.0):
    """Waits until instance `ident` shows `status` (None: until it no longer exists)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            now = client.describe_db_instances(DBInstanceIdentifier=ident)["DBInstances"][0]["DBInstanceStatus"]
        except botocore.exceptions.ClientError:
            now = None
        if now == status:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"{ident}: still {now} after {timeout}s, wanted {status}")
        time.sleep(0.1)


def rebuild_replica(name, region, source=None):
    """Deletes NAME's RDS instances in REGION and recreates them as replicas of SOURCE (the
    region active now; default the other of use1/usw2)."""
    other = source or {"use1": "usw2", "usw2": "use1"}.get(region)
    if other is None or other == region:
        raise SystemExit(f"--rebuild-replica {region}: name the active region with --source")
    here, there = aws("rds", REGIONS[region]), aws("rds", REGIONS[other])
    for db in RDS_DBS:
        here.delete_db_instance(DBInstanceIdentifier=f"{name}-{db}-{region}", SkipFinalSnapshot=True)
    # The bed, as AWS, takes a while to delete an instance and to create a replica.
    for db in RDS_DBS:
        wait_instance(here, f"{name}-{db}-{region}", None)
        source = there.describe_db_instances(DBInstanceIdentifier=f"{name}-{db}-{other}")["DBInstances"][0]
        create_standby(name, db, region, source["DBInstanceArn"])
        bed("/lag", {"region": REGIONS[region], "identifier": f"{name}-{db}-{region}", "seconds": 0})
    for db in RDS_DBS:
        wait_instance(here, f"{name}-{db}-{region}", "available")
    bed("/lag", {"region": REGIONS[region], "identifier": f"{name}-catalog-{region}", "seconds": 0, "kind": "aurora"})


def region_list(value):
    regions = [r.strip() for r in value.split(",") if r.strip()]
    unknown = [r for r in regions if r not in REGIONS]
    if unknown or len(regions) < 2 or len(set(regions)) != len(regions):
        raise argparse.ArgumentTypeError(
            f"want 2 or more distinct regions of {', '.join(REGIONS)}, got {value!r}")
    return regions


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name")
    parser.add_argument("region", nargs="?", choices=list(REGIONS))
    parser.add_argument("--regions", type=region_list, default=list(DEFAULT_REGIONS),
                        help="member regions, the active one first (default use1,usw2)")
    parser.add_argument("--plan-namespace", default="drover-system")
    parser.add_argument("--missing-image")
    parser.add_argument("--capped-autoscalers", action="store_true",
                        help="standby autoscalers whose maximum is below the active count")
    parser.add_argument("--unreplicated-secrets", action="store_true",
                        help="two more Secrets Manager secrets: one never replicated, one whose replication failed")
    parser.add_argument("--missing-secret", metavar="WORKLOAD",
                        help="leave WORKLOAD's Secret out of the standby regions")
    parser.add_argument("--cron-jobs", action="store_true",
                        help="also CronJobs report (runningJobs: Wait) and sweeper (Stop)")
    parser.add_argument("--config", action="store_true",
                        help="also spec.config: app-config ACTIVE_REGION, Secret db ORDERS_HOST")
    parser.add_argument("--lag", type=float, default=0.0)
    parser.add_argument("--probes", action="store_true",
                        help="give each region probes on the bed's app endpoint and health check")
    parser.add_argument("--postgres", action="store_true",
                        help="back the plan's RDS instances with real PostgreSQL (awsbed/postgres.py); "
                             "--lag is then the delay of each replica's link")
    parser.add_argument("--fence-timeout", default="20s")
    parser.add_argument("--rebuild-replica", action="store_true")
    parser.add_argument("--source", choices=list(REGIONS),
                        help="with --rebuild-replica: the region active now")
    parser.add_argument("--failing-health-check", metavar="REGION")
    parser.add_argument("--shared-zone", metavar="DOMAIN",
                        help="put the records in DOMAIN's zone (created once), under NAME.DOMAIN")
    parser.add_argument("--records", type=int, default=0, metavar="N",
                        help="N extra Simple A records r{i}.NAME.example. (large-zone tests)")
    args = parser.parse_args()
    if args.rebuild_replica:
        if args.region is None:
            parser.error("--rebuild-replica needs REGION")
        rebuild_replica(args.name, args.region, args.source)
        return
    regions = args.regions
    seed_workloads(args.name, regions, args.missing_secret, args.capped_autoscalers)
    if args.cron_jobs:
        seed_cron_jobs(args.name, regions)
    if args.config:
        seed_config(args.name, regions)
    # Every seed says whether the instances it (and re-protection later) creates are real.
    bed("/config", {"postgres": args.postgres})
    zone, domain = seed_aws(args.name, regions, args.missing_image, args.lag, args.shared_zone)
    seed_secrets(args.name, regions, args.unreplicated_secrets)
    recs = records(domain, regions, args.records)
    add_health_checks(args.name, recs, args.failing_health_check)
    point_records(zone, recs, regions[0], wait=args.records > 0)  # as it stands before any failover
    json.dump(plan(args.name, args.plan_namespace, zone, recs, args.fence_timeout, regions,
                   secret_names(args.name, args.unreplicated_secrets), args.cron_jobs, args.config,
                   args.probes),
              sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
