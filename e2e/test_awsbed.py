"""Tests of the AWS emulator extension (e2e/awsbed) against the running sandbox, with boto3.

The Rust SDK's view (promotion, throttling retries) is tested in e2e/tests/main.rs; these
cover the rest of the extension. Retries are off so each injected fault is seen as is.
"""

import json
import os
import time
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone

import boto3
import botocore.config
import botocore.exceptions
import pytest

from bedclient import ENDPOINT, aws, bed, create_global_cluster, uid, wait_for  # noqa: F401


def calls(service, region, operation):
    return sum(c["count"] for c in bed("GET", "/calls")["calls"]
               if (c["service"], c["region"], c["operation"]) == (service, region, operation))


@pytest.fixture(autouse=True)
def clear_faults():
    bed("DELETE", "/faults")
    yield
    bed("DELETE", "/faults")


def global_cluster(suffix):
    """A global cluster with a writer member in us-east-1 and a reader in us-west-2."""
    gc_id, _, _ = create_global_cluster(suffix)
    east = aws("rds", "us-east-1")
    members = east.describe_global_clusters(GlobalClusterIdentifier=gc_id)["GlobalClusters"][0]["GlobalClusterMembers"]
    arns = {("east" if "east-" in m["DBClusterArn"] else "west"): m["DBClusterArn"] for m in members}
    assert [m["IsWriter"] for m in members if m["DBClusterArn"] == arns["east"]] == [True]
    return east, gc_id, arns


def writer_of(client, gc_id):
    gc = client.describe_global_clusters(GlobalClusterIdentifier=gc_id)["GlobalClusters"][0]
    writers = [m["DBClusterArn"] for m in gc["GlobalClusterMembers"] if m["IsWriter"]]
    return gc["Status"], writers


@pytest.mark.parametrize("operation,kwargs,status", [
    ("switchover_global_cluster", {}, "switching-over"),
    ("failover_global_cluster", {"AllowDataLoss": True}, "failing-over"),
])
def test_aurora_global_writer_moves_after_delay(operation, kwargs, status):
    bed("POST", "/config", {"switchover_delay": 1.0})
    east, gc_id, arns = global_cluster(uid())
    started = time.monotonic()
    answer = getattr(east, operation)(GlobalClusterIdentifier=gc_id,
                                      TargetDbClusterIdentifier=arns["west"], **kwargs)
    assert answer["GlobalCluster"]["Status"] == status
    assert writer_of(east, gc_id) == (status, [arns["east"]])
    # A second request while one runs is refused.
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        getattr(east, operation)(GlobalClusterIdentifier=gc_id,
                                 TargetDbClusterIdentifier=arns["west"], **kwargs)
    assert refused.value.response["Error"]["Code"] == "InvalidGlobalClusterStateFault"
    wait_for("writer change", lambda: writer_of(east, gc_id) == ("available", [arns["west"]]))
    assert time.monotonic() - started >= 0.9


def members_of(client, gc_id):
    gc = client.describe_global_clusters(GlobalClusterIdentifier=gc_id)["GlobalClusters"][0]
    return sorted((m["DBClusterArn"], m["IsWriter"]) for m in gc["GlobalClusterMembers"])


def failover_snapshots(client, cluster):
    snaps = client.describe_db_cluster_snapshots(DBClusterIdentifier=cluster,
                                                 SnapshotType="automated")["DBClusterSnapshots"]
    return [s["DBClusterSnapshotIdentifier"] for s in snaps
            if s["DBClusterSnapshotIdentifier"].startswith("rds:unplanned-global-failover-")]


def test_failover_global_cluster_refuses_data_loss_with_switchover():
    east, gc_id, arns = global_cluster(uid())
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        east.failover_global_cluster(GlobalClusterIdentifier=gc_id, TargetDbClusterIdentifier=arns["west"],
                                     AllowDataLoss=True, Switchover=True)
    assert refused.value.response["Error"]["Code"] == "InvalidParameterCombination"


