"""Tests of the emulator's replication-lag model (e2e/awsbed/replication.py), with boto3.

Lag evolves over bed time (wall seconds = bed seconds x time_factor) with the sources' writes and
is published to CloudWatch once per metric period. The tests shrink time_factor to stay fast and
synchronise only by polling for a state the clock defines, with a deadline.
"""

import json
import os
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone

import boto3
import botocore.config
import botocore.session
import pytest

import functools

import bedclient
from bedclient import ENDPOINT, NO_RETRY, aws, bed, uid  # noqa: F401

# The model publishes on a fast cadence here; poll finely so no state is missed.
wait_for = functools.partial(bedclient.wait_for, poll=0.02)
MODEL_KEYS = ("time_factor", "metric_period", "lag_drain_rate", "lag_growth_rate", "steady_lag",
              "promotion_delay", "switchover_delay")


_QUERY_MODEL_DIR = []


def cloudwatch_query(region):
    """A boto3 CloudWatch client forced onto the awsQuery protocol, as the Rust SDK 1.99 speaks
    (boto3 itself picks AWS JSON 1.0)."""
    session = botocore.session.Session()
    loader = session.get_component("data_loader")
    if not _QUERY_MODEL_DIR:
        model = loader.load_service_model("cloudwatch", "service-2")
        model["metadata"].update(protocol="query", protocols=["query"])
        root = tempfile.mkdtemp(prefix="cw-query-model-")
        os.makedirs(f"{root}/cloudwatch/{model['metadata']['apiVersion']}")
        with open(f"{root}/cloudwatch/{model['metadata']['apiVersion']}/service-2.json", "w") as f:
            json.dump(model, f)
        _QUERY_MODEL_DIR.append(root)
    loader.search_paths.insert(0, _QUERY_MODEL_DIR[0])
    client = boto3.session.Session(botocore_session=session).client(
        "cloudwatch", region_name=region, endpoint_url=ENDPOINT, aws_access_key_id="testing",
        aws_secret_access_key="testing", config=NO_RETRY)
    assert client.meta.service_model.resolved_protocol == "query"
    return client


@pytest.fixture(autouse=True)
def model_config():
    """Leaves the model's configuration, faults and outages as they were."""
    saved = {k: v for k, v in bed("POST", "/config", {}).items() if k in MODEL_KEYS}
    bed("DELETE", "/faults")
    yield
    bed("DELETE", "/faults")
    bed("POST", "/config", saved)


def replica(region, ident):
    """This replica's row in GET /_bed/replication, or None."""
    rows = [r for r in bed("GET", "/replication")["replicas"] if (r["region"], r["id"]) == (region, ident)]
    return rows[0] if rows else None


METRICS = {"rds": ("ReplicaLag", "DBInstanceIdentifier"),
           "aurora": ("AuroraGlobalDBReplicationLag", "DBClusterIdentifier")}


def datapoints(region, ident, kind="rds", client=None, period=1, **extra):
    """[(timestamp, value)] of the replica's lag metric in the last 5 minutes, as returned."""
    metric, dimension = METRICS[kind]
    cw = client or aws("cloudwatch", region)
    now = datetime.now(timezone.utc)
    result = cw.get_metric_data(
        MetricDataQueries=[{"Id": "lag", "MetricStat": {
            "Metric": {"Namespace": "AWS/RDS", "MetricName": metric,
                       "Dimensions": [{"Name": dimension, "Value": ident}]},
            "Period": period, "Stat": "Maximum"}}],
        StartTime=now - timedelta(minutes=5), EndTime=now + timedelta(minutes=1), **extra)
    r = result["MetricDataResults"][0]
    return list(zip(r["Timestamps"], r["Values"]))


def newest(region, ident, kind="rds"):
    points = datapoints(region, ident, kind)
    return points[0] if points else (None, None)


