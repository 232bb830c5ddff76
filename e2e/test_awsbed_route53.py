"""Tests of the emulator's strict Route 53 (e2e/awsbed/route53.py) with boto3.

Each AWS rule has a refused and an allowed case. Retries are off so every refusal is seen as is.
The account rate limit (5 requests/s) would throttle these tests themselves, so a fixture turns
it off (route53_rate 0) and dns_sync_delay to 0 for each test, and puts back what it found; the
rate-limit tests set the rate they need.
"""

import json
import os
import time
import urllib.error
import urllib.request
import uuid

import boto3
import botocore.config
import botocore.exceptions
import pytest

from bedclient import ENDPOINT, aws, bed, uid, wait_for  # noqa: F401


@pytest.fixture(autouse=True)
def unlimited_route53():
    """No rate limit and no PENDING time unless a test sets them; restores what it found
    (route53_rate 5 by default)."""
    bed("DELETE", "/faults")
    before = bed("POST", "/config", {})
    bed("POST", "/config", {"route53_rate": 0, "dns_sync_delay": 0})
    yield
    bed("POST", "/config", {k: before[k] for k in ("route53_rate", "route53_burst", "dns_sync_delay")})
    bed("DELETE", "/faults")


R53 = None


def r53():
    global R53
    if R53 is None:
        R53 = aws("route53")
    return R53


def new_zone():
    name = f"{uid()}.example."
    zone = r53().create_hosted_zone(Name=name, CallerReference=uid())["HostedZone"]["Id"]
    return zone, name


def rrs(name, *values, ttl=60, rtype="A", **extra):
    return {"Name": name, "Type": rtype, "TTL": ttl,
            "ResourceRecords": [{"Value": v} for v in values], **extra}


def change(action, record_set):
    return {"Action": action, "ResourceRecordSet": record_set}


def submit(zone, *changes):
    return r53().change_resource_record_sets(
        HostedZoneId=zone, ChangeBatch={"Changes": list(changes)})["ChangeInfo"]


def refused(zone, *changes, code="InvalidChangeBatch"):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        submit(zone, *changes)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert e.value.response["Error"]["Code"] == code, e.value.response["Error"]
    return e.value.response["Error"]["Message"]


def records(zone):
    """The zone's record sets without SOA/NS (no MaxItems: moto loops with it)."""
    sets = r53().list_resource_record_sets(HostedZoneId=zone)["ResourceRecordSets"]
    return [s for s in sets if s["Type"] not in ("SOA", "NS")]


def record_count(zone):
    return r53().get_hosted_zone(Id=zone)["HostedZone"]["ResourceRecordSetCount"]


# ---- rule 1: 1,000 ResourceRecord elements, 32,000 value characters, UPSERT counted twice ----
def test_1200_records_refused_but_two_batches_of_600_creates_accepted():
    zone, name = new_zone()
    batch = [change("CREATE", rrs(f"r{i}.{name}", f"10.0.{i // 250}.{i % 250}")) for i in range(1200)]
    message = refused(zone, *batch)
    assert "Number of records limit of 1000 exceeded" in message
    assert record_count(zone) == 2  # SOA and NS only
    submit(zone, *batch[:600])
    submit(zone, *batch[600:])
    assert record_count(zone) == 2 + 1200


def test_upserts_count_twice():
    zone, name = new_zone()
    batch = [change("UPSERT", rrs(f"u{i}.{name}", f"10.1.{i // 250}.{i % 250}")) for i in range(600)]
    assert "Number of records limit of 1000 exceeded" in refused(zone, *batch)
    assert record_count(zone) == 2
    submit(zone, *batch[:500])  # 500 UPSERTs count as exactly 1,000
    assert record_count(zone) == 2 + 500


def test_value_characters_limit_with_upsert_doubling():
    zone, name = new_zone()
    value = '"' + "a" * 248 + '"'  # 250 characters
    full = [value] * 128  # 32,000 characters
    assert "32000" in refused(zone, change("CREATE", rrs(f"t1.{name}", *full, value[:1], rtype="TXT")))
    submit(zone, change("CREATE", rrs(f"t1.{name}", *full, rtype="TXT")))
    half = [value] * 64  # 16,000 characters, counted twice
    assert "32000" in refused(zone, change("UPSERT", rrs(f"t2.{name}", *half, value[:1], rtype="TXT")))
    submit(zone, change("UPSERT", rrs(f"t2.{name}", *half, rtype="TXT")))
    assert sorted(r["Name"] for r in records(zone)) == [f"t1.{name}", f"t2.{name}"]