def test_switchover_keeps_the_old_writer_as_a_secondary():
    bed("POST", "/config", {"switchover_delay": 0.2})
    east, gc_id, arns = global_cluster(uid())
    east.switchover_global_cluster(GlobalClusterIdentifier=gc_id, TargetDbClusterIdentifier=arns["west"])
    wait_for("writer change", lambda: writer_of(east, gc_id) == ("available", [arns["west"]]))
    assert members_of(east, gc_id) == sorted([(arns["east"], False), (arns["west"], True)])
    assert failover_snapshots(east, arns["east"].split(":")[-1]) == []


def test_unplanned_failover_readds_the_old_writer_after_its_region_returns():
    """As AWS: the old primary leaves the global cluster; when its region recovers, AWS
    snapshots the old volume (a system snapshot) and re-adds the cluster as a secondary."""
    bed("POST", "/config", {"switchover_delay": 0.2, "rejoin_delay": 1.0})
    east, gc_id, arns = global_cluster(uid())
    west = aws("rds", "us-west-2")
    east_id = arns["east"].split(":")[-1]
    bed("POST", "/outage", {"region": "us-east-1", "down": True})
    try:
        west.failover_global_cluster(GlobalClusterIdentifier=gc_id, TargetDbClusterIdentifier=arns["west"],
                                     AllowDataLoss=True)
        wait_for("writer change", lambda: writer_of(west, gc_id) == ("available", [arns["west"]]))
        assert members_of(west, gc_id) == [(arns["west"], True)]
    finally:
        bed("POST", "/outage", {"region": "us-east-1", "down": False})
    wait_for("the old volume's snapshot", lambda: failover_snapshots(east, east_id))
    [name] = failover_snapshots(east, east_id)
    assert name.startswith(f"rds:unplanned-global-failover-{east_id}-"), name
    wait_for("the old writer re-added", lambda: len(members_of(west, gc_id)) == 2)
    assert members_of(west, gc_id) == sorted([(arns["east"], False), (arns["west"], True)])


def test_aurora_switchover_to_current_writer_is_refused():
    east, gc_id, arns = global_cluster(uid())
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        east.switchover_global_cluster(GlobalClusterIdentifier=gc_id,
                                       TargetDbClusterIdentifier=arns["east"])
    assert "already the writer" in refused.value.response["Error"]["Message"]


def test_health_checks_can_fail():
    r53 = aws("route53")
    hc = r53.create_health_check(CallerReference=uid(), HealthCheckConfig={
        "IPAddress": "10.1.0.10", "Port": 443, "Type": "HTTPS", "ResourcePath": "/healthz"})
    hc_id = hc["HealthCheck"]["Id"]

    def statuses():
        obs = r53.get_health_check_status(HealthCheckId=hc_id)["HealthCheckObservations"]
        return {o["StatusReport"]["Status"].split(":")[0] for o in obs}

    assert statuses() == {"Success"}
    bed("POST", "/health-checks", {"id": hc_id, "healthy": False})
    assert statuses() == {"Failure"}
    bed("POST", "/health-checks", {"id": hc_id, "healthy": True})
    assert statuses() == {"Success"}


@pytest.fixture
def no_route53_rate_limit():
    """Polling every 100 ms is above Route 53's 5 requests/s (tested in test_awsbed_route53.py)."""
    bed("POST", "/config", {"route53_rate": 0})
    yield
    bed("POST", "/config", {"route53_rate": 5})