def primary_with_replicas(replica_regions, primary_region="us-east-1"):
    """An RDS primary and one cross-region read replica per region (source given as ARN)."""
    suffix = uid()
    primary_id = f"p-{suffix}"
    primary = aws("rds", primary_region).create_db_instance(
        DBInstanceIdentifier=primary_id, DBInstanceClass="db.t3.micro", Engine="postgres",
        MasterUsername="admin", MasterUserPassword="password123", AllocatedStorage=20)["DBInstance"]
    replicas = []
    for i, region in enumerate(replica_regions):
        rid = f"r{i}-{suffix}"
        aws("rds", region).create_db_instance_read_replica(
            DBInstanceIdentifier=rid, SourceDBInstanceIdentifier=primary["DBInstanceArn"])
        replicas.append(rid)
    # As on AWS, a new replica is `creating` (and replicates nothing) for a while.
    for region, rid in zip(replica_regions, replicas):
        wait_for(f"{rid} available", lambda: aws("rds", region).describe_db_instances(
            DBInstanceIdentifier=rid)["DBInstances"][0]["DBInstanceStatus"] == "available")
    return primary_id, primary["DBInstanceArn"], replicas


def writes(region, ident, writing):
    return bed("POST", "/writes", {"region": region, "identifier": ident, "writing": writing})


def test_replicas_are_found_with_their_source():
    primary, _, (west,) = primary_with_replicas(["us-west-2"])
    row = wait_for("replica listed", lambda: replica("us-west-2", west))
    assert row["kind"] == "rds" and row["metric"] == "ReplicaLag"
    assert row["source"] == {"region": "us-east-1", "id": primary}
    assert row["lag"] == 0 and not row["broken"] and row["running"] and not row["writing"]
    assert replica("us-east-1", primary) is None  # a primary is no replica


def test_lag_builds_while_writing_and_drains_after():
    tf = 0.01
    bed("POST", "/config", {"time_factor": tf, "steady_lag": 30, "lag_growth_rate": 1.0,
                            "lag_drain_rate": 0.2})
    primary, _, (west,) = primary_with_replicas(["us-west-2"])
    wait_for("replica listed", lambda: replica("us-west-2", west))

    # Writing: up at 1 lag-second per bed second to the steady 30 s: 30 bed s = 0.3 wall s.
    started = time.monotonic()
    assert writes("us-east-1", primary, True)["replicas"] == [west]
    samples = []

    def at_steady():
        samples.append(replica("us-west-2", west)["lag"])
        return samples[-1] == 30
    wait_for("lag at the steady lag", at_steady, timeout=5)
    assert time.monotonic() - started >= 30 * tf * 0.9
    assert any(0 < s < 30 for s in samples), samples
    assert samples == sorted(samples)
    assert replica("us-west-2", west)["writing"]
    wait_for("30 published", lambda: newest("us-west-2", west)[1] == 30.0, timeout=5)

    # Writes stop: down at 0.2 lag-seconds per bed second: 150 bed s = 1.5 wall s.
    started = time.monotonic()
    writes("us-east-1", primary, False)
    samples = []

    def drained():
        samples.append(replica("us-west-2", west)["lag"])
        return samples[-1] == 0
    wait_for("lag drained", drained, timeout=10)
    assert time.monotonic() - started >= 150 * tf * 0.9
    assert any(0 < s < 30 for s in samples) and samples == sorted(samples, reverse=True)
    wait_for("0 published", lambda: newest("us-west-2", west)[1] == 0.0, timeout=5)
    values = [v for _, v in datapoints("us-west-2", west)]
    assert 30.0 in values and any(0 < v < 30 for v in values), values


def test_datapoints_follow_the_cadence_and_lag_behind_changes():
    tf = 0.0125  # a 60 s bed period is 0.75 s wall
    bed("POST", "/config", {"time_factor": tf, "metric_period": 60})
    period = 60 * tf
    _, _, (west,) = primary_with_replicas(["us-west-2"])
    wait_for("three datapoints", lambda: len(datapoints("us-west-2", west)) >= 3, timeout=10)
    stamps = [ts.timestamp() for ts, _ in datapoints("us-west-2", west)]
    gaps = [a - b for a, b in zip(stamps, stamps[1:])]
    assert all(period - 0.15 <= g <= period + 0.15 for g in gaps), (period, gaps)

    # Right after a datapoint, break replication: the state changes at once, the metric only at
    # the next datapoint, up to a period later.
    last = stamps[0]
    wait_for("a fresh datapoint", lambda: datapoints("us-west-2", west)[0][0].timestamp() > last,
             timeout=5)
    changed = time.time()
    bed("POST", "/replication", {"region": "us-west-2", "identifier": west, "broken": True})
    assert replica("us-west-2", west)["running"] is False
    ts, value = newest("us-west-2", west)
    assert value == 0.0 and ts.timestamp() < changed  # stale: from before the change
    ts, value = wait_for("-1 published", lambda: (lambda p: p if p[1] == -1.0 else None)(
        newest("us-west-2", west)), timeout=5)
    assert changed < ts.timestamp() <= changed + period + 0.2