# ---- rule 2: one PRIMARY and one SECONDARY per name and type, after the batch -------------------
def failover(name, ident, role, value):
    return rrs(name, value, SetIdentifier=ident, Failover=role)


def roles(zone):
    return {r["SetIdentifier"]: (r["Failover"], r["ResourceRecords"][0]["Value"])
            for r in records(zone) if "Failover" in r}


def test_second_secondary_refused_and_swap_in_one_batch_accepted():
    zone, name = new_zone()
    api = f"api.{name}"
    submit(zone, change("CREATE", failover(api, "use1", "PRIMARY", "10.1.0.10")),
           change("CREATE", failover(api, "usw2", "SECONDARY", "10.2.0.10")))
    message = refused(zone, change("CREATE", failover(api, "euw1", "SECONDARY", "10.3.0.10")))
    assert "SECONDARY" in message and api in message
    # Turning one record over alone would leave two SECONDARY records.
    refused(zone, change("UPSERT", failover(api, "use1", "SECONDARY", "10.1.0.10")))
    assert roles(zone) == {"use1": ("PRIMARY", "10.1.0.10"), "usw2": ("SECONDARY", "10.2.0.10")}
    # Swapping both in one batch is valid: the state after the batch has one of each.
    submit(zone, change("UPSERT", failover(api, "use1", "SECONDARY", "10.1.0.10")),
           change("UPSERT", failover(api, "usw2", "PRIMARY", "10.2.0.10")))
    assert roles(zone) == {"use1": ("SECONDARY", "10.1.0.10"), "usw2": ("PRIMARY", "10.2.0.10")}
    # Another name, or another type, has its own PRIMARY/SECONDARY pair.
    submit(zone, change("CREATE", failover(f"admin.{name}", "use1", "PRIMARY", "10.1.0.11")),
           change("CREATE", rrs(api, "2001:db8::1", rtype="AAAA", SetIdentifier="use1", Failover="PRIMARY")))


# ---- rule 3: CREATE of an existing record set, DELETE must match exactly --------------------------
def test_create_of_existing_record_set_is_refused():
    zone, name = new_zone()
    submit(zone, change("CREATE", rrs(f"api.{name}", "10.0.0.1")))
    message = refused(zone, change("CREATE", rrs(f"API.{name.rstrip('.')}", "10.0.0.2")))
    assert "but it already exists" in message
    assert [(r["Name"], r["ResourceRecords"]) for r in records(zone)] == [(f"api.{name}", [{"Value": "10.0.0.1"}])]
    # Another type, or another set identifier, is another record set.
    submit(zone, change("CREATE", rrs(f"api.{name}", "api-alias.example.", rtype="TXT")),
           change("CREATE", rrs(f"www.{name}", "10.0.0.3", SetIdentifier="a", Weight=1)),
           change("CREATE", rrs(f"www.{name}", "10.0.0.4", SetIdentifier="b", Weight=1)))
    assert len(records(zone)) == 4
    assert "set-identifier='a'" in refused(
        zone, change("CREATE", rrs(f"www.{name}", "10.0.0.5", SetIdentifier="a", Weight=2)))


@pytest.mark.parametrize("wrong,expected", [
    ({"TTL": 300}, "do not match the current values"),
    ({"ResourceRecords": [{"Value": "10.9.9.9"}]}, "do not match the current values"),
    ({"ResourceRecords": [{"Value": "10.0.0.1"}]}, "do not match the current values"),  # one of two
    ({"Weight": 50}, "do not match the current values"),
    ({"HealthCheckId": "0a1b2c3d-0000-0000-0000-000000000000"}, "do not match the current values"),
    ({"SetIdentifier": "other"}, "but it was not found"),
    ({"Type": "AAAA", "ResourceRecords": [{"Value": "2001:db8::1"}]}, "but it was not found"),
])
def test_delete_that_does_not_match_exactly_is_refused(wrong, expected):
    zone, name = new_zone()
    current = rrs(f"www.{name}", "10.0.0.1", "10.0.0.2", SetIdentifier="use1", Weight=100)
    submit(zone, change("CREATE", current))
    assert expected in refused(zone, change("DELETE", {**current, **wrong}))
    assert len(records(zone)) == 1
    # The exact values delete it, in any value order, with the name in another case and no dot.
    exact = {**current, "Name": f"WWW.{name.rstrip('.')}",
             "ResourceRecords": [{"Value": "10.0.0.2"}, {"Value": "10.0.0.1"}]}
    submit(zone, change("DELETE", exact))
    assert records(zone) == []