def test_dns_change_is_pending_then_insync(no_route53_rate_limit):
    bed("POST", "/config", {"dns_sync_delay": 1.0})
    r53 = aws("route53")
    zone = r53.create_hosted_zone(Name=f"{uid()}.example.", CallerReference=uid())["HostedZone"]["Id"]
    change = r53.change_resource_record_sets(HostedZoneId=zone, ChangeBatch={"Changes": [{
        "Action": "UPSERT", "ResourceRecordSet": {
            "Name": "api." + r53.get_hosted_zone(Id=zone)["HostedZone"]["Name"], "Type": "A",
            "TTL": 60, "ResourceRecords": [{"Value": "10.2.0.10"}]}}]})["ChangeInfo"]
    assert change["Status"] == "PENDING"
    assert r53.get_change(Id=change["Id"])["ChangeInfo"]["Status"] == "PENDING"
    wait_for("INSYNC", lambda: r53.get_change(Id=change["Id"])["ChangeInfo"]["Status"] == "INSYNC")
    # Each batch gets its own change id.
    other = r53.change_resource_record_sets(HostedZoneId=zone, ChangeBatch={"Changes": [{
        "Action": "UPSERT", "ResourceRecordSet": {
            "Name": "www." + r53.get_hosted_zone(Id=zone)["HostedZone"]["Name"], "Type": "A",
            "TTL": 60, "ResourceRecords": [{"Value": "10.2.0.11"}]}}]})["ChangeInfo"]
    assert other["Id"] != change["Id"]
    assert calls("route53", "us-east-1", "ChangeResourceRecordSets") >= 2


@pytest.mark.parametrize("kind,metric,dimension,expected", [
    ("rds", "ReplicaLag", "DBInstanceIdentifier", 42.0),
    ("aurora", "AuroraGlobalDBReplicationLag", "DBClusterIdentifier", 42000.0),
])
def test_replica_lag_is_published_to_cloudwatch(kind, metric, dimension, expected):
    ident = f"lag-{uid()}"
    bed("POST", "/lag", {"region": "us-west-2", "identifier": ident, "seconds": 42, "kind": kind})
    cw = aws("cloudwatch", "us-west-2")
    now = datetime.now(timezone.utc)
    result = cw.get_metric_data(
        MetricDataQueries=[{"Id": "lag", "MetricStat": {
            "Metric": {"Namespace": "AWS/RDS", "MetricName": metric,
                       "Dimensions": [{"Name": dimension, "Value": ident}]},
            "Period": 60, "Stat": "Maximum"}}],
        StartTime=now - timedelta(minutes=5), EndTime=now + timedelta(minutes=1))
    assert result["MetricDataResults"][0]["Values"] == [expected]


def test_injected_5xx_and_latency():
    ecr = aws("ecr", "us-west-2")
    bed("POST", "/faults", {"kind": "error5xx", "service": "ecr", "region": "us-west-2", "count": 1})
    with pytest.raises(botocore.exceptions.ClientError) as failed:
        ecr.describe_repositories()
    assert failed.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    ecr.describe_repositories()  # the fault was for one call only

    bed("POST", "/faults", {"kind": "latency", "service": "ecr", "region": "us-west-2",
                            "latency_ms": 700, "count": 1})
    started = time.monotonic()
    ecr.describe_repositories()
    assert time.monotonic() - started >= 0.7


def test_throttle_rate_applies_to_a_share_of_calls():
    rds = aws("rds", "eu-west-1")
    bed("POST", "/faults", {"kind": "throttle", "service": "rds", "region": "eu-west-1", "rate": 0.3})
    throttled = 0
    for _ in range(100):
        try:
            rds.describe_db_instances()
        except botocore.exceptions.ClientError as e:
            assert e.response["Error"]["Code"] == "Throttling"
            throttled += 1
    assert 15 <= throttled <= 45, throttled


def test_rds_account_limit_is_a_token_bucket_per_region():
    # AWS's default is 12/s with bursts of 300; a small bucket shows it within a test.
    assert bed("POST", "/config", {"rds_rate": 0.2, "rds_burst": 3})["rds_rate"] == 0.2
    try:
        east = aws("rds", "ca-central-1")
        outcomes = []
        for _ in range(5):
            try:
                east.describe_db_instances()
                outcomes.append("ok")
            except botocore.exceptions.ClientError as e:
                assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 400
                assert e.response["Error"]["Code"] == "Throttling"
                outcomes.append("throttled")
        assert outcomes == ["ok"] * 3 + ["throttled"] * 2
        view = bed("GET", "/throttled")
        assert {"service": "rds", "region": "ca-central-1", "operation": "DescribeDBInstances",
                "count": 2} in view["throttled"]
        # Another region has a bucket of its own.
        aws("rds", "sa-east-1").describe_db_instances()
    finally:
        bed("POST", "/config", {"rds_rate": 12, "rds_burst": 300})
    assert (view["rds_rate"], view["rds_burst"]) == (0.2, 3)


