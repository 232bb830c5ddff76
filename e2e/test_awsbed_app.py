"""Tests of the bed's app endpoint (e2e/awsbed/app.py), which a plan's probes poll: it answers
while its region is up, its writer has ready pods, and DNS sends users there."""

import http.client
import urllib.parse

from bedclient import PORT, aws, bed, uid
from test_awsbed_health import clean_bed  # noqa: F401 (autouse: no faults, no Route 53 rate limit)


def app(**query):
    """(status, body) of GET /_bed/app; status None when the connection closed unanswered."""
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=5)
    try:
        conn.request("GET", "/_bed/app?" + urllib.parse.urlencode(query))
        r = conn.getresponse()
        return r.status, r.read().decode().strip()
    except (ConnectionError, http.client.HTTPException):
        return None, ""
    finally:
        conn.close()


def writing(region, ident, on):
    bed("POST", "/writes", {"region": region, "identifier": ident, "writing": on})


def failover_zone(primary_hc=None):
    """A zone whose api record is PRIMARY 10.1.0.10 (with `primary_hc`), SECONDARY 10.2.0.10."""
    r53 = aws("route53")
    name = f"app{uid()}.example."
    zone = r53.create_hosted_zone(Name=name, CallerReference=uid())["HostedZone"]["Id"].split("/")[-1]

    def rrs(ident, role, value, hc=None):
        out = {"Name": f"api.{name}", "Type": "A", "TTL": 60, "SetIdentifier": ident,
               "Failover": role, "ResourceRecords": [{"Value": value}]}
        if hc:
            out["HealthCheckId"] = hc
        return {"Action": "UPSERT", "ResourceRecordSet": out}

    r53.change_resource_record_sets(HostedZoneId=zone, ChangeBatch={"Changes": [
        rrs("use1", "PRIMARY", "10.1.0.10", primary_hc), rrs("usw2", "SECONDARY", "10.2.0.10")]})
    return f"api.{name}"


def test_a_region_answers_while_its_writer_has_ready_pods():
    ident = f"app-{uid()}"
    assert app(region="us-east-1", **{"writes-to": ident}) == (503, f"no ready writer of {ident}")
    writing("us-east-1", ident, True)
    assert app(region="us-east-1", **{"writes-to": ident}) == (200, "ok")
    writing("us-east-1", ident, False)
    assert app(region="us-east-1", **{"writes-to": ident})[0] == 503


def test_a_lost_region_closes_the_connection_unanswered():
    ident = f"app-{uid()}"
    writing("us-west-2", ident, True)
    bed("POST", "/outage", {"region": "us-west-2"})
    assert app(region="us-west-2", **{"writes-to": ident}) == (None, "")
    bed("POST", "/outage", {"region": "us-west-2", "down": False})
    assert app(region="us-west-2", **{"writes-to": ident}) == (200, "ok")


def test_dns_follows_the_failover_records_and_the_primarys_health_check():
    hc = aws("route53").create_health_check(CallerReference=uid(), HealthCheckConfig={
        "IPAddress": "10.1.0.10", "Port": 443, "Type": "HTTPS", "ResourcePath": "/healthz"})["HealthCheck"]["Id"]
    name = failover_zone(primary_hc=hc)
    east = {"region": "us-east-1", "name": name, "answer": "10.1.0.10"}
    west = {"region": "us-west-2", "name": name, "answer": "10.2.0.10"}
    assert app(**east) == (200, "ok")
    assert app(**west) == (503, f"DNS sends {name} to 10.1.0.10")
    # Route 53 answers the SECONDARY while the PRIMARY's health check fails.
    bed("POST", "/health-checks", {"id": hc, "healthy": False})
    assert app(**west) == (200, "ok")
    assert app(**east) == (503, f"DNS sends {name} to 10.2.0.10")
    bed("POST", "/health-checks", {"id": hc, "healthy": True})
    assert app(**east) == (200, "ok")


def test_a_name_without_records_sends_users_nowhere():
    name = f"none{uid()}.example."
    assert app(region="us-east-1", name=name, answer="10.1.0.10") == (503, f"DNS sends {name} to None")


def test_region_is_required():
    assert app() == (400, "region is required")