def test_delete_of_alias_record_matches_alias_target():
    zone, name = new_zone()
    alias = {"Name": f"app.{name}", "Type": "A", "SetIdentifier": "use1", "Failover": "PRIMARY",
             "AliasTarget": {"HostedZoneId": "Z35SXDOTRQ7X7K", "DNSName": "lb-use1.elb.amazonaws.com.",
                             "EvaluateTargetHealth": True}}
    submit(zone, change("CREATE", alias))
    other_target = {**alias, "AliasTarget": {**alias["AliasTarget"], "DNSName": "lb-usw2.elb.amazonaws.com."}}
    assert "do not match" in refused(zone, change("DELETE", other_target))
    submit(zone, change("DELETE", {**alias, "AliasTarget": {**alias["AliasTarget"],
                                                            "DNSName": "LB-use1.elb.amazonaws.com"}}))
    assert records(zone) == []


def test_delete_with_set_identifier_removes_only_that_record():
    zone, name = new_zone()
    api_use1 = rrs(f"api.{name}", "10.1.0.10", SetIdentifier="use1", Weight=100)
    api_usw2 = rrs(f"api.{name}", "10.2.0.10", SetIdentifier="usw2", Weight=0)
    www_use1 = rrs(f"www.{name}", "10.1.0.12", SetIdentifier="use1", Weight=100)
    submit(zone, *(change("CREATE", r) for r in (api_use1, api_usw2, www_use1)))
    submit(zone, change("DELETE", api_use1))
    assert sorted((r["Name"], r["SetIdentifier"]) for r in records(zone)) == [
        (f"api.{name}", "usw2"), (f"www.{name}", "use1")]


# ---- rule 4: atomic batches --------------------------------------------------------------------
def test_failing_batch_leaves_zone_unchanged():
    zone, name = new_zone()
    submit(zone, change("CREATE", rrs(f"api.{name}", "10.0.0.1")),
           change("CREATE", rrs(f"www.{name}", "10.0.0.2")))
    before = records(zone)
    message = refused(zone,
                      change("CREATE", rrs(f"new.{name}", "10.0.0.3")),
                      change("UPSERT", rrs(f"api.{name}", "10.0.0.9")),
                      change("DELETE", rrs(f"www.{name}", "10.0.0.2", ttl=300)))
    assert "do not match the current values" in message
    assert records(zone) == before
    # A change outside the zone spoils the batch just as well.
    refused(zone, change("DELETE", rrs(f"api.{name}", "10.0.0.1")),
            change("CREATE", rrs("api.elsewhere.example.", "10.0.0.4")))
    assert records(zone) == before


def test_changes_apply_in_order_within_a_batch():
    zone, name = new_zone()
    api = rrs(f"api.{name}", "10.0.0.1")
    submit(zone, change("CREATE", api))
    # DELETE then CREATE of the same record set is the classic replace: accepted.
    submit(zone, change("DELETE", api), change("CREATE", rrs(f"api.{name}", "10.0.0.2", ttl=30)))
    assert [(r["TTL"], r["ResourceRecords"]) for r in records(zone)] == [(30, [{"Value": "10.0.0.2"}])]
    # Deleting one record set twice in a batch is not.
    current = rrs(f"api.{name}", "10.0.0.2", ttl=30)
    assert "but it was not found" in refused(zone, change("DELETE", current), change("DELETE", current))
    assert len(records(zone)) == 1


