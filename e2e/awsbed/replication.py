"""Replication lag over time, published to CloudWatch as RDS and Aurora Global Database do.

Replicas are found in moto's state on every tick; nothing has to register them:
  * an RDS read replica (`is_replica` with `source_db_instance_identifier`, an ARN or a plain id
    of the same region) replicates from that instance. Promoting one replica changes nothing for
    the primary's other replicas: they keep replicating from the old primary, as in AWS;
  * a non-writer member of an Aurora global cluster replicates from the global cluster's current
    writer (it follows switchovers and failovers).

Clock. The bed runs on "bed time": wall seconds = bed seconds x `time_factor` (default 0.02, so a
bed minute lasts 1.2 wall seconds). Every period and rate below is in bed units, so changing
`time_factor` speeds up or slows down the whole model without changing its shape.

Lag of one replica, in seconds. A tick (every 0.1 s wall, and at every control call) integrates
the time since the previous tick under the state seen then; so changes through /_bed/writes,
/_bed/lag, /_bed/replication and /_bed/config apply from the instant of the call, and outages and
moto changes (promotion, deletion, switchover) from the next tick, at most 0.1 s wall later.
  * running and its source written (POST /_bed/writes): the lag moves toward the replica's
    steady lag under load: up at `lag_growth_rate` (default 1.0 lag-second per bed second: a
    replica cannot fall behind faster than time passes), down at `lag_drain_rate` if above it;
  * running and its source not written (no report = not written): the lag drains toward 0 at
    `lag_drain_rate` (default 0.2 lag-seconds per bed second, i.e. 10 lag-seconds per wall
    second at the default time_factor 0.02: a 60 s backlog is gone after 300 bed s = 6 wall s);
  * not running: the lag is frozen and the replica publishes -1, as RDS does. Not running means:
    broken by POST /_bed/replication, its source's region is in an outage, its source instance
    no longer exists (RDS) or its global cluster has no writer (Aurora);
  * its own region in an outage: nothing is published (CloudWatch there is unreachable too);
    the lag goes on as above, and publishing resumes when the region comes back;
  * promoting (PromoteReadReplica accepted) or promoted, or now the Aurora writer: it is no
    longer a replica and publishes nothing more.
  The steady lag is `steady_lag` (default 1.0 s) until POST /_bed/lag sets it for the replica.

Publishing. Every `metric_period` bed seconds (default 60, as RDS; 1.2 s wall by default) a
background thread publishes each replica's lag as one datapoint in the replica's region:
  * RDS: AWS/RDS ReplicaLag, dimension DBInstanceIdentifier, Seconds;
  * Aurora: AWS/RDS AuroraGlobalDBReplicationLag, dimension DBClusterIdentifier, Milliseconds
    (lag x 1000; "not running" is the raw value -1 in either unit).
Each datapoint's timestamp is the wall-clock instant it was published (millisecond precision), so
the newest one can be up to a period older than the state it reports.

Control API (JSON bodies; hooked into the bed's /_bed/ routes):
  POST /_bed/writes {"region", "identifier", "writing": bool}  whether a source (RDS instance or
       Aurora writer cluster) is being written; the answer lists the replicas that follow it.
  POST /_bed/lag {"region", "identifier", "seconds", "kind": "rds"|"aurora"}  sets the replica's
       steady lag under load and its lag now, and publishes a datapoint at once (kept for a
       replica that does not exist yet, and applied when it appears).
  POST /_bed/replication {"region", "identifier", "broken": bool}  breaks or repairs replication.
  GET  /_bed/replication  the configuration, the writes reported, and every replica with its
       source, lag, steady lag, writing/running/broken, and last published value and time.
  POST /_bed/metrics/publish  publishes every replica's datapoint now (off the cadence, which
       stays as it was) and returns them.
  POST /_bed/config  time_factor, metric_period, lag_drain_rate, lag_growth_rate, steady_lag;
       POST /_bed/reset restores the defaults and forgets replicas, writes and datapoints.

GetMetricData for namespace AWS/RDS is answered here (moto rounds timestamps down to the period,
to whole seconds): with Period 1 every datapoint comes back on its own, with its exact timestamp;
with a longer period datapoints are grouped into period-aligned buckets, each stamped with the
bucket's start, as CloudWatch does. Newest first unless ScanBy=TimestampAscending. Datapoints
that clients put into AWS/RDS with PutMetricData (kept by moto) are included. The answer has
moto's shape: XML for the awsQuery protocol (Rust aws-sdk-cloudwatch 1.99), JSON for the AWS
JSON 1.0 protocol (boto3). Any request with another namespace or a math expression goes to moto.
"""