def test_bad_rds_rate_is_a_control_error():
    import urllib.error
    with pytest.raises(urllib.error.HTTPError) as e:
        bed("POST", "/config", {"rds_rate": -1})
    assert e.value.code == 400


def test_region_outage_drops_regional_services_only():
    bed("POST", "/outage", {"region": "ap-south-1", "down": True})
    with pytest.raises((botocore.exceptions.EndpointConnectionError,
                        botocore.exceptions.ConnectionClosedError,
                        botocore.exceptions.ReadTimeoutError)):
        aws("rds", "ap-south-1").describe_db_instances()
    aws("rds", "us-east-1").describe_db_instances()  # other regions are fine
    aws("route53", "ap-south-1").list_hosted_zones()  # a global service is fine
    bed("POST", "/outage", {"region": "ap-south-1", "down": False})
    aws("rds", "ap-south-1").describe_db_instances()


def test_ecr_images_per_region():
    west = aws("ecr", "us-west-2")
    repo = f"shop/web-{uid()}"
    west.create_repository(repositoryName=repo)
    west.put_image(repositoryName=repo, imageTag="1.4.2",
                   imageManifest=json.dumps({
                       "schemaVersion": 2,
                       "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                       "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                                  "size": 2, "digest": "sha256:" + "a" * 64},
                       "layers": []}))
    assert west.describe_images(repositoryName=repo, imageIds=[{"imageTag": "1.4.2"}])["imageDetails"]
    with pytest.raises(botocore.exceptions.ClientError) as missing:
        west.describe_images(repositoryName=repo, imageIds=[{"imageTag": "9.9.9"}])
    assert missing.value.response["Error"]["Code"] == "ImageNotFoundException"


def test_injected_rejection_is_a_permanent_client_error():
    r53 = aws("route53")
    bed("POST", "/faults", {"kind": "reject", "service": "route53", "operation": "ListHostedZones",
                            "code": "InvalidInput", "count": 1})
    with pytest.raises(botocore.exceptions.ClientError) as rejected:
        r53.list_hosted_zones()
    assert rejected.value.response["Error"]["Code"] == "InvalidInput"
    assert rejected.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    r53.list_hosted_zones()


def test_a_describe_by_filter_counts_for_each_instance_it_names():
    from awsbed import described_instances
    params = {"Action": "DescribeDBInstances",
              "Filters.Filter.1.Name": "db-instance-id",
              "Filters.Filter.1.Values.Value.1": "orders-usw2",
              "Filters.Filter.1.Values.Value.2": "payments-usw2",
              "Filters.Filter.2.Name": "engine",
              "Filters.Filter.2.Values.Value.1": "postgres"}
    assert sorted(described_instances(params)) == ["orders-usw2", "payments-usw2"]
    assert described_instances({"DBInstanceIdentifier": "orders-usw2"}) == ["orders-usw2"]
    assert described_instances({"Action": "DescribeDBInstances"}) == []