# ---- rule 5: PriorRequestNotComplete while a change to the zone is PENDING ------------------------
def test_prior_request_not_complete_until_insync():
    bed("POST", "/config", {"dns_sync_delay": 1.0})
    zone, name = new_zone()
    other_zone, other_name = new_zone()
    first = submit(zone, change("CREATE", rrs(f"api.{name}", "10.0.0.1")))
    assert first["Status"] == "PENDING"
    message = refused(zone, change("CREATE", rrs(f"www.{name}", "10.0.0.2")), code="PriorRequestNotComplete")
    assert message == "The request was rejected because Route 53 was still processing a prior request."
    assert [r["Name"] for r in records(zone)] == [f"api.{name}"]
    submit(other_zone, change("CREATE", rrs(f"www.{other_name}", "10.0.0.3")))  # another zone is free
    wait_for("INSYNC", lambda: r53().get_change(Id=first["Id"])["ChangeInfo"]["Status"] == "INSYNC")
    submit(zone, change("CREATE", rrs(f"www.{name}", "10.0.0.2")))
    assert sorted(r["Name"] for r in records(zone)) == [f"api.{name}", f"www.{name}"]


def test_refused_batch_does_not_make_the_zone_busy():
    bed("POST", "/config", {"dns_sync_delay": 30.0})
    zone, name = new_zone()
    refused(zone, change("DELETE", rrs(f"api.{name}", "10.0.0.1")))
    submit(zone, change("CREATE", rrs(f"api.{name}", "10.0.0.1")))


# ---- rule 6: 5 requests per second for the account, over all Route 53 operations -----------------
def throttled_total():
    return bed("GET", "/throttled")["total"]


def burst(n, call):
    outcomes = []
    for _ in range(n):
        try:
            call()
            outcomes.append("ok")
        except botocore.exceptions.ClientError as e:
            assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 400
            assert (e.response["Error"]["Code"], e.response["Error"]["Message"]) == ("Throttling", "Rate exceeded")
            outcomes.append("throttled")
    return outcomes


def test_rate_limit_throttles_the_sixth_call_in_a_burst():
    zone, _ = new_zone()
    assert bed("POST", "/config", {"route53_rate": 5})["route53_rate"] == 5  # a full bucket of 5
    before = throttled_total()
    client = r53()
    calls = [client.list_hosted_zones, lambda: client.get_hosted_zone(Id=zone),
             lambda: client.list_resource_record_sets(HostedZoneId=zone)]
    outcomes = []
    for i in range(8):
        outcomes += burst(1, calls[i % 3])
    assert outcomes[:5] == ["ok"] * 5, outcomes
    assert outcomes[5] == "throttled", outcomes
    assert throttled_total() - before == outcomes.count("throttled")
    by_operation = {t["operation"] for t in bed("GET", "/throttled")["throttled"]}
    assert by_operation & {"ListHostedZones", "GetHostedZone", "ListResourceRecordSets"}
    # Tokens come back at 5 a second.
    wait_for("a token", lambda: burst(1, client.list_hosted_zones) == ["ok"], timeout=2)


def test_rate_limit_is_a_token_bucket_of_five():
    # At 0.2 requests/s a burst still gets 5 through, and the rest wait 5 s per token.
    bed("POST", "/config", {"route53_rate": 0.2})
    assert burst(10, r53().list_hosted_zones) == ["ok"] * 5 + ["throttled"] * 5
    # Changes are throttled like every other operation.
    before = throttled_total()
    with pytest.raises(botocore.exceptions.ClientError) as e:
        submit("ZNOTCHECKED", change("CREATE", rrs("a.example.", "10.0.0.1")))
    assert e.value.response["Error"]["Code"] == "Throttling"
    assert throttled_total() == before + 1


def test_route53_rate_zero_disables_the_limit():
    bed("POST", "/config", {"route53_rate": 5})
    bed("POST", "/config", {"route53_rate": 0})
    before = throttled_total()
    assert burst(30, r53().list_hosted_zones) == ["ok"] * 30
    assert throttled_total() == before


def test_reset_restores_the_default_rate():
    from awsbed import BedState
    state = BedState()
    assert (state.route53.bucket.rate, state.route53.bucket.burst) == (5.0, 5.0)
    state.route53.bucket.configure(0, 5)
    state.route53.throttled["GetChange"] += 1
    state.reset()
    assert (state.route53.bucket.rate, dict(state.route53.throttled)) == (5.0, {})


def test_bad_route53_rate_is_a_control_error():
    with pytest.raises(urllib.error.HTTPError) as e:
        bed("POST", "/config", {"route53_rate": -1})
    assert e.value.code == 400