def test_minus_one_while_the_source_region_is_down_and_recovery():
    bed("POST", "/config", {"time_factor": 0.005})  # a datapoint every 0.3 s
    primary, primary_arn, (replica_id,) = primary_with_replicas(["eu-west-1"], primary_region="eu-central-1")
    writes("eu-central-1", primary, True)
    bed("POST", "/lag", {"region": "eu-west-1", "identifier": replica_id, "seconds": 5})  # held there
    try:
        bed("POST", "/outage", {"region": "eu-central-1", "down": True})
        wait_for("-1 published", lambda: newest("eu-west-1", replica_id)[1] == -1.0, timeout=5)
        row = replica("eu-west-1", replica_id)
        assert not row["running"] and row["published"]["value"] == -1.0
        assert row["lag"] == 5  # frozen while replication is not running
    finally:
        bed("POST", "/outage", {"region": "eu-central-1", "down": False})
    wait_for("lag published again", lambda: newest("eu-west-1", replica_id)[1] == 5.0, timeout=5)
    # The region came back with its RDS state as it was.
    db = aws("rds", "eu-central-1").describe_db_instances(DBInstanceIdentifier=primary)["DBInstances"][0]
    assert db["DBInstanceStatus"] == "available"
    assert [f"arn:aws:rds:eu-west-1:123456789012:db:{replica_id}"] == db["ReadReplicaDBInstanceIdentifiers"]
    replica_db = aws("rds", "eu-west-1").describe_db_instances(DBInstanceIdentifier=replica_id)["DBInstances"][0]
    assert replica_db["ReadReplicaSourceDBInstanceIdentifier"] == primary_arn


def test_nothing_is_published_while_the_replicas_own_region_is_down():
    bed("POST", "/config", {"time_factor": 0.005})
    _, _, (replica_id,) = primary_with_replicas(["ca-central-1"])
    _, _, (other,) = primary_with_replicas(["us-west-2"])
    wait_for("datapoints", lambda: replica("ca-central-1", replica_id)["published"]
             and replica("us-west-2", other)["published"])
    try:
        bed("POST", "/outage", {"region": "ca-central-1", "down": True})
        down_at = time.time()
        before = replica("ca-central-1", replica_id)["published"]["timestamp"]
        # Other replicas go on publishing meanwhile (two periods here); this one does not.
        wait_for("two periods", lambda: replica("us-west-2", other)["published"]["timestamp"]
                 > down_at + 2 * 60 * 0.005)
        assert replica("ca-central-1", replica_id)["published"]["timestamp"] == before
        published = {p["identifier"] for p in bed("POST", "/metrics/publish")["published"]}
        assert other in published and replica_id not in published
    finally:
        bed("POST", "/outage", {"region": "ca-central-1", "down": False})
    wait_for("published again", lambda: newest("ca-central-1", replica_id)[0] is not None
             and newest("ca-central-1", replica_id)[0].timestamp() > before)
    assert newest("ca-central-1", replica_id)[1] == 0.0


def test_minus_one_when_broken_or_the_source_is_gone():
    bed("POST", "/config", {"time_factor": 0.005})
    primary, _, (west,) = primary_with_replicas(["us-west-2"])
    bed("POST", "/lag", {"region": "us-west-2", "identifier": west, "seconds": 3})
    writes("us-east-1", primary, True)
    assert bed("POST", "/replication", {"region": "us-west-2", "identifier": west, "broken": True})["broken"]
    wait_for("-1", lambda: newest("us-west-2", west)[1] == -1.0, timeout=5)
    bed("POST", "/replication", {"region": "us-west-2", "identifier": west, "broken": False})
    wait_for("lag again", lambda: newest("us-west-2", west)[1] == 3.0, timeout=5)
    # An unknown replica is refused.
    with pytest.raises(urllib.error.HTTPError) as refused:
        bed("POST", "/replication", {"region": "us-west-2", "identifier": "nope-" + uid(), "broken": True})
    assert refused.value.code == 400

    aws("rds", "us-east-1").delete_db_instance(DBInstanceIdentifier=primary, SkipFinalSnapshot=True)
    wait_for("-1 once the source is gone", lambda: newest("us-west-2", west)[1] == -1.0, timeout=5)
    row = replica("us-west-2", west)
    assert not row["source_exists"] and not row["running"]


