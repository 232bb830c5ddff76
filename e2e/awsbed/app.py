"""The service users reach in each region: a health endpoint for a plan's probes.

    GET /_bed/app?region=us-east-1&writes-to=ID&name=api.example.&answer=10.1.0.10

answers 200 while users are served from that region, else 503 with the reason:

  * the region is not lost (POST /_bed/outage): a lost region's endpoint closes the connection
    unanswered, as one that is gone does;
  * with writes-to, the workload writing to that RDS instance or Aurora cluster has ready pods
    (the readiness emulator's POST /_bed/writes), and, where the instance is a real PostgreSQL
    server (postgres.py), that server acknowledged a write in the last WRITE_WINDOW seconds;
  * with name and answer, DNS sends users here: the name resolves through the bed's Route 53
    records to `answer`, as Route 53 answers (a Failover record's PRIMARY while its health check
    is healthy, else the SECONDARY; the heaviest Weighted record; a Simple record's first
    value). TTLs are not modelled: a change shows at once.
"""

import time
from urllib.parse import parse_qs

from . import health, route53

WRITE_WINDOW = 2.0


def resolve(bed, name):
    """What Route 53 answers for `name` now, from every account's zones; None when no record."""
    from moto.route53.models import route53_backends
    want = route53.norm_name(name)
    with bed.moto_lock:
        records = [rs for backends in route53_backends.values() for backend in backends.values()
                   for zone in backend.zones.values() for rs in zone.rrsets
                   if route53.norm_name(rs.name) == want]
    if not records:
        return None
    failover = {rs.failover: rs for rs in records if rs.failover}
    if failover:
        primary, secondary = failover.get("PRIMARY"), failover.get("SECONDARY")
        chosen = primary
        if primary is None or (primary.health_check_id and not health.healthy(bed, primary.health_check_id)):
            chosen = secondary or primary
    elif any(rs.weight is not None for rs in records):
        chosen = max(records, key=lambda rs: int(rs.weight or 0))
    else:
        chosen = records[0]
    values = [str(route53._value(v)) for v in chosen.records or []]
    return values[0] if values else None


def serve(bed, environ, start_response):
    q = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    region = q.get("region")
    if not region:
        return bed.respond(start_response, "400 Bad Request", "region is required\n", "text/plain")
    with bed.state.lock:
        lost = region in bed.state.outages
    if lost:
        bed.drop_connection(environ)
        return bed.respond(start_response, "503 Service Unavailable", "", "text/plain")
    why = None
    ident = q.get("writes-to")
    if ident:
        with bed.replication.lock:
            writing = bed.replication.writes.get((region, ident.lower()), False)
        last_ack = bed.postgres.last_ack(region, ident)
        if not writing:
            why = f"no ready writer of {ident}"
        elif last_ack is not False and (last_ack is None or time.time() - last_ack > WRITE_WINDOW):
            why = f"{ident} takes no writes"
    name, answer = q.get("name"), q.get("answer")
    if why is None and name and answer:
        got = resolve(bed, name)
        if got != answer:
            why = f"DNS sends {name} to {got}"
    if why:
        return bed.respond(start_response, "503 Service Unavailable", why + "\n", "text/plain")
    return bed.respond(start_response, "200 OK", "ok\n", "text/plain")
