"""The bed's RDS backed by real PostgreSQL (awsbed/postgres.py), through the RDS API as Drover
uses it: the endpoint is the real server, a read replica streams, ReplicaLag comes from the
standby's replay position (-1 when the stream is down), promotion makes it writable before it
shows available, an outage loses only what was in flight, and a deleted instance's server stops."""

import os

import pg8000.native
import pytest

from awsbed import postgres
from bedclient import aws, bed, uid, wait_for

pytestmark = pytest.mark.skipif(not os.path.exists(os.path.join(postgres.PG_BIN, "postgres")),
                                reason="PostgreSQL 15 is not installed (e2e/install-deps.sh installs it)")

EAST, WEST = "us-east-1", "us-west-2"


@pytest.fixture(autouse=True)
def backed():
    bed("POST", "/config", {"postgres": True})
    yield
    bed("POST", "/config", {"postgres": False})
    bed("DELETE", "/faults")


def describe(region, ident):
    return aws("rds", region).describe_db_instances(DBInstanceIdentifier=ident)["DBInstances"][0]


def sql(region, ident, query):
    endpoint = describe(region, ident)["Endpoint"]
    conn = pg8000.native.Connection("postgres", host=endpoint["Address"], port=endpoint["Port"],
                                    database="postgres", timeout=5)
    try:
        return conn.run(query)
    finally:
        conn.close()


def published(ident):
    for r in bed("GET", "/replication")["replicas"]:
        if r["id"] == ident and r.get("published"):
            return r["published"]["value"]
    return None


def primary_and_replica():
    name = f"pg-{uid()}"
    east = aws("rds", EAST)
    arn = east.create_db_instance(DBInstanceIdentifier=name, DBInstanceClass="db.t3.micro",
                                  Engine="postgres", MasterUsername="admin",
                                  MasterUserPassword="password123",
                                  AllocatedStorage=20)["DBInstance"]["DBInstanceArn"]
    sql(EAST, name, "create table t (id bigint primary key)")
    aws("rds", WEST).create_db_instance_read_replica(DBInstanceIdentifier=name,
                                                     SourceDBInstanceIdentifier=arn,
                                                     SourceRegion=EAST)
    wait_for("the replica available", lambda: describe(WEST, name)["DBInstanceStatus"] == "available",
             timeout=30)
    return name


def test_a_backed_instance_is_a_real_server_and_its_replica_streams():
    name = primary_and_replica()
    endpoint = describe(EAST, name)["Endpoint"]
    assert endpoint["Address"] == "127.0.0.1" and endpoint["Port"] != 5432, endpoint
    sql(EAST, name, "insert into t values (1)")
    wait_for("the row on the replica", lambda: sql(WEST, name, "select id from t") == [[1]])
    assert sql(WEST, name, "select pg_is_in_recovery()") == [[True]]
    # Published from the standby, on the cadence: streaming, and a small, known lag.
    lag = wait_for("a lag published", lambda: published(name) is not None and [published(name)])[0]
    assert 0 <= lag < 2.0, lag

    bed("POST", "/lag", {"region": WEST, "identifier": name, "seconds": 3})
    wait_for("the lag read about 3 s", lambda: (published(name) or 0) >= 2.5, timeout=15)


def test_an_outage_cuts_replication_and_promotion_loses_only_what_was_in_flight():
    name = primary_and_replica()
    sql(EAST, name, "insert into t values (1)")
    wait_for("the row on the replica", lambda: sql(WEST, name, "select id from t") == [[1]])
    bed("POST", "/lag", {"region": WEST, "identifier": name, "seconds": 30})
    sql(EAST, name, "insert into t values (2)")  # acknowledged; 30 s in the link

    east_port = describe(EAST, name)["Endpoint"]["Port"]
    bed("POST", "/outage", {"region": EAST})
    wait_for("-1 published", lambda: published(name) == -1.0, timeout=20)
    with pytest.raises(Exception):
        postgres.connect(east_port, timeout=1).run("select 1")  # unreachable
    aws("rds", WEST).promote_read_replica(DBInstanceIdentifier=name)
    wait_for("promoted", lambda: describe(WEST, name)["DBInstanceStatus"] == "available", timeout=30)
    assert sql(WEST, name, "select pg_is_in_recovery()") == [[False]]
    assert sql(WEST, name, "select id from t") == [[1]], "row 2 was in flight: lost"
    sql(WEST, name, "insert into t values (3)")

    bed("POST", "/outage", {"region": EAST, "down": False})
    assert sql(EAST, name, "select id from t order by id") == [[1], [2]], "the old primary kept its data"


def test_a_deleted_instance_stops_its_server():
    name = primary_and_replica()
    port = describe(WEST, name)["Endpoint"]["Port"]
    aws("rds", WEST).delete_db_instance(DBInstanceIdentifier=name, SkipFinalSnapshot=True)
    wait_for("deleted", lambda: not any(d["DBInstanceIdentifier"] == name for d in
                                        aws("rds", WEST).describe_db_instances()["DBInstances"]),
             timeout=15)
    with pytest.raises(Exception):
        postgres.connect(port, timeout=1).run("select 1")