def test_promoted_replica_stops_publishing_and_the_others_keep_the_old_primary():
    bed("POST", "/config", {"time_factor": 0.005, "promotion_delay": 0.3, "steady_lag": 20})
    primary, primary_arn, (west, eu) = primary_with_replicas(["us-west-2", "eu-west-1"])
    wait_for("both published", lambda: all(replica(r, i)["published"] for r, i in
                                           (("us-west-2", west), ("eu-west-1", eu))))
    writes("us-east-1", primary, True)
    wait_for("eu at the steady lag", lambda: replica("eu-west-1", eu)["lag"] == 20, timeout=5)

    west_rds = aws("rds", "us-west-2")
    west_rds.promote_read_replica(DBInstanceIdentifier=west)

    def promoted():
        db = west_rds.describe_db_instances(DBInstanceIdentifier=west)["DBInstances"][0]
        return db["DBInstanceStatus"] == "available" and not db.get("ReadReplicaSourceDBInstanceIdentifier")
    wait_for("promotion", promoted, timeout=10)
    done = time.time()

    # The other replica still replicates from the old primary, in moto and in the model.
    eu_db = aws("rds", "eu-west-1").describe_db_instances(DBInstanceIdentifier=eu)["DBInstances"][0]
    assert eu_db["ReadReplicaSourceDBInstanceIdentifier"] == primary_arn
    old = aws("rds", "us-east-1").describe_db_instances(DBInstanceIdentifier=primary)["DBInstances"][0]
    assert old["ReadReplicaDBInstanceIdentifiers"] == [f"arn:aws:rds:eu-west-1:123456789012:db:{eu}"]
    row = replica("eu-west-1", eu)
    assert row["source"] == {"region": "us-east-1", "id": primary} and row["running"]
    assert replica("us-west-2", west) is None

    # Its lag follows the old primary's writes, not the new primary's.
    writes("us-west-2", west, True)
    writes("us-east-1", primary, False)
    wait_for("eu drained", lambda: newest("eu-west-1", eu)[1] == 0.0, timeout=10)
    writes("us-east-1", primary, True)
    wait_for("eu back at the steady lag", lambda: newest("eu-west-1", eu)[1] == 20.0, timeout=10)

    # The promoted instance published nothing since, while the other replica kept publishing.
    assert all(ts.timestamp() < done for ts, _ in datapoints("us-west-2", west))
    assert [ts for ts, _ in datapoints("eu-west-1", eu) if ts.timestamp() > done]
    assert west not in {p["identifier"] for p in bed("POST", "/metrics/publish")["published"]}


