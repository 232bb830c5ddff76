"""Route 53 as strict as AWS: ChangeResourceRecordSets rules and the account rate limit.

moto validates a DELETE against past changes instead of the records, lets a CREATE add a
duplicate, applies a batch change by change (a failing change leaves the earlier ones applied),
deletes every record with a SetIdentifier in the zone, and accepts two SECONDARY records for one
name. This module takes ChangeResourceRecordSets over from moto:

  * request limits: at most 1,000 ResourceRecord elements and 32,000 characters summed over the
    Value elements, an UPSERT counting twice;
  * the batch is validated change by change against a working copy of the zone's records (so a
    DELETE followed by a CREATE of the same record set is fine, deleting one twice is not);
    CREATE of an existing (name, type, set identifier) and a DELETE that does not match a record
    set exactly (TTL, values, routing fields, health check, alias target) are refused;
  * in the state after the batch, at most one PRIMARY and one SECONDARY per (name, type);
  * nothing changes unless the whole batch is valid; the working copy then replaces the zone's
    record list in moto's backend in one assignment, so ListResourceRecordSets shows it at once;
  * PriorRequestNotComplete while an earlier change to the same zone is still PENDING.

Names compare case-insensitively, with or without the trailing dot. Errors are HTTP 400,
rest-xml ErrorResponse, code InvalidChangeBatch with AWS's bracketed message list, or
InvalidInput for a malformed change.

The account rate limit (all Route 53 operations, 5 requests/s, burst 5) is a token bucket kept in
Route53State; throttled calls are answered 400 Throttling "Rate exceeded" and counted.
"""

import copy
import os
import re
import time
from collections import Counter
from datetime import datetime, timezone

R53_NS = "https://route53.amazonaws.com/doc/2013-04-01/"
DEFAULT_RATE = 5.0
DEFAULT_BURST = 5.0
MAX_RECORDS = 1000
MAX_VALUE_CHARS = 32000
PRIOR_REQUEST_MESSAGE = "The request was rejected because Route 53 was still processing a prior request."


class TokenBucket:
    """`rate` tokens a second up to `burst`; rate 0 means unlimited."""

    def __init__(self, rate=DEFAULT_RATE, burst=DEFAULT_BURST):
        self.configure(rate, burst)

    def configure(self, rate, burst):
        self.rate = float(rate)
        self.burst = max(1.0, float(burst))
        self.tokens = self.burst
        self.stamp = time.monotonic()

    def take(self, now=None):
        if self.rate <= 0:
            return True
        now = time.monotonic() if now is None else now
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class Route53State:
    """The bed's Route 53 state; BedState.reset() makes a new one (rate back to 5/s)."""

    def __init__(self):
        self.bucket = TokenBucket()
        self.throttled = Counter()  # operation -> throttled calls
        self.change_zones = {}  # change id -> hosted zone id (without /hostedzone/)


# ---- rate limit and control API -----------------------------------------------------------
def admit(state, operation):
    """Takes a token for one Route 53 call; False (and counted) when the call is throttled."""
    with state.lock:
        if state.route53.bucket.take():
            return True
        state.route53.throttled[operation] += 1
        return False


def configure(state, payload):
    """`route53_rate` (requests/s, 0 = unlimited) and `route53_burst` from /_bed/config.
    Call with state.lock held. Changing either refills the bucket."""
    bucket = state.route53.bucket
    if "route53_rate" in payload or "route53_burst" in payload:
        rate = float(payload.get("route53_rate", bucket.rate))
        burst = float(payload.get("route53_burst", bucket.burst))
        if rate < 0 or burst < 1:
            raise ValueError("route53_rate must be >= 0 and route53_burst >= 1")
        bucket.configure(rate, burst)
    return {"route53_rate": bucket.rate, "route53_burst": bucket.burst}


def throttled_view(state):
    with state.lock:
        items = sorted(state.route53.throttled.items())
        config = {"route53_rate": state.route53.bucket.rate, "route53_burst": state.route53.bucket.burst}
    return {"throttled": [{"service": "route53", "operation": op, "count": n} for op, n in items],
            "total": sum(n for _, n in items), **config}


# ---- request parsing ----------------------------------------------------------------------
def parse_request(environ):
    """The request as moto's own rest-xml parser reads it (same types moto stores)."""
    from moto.core.parse import RestXMLParser
    from moto.core.utils import get_service_model
    operation = get_service_model("route53").operation_model("ChangeResourceRecordSets")
    body = environ["wsgi.input"].getvalue() if hasattr(environ["wsgi.input"], "getvalue") else b""
    parsed = RestXMLParser(operation).parse({
        "method": "POST", "values": {}, "headers": {}, "body": body,
        "url_path": environ.get("PATH_INFO", ""), "url_params": {"Id": zone_id_of(environ)},
    })
    return parsed.get("ChangeBatch") or {}