def test_rds_replica_creation_and_deletion_take_time_and_are_strict():
    bed("POST", "/config", {"replica_create_delay": 0.5, "delete_delay": 0.3})
    east, west = aws("rds", "us-east-1"), aws("rds", "us-west-2")
    name = f"rp-{uid()}"
    primary = east.create_db_instance(DBInstanceIdentifier=f"{name}-east", DBInstanceClass="db.t3.micro",
                                      Engine="postgres", AllocatedStorage=20, MasterUsername="u",
                                      MasterUserPassword="password1")["DBInstance"]
    created = west.create_db_instance_read_replica(DBInstanceIdentifier=f"{name}-west",
                                                   SourceDBInstanceIdentifier=primary["DBInstanceArn"])
    assert created["DBInstance"]["DBInstanceStatus"] == "creating"
    with pytest.raises(botocore.exceptions.ClientError, match="DBInstanceAlreadyExists"):
        west.create_db_instance_read_replica(DBInstanceIdentifier=f"{name}-west",
                                             SourceDBInstanceIdentifier=primary["DBInstanceArn"])
    wait_for("replica available", lambda: west.describe_db_instances(
        DBInstanceIdentifier=f"{name}-west")["DBInstances"][0]["DBInstanceStatus"] == "available")
    # Renaming onto an existing identifier is refused; to a free one it moves at once.
    with pytest.raises(botocore.exceptions.ClientError, match="DBInstanceAlreadyExists"):
        east.modify_db_instance(DBInstanceIdentifier=f"{name}-east", NewDBInstanceIdentifier=f"{name}-east",
                                ApplyImmediately=True)
    # A delete needs a final snapshot or an explicit skip, and then takes time.
    with pytest.raises(botocore.exceptions.ClientError, match="InvalidParameterCombination"):
        west.delete_db_instance(DBInstanceIdentifier=f"{name}-west")
    # A replica has no final snapshot (AWS refuses one); it is deleted with a skip.
    with pytest.raises(botocore.exceptions.ClientError, match="InvalidParameterCombination"):
        west.delete_db_instance(DBInstanceIdentifier=f"{name}-west",
                                FinalDBSnapshotIdentifier=f"{name}-west-final")
    answer = west.delete_db_instance(DBInstanceIdentifier=f"{name}-west", SkipFinalSnapshot=True)
    assert answer["DBInstance"]["DBInstanceStatus"] == "deleting"
    with pytest.raises(botocore.exceptions.ClientError, match="InvalidDBInstanceState"):
        west.delete_db_instance(DBInstanceIdentifier=f"{name}-west", SkipFinalSnapshot=True)

    def gone(client, ident):
        try:
            client.describe_db_instances(DBInstanceIdentifier=ident)
            return False
        except botocore.exceptions.ClientError:
            return True
    wait_for("replica deleted", lambda: gone(west, f"{name}-west"))
    # A standalone instance keeps a final snapshot.
    east.delete_db_instance(DBInstanceIdentifier=f"{name}-east", FinalDBSnapshotIdentifier=f"{name}-east-final")
    wait_for("instance deleted", lambda: gone(east, f"{name}-east"))
    snaps = east.describe_db_snapshots(DBSnapshotIdentifier=f"{name}-east-final")["DBSnapshots"]
    assert [s["DBSnapshotIdentifier"] for s in snaps] == [f"{name}-east-final"]


def network(region, name, family="postgres16"):
    """A subnet group, parameter group (of `family`), security group and KMS key of `region`,
    named after `name`, in the region's default VPC."""
    ec2, rds = aws("ec2", region), aws("rds", region)
    vpc = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    subnets = [s["SubnetId"] for s in ec2.describe_subnets(
        Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]][:2]
    rds.create_db_subnet_group(DBSubnetGroupName=f"{name}-db", DBSubnetGroupDescription=name, SubnetIds=subnets)
    rds.create_db_parameter_group(DBParameterGroupName=f"{name}-pg", DBParameterGroupFamily=family,
                                  Description=name)
    sg = ec2.create_security_group(GroupName=f"{name}-db", Description=name, VpcId=vpc)["GroupId"]
    key = aws("kms", region).create_key()["KeyMetadata"]["Arn"]
    return {"subnet_group": f"{name}-db", "parameter_group": f"{name}-pg", "sg": sg, "key": key}


