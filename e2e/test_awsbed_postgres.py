"""The bed's real PostgreSQL (awsbed/postgres.py) on its own: streaming through a delayed link,
the lag it reads, a cut link losing what was in flight, promotion, and a region that stops and
returns with its data."""

import os
import tempfile
import time

import pytest

from awsbed import postgres

pytestmark = pytest.mark.skipif(not os.path.exists(os.path.join(postgres.PG_BIN, "postgres")),
                                reason="PostgreSQL 15 is not installed (e2e/install-deps.sh installs it)")


@pytest.fixture
def fleet():
    root = tempfile.mkdtemp(prefix="drover-pg-")
    os.chmod(root, 0o755)
    f = postgres.Fleet(root)
    yield f
    f.close()


def wait_until(check, timeout=20.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def rows(server):
    return {r[0] for r in server.query("select id from t")}


def test_a_replica_streams_with_its_links_delay_and_reports_the_lag(fleet):
    primary = fleet.create_primary("us-east-1", "orders")
    primary.query("create table t (id bigint primary key)")
    replica = fleet.create_replica("us-west-2", "orders", primary)
    wait_until(lambda: replica.lag() is not None and replica.lag() >= 0)
    primary.query("insert into t values (1)")
    wait_until(lambda: rows(replica) == {1})

    fleet.set_delay("us-west-2", "orders", 2.0)
    primary.query("insert into t values (2)")
    time.sleep(0.5)
    assert rows(replica) == {1}, "the link delivers after its delay, not before"
    wait_until(lambda: rows(replica) == {1, 2}, timeout=10)
    # Heartbeats keep coming through the delayed link: the lag reads about the delay.
    lag = wait_until(lambda: (replica.lag() or 0) >= 1.5 and replica.lag(), timeout=10)
    assert lag < 2.0 + postgres.HEARTBEAT + 1.0, lag

    fleet.set_delay("us-west-2", "orders", 0.0)
    wait_until(lambda: replica.lag() is not None and replica.lag() < 1.0, timeout=10)


def test_an_outage_loses_what_was_in_flight_and_keeps_the_rest(fleet):
    primary = fleet.create_primary("us-east-1", "orders")
    primary.query("create table t (id bigint primary key)")
    replica = fleet.create_replica("us-west-2", "orders", primary)
    primary.query("insert into t values (1)")
    wait_until(lambda: rows(replica) == {1})
    fleet.set_delay("us-west-2", "orders", 30.0)
    primary.query("insert into t values (2)")  # acknowledged, still in the link

    fleet.set_outages({"us-east-1"})
    with pytest.raises(Exception):
        postgres.connect(primary.port, timeout=1).run("select 1")
    wait_until(lambda: replica.lag() == -1.0, timeout=15)

    fleet.promote("us-west-2", "orders")
    assert replica.query("select pg_is_in_recovery()")[0][0] is False
    assert rows(replica) == {1}, "the row in flight is lost"
    replica.query("insert into t values (3)")

    fleet.set_outages(set())
    assert rows(primary) == {1, 2}, "the old primary kept its data"
    assert rows(replica) == {1, 3}, "the promoted replica does not follow its old source"


def test_a_replica_of_a_returning_source_reconnects(fleet):
    primary = fleet.create_primary("us-east-1", "orders")
    primary.query("create table t (id bigint primary key)")
    replica = fleet.create_replica("us-west-2", "orders", primary)
    wait_until(lambda: replica.lag() is not None and replica.lag() >= 0)
    fleet.set_outages({"us-east-1"})
    wait_until(lambda: replica.lag() == -1.0, timeout=15)
    fleet.set_outages(set())
    primary.query("insert into t values (7)")
    wait_until(lambda: rows(replica) == {7}, timeout=15)
    wait_until(lambda: replica.lag() is not None and replica.lag() >= 0, timeout=15)


def test_a_writers_acknowledged_rows_in_flight_are_counted_lost(fleet):
    primary = fleet.create_primary("us-east-1", "orders")
    replica = fleet.create_replica("us-west-2", "orders", primary, delay=1.5)
    fleet.write_rate = 50.0
    assert fleet.set_writing("us-east-1", "orders", True)
    writer = fleet.writers[("us-east-1", "orders")]
    wait_until(lambda: writer.summary()["acked"] >= 150, timeout=20)  # 3 s of writes
    fleet.set_outages({"us-east-1"})  # the link is cut: 1.5 s of writes never arrive
    cut_at = time.time()
    wait_until(lambda: replica.lag() == -1.0, timeout=15)
    fleet.promote("us-west-2", "orders")
    fleet.set_writing("us-east-1", "orders", False)
    lost = fleet.lost("us-east-1", "orders", "us-west-2", "orders")
    # About the link's 1.5 s at 50 rows/s; what arrived is a prefix, what is lost the rest.
    assert 25 <= lost["lost"] <= 50 * (1.5 + 1.0), lost
    assert lost["last_lost_ack"] <= cut_at and lost["first_lost_ack"] >= cut_at - 1.5 - 1.0, lost
    present = {r[0] for r in replica.query("select seq from bed_writes")}
    assert present == set(range(1, len(present) + 1)), "what arrived has no gap"