def zone_id_of(environ):
    m = re.search(r"/hostedzone/([^/]+)/rrset", environ.get("PATH_INFO", ""))
    return m.group(1) if m else ""


def account_of(environ):
    """The account moto would use for this request."""
    if "MOTO_ACCOUNT_ID" in os.environ:
        return os.environ["MOTO_ACCOUNT_ID"]
    if environ.get("HTTP_X_MOTO_ACCOUNT_ID"):
        return environ["HTTP_X_MOTO_ACCOUNT_ID"]
    from moto.iam.models import get_account_id_from
    m = re.search(r"Credential=([^/]+)/", environ.get("HTTP_AUTHORIZATION", ""))
    return get_account_id_from(m.group(1) if m else "")


# ---- comparison ---------------------------------------------------------------------------
def norm_name(name):
    return (name or "").rstrip(".").lower()


def fqdn(name):
    return name if name.endswith(".") else name + "."


def identity(name, rtype, set_identifier):
    return norm_name(name), rtype, set_identifier or None


def record_identity(rs):
    return identity(rs.name, rs.type, rs.set_identifier)


def _value(v):
    return v.get("Value") if isinstance(v, dict) else v


def _alias(a):
    if not a:
        return None
    return (a.get("HostedZoneId"), norm_name(a.get("DNSName")), bool(a.get("EvaluateTargetHealth")))


def _geo(g):
    return tuple(sorted((g or {}).items())) or None


def _ttl(ttl, alias):
    return None if alias or ttl is None else int(ttl)


def record_values(rs):
    """Everything a DELETE must repeat, for a record moto stores."""
    alias = _alias(rs.alias_target)
    return (record_identity(rs), _ttl(rs.ttl, alias), sorted(str(_value(v)) for v in rs.records or []),
            rs.weight, rs.region, rs.failover, rs.health_check_id or None, alias, _geo(rs.geo_location))


def request_values(rrs):
    """The same, for a ResourceRecordSet of a change."""
    alias = _alias(rrs.get("AliasTarget"))
    return (identity(rrs.get("Name"), rrs.get("Type"), rrs.get("SetIdentifier")),
            _ttl(rrs.get("TTL"), alias), sorted(str(_value(v)) for v in rrs.get("ResourceRecords") or []),
            rrs.get("Weight"), rrs.get("Region"), rrs.get("Failover"), rrs.get("HealthCheckId") or None,
            alias, _geo(rrs.get("GeoLocation")))


def describe(rrs):
    text = f"[name='{fqdn(rrs.get('Name', ''))}', type='{rrs.get('Type')}'"
    if rrs.get("SetIdentifier"):
        text += f", set-identifier='{rrs['SetIdentifier']}'"
    return text + "]"