def test_a_cross_region_replica_is_refused_what_aws_refuses_and_placed_where_it_is_asked():
    bed("POST", "/config", {"replica_create_delay": 0.3})
    name = f"rs-{uid()}"
    east_net, west_net = network("us-east-1", f"{name}-e"), network("us-west-2", f"{name}-w")
    east, west = aws("rds", "us-east-1"), aws("rds", "us-west-2")
    primary = east.create_db_instance(
        DBInstanceIdentifier=f"{name}-east", DBInstanceClass="db.t3.micro", Engine="postgres",
        AllocatedStorage=20, MasterUsername="u", MasterUserPassword="password1",
        DBSubnetGroupName=east_net["subnet_group"], DBParameterGroupName=east_net["parameter_group"],
        VpcSecurityGroupIds=[east_net["sg"]], StorageEncrypted=True, KmsKeyId=east_net["key"])["DBInstance"]
    # No parameter group: AWS takes none for a cross-Region PostgreSQL replica.
    placed = {"DBSubnetGroupName": west_net["subnet_group"],
              "VpcSecurityGroupIds": [west_net["sg"]], "KmsKeyId": west_net["key"]}

    def create(**changes):
        kwargs = {**placed, **changes}
        return west.create_db_instance_read_replica(
            DBInstanceIdentifier=f"{name}-west", SourceDBInstanceIdentifier=primary["DBInstanceArn"],
            **{k: v for k, v in kwargs.items() if v is not None})

    def refused(code, text, **changes):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            create(**changes)
        assert e.value.response["Error"]["Code"] == code
        assert text in e.value.response["Error"]["Message"]

    # Groups of the source's region do not exist in the replica's.
    refused("DBSubnetGroupNotFoundFault", east_net["subnet_group"], DBSubnetGroupName=east_net["subnet_group"])
    # A cross-Region PostgreSQL replica takes no parameter group, even of its own region.
    refused("InvalidParameterCombination", "not supported for a cross-Region read replica of a postgres",
            DBParameterGroupName=west_net["parameter_group"])
    refused("InvalidParameterValue", east_net["sg"], VpcSecurityGroupIds=[east_net["sg"]])
    refused("KMSKeyNotAccessibleFault", east_net["key"], KmsKeyId=east_net["key"])
    # An encrypted source needs a key of the replica's region, as AWS says it.
    refused("InvalidParameterCombination",
            "Cannot create a cross region unencrypted read replica from encrypted source.", KmsKeyId=None)
    # A security group of another VPC than the subnet group's.
    ec2 = aws("ec2", "us-west-2")
    other_vpc = ec2.create_vpc(CidrBlock="10.77.0.0/16")["Vpc"]["VpcId"]
    stray = ec2.create_security_group(GroupName=f"{name}-stray", Description=name, VpcId=other_vpc)["GroupId"]
    refused("InvalidParameterCombination", "different VPCs", VpcSecurityGroupIds=[stray])
    assert [d for d in west.describe_db_instances()["DBInstances"]
            if d["DBInstanceIdentifier"] == f"{name}-west"] == []

    create()
    wait_for("replica available", lambda: west.describe_db_instances(
        DBInstanceIdentifier=f"{name}-west")["DBInstances"][0]["DBInstanceStatus"] == "available")
    d = west.describe_db_instances(DBInstanceIdentifier=f"{name}-west")["DBInstances"][0]
    assert d["DBSubnetGroup"]["DBSubnetGroupName"] == west_net["subnet_group"]
    assert d["DBSubnetGroup"]["DBSubnetGroupArn"].split(":")[3] == "us-west-2"
    assert [g["DBParameterGroupName"].startswith("default.postgres") for g in d["DBParameterGroups"]] == [True]
    assert [g["VpcSecurityGroupId"] for g in d["VpcSecurityGroups"]] == [west_net["sg"]]
    assert (d["StorageEncrypted"], d["KmsKeyId"]) == (True, west_net["key"])
    assert d["ReadReplicaSourceDBInstanceIdentifier"] == primary["DBInstanceArn"]