def test_lag_endpoint_sets_the_steady_and_current_lag_now():
    bed("POST", "/config", {"time_factor": 0.02, "lag_drain_rate": 0.2, "metric_period": 60})
    primary, _, (west,) = primary_with_replicas(["us-west-2"])
    wait_for("replica listed", lambda: replica("us-west-2", west))
    set_at = time.monotonic()
    answer = bed("POST", "/lag", {"region": "us-west-2", "identifier": west, "seconds": 60})
    assert (answer["metric"], answer["value"], answer["unit"]) == ("ReplicaLag", 60.0, "Seconds")
    assert (answer["timestamp"], 60.0) in [(round(ts.timestamp(), 3), v)  # published at once
                                           for ts, v in datapoints("us-west-2", west)]
    row = replica("us-west-2", west)
    assert row["steady_lag"] == 60 and 55 <= row["lag"] <= 60
    # Not written: drains at the default 10 lag-seconds per wall second, so it is far from 0
    # for a planned failover's 4 s fence, and reaches 0 after about 6 s.
    # The rate is judged between two readings, each bracketed by the clock around its
    # request, so a slow machine widens the bounds instead of failing the test.
    before_first = time.monotonic()
    first = replica("us-west-2", west)["lag"]
    after_first = time.monotonic()
    wait_for("5 s drained", lambda: replica("us-west-2", west)["lag"] <= 55, timeout=5)
    assert time.monotonic() - set_at >= 0.45
    before_second = time.monotonic()
    second = replica("us-west-2", west)["lag"]
    after_second = time.monotonic()
    drained = first - second
    # A tick every 0.1 s: each reading may be up to 1 lag-second old.
    assert 10 * (before_second - after_first) - 1.5 <= drained <= 10 * (after_second - before_first) + 1.5
    # Written: held at (and back up to) the steady lag.
    writes("us-east-1", primary, True)
    wait_for("back at 60", lambda: replica("us-west-2", west)["lag"] == 60, timeout=5)

    # 0 is 0 at once, written or not.
    bed("POST", "/lag", {"region": "us-west-2", "identifier": west, "seconds": 0})
    assert newest("us-west-2", west)[1] == 0.0
    published = bed("POST", "/metrics/publish")["published"]
    assert [p["value"] for p in published if p["identifier"] == west] == [0.0]

    # Set before the replica exists: kept for it.
    rid = f"later-{uid()}"
    bed("POST", "/lag", {"region": "us-west-2", "identifier": rid, "seconds": 7})
    primary_arn = aws("rds", "us-east-1").describe_db_instances(DBInstanceIdentifier=primary)["DBInstances"][0]["DBInstanceArn"]
    aws("rds", "us-west-2").create_db_instance_read_replica(DBInstanceIdentifier=rid,
                                                           SourceDBInstanceIdentifier=primary_arn)
    row = wait_for("new replica", lambda: replica("us-west-2", rid))
    assert row["steady_lag"] == 7 and row["lag"] == 7


global_cluster = bedclient.create_global_cluster


def test_aurora_secondary_lag_in_milliseconds_follows_the_writer():
    bed("POST", "/config", {"time_factor": 0.005, "switchover_delay": 0.3})
    gc_id, east, west = global_cluster(uid())
    row = wait_for("secondary listed", lambda: replica("us-west-2", west))
    assert row["kind"] == "aurora" and row["metric"] == "AuroraGlobalDBReplicationLag"
    assert row["source"] == {"region": "us-east-1", "id": east}
    assert replica("us-east-1", east) is None  # the writer is no replica

    writes("us-east-1", east, True)
    answer = bed("POST", "/lag", {"region": "us-west-2", "identifier": west, "seconds": 30.5, "kind": "aurora"})
    assert (answer["value"], answer["unit"]) == (30500.0, "Milliseconds")
    assert (answer["timestamp"], 30500.0) in [(round(ts.timestamp(), 3), v) for ts, v in
                                              datapoints("us-west-2", west, "aurora")]
    published = bed("POST", "/metrics/publish")["published"]
    assert [p["value"] for p in published if p["identifier"] == west] == [30500.0]  # held under load
    writes("us-east-1", east, False)  # drains at 40 lag-seconds per wall second
    wait_for("drained", lambda: bed("POST", "/metrics/publish") and
             newest("us-west-2", west, "aurora")[1] == 0.0, timeout=5)
    values = [v for _, v in datapoints("us-west-2", west, "aurora")]
    assert any(0 < v < 30500 for v in values), values

    # A switchover makes the old writer the secondary, replicating from the new one.
    west_arn = aws("rds", "us-west-2").describe_db_clusters(DBClusterIdentifier=west)["DBClusters"][0]["DBClusterArn"]
    aws("rds", "us-east-1").switchover_global_cluster(GlobalClusterIdentifier=gc_id,
                                                      TargetDbClusterIdentifier=west_arn)
    row = wait_for("old writer now secondary", lambda: replica("us-east-1", east), timeout=5)
    assert row["source"] == {"region": "us-west-2", "id": west} and row["kind"] == "aurora"
    assert replica("us-west-2", west) is None
    wait_for("secondary published", lambda: newest("us-east-1", east, "aurora")[1] == 0.0, timeout=5)