class Refusal(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code, self.message = code, message


def invalid_batch(messages):
    return Refusal("InvalidChangeBatch", "[" + ", ".join(messages) + "]")


# ---- validation -----------------------------------------------------------------------------
def check_limits(changes):
    records = chars = 0
    for change in changes:
        weight = 2 if change.get("Action") == "UPSERT" else 1
        values = [str(_value(v) or "") for v in change.get("ResourceRecordSet", {}).get("ResourceRecords") or []]
        records += weight * len(values)
        chars += weight * sum(len(v) for v in values)
    if records > MAX_RECORDS:
        raise invalid_batch([f"Number of records limit of {MAX_RECORDS} exceeded."])
    if chars > MAX_VALUE_CHARS:
        raise invalid_batch([f"Number of characters in record values limit of {MAX_VALUE_CHARS} exceeded."])


def check_shape(action, rrs):
    """AWS's request-level checks, answered InvalidInput like moto/AWS do."""
    if action not in ("CREATE", "UPSERT", "DELETE"):
        raise Refusal("InvalidInput", (
            f"Invalid XML ; cvc-enumeration-valid: Value '{action}' is not facet-valid with respect to "
            "enumeration '[CREATE, DELETE, UPSERT]'. It must be a value from the enumeration."))
    has_alias = bool(rrs.get("AliasTarget"))
    has_records = rrs.get("TTL") is not None and bool(rrs.get("ResourceRecords"))
    if has_alias == has_records:
        found = "more than one" if has_alias else "none"
        raise Refusal("InvalidInput", (
            "Invalid request: Expected exactly one of [AliasTarget, all of [TTL, and ResourceRecords], "
            f"or TrafficPolicyInstanceId], but found {found} in Change with [Action={action}, "
            f"Name={rrs.get('Name')}, Type={rrs.get('Type')}, SetIdentifier={rrs.get('SetIdentifier') or 'null'}]"))
    from moto.core.exceptions import ServiceException
    from moto.route53.utils import validate_domain_name
    try:
        validate_domain_name(rrs.get("Name", ""), code="InvalidChangeBatch")
    except ServiceException as e:
        raise Refusal(e.code, e.message)


def apply_batch(zone, changes):
    """The zone's record list after the batch, or Refusal. Does not touch the zone."""
    from moto.route53.models import RecordSet
    check_limits(changes)
    for change in changes:
        check_shape(change.get("Action"), change.get("ResourceRecordSet") or {})
    work = list(zone.rrsets)
    errors = []
    zone_name = norm_name(zone.name)
    for change in changes:
        action, rrs = change["Action"], copy.deepcopy(change["ResourceRecordSet"])
        name = norm_name(rrs.get("Name"))
        if name != zone_name and not name.endswith("." + zone_name):
            errors.append(f"RRSet with DNS name {fqdn(rrs.get('Name', ''))} is not permitted in zone {zone.name}")
            continue
        key = identity(rrs.get("Name"), rrs.get("Type"), rrs.get("SetIdentifier"))
        at = next((i for i, rs in enumerate(work) if record_identity(rs) == key), None)
        if action == "DELETE":
            if at is None:
                errors.append(f"Tried to delete resource record set {describe(rrs)} but it was not found")
            elif record_values(work[at]) != request_values(rrs):
                errors.append(f"Tried to delete resource record set {describe(rrs)} "
                              "but the values provided do not match the current values")
            else:
                del work[at]
            continue
        if action == "CREATE" and at is not None:
            errors.append(f"Tried to create resource record set {describe(rrs)} but it already exists")
            continue
        # Stored as moto stores it: the name with its trailing dot, the values as strings.
        rrs["Name"] = fqdn(rrs.get("Name", ""))
        if "ResourceRecords" in rrs:
            rrs["ResourceRecords"] = [_value(v) for v in rrs["ResourceRecords"]]
        new = RecordSet(rrs)
        if at is None:
            work.append(new)
        else:
            work[at] = new
    roles = Counter((norm_name(rs.name), rs.type, rs.failover) for rs in work if rs.failover)
    for (name, rtype, role), n in sorted(roles.items()):
        if n > 1:
            errors.append(f"RRSet with DNS name {name}., type {rtype} cannot have more than one record with "
                          f"failover {role}: {n} records with failover {role} would exist in zone {zone.name}")
    if errors:
        raise invalid_batch(errors)
    return work


# ---- the operation ---------------------------------------------------------------------------
def change_resource_record_sets(bed, environ, start_response, region):
    """ChangeResourceRecordSets, answered here; moto answers only for an unknown zone or bad XML."""
    from moto.route53.models import route53_backends
    from moto.utilities.utils import get_partition
    zone_id = zone_id_of(environ)
    try:
        batch = parse_request(environ)
        zone = route53_backends[account_of(environ)][get_partition(region or "us-east-1")].zones.get(zone_id)
    except Exception:  # unparsable: let moto give its own answer
        zone, batch = None, None
    if zone is None:
        return bed.pass_through(start_response, *bed.call_moto(environ))
    changes = batch.get("Changes") or []
    state = bed.state
    try:
        with state.lock:
            now = time.time()
            if any(zone_id == z and state.changes.get(cid, (0, 0))[1] > now
                   for cid, z in state.route53.change_zones.items()):
                raise Refusal("PriorRequestNotComplete", PRIOR_REQUEST_MESSAGE)
            zone.rrsets = apply_batch(zone, changes)
            change_id = f"C{next(state.change_ids):012d}BED"
            insync_at = now + state.dns_sync_delay
            state.changes[change_id] = (now, insync_at)
            state.route53.change_zones[change_id] = zone_id
            state.waits[("dns", change_id)] = {"requested_at": now, "done_at": insync_at,
                                              "noticed_at": None, "describes": 0}
    except Refusal as refusal:
        return bed.error(start_response, "route53", "400 Bad Request", refusal.code, refusal.message)
    stamp = datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    comment = batch.get("Comment")
    comment_xml = f"<Comment>{xml_escape(comment)}</Comment>" if comment else ""
    body = (f'<?xml version="1.0" encoding="UTF-8"?><ChangeResourceRecordSetsResponse xmlns="{R53_NS}">'
            f"<ChangeInfo><Id>/change/{change_id}</Id><Status>PENDING</Status>"
            f"<SubmittedAt>{stamp}</SubmittedAt>{comment_xml}</ChangeInfo></ChangeResourceRecordSetsResponse>")
    return bed.respond(start_response, "200 OK", body)


def xml_escape(s):
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