import io
import json
import math
import re
import threading
import time
from collections import deque
from datetime import datetime, timezone

CW_NS = "http://monitoring.amazonaws.com/doc/2010-08-01/"
NAMESPACE = "AWS/RDS"
RETENTION = 3 * 3600.0  # wall seconds of datapoints kept (CloudWatch keeps 1 s data 3 hours)
TICK = 0.1  # wall seconds between integrations of the lag model
DEFAULTS = {
    "time_factor": 0.02,     # wall seconds per bed second
    "metric_period": 60.0,   # bed seconds between datapoints (RDS: one a minute)
    "lag_drain_rate": 0.2,   # lag-seconds per bed second, source not written (10/s wall at 0.02)
    "lag_growth_rate": 1.0,  # lag-seconds per bed second, source written, below the steady lag
    "steady_lag": 1.0,       # seconds: steady lag under load of a replica not set by /_bed/lag
}
KINDS = {
    # kind -> metric name, dimension, unit, scale from seconds
    "rds": ("ReplicaLag", "DBInstanceIdentifier", "Seconds", 1.0),
    "aurora": ("AuroraGlobalDBReplicationLag", "DBClusterIdentifier", "Milliseconds", 1000.0),
}


def iso_ms(ts):
    """Epoch seconds -> '2026-11-29T18:43:08.123Z'."""
    dt = datetime.fromtimestamp(ts, timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def parse_time(value):
    """An ISO 8601 string (awsQuery) or epoch seconds (JSON protocols) -> epoch seconds."""
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def arn_region_id(ref, default_region):
    """'arn:aws:rds:us-east-1:123:db:name' or 'name' -> (region, name)."""
    if ref.startswith("arn:"):
        parts = ref.split(":")
        return parts[3], parts[-1]
    return default_region, ref


def safe_list(values):
    """A snapshot of a dict's values that request threads may change meanwhile."""
    for _ in range(5):
        try:
            return list(values())
        except RuntimeError:  # "dictionary changed size during iteration"
            continue
    return []


class Replica:
    def __init__(self, kind, region, ident):
        self.kind, self.region, self.id = kind, region, ident
        self.source = None          # (region, id) of the source, or None
        self.source_exists = False
        self.token = None           # identity of the moto object it was seen as
        self.seen = False           # a replica in moto's state at the last tick
        self.seeded = False         # /_bed/lag set it while it was not (yet) seen
        self.steady = None          # steady lag under load (seconds); None = config steady_lag
        self.lag = 0.0              # current lag (seconds)
        self.broken = False
        self.published = None       # (value, timestamp) of the last datapoint


class Replication:
    def __init__(self, bed, account):
        self.bed = bed
        self.account = account
        self.lock = threading.RLock()  # taken before bed.state.lock, never after
        self.wake = threading.Event()
        self.reset()
        threading.Thread(target=self.run, name="replication-lag", daemon=True).start()

    # ---- state ------------------------------------------------------------------------
    def reset(self):
        with self.lock:
            now = time.time()
            self.config = dict(DEFAULTS)
            self.replicas = {}   # (kind, region, id lower) -> Replica
            self.writes = {}     # (region, id lower) -> bool
            self.points = {}     # (region, metric, dimension, value) -> deque of (ts, value, unit)
            self.last_tick = now
            self.tick_outages = set()
            self.last_cadence = now
            self.next_publish = now + self.period_wall()
        self.wake.set()
        return {"reset": True}

    def period_wall(self):
        return self.config["metric_period"] * self.config["time_factor"]

    def configure(self, p):
        """Sets any of the config keys given; returns the whole configuration."""
        updates = {}
        for key in DEFAULTS:
            if key in p:
                value = float(p[key])
                if key in ("time_factor", "metric_period") and value <= 0:
                    raise ValueError(f"{key} must be > 0")
                if value < 0:
                    raise ValueError(f"{key} must be >= 0")
                updates[key] = value
        with self.lock:
            if updates:
                self.tick(time.time())  # the past at the old rates
                self.config.update(updates)
                self.next_publish = self.last_cadence + self.period_wall()
        if updates:
            self.wake.set()
        with self.lock:
            return dict(self.config)

    # ---- discovery ----------------------------------------------------------------------
    def discover(self):
        """Every replica in moto's state now: key -> (kind, region, id, source, source exists, token)."""
        from moto.rds.models import rds_backends
        with self.bed.state.lock:
            promoting = {(r, i.lower()) for r, i in self.bed.state.promoting}
        backends = dict(safe_list(rds_backends[self.account].items))
        found = {}
        for region, backend in backends.items():
            for db in safe_list(backend.databases.values):
                source_ref = getattr(db, "source_db_instance_identifier", None)
                ident = db.db_instance_identifier
                # A replica being created does not replicate (or publish) yet.
                if (not (db.is_replica and source_ref) or (region, ident.lower()) in promoting
                        or getattr(db, "status", "") == "creating"):
                    continue
                src_region, src_id = arn_region_id(source_ref, region)
                src_backend = backends.get(src_region)
                exists = src_backend is not None and src_backend.databases.get(src_id) is not None
                found[("rds", region, ident.lower())] = ("rds", region, ident, (src_region, src_id), exists, id(db))
            for gc in safe_list(getattr(backend, "global_clusters", {}).values):
                members = list(gc.members)
                writer = next((m for m in members if m.is_writer), None)
                source = None
                if writer is not None:
                    source = (arn_region_id(writer.db_cluster_arn, region)[0], writer.db_cluster_identifier)
                for m in members:
                    if m is writer:
                        continue
                    m_region = arn_region_id(m.db_cluster_arn, region)[0]
                    ident = m.db_cluster_identifier
                    found[("aurora", m_region, ident.lower())] = (
                        "aurora", m_region, ident, source, writer is not None, (id(gc), id(m), "secondary"))
        return found

    def running(self, rep, outages):
        return (not rep.broken and rep.source is not None and rep.source_exists
                and rep.source[0] not in outages)

    def writing(self, rep):
        return rep.source is not None and self.writes.get((rep.source[0], rep.source[1].lower()), False)

    def target_steady(self, rep):
        return self.config["steady_lag"] if rep.steady is None else rep.steady

    # ---- the clock --------------------------------------------------------------------------
    def tick(self, now):
        """Integrates every replica's lag up to `now` under the state of the last tick, then
        refreshes that state from moto. Called with self.lock held."""
        dt = max(0.0, now - self.last_tick) / self.config["time_factor"]  # bed seconds
        self.last_tick = now
        outages = self.tick_outages  # as at the last tick, like the rest of the state
        grow, drain = self.config["lag_growth_rate"], self.config["lag_drain_rate"]
        for rep in self.replicas.values():
            if not rep.seen or not self.running(rep, outages) or dt == 0:
                continue
            target = self.target_steady(rep) if self.writing(rep) else 0.0
            if rep.lag < target:
                rep.lag = min(target, rep.lag + grow * dt)
            elif rep.lag > target:
                rep.lag = max(target, rep.lag - drain * dt)
        self.tick_outages = self.outages()
        found = self.discover()
        for key, rep in self.replicas.items():
            if key not in found:
                rep.seen = False
        for key, (kind, region, ident, source, exists, token) in found.items():
            rep = self.replicas.get(key)
            if rep is None:
                rep = self.replicas[key] = Replica(kind, region, ident)
            if not rep.seen or rep.token != token:
                if not rep.seeded:  # a new replica (or one again): starts in sync
                    rep.lag, rep.broken, rep.published = 0.0, False, None
                rep.seeded = False
            rep.id, rep.source, rep.source_exists, rep.token, rep.seen = ident, source, exists, token, True

    def run(self):
        while True:
            try:
                with self.lock:
                    now = time.time()
                    self.tick(now)
                    if now >= self.next_publish:
                        self.publish_all(now)
                        period = self.period_wall()
                        self.last_cadence = now
                        # On cadence; after a stall (or a longer period set), from now on.
                        self.next_publish = max(self.next_publish + period, now + period / 2)
                    wait = min(TICK, max(0.0, self.next_publish - time.time()))
            except Exception as e:  # keep publishing whatever a tick ran into
                print(f"replication tick failed: {e!r}", flush=True)
                wait = TICK
            self.wake.wait(wait)
            self.wake.clear()

    # ---- publishing ---------------------------------------------------------------------------
    def store(self, region, kind, ident, value, ts):
        metric, dimension, unit, _ = KINDS[kind]
        series = self.points.setdefault((region, metric, dimension, ident), deque())
        series.append((ts, value, unit))
        while series and series[0][0] < ts - RETENTION:
            series.popleft()
        return {"region": region, "identifier": ident, "kind": kind, "metric": metric,
                "dimension": dimension, "value": value, "unit": unit, "timestamp": ts,
                "time": iso_ms(ts)}

    def publish_all(self, now):
        """One datapoint per replica (running: its lag; not running: -1). Called with the lock."""
        with self.bed.state.lock:
            outages = set(self.bed.state.outages)
        ts = round(now, 3)
        out = []
        for rep in self.replicas.values():
            if not rep.seen or rep.region in outages:
                continue
            scale = KINDS[rep.kind][3]
            value = round(rep.lag * scale, 3) if self.running(rep, outages) else -1.0
            server = self.bed.postgres.get(rep.region, rep.id) if rep.kind == "rds" else None
            if server is not None:
                # Backed by a real standby (postgres.py): its own replay position says.
                try:
                    real = server.lag()
                except Exception:
                    real = -1.0  # the standby does not answer: no reading to trust
                if real is None:
                    continue
                value = round(real * scale, 3) if real >= 0 else -1.0
            rep.published = (value, ts)
            out.append(self.store(rep.region, rep.kind, rep.id, value, ts))
        return out

    # ---- control API ------------------------------------------------------------------------------
    def set_lag(self, p):
        """POST /_bed/lag: the replica's steady lag under load and its lag now, published at once."""
        seconds = float(p["seconds"])
        # A replica backed by PostgreSQL lags by its link's delay (postgres.py), now or when
        # it is created; its lag is then read from the standby, never set.
        self.bed.postgres.set_delay(p["region"], p["identifier"], seconds)
        if self.bed.postgres.get(p["region"], p["identifier"]) is not None:
            return {"identifier": p["identifier"], "link_delay": seconds, "postgres": True}
        kind = p.get("kind", "rds")
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r} (rds or aurora)")
        region, ident = p["region"], p["identifier"]
        with self.lock:
            now = time.time()
            self.tick(now)
            key = (kind, region, ident.lower())
            rep = self.replicas.get(key)
            if rep is None:
                rep = self.replicas[key] = Replica(kind, region, ident)
            rep.steady, rep.lag = seconds, seconds
            rep.seeded = not rep.seen  # kept when the replica appears
            point = self.store(region, kind, rep.id, round(seconds * KINDS[kind][3], 3), round(now, 3))
            if rep.seen:
                rep.published = (point["value"], point["timestamp"])
        return {"metric": point["metric"], "identifier": ident, "value": point["value"],
                "unit": point["unit"], "timestamp": point["timestamp"]}

    def set_writes(self, p):
        """POST /_bed/writes: whether a source instance (RDS) or writer cluster (Aurora) is written."""
        region, ident, writing = p["region"], p["identifier"], p["writing"]
        if not isinstance(writing, bool):
            raise ValueError("writing must be true or false")
        with self.lock:
            self.tick(time.time())
            self.writes[(region, ident.lower())] = writing
            followers = [r.id for r in self.replicas.values()
                         if r.seen and r.source and (r.source[0], r.source[1].lower()) == (region, ident.lower())]
        # A backed instance (postgres.py) is written for real while its writers run.
        real = self.bed.postgres.set_writing(region, ident, writing)
        return {"region": region, "identifier": ident, "writing": writing, "replicas": sorted(followers),
                "real_writer": real}

    def set_broken(self, p):
        """POST /_bed/replication: breaks or repairs one replica's replication."""
        region, ident, broken = p["region"], p["identifier"], p.get("broken", True)
        if not isinstance(broken, bool):
            raise ValueError("broken must be true or false")
        with self.lock:
            self.tick(time.time())
            reps = [r for (k, rg, i), r in self.replicas.items()
                    if rg == region and i == ident.lower() and r.seen and k == p.get("kind", k)]
            if not reps:
                raise ValueError(f"no replica {ident} in {region}")
            for rep in reps:
                rep.broken = broken
            return self.describe(reps[0], self.outages())

    def outages(self):
        with self.bed.state.lock:
            return set(self.bed.state.outages)

    def describe(self, rep, outages):
        published = None
        if rep.published is not None:
            published = {"value": rep.published[0], "timestamp": rep.published[1],
                         "time": iso_ms(rep.published[1])}
        return {"region": rep.region, "id": rep.id, "kind": rep.kind,
                "metric": KINDS[rep.kind][0],
                "source": {"region": rep.source[0], "id": rep.source[1]} if rep.source else None,
                "source_exists": rep.source_exists,
                "lag": round(rep.lag, 6), "steady_lag": self.target_steady(rep),
                "writing": self.writing(rep), "broken": rep.broken,
                "running": self.running(rep, outages), "region_down": rep.region in outages,
                "published": published}

    def list(self, _p=None):
        """GET /_bed/replication."""
        with self.lock:
            self.tick(time.time())
            outages = self.outages()
            reps = sorted((r for r in self.replicas.values() if r.seen),
                          key=lambda r: (r.kind, r.region, r.id))
            return {"config": dict(self.config),
                    "next_publish_in": max(0.0, self.next_publish - time.time()),
                    "writes": [{"region": r, "identifier": i, "writing": w}
                               for (r, i), w in sorted(self.writes.items())],
                    "replicas": [self.describe(r, outages) for r in reps]}

    def publish_now(self, _p=None):
        """POST /_bed/metrics/publish: every replica's datapoint now, off the cadence."""
        with self.lock:
            now = time.time()
            self.tick(now)
            return {"published": self.publish_all(now)}

    # ---- GetMetricData ---------------------------------------------------------------------------
    @staticmethod
    def query_params(params):
        """awsQuery form fields -> the JSON protocol's request shape."""
        queries = {}
        for key, value in params.items():
            m = re.fullmatch(r"MetricDataQueries\.member\.(\d+)\.(.+)", key)
            if not m:
                continue
            q = queries.setdefault(int(m.group(1)), {})
            rest = m.group(2)
            d = re.fullmatch(r"MetricStat\.Metric\.Dimensions\.member\.(\d+)\.(Name|Value)", rest)
            if d:
                dims = q.setdefault("MetricStat", {}).setdefault("Metric", {}).setdefault("_dims", {})
                dims.setdefault(int(d.group(1)), {})[d.group(2)] = value
                continue
            node = q
            parts = rest.split(".")
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = value
        out = []
        for _, q in sorted(queries.items()):
            metric = q.get("MetricStat", {}).get("Metric")
            if metric is not None and "_dims" in metric:
                metric["Dimensions"] = [v for _, v in sorted(metric.pop("_dims").items())]
            if "ReturnData" in q:
                q["ReturnData"] = q["ReturnData"].lower() != "false"
            out.append(q)
        return {"MetricDataQueries": out, "StartTime": params.get("StartTime"),
                "EndTime": params.get("EndTime"), "ScanBy": params.get("ScanBy")}

    def moto_points(self, region, metric, dims):
        """Datapoints clients put into AWS/RDS themselves (moto keeps them)."""
        from moto.cloudwatch.models import cloudwatch_backends
        backend = dict(safe_list(cloudwatch_backends[self.account].items)).get(region)
        if backend is None:
            return []
        out = []
        for md in list(backend.metric_data):
            if md.namespace != NAMESPACE or md.name != metric or not hasattr(md, "value"):
                continue
            if sorted((d.name, d.value) for d in md.dimensions) != dims:
                continue
            ts = md.timestamp
            if isinstance(ts, datetime):
                ts = (ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)).timestamp()
            out.append((float(ts), float(md.value), md.unit))
        return out

    @staticmethod
    def statistic(stat, values):
        if stat == "SampleCount":
            return float(len(values))
        if stat == "Sum":
            return float(sum(values))
        if stat == "Average":
            return sum(values) / len(values)
        if stat == "Minimum":
            return min(values)
        if stat.startswith("p"):
            ordered = sorted(values)
            rank = max(1, math.ceil(float(stat[1:]) / 100 * len(ordered)))
            return ordered[rank - 1]
        return max(values)  # Maximum (and anything else)

    def answer_query(self, region, q, start, end, descending):
        stat_spec = q["MetricStat"]
        metric = stat_spec["Metric"]
        name = metric["MetricName"]
        stat = stat_spec.get("Stat", "Maximum")
        period = max(1, int(float(stat_spec.get("Period", 60))))
        unit = stat_spec.get("Unit")
        dims = sorted((d["Name"], d["Value"]) for d in metric.get("Dimensions", []))
        points = []
        with self.lock:
            for (p_region, p_metric, p_dim, p_value), series in self.points.items():
                if p_region == region and p_metric == name and [(p_dim, p_value)] == dims:
                    points.extend(series)
        points.extend(self.moto_points(region, name, dims))
        points = [p for p in points if start <= p[0] < end and (unit is None or p[2] == unit)]
        if period == 1:  # one value per datapoint, stamped when it was published
            rows = sorted(((ts, self.statistic(stat, [v])) for ts, v, _ in points))
        else:  # period-aligned buckets stamped with their start, as CloudWatch
            buckets = {}
            for ts, v, _ in points:
                buckets.setdefault(math.floor(ts / period) * period, []).append(v)
            rows = sorted((float(b), self.statistic(stat, vs)) for b, vs in buckets.items())
        if descending:
            rows.reverse()
        return {"Id": q["Id"], "Label": q.get("Label") or f"{name} {stat}",
                "Timestamps": [ts for ts, _ in rows], "Values": [v for _, v in rows],
                "StatusCode": "Complete"}

    def get_metric_data(self, environ, start_response, region, params):
        """CloudWatch GetMetricData: AWS/RDS here, anything else by moto."""
        body = self.bed.read_body(environ)
        is_json = bool(environ.get("HTTP_X_AMZ_TARGET"))
        try:
            request = json.loads(body or b"{}") if is_json else self.query_params(params)
            queries = request.get("MetricDataQueries") or []
            start, end = parse_time(request["StartTime"]), parse_time(request["EndTime"])
            ours = (queries and start < end and all(
                "MetricStat" in q and q["MetricStat"]["Metric"].get("Namespace") == NAMESPACE
                and "MetricName" in q["MetricStat"]["Metric"] for q in queries))
        except (ValueError, KeyError, TypeError, AttributeError):
            ours = False
        if not ours:
            environ["wsgi.input"] = io.BytesIO(body)
            return self.bed.pass_through(start_response, *self.bed.call_moto(environ))
        descending = (request.get("ScanBy") or "TimestampDescending") != "TimestampAscending"
        results = [self.answer_query(region, q, start, end, descending) for q in queries
                   if q.get("ReturnData", True) is not False]
        request_id = f"bed-{int(time.time() * 1000)}"
        if is_json:
            for r in results:
                r["Timestamps"] = [round(ts, 3) for ts in r["Timestamps"]]
            data = json.dumps({"MetricDataResults": results})
            start_response("200 OK", [("Content-Type", "application/x-amz-json-1.0"),
                                      ("x-amzn-RequestId", request_id),
                                      ("Content-Length", str(len(data)))])
            return [data.encode()]
        members = []
        for r in results:
            stamps = "".join(f"<member>{iso_ms(ts)}</member>" for ts in r["Timestamps"])
            values = "".join(f"<member>{float(v)!r}</member>" for v in r["Values"])
            members.append(
                f"<member><Id>{xml_escape(r['Id'])}</Id><Label>{xml_escape(r['Label'])}</Label>"
                + (f"<Timestamps>{stamps}</Timestamps>" if stamps else "<Timestamps/>")
                + (f"<Values>{values}</Values>" if values else "<Values/>")
                + f"<StatusCode>{r['StatusCode']}</StatusCode></member>")
        xml = (f'<GetMetricDataResponse xmlns="{CW_NS}"><GetMetricDataResult><MetricDataResults>'
               + "".join(members)
               + "</MetricDataResults></GetMetricDataResult><ResponseMetadata>"
               f"<RequestId>{request_id}</RequestId></ResponseMetadata></GetMetricDataResponse>")
        data = xml.encode()
        start_response("200 OK", [("Content-Type", "text/xml"), ("x-amzn-RequestId", request_id),
                                  ("Content-Length", str(len(data)))])
        return [data]


def xml_escape(s):
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