def test_a_cross_region_mysql_replica_takes_a_parameter_group_of_its_region():
    bed("POST", "/config", {"replica_create_delay": 0.3})
    name = f"rm-{uid()}"
    east_net = network("us-east-1", f"{name}-e", family="mysql8.0")
    west_net = network("us-west-2", f"{name}-w", family="mysql8.0")
    east, west = aws("rds", "us-east-1"), aws("rds", "us-west-2")
    primary = east.create_db_instance(
        DBInstanceIdentifier=f"{name}-east", DBInstanceClass="db.t3.micro", Engine="mysql",
        AllocatedStorage=20, MasterUsername="u", MasterUserPassword="password1",
        DBSubnetGroupName=east_net["subnet_group"], DBParameterGroupName=east_net["parameter_group"],
        VpcSecurityGroupIds=[east_net["sg"]])["DBInstance"]

    def create(group):
        return west.create_db_instance_read_replica(
            DBInstanceIdentifier=f"{name}-west", SourceDBInstanceIdentifier=primary["DBInstanceArn"],
            DBSubnetGroupName=west_net["subnet_group"], VpcSecurityGroupIds=[west_net["sg"]],
            DBParameterGroupName=group)

    with pytest.raises(botocore.exceptions.ClientError) as e:
        create(east_net["parameter_group"])
    assert e.value.response["Error"]["Code"] == "DBParameterGroupNotFound"
    create(west_net["parameter_group"])
    d = west.describe_db_instances(DBInstanceIdentifier=f"{name}-west")["DBInstances"][0]
    assert [g["DBParameterGroupName"] for g in d["DBParameterGroups"]] == [west_net["parameter_group"]]


def test_a_cross_region_replica_without_groups_gets_the_regions_defaults_not_the_sources():
    bed("POST", "/config", {"replica_create_delay": 0.3})
    name = f"rd-{uid()}"
    east_net = network("us-east-1", f"{name}-e")
    east, west = aws("rds", "us-east-1"), aws("rds", "us-west-2")
    primary = east.create_db_instance(
        DBInstanceIdentifier=f"{name}-east", DBInstanceClass="db.t3.micro", Engine="postgres",
        AllocatedStorage=20, MasterUsername="u", MasterUserPassword="password1",
        DBSubnetGroupName=east_net["subnet_group"], DBParameterGroupName=east_net["parameter_group"],
        VpcSecurityGroupIds=[east_net["sg"]])["DBInstance"]
    west.create_db_instance_read_replica(DBInstanceIdentifier=f"{name}-west",
                                         SourceDBInstanceIdentifier=primary["DBInstanceArn"])
    d = west.describe_db_instances(DBInstanceIdentifier=f"{name}-west")["DBInstances"][0]
    assert "DBSubnetGroup" not in d
    # The engine's default group (moto's postgres default is an old version).
    assert [g["DBParameterGroupName"].startswith("default.postgres") for g in d["DBParameterGroups"]] == [True]
    default_vpc = aws("ec2", "us-west-2").describe_vpcs(
        Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    default_sg = aws("ec2", "us-west-2").describe_security_groups(
        Filters=[{"Name": "vpc-id", "Values": [default_vpc]}, {"Name": "group-name", "Values": ["default"]}]
    )["SecurityGroups"][0]["GroupId"]
    assert [g["VpcSecurityGroupId"] for g in d["VpcSecurityGroups"]] == [default_sg]


def test_calls_report_the_peak_admitted_per_second_per_service():
    bed("POST", "/calls/reset", {})
    rds = aws("rds", "ap-south-1")
    for _ in range(4):
        rds.describe_db_instances()
    view = bed("GET", "/calls", {})
    # Four calls fall into one or two whole seconds of the bed's clock.
    assert 2 <= view["peak_per_second"]["rds"] <= 4, view["peak_per_second"]
    assert "route53" not in view["peak_per_second"]
    bed("POST", "/calls/reset", {})
    assert bed("GET", "/calls", {})["peak_per_second"] == {}