@pytest.mark.parametrize("protocol", ["json", "query"])
def test_get_metric_data_has_exact_millisecond_timestamps_newest_first(protocol):
    bed("POST", "/config", {"time_factor": 1.0})  # no cadence datapoint during the test
    _, _, (west,) = primary_with_replicas(["us-west-2"])
    wait_for("replica listed", lambda: replica("us-west-2", west))
    published = []
    for seconds in (4, 5, 6):
        answer = bed("POST", "/lag", {"region": "us-west-2", "identifier": west, "seconds": seconds})
        published.append((answer["timestamp"], answer["value"]))
        published += [(p["timestamp"], p["value"]) for p in bed("POST", "/metrics/publish")["published"]
                      if p["identifier"] == west]
    client = cloudwatch_query("us-west-2") if protocol == "query" else aws("cloudwatch", "us-west-2")
    points = datapoints("us-west-2", west, client=client)
    # One value per datapoint (several within one second), each at its publish instant to the ms.
    assert len(points) == 6
    assert [(round(ts.timestamp(), 3), v) for ts, v in points] == sorted(published, reverse=True)
    assert any(ts.microsecond for ts, _ in points)
    ascending = datapoints("us-west-2", west, client=client, ScanBy="TimestampAscending")
    assert ascending == points[::-1]
    # A longer period groups datapoints into period-aligned buckets stamped with their start.
    buckets = datapoints("us-west-2", west, client=client, period=60)
    assert all(ts.timestamp() % 60 == 0 for ts, _ in buckets)
    assert max(v for _, v in buckets) == 6.0


def test_other_cloudwatch_calls_pass_through_to_moto():
    cw = aws("cloudwatch", "us-west-2")
    ns = f"Bed/{uid()}"
    now = datetime.now(timezone.utc)
    cw.put_metric_data(Namespace=ns, MetricData=[{"MetricName": "M", "Value": 1.5, "Timestamp": now}])
    result = cw.get_metric_data(MetricDataQueries=[{"Id": "m", "MetricStat": {
        "Metric": {"Namespace": ns, "MetricName": "M"}, "Period": 60, "Stat": "Sum"}}],
        StartTime=now - timedelta(minutes=5), EndTime=now + timedelta(minutes=1))
    assert result["MetricDataResults"][0]["Values"] == [1.5]
    assert {m["MetricName"] for m in cw.list_metrics(Namespace=ns)["Metrics"]} == {"M"}
    # What a client puts into AWS/RDS itself shows in the answers given here.
    ident = f"put-{uid()}"
    cw.put_metric_data(Namespace="AWS/RDS", MetricData=[{
        "MetricName": "ReplicaLag", "Value": 9.0, "Unit": "Seconds", "Timestamp": now,
        "Dimensions": [{"Name": "DBInstanceIdentifier", "Value": ident}]}])
    assert [v for _, v in datapoints("us-west-2", ident)] == [9.0]


def test_config_is_validated_and_listed():
    config = bed("POST", "/config", {"time_factor": 0.5, "metric_period": 10, "lag_drain_rate": 1})
    assert (config["time_factor"], config["metric_period"], config["lag_drain_rate"]) == (0.5, 10, 1)
    assert bed("GET", "/replication")["config"]["metric_period"] == 10
    for bad in ({"time_factor": 0}, {"metric_period": -1}, {"lag_drain_rate": "fast"}):
        with pytest.raises(urllib.error.HTTPError) as refused:
            bed("POST", "/config", bad)
        assert refused.value.code == 400


def test_reset_restores_the_defaults_in_process():
    """/_bed/reset, on an emulator of this process (a reset also empties moto, which a shared
    emulator's other users still need)."""
    from awsbed import Bed, replication

    b = Bed()
    b.ctl_config({"time_factor": 0.5, "metric_period": 10, "lag_drain_rate": 1, "steady_lag": 3})
    b.ctl_lag({"region": "us-west-2", "identifier": "x", "seconds": 4})
    b.replication.set_writes({"region": "us-east-1", "identifier": "p", "writing": True})
    b.ctl_reset({})
    listed = b.replication.list()
    assert listed["config"] == replication.DEFAULTS
    assert listed["config"] == {"time_factor": 0.02, "metric_period": 60.0, "lag_drain_rate": 0.2,
                                "lag_growth_rate": 1.0, "steady_lag": 1.0}
    assert listed["writes"] == [] and listed["replicas"] == [] and not b.replication.points
