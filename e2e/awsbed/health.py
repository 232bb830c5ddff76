"""Route 53 health checks whose per-checker-region reports the bed controls.

GetHealthCheckStatus answers one HealthCheckObservation per checker region: the health
check's own Regions when it was created with some, else CHECKER_REGIONS. Each report is
"Success: ..." or "Failure: ...", checked now, as the bed decides:

  * POST /_bed/health-checks {"id": ID, "healthy": false}: Failure from every checker region;
    {"healthy": true} clears every failure of that check;
  * {"id": ID, "failing_from": ["us-east-1", "us-west-2"]}: Failure from those checker
    regions only (a partial outage seen from some vantage points); [] clears them;
  * {"id": ID, "endpoint_region": "us-east-1"}: the endpoint it checks runs in that AWS
    region, so while the region is lost (POST /_bed/outage) every checker reports Failure
    (the endpoint does not answer anyone). Without it, a region named in the health
    check's FQDN (as ELB host names carry) counts as the endpoint's region.

Strict like AWS: an unknown health check ID is 404 NoSuchHealthCheck, and the account's
Route 53 rate limit (5 requests/s, route53.admit) applies to these calls as to every other.
Route 53 itself is global: a lost region does not stop the reads.
"""

import re
from datetime import datetime, timezone

R53_NS = "https://route53.amazonaws.com/doc/2013-04-01/"
CHECKER_REGIONS = ["us-east-1", "us-west-2", "eu-west-1"]
REGION_IN_NAME = re.compile(r"\b([a-z]{2}-[a-z]+-\d)\b")


class HealthState:
    """Per health check: the checker regions reporting Failure ("all" or a set) and the
    AWS region of its endpoint. BedState.reset() makes a new one."""

    def __init__(self):
        self.failing = {}  # id -> "all" | set of checker regions
        self.endpoint_region = {}  # id -> AWS region


def find(account, health_check_id):
    from moto.route53.models import route53_backends
    for backend in route53_backends[account].values():
        hc = backend.health_checks.get(health_check_id)
        if hc is not None:
            return hc
    return None


def control(state, payload):
    """/_bed/health-checks: see the module docstring. Call with state.lock held."""
    hc_id = payload["id"]
    health = state.health
    if "failing_from" in payload:
        regions = payload["failing_from"]
        if not isinstance(regions, list) or not all(isinstance(r, str) for r in regions):
            raise ValueError("failing_from must be a list of region names")
        if regions:
            health.failing[hc_id] = set(regions)
        else:
            health.failing.pop(hc_id, None)
    elif "healthy" in payload:
        if payload["healthy"]:
            health.failing.pop(hc_id, None)
        else:
            health.failing[hc_id] = "all"
    if "endpoint_region" in payload:
        if payload["endpoint_region"]:
            health.endpoint_region[hc_id] = str(payload["endpoint_region"])
        else:
            health.endpoint_region.pop(hc_id, None)
    return {"failing": {k: (v if v == "all" else sorted(v)) for k, v in sorted(health.failing.items())},
            "endpoint_regions": dict(sorted(health.endpoint_region.items()))}


def reports(bed, hc):
    """Each checker region's report on health check `hc` now: [(region, "Success: ..." or
    "Failure: ...")]."""
    checkers = list(hc.regions or CHECKER_REGIONS)
    state = bed.state
    with state.lock:
        failing = state.health.failing.get(hc.id, set())
        endpoint = state.health.endpoint_region.get(hc.id)
        if endpoint is None and hc.fqdn:
            m = REGION_IN_NAME.search(hc.fqdn)
            endpoint = m.group(1) if m else None
        endpoint_lost = endpoint is not None and endpoint in state.outages
    out = []
    for region in checkers:
        if endpoint_lost:
            report = "Failure: Connection timed out. The endpoint or the internet connection is down."
        elif failing == "all" or region in failing:
            report = "Failure: HTTP Status Code 503, Service Unavailable (injected)"
        else:
            report = "Success: HTTP Status Code 200, OK"
        out.append((region, report))
    return out


def healthy(bed, hc_id):
    """Whether Route 53 considers `hc_id` healthy: more than 18% of its checkers report
    Success. An unknown id is healthy, as a record's missing check is."""
    hc = find_any(hc_id)
    if hc is None:
        return True
    found = reports(bed, hc)
    return sum(r.startswith("Success") for _, r in found) * 100 > len(found) * 18


def find_any(health_check_id):
    from moto.route53.models import route53_backends
    for account in list(route53_backends.keys()):
        hc = find(account, health_check_id)
        if hc is not None:
            return hc
    return None


def status(bed, environ, start_response, account):
    """GetHealthCheckStatus, answered from the bed's state."""
    hc_id = environ.get("PATH_INFO", "").rstrip("/").split("/")[-2]
    hc = find(account, hc_id)
    if hc is None:
        return bed.error(start_response, "route53", "404 Not Found", "NoSuchHealthCheck",
                         f"A health check with id {hc_id} does not exist.")
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    observations = []
    for i, (region, report) in enumerate(reports(bed, hc)):
        observations.append(
            f"<HealthCheckObservation><Region>{region}</Region><IPAddress>127.0.0.{i + 1}</IPAddress>"
            f"<StatusReport><Status>{report}</Status><CheckedTime>{stamp}</CheckedTime></StatusReport>"
            f"</HealthCheckObservation>")
    body = (f'<?xml version="1.0"?><GetHealthCheckStatusResponse xmlns="{R53_NS}">'
            f"<HealthCheckObservations>{''.join(observations)}</HealthCheckObservations>"
            f"</GetHealthCheckStatusResponse>")
    return bed.respond(start_response, "200 OK", body)
