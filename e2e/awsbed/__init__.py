"""moto in server mode, extended with the disaster-recovery behaviour moto lacks.

A WSGI layer in front of moto's own dispatcher:
  * counts every call per (service, region, operation), so tests can assert that a
    mutating call happened exactly once;
  * injects faults per service/region/operation: throttling, 5xx, permanent rejections,
    latency, and whole regions becoming unreachable (the connection is closed unanswered);
  * RDS PromoteReadReplica takes a configurable time, shows `modifying`, then
    `available` with the replica link broken; promoting a non-replica is refused;
  * Aurora SwitchoverGlobalCluster / FailoverGlobalCluster change the writer after a
    delay (moto answers 500 for both). After a FailoverGlobalCluster the old writer leaves
    the global cluster; once its region answers, the bed takes the system snapshot AWS
    takes of the old volume (`rds:unplanned-global-failover-<cluster>-<time>`) and, after
    `rejoin_delay`, adds the old writer back as a secondary, as AWS does;
  * Route 53 GetChange reports PENDING for a configurable time after a change batch;
    health checks report per checker region as the bed says, and fail from every checker
    while their endpoint's region is lost (health.py);
  * Route 53 is as strict as AWS (route53.py): exact, atomic batches; PriorRequestNotComplete; 5 req/s;
  * replica lag evolves over bed time with the source's writes and is published to CloudWatch
    on a cadence, -1 when replication is not running (replication.py; AWS/RDS ReplicaLag,
    AuroraGlobalDBReplicationLag; GetMetricData for AWS/RDS is answered there).

The control API lives under /_bed/ on the same port; see CONTROL below.
"""

import functools
import io
import os
import itertools
import json
import random
import re
import socket
import tempfile
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from urllib.parse import parse_qs

from moto.core.responses import ActionResult
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from moto.rds import models as rds_models
from moto.rds import responses as rds_responses
from moto.rds.exceptions import RDSClientError

from . import app, health, postgres, replication, route53


def _describe_global_clusters(self):
    """moto ignores GlobalClusterIdentifier and lists every global cluster; AWS filters."""
    wanted = self.params.get("GlobalClusterIdentifier")
    clusters = self.global_backend.describe_global_clusters()
    if wanted:
        clusters = [c for c in clusters
                    if wanted.lower() == c.global_cluster_identifier or wanted == c.global_cluster_arn]
        if not clusters:
            raise RDSClientError("GlobalClusterNotFoundFault", f"Global cluster {wanted} not found.")
    return ActionResult({"GlobalClusters": clusters})


rds_responses.RDSResponse.describe_global_clusters = _describe_global_clusters

_create_read_replica = rds_models.RDSBackend.create_db_instance_read_replica


def _create_db_instance_read_replica(self, db_kwargs):
    """A cross-region replica gets its own region's groups, as on AWS: the ones named, else
    the region's defaults (default VPC and its security group, the engine's default parameter
    group). moto copies the source's and looks a named subnet group up in the source's region.
    What AWS refuses is refused before this (Bed.replica_refusal)."""
    from moto.ec2.models import ec2_backends
    from moto.kms.models import kms_backends
    source = db_kwargs.get("source_db_instance_identifier", "")
    parts = source.split(":")
    cross_region = len(parts) == 7 and parts[0] == "arn" and parts[3] != self.region_name
    subnet_group = db_kwargs.pop("db_subnet_group_name", None) if cross_region else None
    replica = _create_read_replica(self, db_kwargs)
    if not cross_region:
        return replica
    ec2 = ec2_backends[self.account_id][self.region_name]
    if subnet_group:
        replica.db_subnet_group_name = subnet_group
        vpc = replica.db_subnet_group.vpc_id
    else:
        replica._db_subnet_group_name = None
        replica.__dict__.pop("db_subnet_group", None)
        vpc = ec2.default_vpc.id
    replica.db_parameter_group_name = db_kwargs.get("db_parameter_group_name")
    groups = list(db_kwargs.get("vpc_security_group_ids") or [])
    replica.vpc_security_group_ids = groups or [ec2.get_default_security_group(vpc).id]
    if replica.storage_encrypted and db_kwargs.get("kms_key_id"):
        replica.kms_key_id = kms_backends[self.account_id][self.region_name].describe_key(
            db_kwargs["kms_key_id"]).arn
    replica.availability_zone = f"{self.region_name}a"
    return replica


rds_models.RDSBackend.create_db_instance_read_replica = _create_db_instance_read_replica

# The fleet of real PostgreSQL servers (postgres.py): a backed instance's endpoint is its server.
FLEETS = []
_address = rds_models.DBInstance.address


def _backed_address(self):
    for fleet in FLEETS:
        if fleet.get(self.region, self.db_instance_identifier) is not None:
            return "127.0.0.1"
    return _address.fget(self)


rds_models.DBInstance.address = property(_backed_address)

ACCOUNT = "123456789012"
# RDS throttles each account in each region: 12 requests/s sustained, bursts of 300.
RDS_RATE, RDS_BURST = 12.0, 300.0
GLOBAL_SERVICES = {"route53"}
R53_NS = "https://route53.amazonaws.com/doc/2013-04-01/"
RDS_NS = "http://rds.amazonaws.com/doc/2014-10-31/"

ROUTE53_OPS = [
    ("POST", r"/hostedzone/[^/]+/rrset/?$", "ChangeResourceRecordSets"),
    ("GET", r"/hostedzone/[^/]+/rrset/?$", "ListResourceRecordSets"),
    ("GET", r"/change/[^/]+$", "GetChange"),
    ("GET", r"/healthcheck/[^/]+/status$", "GetHealthCheckStatus"),
    ("GET", r"/healthcheck/[^/]+$", "GetHealthCheck"),
    ("POST", r"/healthcheck/[^/]+$", "UpdateHealthCheck"),
    ("DELETE", r"/healthcheck/[^/]+$", "DeleteHealthCheck"),
    ("POST", r"/healthcheck/?$", "CreateHealthCheck"),
    ("GET", r"/healthcheck/?$", "ListHealthChecks"),
    ("GET", r"/hostedzone/[^/]+$", "GetHostedZone"),
    ("DELETE", r"/hostedzone/[^/]+$", "DeleteHostedZone"),
    ("POST", r"/hostedzone/?$", "CreateHostedZone"),
    ("GET", r"/hostedzone/?$", "ListHostedZones"),
]

READ_PREFIXES = ("Describe", "List", "Get", "BatchGet")


def is_mutating(operation):
    return not operation.startswith(READ_PREFIXES)


def described_instances(params):
    """The instances a DescribeDBInstances names: by identifier, or by a db-instance-id filter."""
    if "DBInstanceIdentifier" in params:
        return [params["DBInstanceIdentifier"]]
    names = [k for k, v in params.items()
             if re.fullmatch(r"Filters\.Filter\.\d+\.Name", k) and v == "db-instance-id"]
    return [v for name in names for k, v in params.items()
            if k.startswith(name[: -len("Name")] + "Values.Value.")]


class BedState:
    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        self.calls = Counter()
        # Calls admitted per (service, whole second of the clock): the peak rate per service.
        self.calls_per_second = Counter()
        self.faults = []
        self.fault_ids = itertools.count(1)
        self.outages = set()
        self.promotion_delay = 3.0
        self.switchover_delay = 3.0
        self.dns_sync_delay = 1.0
        # A new read replica shows `creating`, a deleted instance `deleting`, this long.
        self.replica_create_delay = 2.0
        self.delete_delay = 1.0
        self.health = health.HealthState()  # per-checker-region health check reports (health.py)
        self.changes = {}  # change id -> (submitted, insync_at)
        self.change_ids = itertools.count(1)
        self.promoting = set()  # (region, db id)
        self.global_in_progress = set()
        # Old writers of an unplanned global failover, until AWS re-adds them:
        # (id of global cluster, id of member) -> {"gc", "old", "region", "snapshot_at"}.
        self.detached = {}
        self.rejoin_delay = 3.0
        self.waits = {}  # (kind, id) -> requested/done/noticed times and describes between
        self.rng = random.Random(42)
        self.route53 = route53.Route53State()  # rate limit (5/s), throttled calls, zone per change
        # RDS's account limit, per region (AWS: 12 requests/s sustained, bursts of 300).
        self.rds_limit = (RDS_RATE, RDS_BURST)
        self.rds_buckets = {}  # region -> route53.TokenBucket
        self.rds_throttled = Counter()  # (region, operation) -> throttled calls
        # Back RDS instances created from now on with real PostgreSQL (postgres.py).
        self.postgres = False


def xml_escape(s):
    return (str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))


class Bed:
    def __init__(self):
        self.state = BedState()
        self.moto_lock = threading.RLock()  # moto's state, between requests and timers
        self.moto = DomainDispatcherApplication(create_backend_app)
        # moto finds a request's backend from its host on every call: ~180 stat calls and
        # a regex per service, ~2 ms of the emulator's time per call, served one at a time.
        # The answer depends on the host alone, so it is remembered.
        self.moto.get_backend_for_host = functools.lru_cache(maxsize=1024)(
            self.moto.get_backend_for_host)
        # (access key, signing service, operation) -> calls, for the whole emulator life:
        # resets leave it alone, so the IAM policy test sees every call of the e2e suite.
        self.operations_by_key = Counter()
        self.postgres = postgres.Fleet(os.environ.get("DROVER_PG_DIR") or tempfile.mkdtemp(prefix="drover-pg-"),
                                       os.environ.get("DROVER_SANDBOX_PIDS"))
        FLEETS.append(self.postgres)
        self.replication = replication.Replication(self, ACCOUNT)  # lag model + publisher thread

    # ---- request classification -------------------------------------------------
    @staticmethod
    def scope(environ):
        auth = environ.get("HTTP_AUTHORIZATION", "")
        m = re.search(r"Credential=[^/]+/\d+/([^/]+)/([^/]+)/aws4_request", auth)
        if not m:
            return None, None
        return m.group(2), m.group(1)

    def admit_rds(self, region, operation):
        """Takes a token of the region's RDS bucket; False (and counted) when throttled."""
        with self.state.lock:
            bucket = self.state.rds_buckets.get(region)
            if bucket is None:
                bucket = self.state.rds_buckets[region] = route53.TokenBucket(*self.state.rds_limit)
            if bucket.take():
                return True
            self.state.rds_throttled[(region, operation)] += 1
            return False

    def throttled_view(self):
        """Route 53's throttled calls (route53.throttled_view) and RDS's, by region."""
        view = route53.throttled_view(self.state)
        with self.state.lock:
            rds = sorted(self.state.rds_throttled.items())
            view["rds_rate"], view["rds_burst"] = self.state.rds_limit
        view["throttled"] += [{"service": "rds", "region": r, "operation": op, "count": n}
                              for (r, op), n in rds]
        view["total"] += sum(n for _, n in rds)
        return view

    @staticmethod
    def access_key(environ):
        m = re.search(r"Credential=([^/]+)/", environ.get("HTTP_AUTHORIZATION", ""))
        return m.group(1) if m else ""

    @staticmethod
    def read_body(environ):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        return body

    def operation(self, service, environ, body):
        if service == "route53":
            path = re.sub(r"^/\d{4}-\d{2}-\d{2}", "", environ.get("PATH_INFO", ""))
            method = environ.get("REQUEST_METHOD", "GET")
            for m, pattern, op in ROUTE53_OPS:
                if m == method and re.search(pattern, path):
                    return op, {}
            return f"{method} {path}", {}
        target = environ.get("HTTP_X_AMZ_TARGET")
        if target:
            return target.split(".")[-1], {}
        params = parse_qs(environ.get("QUERY_STRING", ""))
        if body:
            params.update(parse_qs(body.decode("utf-8", "replace")))
        flat = {k: v[0] for k, v in params.items()}
        return flat.get("Action", "Unknown"), flat

    # ---- responses ----------------------------------------------------------------
    @staticmethod
    def respond(start_response, status, body, content_type="text/xml"):
        data = body.encode() if isinstance(body, str) else body
        start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(data)))])
        return [data]

    def error(self, start_response, service, status, code, message):
        if service == "ecr":
            body = json.dumps({"__type": code, "message": message})
            return self.respond(start_response, status, body, "application/x-amz-json-1.1")
        ns = R53_NS if service == "route53" else RDS_NS
        kind = "Sender" if status.startswith("4") else "Receiver"
        body = (f'<?xml version="1.0"?><ErrorResponse xmlns="{ns}"><Error><Type>{kind}</Type>'
                f"<Code>{code}</Code><Message>{xml_escape(message)}</Message></Error>"
                f"<RequestId>bed-{int(time.time() * 1000)}</RequestId></ErrorResponse>")
        return self.respond(start_response, status, body)

    def call_moto(self, environ):
        captured = {}

        def capture(status, headers, exc_info=None):
            captured["status"] = status
            captured["headers"] = headers
            return lambda _data: None

        # moto's backends are plain dicts: a describe iterating them while a timer thread
        # deletes an instance fails ("OrderedDict mutated during iteration"). One at a time.
        with self.moto_lock:
            chunks = self.moto(environ, capture)
            try:
                body = b"".join(chunks)
            finally:
                if hasattr(chunks, "close"):
                    chunks.close()
        return captured["status"], captured["headers"], body

    def pass_through(self, start_response, status, headers, body):
        headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
        headers.append(("Content-Length", str(len(body))))
        start_response(status, headers)
        return [body]

    # ---- faults -------------------------------------------------------------------
    def pick_fault(self, service, region, operation):
        s = self.state
        with s.lock:
            if region in s.outages and service not in GLOBAL_SERVICES:
                return {"kind": "unreachable"}
            for fault in s.faults:
                if fault.get("service") not in (None, service):
                    continue
                if fault.get("region") not in (None, region):
                    continue
                if fault.get("operation") not in (None, operation):
                    continue
                if fault.get("count") is not None:
                    if fault["count"] <= 0:
                        continue
                    fault["count"] -= 1
                elif s.rng.random() >= fault.get("rate", 1.0):
                    continue
                fault["hits"] = fault.get("hits", 0) + 1
                return fault
        return None

    @staticmethod
    def drop_connection(environ):
        sock = environ.get("werkzeug.socket")
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # ---- WSGI entry -----------------------------------------------------------------
    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == "/_bed/app":
            return app.serve(self, environ, start_response)
        if path.startswith("/_bed/"):
            return self.control(environ, start_response)
        body = self.read_body(environ)
        service, region = self.scope(environ)
        if service is None:
            return self.moto(environ, start_response)
        operation, params = self.operation(service, environ, body)
        # Over the account's Route 53 rate the call never reaches the service: it is counted
        # in /_bed/throttled, not in /_bed/calls, so "sent exactly once" counts effects.
        if service == "route53" and not route53.admit(self.state, operation):
            return self.error(start_response, service, "400 Bad Request", "Throttling", "Rate exceeded")
        if service == "rds" and not self.admit_rds(region, operation):
            return self.error(start_response, service, "400 Bad Request", "Throttling", "Rate exceeded")
        with self.state.lock:
            self.state.calls[(service, region, operation)] += 1
            self.state.calls_per_second[(service, int(time.monotonic()))] += 1
            self.operations_by_key[(self.access_key(environ), service, operation)] += 1

        fault = self.pick_fault(service, region, operation)
        if fault:
            kind = fault["kind"]
            if kind == "unreachable":
                self.drop_connection(environ)
                return self.respond(start_response, "503 Service Unavailable", "")
            if kind == "latency":
                time.sleep(fault.get("latency_ms", 1000) / 1000)
            elif kind == "throttle":
                code = "ThrottlingException" if service == "ecr" else "Throttling"
                return self.error(start_response, service, "400 Bad Request", code, "Rate exceeded")
            elif kind == "error5xx":
                return self.error(start_response, service, "503 Service Unavailable",
                                  "ServiceUnavailable", "Service is unavailable (injected)")
            elif kind == "reject":
                # A permanent client error, e.g. Route 53 InvalidChangeBatch.
                return self.error(start_response, service, "400 Bad Request",
                                  fault.get("code") or "InvalidInput", "Rejected (injected)")

        if operation == "DescribeDBInstances":
            for instance in described_instances(params):
                self.wait_observed(("rds", region, instance))
        elif operation == "DescribeGlobalClusters" and "GlobalClusterIdentifier" in params:
            self.wait_observed(("aurora", params["GlobalClusterIdentifier"].lower()))
        handler = getattr(self, f"on_{service}_{operation}", None)
        if handler is not None:
            return handler(environ, start_response, region, params)
        return self.pass_through(start_response, *self.call_moto(environ))

    # ---- wait accounting (for the benchmark) --------------------------------------------
    def wait_started(self, key):
        with self.state.lock:
            self.state.waits[key] = {"requested_at": time.time(), "done_at": None,
                                     "noticed_at": None, "describes": 0}

    def wait_done(self, key, at=None):
        with self.state.lock:
            if key in self.state.waits:
                self.state.waits[key]["done_at"] = at if at is not None else time.time()

    def wait_observed(self, key):
        """A describe of a waited-on resource: counts it, and notes the first one after done."""
        now = time.time()
        with self.state.lock:
            w = self.state.waits.get(key)
            if w is None or w["noticed_at"] is not None:
                return
            w["describes"] += 1
            if w["done_at"] is not None and now >= w["done_at"]:
                w["noticed_at"] = now

    # ---- RDS ------------------------------------------------------------------------
    @staticmethod
    def rds_backend(region):
        from moto.rds.models import rds_backends
        return rds_backends[ACCOUNT][region]

    def on_rds_PromoteReadReplica(self, environ, start_response, region, params):
        db_id = params.get("DBInstanceIdentifier", "")
        backend = self.rds_backend(region)
        db = backend.databases.get(db_id)
        if db is None:
            return self.error(start_response, "rds", "404 Not Found", "DBInstanceNotFound",
                              f"DBInstance {db_id} not found.")
        with self.state.lock:
            if (region, db_id) in self.state.promoting or db.status != "available":
                return self.error(start_response, "rds", "400 Bad Request", "InvalidDBInstanceState",
                                  f"DB Instance {db_id} is in state {db.status}.")
            if not db.is_replica:
                return self.error(start_response, "rds", "400 Bad Request", "InvalidDBInstanceState",
                                  "DB Instance is not a read replica.")
            self.state.promoting.add((region, db_id))
            delay = self.state.promotion_delay
        status, headers, body = self.call_moto(environ)
        if status.startswith("200"):
            db.is_replica = True  # moto cleared it; the link stays until promotion completes
            db.status = "modifying"
            self.wait_started(("rds", region, db_id))
            body = body.replace(b"<DBInstanceStatus>available</DBInstanceStatus>",
                                b"<DBInstanceStatus>modifying</DBInstanceStatus>")
            threading.Timer(delay, self.finish_promotion, args=(region, db_id)).start()
        else:
            with self.state.lock:
                self.state.promoting.discard((region, db_id))
        return self.pass_through(start_response, status, headers, body)

    def finish_promotion(self, region, db_id):
        backend = self.rds_backend(region)
        db = backend.databases.get(db_id)
        with self.state.lock:
            self.state.promoting.discard((region, db_id))
        if db is None:
            return
        source_id = db.source_db_instance_identifier
        if source_id:
            try:
                source = backend.find_db_from_id(source_id)
                for ref in (db.db_instance_arn, db.db_instance_identifier):
                    if ref in source.replicas:
                        source.replicas.remove(ref)
            except Exception:
                pass  # the source may be gone (region lost); the link breaks all the same
        try:
            self.postgres.promote(region, db_id)  # real: writable before it shows available
        except Exception as e:
            print(f"promoting PostgreSQL of {db_id} failed: {e}", flush=True)
            db.status = "failed"
            return
        db.source_db_instance_identifier = None
        db.is_replica = False
        db.status = "available"
        self.wait_done(("rds", region, db_id))

    # ---- RDS re-protection: replicas take time to create, instances to delete --------
    def replica_source(self, params):
        """The source instance of a CreateDBInstanceReadReplica and its region, or (None, None)."""
        ref = params.get("SourceDBInstanceIdentifier", "")
        parts = ref.split(":")
        if len(parts) == 7 and parts[0] == "arn":
            source_region, source_id = parts[3], parts[6]
        else:
            source_region, source_id = None, ref
        for backend_region, backend in self.rds_backends_by_region():
            if source_region not in (None, backend_region):
                continue
            db = backend.databases.get(source_id) or backend.databases.get(source_id.lower())
            if db is not None:
                return db, backend_region
        return None, None

    @staticmethod
    def rds_backends_by_region():
        from moto.rds.models import rds_backends
        return list(rds_backends[ACCOUNT].items())

    @staticmethod
    def listed(params, prefix):
        """The members of a query-protocol list parameter, in order."""
        keys = [k for k in params if k.startswith(prefix + ".")]
        return [params[k] for k in sorted(keys, key=lambda k: int(k.rsplit(".", 1)[-1]))]

    @staticmethod
    def takes_parameter_group(engine):
        """Whether CreateDBInstanceReadReplica takes DBParameterGroupName for a cross-Region
        replica of `engine` (AWS: MySQL, Oracle, Db2; not PostgreSQL, MariaDB, SQL Server)."""
        return engine == "mysql" or engine.startswith(("oracle-", "db2-"))

    def replica_refusal(self, region, params):
        """Why AWS would refuse this CreateDBInstanceReadReplica: (status, code, message), or
        None. moto checks none of it, and copies the source's groups across regions."""
        from moto.ec2.models import ec2_backends
        from moto.kms.models import kms_backends
        backend, ec2 = self.rds_backend(region), ec2_backends[ACCOUNT][region]
        source, source_region = self.replica_source(params)
        if source is None:
            return None  # moto answers DBInstanceNotFound
        subnet_group = params.get("DBSubnetGroupName")
        if subnet_group and subnet_group not in backend.subnet_groups:
            return ("404 Not Found", "DBSubnetGroupNotFoundFault", f"DBSubnetGroup {subnet_group} not found.")
        parameter_group = params.get("DBParameterGroupName")
        cross_region = source_region != region
        if parameter_group and cross_region and not self.takes_parameter_group(source.engine):
            # AWS takes one for a cross-Region replica of MySQL, Oracle and Db2 only; the
            # others get their engine's default group in the replica's region.
            return ("400 Bad Request", "InvalidParameterCombination",
                    f"DBParameterGroupName is not supported for a cross-Region read replica of "
                    f"a {source.engine} DB instance.")
        if (parameter_group and not parameter_group.startswith("default.")
                and parameter_group not in backend.db_parameter_groups):
            return ("404 Not Found", "DBParameterGroupNotFound", f"DBParameterGroup not found: {parameter_group}")
        option_group = params.get("OptionGroupName")
        if option_group and not option_group.startswith("default:") and option_group not in backend.option_groups:
            return ("404 Not Found", "OptionGroupNotFoundFault",
                    f"Specified OptionGroupName: {option_group} not found.")
        vpc = backend.subnet_groups[subnet_group].vpc_id if subnet_group else ec2.default_vpc.id
        for sg_id in self.listed(params, "VpcSecurityGroupIds.VpcSecurityGroupId"):
            sg = ec2.get_security_group_from_id(sg_id)
            if sg is None:
                return ("400 Bad Request", "InvalidParameterValue",
                        f"Invalid security group , groupId= {sg_id}, groupName=.")
            if sg.vpc_id != vpc:
                return ("400 Bad Request", "InvalidParameterCombination",
                        f"The DB instance and EC2 security group are in different VPCs. "
                        f"The DB instance is in {vpc} and the EC2 security group is in {sg.vpc_id}")
        key = params.get("KmsKeyId")
        if cross_region and source.storage_encrypted and not key:
            return ("400 Bad Request", "InvalidParameterCombination",
                    "Cannot create a cross region unencrypted read replica from encrypted source.")
        if key:
            # KMS keys are regional: a key of another region is not found in this one.
            key_region = key.split(":")[3] if key.startswith("arn:") else region
            try:
                found = key_region == region and kms_backends[ACCOUNT][region].describe_key(key)
            except Exception:
                found = None
            if not found:
                return ("400 Bad Request", "KMSKeyNotAccessibleFault",
                        f"Specified KMS key [{key}] does not exist, is not enabled or you do not "
                        "have permissions to access it.")
        return None

    def on_rds_CreateDBInstanceReadReplica(self, environ, start_response, region, params):
        db_id = params.get("DBInstanceIdentifier", "")
        if self.rds_backend(region).databases.get(db_id) is not None:
            return self.error(start_response, "rds", "400 Bad Request", "DBInstanceAlreadyExists",
                              f"DB instance already exists: {db_id}")
        refusal = self.replica_refusal(region, params)
        if refusal is not None:
            return self.error(start_response, "rds", *refusal)
        status, headers, body = self.call_moto(environ)  # placed by _create_db_instance_read_replica
        db = self.rds_backend(region).databases.get(db_id)
        if status.startswith("200") and db is not None:
            db.status = "creating"
            body = re.sub(rb"<DBInstanceStatus>[^<]*</DBInstanceStatus>",
                          b"<DBInstanceStatus>creating</DBInstanceStatus>", body)
            with self.state.lock:
                delay = self.state.replica_create_delay
                backed = self.state.postgres
            source, source_region = self.replica_source(params)
            server = source and self.postgres.get(source_region, source.db_instance_identifier)
            if backed and server is not None:
                threading.Thread(target=self.create_standby, daemon=True,
                                 args=(db, region, db_id, server, time.monotonic() + delay)).start()
            else:
                threading.Timer(delay, self.finish_creating, args=(db,)).start()
        return self.pass_through(start_response, status, headers, body)

    @staticmethod
    def finish_creating(db):
        if db.status == "creating":
            db.status = "available"

    def create_standby(self, db, region, db_id, source, ready_at):
        """A real streaming standby of `source`; the instance is available once it streams."""
        try:
            server = self.postgres.create_replica(region, db_id, source, self.postgres.delay_for(region, db_id))
        except Exception as e:
            print(f"creating the PostgreSQL standby {db_id} failed: {e}", flush=True)
            db.status = "failed"
            return
        db.port = server.port
        # Available once it streams, as AWS shows a replica only when it replicates.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                lag = server.lag()  # None until it replays a commit, -1 while not streaming
            except Exception:
                lag = None
            if lag is not None and lag >= 0:
                break
            time.sleep(0.1)
        time.sleep(max(0.0, ready_at - time.monotonic()))
        self.finish_creating(db)

    def on_rds_CreateDBInstance(self, environ, start_response, region, params):
        status, headers, body = self.call_moto(environ)
        with self.state.lock:
            backed = self.state.postgres
        db_id = params.get("DBInstanceIdentifier", "")
        db = self.rds_backend(region).databases.get(db_id)
        if backed and status.startswith("200") and db is not None and db.engine.startswith("postgres"):
            try:
                server = self.postgres.create_primary(region, db_id)
            except Exception as e:
                with self.moto_lock:
                    self.rds_backend(region).delete_db_instance(db_id, skip_final_snapshot=True)
                return self.error(start_response, "rds", "500 Internal Server Error", "InternalFailure",
                                  f"the bed could not start PostgreSQL for {db_id}: {e}")
            db.port = server.port
            body = re.sub(rb"<Address>[^<]*</Address>", b"<Address>127.0.0.1</Address>", body)
            body = re.sub(rb"<Port>\d+</Port>", f"<Port>{server.port}</Port>".encode(), body)
        return self.pass_through(start_response, status, headers, body)

    def on_rds_DeleteDBInstance(self, environ, start_response, region, params):
        db_id = params.get("DBInstanceIdentifier", "")
        backend = self.rds_backend(region)
        db = backend.databases.get(db_id)
        skip = params.get("SkipFinalSnapshot", "false").lower() == "true"
        snapshot = params.get("FinalDBSnapshotIdentifier")
        if db is None:
            return self.error(start_response, "rds", "404 Not Found", "DBInstanceNotFound",
                              f"DBInstance {db_id} not found.")
        if not skip and not snapshot:
            return self.error(start_response, "rds", "400 Bad Request", "InvalidParameterCombination",
                              "FinalDBSnapshotIdentifier is required unless SkipFinalSnapshot is specified.")
        if db.status not in ("available", "stopped", "failed", "storage-full"):
            return self.error(start_response, "rds", "400 Bad Request", "InvalidDBInstanceState",
                              f"Instance {db_id} is in state {db.status}.")
        if snapshot and not skip and db.is_replica:
            return self.error(start_response, "rds", "400 Bad Request", "InvalidParameterCombination",
                              "FinalDBSnapshotIdentifier can not be specified when deleting a replica instance")
        if snapshot and snapshot in backend.database_snapshots:
            return self.error(start_response, "rds", "400 Bad Request", "DBSnapshotAlreadyExists",
                              f"Cannot create the snapshot because a snapshot with the identifier {snapshot} already exists.")
        db.status = "deleting"
        with self.state.lock:
            delay = self.state.delete_delay
        threading.Timer(delay, self.finish_deleting, args=(region, db_id, snapshot, skip)).start()
        body = (f'<DeleteDBInstanceResponse xmlns="{RDS_NS}"><DeleteDBInstanceResult><DBInstance>'
                f"<DBInstanceIdentifier>{xml_escape(db_id)}</DBInstanceIdentifier>"
                f"<DBInstanceStatus>deleting</DBInstanceStatus></DBInstance></DeleteDBInstanceResult>"
                f"<ResponseMetadata><RequestId>bed-{int(time.time() * 1000)}</RequestId></ResponseMetadata>"
                f"</DeleteDBInstanceResponse>")
        return self.respond(start_response, "200 OK", body)

    def finish_deleting(self, region, db_id, snapshot, skip):
        backend = self.rds_backend(region)
        try:
            with self.moto_lock:
                backend.delete_db_instance(db_id, final_db_snapshot_identifier=snapshot,
                                           skip_final_snapshot=skip)
        except Exception:
            pass  # deleted meanwhile: nothing left to do
        self.postgres.delete(region, db_id)

    def on_rds_ModifyDBInstance(self, environ, start_response, region, params):
        db_id = params.get("DBInstanceIdentifier", "")
        to = params.get("NewDBInstanceIdentifier")
        backend = self.rds_backend(region)
        db = backend.databases.get(db_id)
        if to and db is not None:
            # As AWS: an instance is renamed only when available, and never onto another.
            if backend.databases.get(to) is not None:
                return self.error(start_response, "rds", "400 Bad Request", "DBInstanceAlreadyExists",
                                  f"DB instance already exists: {to}")
            if db.status != "available":
                return self.error(start_response, "rds", "400 Bad Request", "InvalidDBInstanceState",
                                  f"Instance {db_id} is in state {db.status}; it cannot be renamed.")
        status, headers, body = self.call_moto(environ)
        if to and status.startswith("200"):
            self.postgres.rename(region, db_id, to)
        return self.pass_through(start_response, status, headers, body)

    # ---- Aurora global ----------------------------------------------------------------
    def find_global_cluster(self, identifier):
        from moto.rds.models import rds_backends
        for backend in rds_backends[ACCOUNT].values():
            gc = backend.global_clusters.get(identifier.lower()) if hasattr(backend, "global_clusters") else None
            if gc is not None:
                return gc
        return None

    def global_change(self, start_response, params, action, failing):
        gc_id = params.get("GlobalClusterIdentifier", "")
        target = params.get("TargetDbClusterIdentifier", "")
        gc = self.find_global_cluster(gc_id)
        if gc is None:
            return self.error(start_response, "rds", "404 Not Found", "GlobalClusterNotFoundFault",
                              f"Global cluster {gc_id} not found.")
        member = next((m for m in gc.members if target in (m.db_cluster_arn, m.db_cluster_identifier)), None)
        if member is None:
            return self.error(start_response, "rds", "400 Bad Request", "InvalidGlobalClusterStateFault",
                              f"{target} is not a member of global cluster {gc_id}.")
        with self.state.lock:
            if gc_id in self.state.global_in_progress:
                return self.error(start_response, "rds", "400 Bad Request", "InvalidGlobalClusterStateFault",
                                  f"Global cluster {gc_id} is already {gc.status}.")
            if member.is_writer:
                return self.error(start_response, "rds", "400 Bad Request", "InvalidGlobalClusterStateFault",
                                  f"{target} is already the writer of {gc_id}.")
            self.state.global_in_progress.add(gc_id)
            delay = self.state.switchover_delay
        gc.status = "failing-over" if failing else "switching-over"
        self.wait_started(("aurora", gc.global_cluster_identifier))
        threading.Timer(delay, self.finish_global_change, args=(gc, gc_id, member, failing)).start()
        body = (f'<{action}Response xmlns="{RDS_NS}"><{action}Result><GlobalCluster>'
                f"<GlobalClusterIdentifier>{xml_escape(gc.global_cluster_identifier)}</GlobalClusterIdentifier>"
                f"<GlobalClusterArn>{xml_escape(gc.global_cluster_arn)}</GlobalClusterArn>"
                f"<Status>{gc.status}</Status><Engine>{xml_escape(gc.engine)}</Engine>"
                f"</GlobalCluster></{action}Result><ResponseMetadata><RequestId>bed</RequestId>"
                f"</ResponseMetadata></{action}Response>")
        return self.respond(start_response, "200 OK", body)

    def finish_global_change(self, gc, gc_id, new_writer, failing):
        old = next((m for m in gc.members if m.is_writer and m is not new_writer), None)
        for m in gc.members:
            m.is_writer = m is new_writer
        if failing and old is not None:
            # As AWS: a global failover (AllowDataLoss) leaves the old primary out of the
            # global cluster; it rejoins as a secondary only after its region recovers.
            gc.members.remove(old)
            with self.state.lock:
                self.state.detached[(id(gc), id(old))] = {
                    "gc": gc, "old": old, "snapshot_at": None,
                    "region": replication.arn_region_id(old.db_cluster_arn, "")[0]}
            threading.Timer(0.2, self.rejoin_detached).start()
        gc.status = "available"
        with self.state.lock:
            self.state.global_in_progress.discard(gc_id)
        self.wait_done(("aurora", gc.global_cluster_identifier))

    def rejoin_detached(self):
        """Brings back the old writers of unplanned global failovers whose region answers:
        first the system snapshot of the old volume, then, `rejoin_delay` later, membership
        as a secondary. Re-arms itself while any is left."""
        now = time.time()
        with self.state.lock:
            if not self.state.detached:
                return
            outages = set(self.state.outages)
            delay = self.state.rejoin_delay
            entries = list(self.state.detached.items())
        for key, entry in entries:
            gc, old = entry["gc"], entry["old"]
            if entry["region"] in outages:
                continue
            if entry["snapshot_at"] is None:
                stamp = datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%d-%H-%M")
                name = f"rds:unplanned-global-failover-{old.db_cluster_identifier}-{stamp}"
                try:
                    with self.moto_lock:
                        self.rds_backend(entry["region"]).create_auto_cluster_snapshot(
                            old.db_cluster_identifier, name)
                except Exception:
                    pass  # the cluster was deleted, or reset: AWS only attempts the snapshot
                entry["snapshot_at"] = now
            elif now - entry["snapshot_at"] >= delay:
                cluster_left = self.rds_backend(entry["region"]).clusters.get(old.db_cluster_identifier)
                if cluster_left is old and old not in gc.members:
                    old.is_writer = False
                    with self.moto_lock:
                        gc.members.append(old)
                with self.state.lock:
                    self.state.detached.pop(key, None)
        with self.state.lock:
            left = bool(self.state.detached)
        if left:
            threading.Timer(0.2, self.rejoin_detached).start()

    def on_rds_SwitchoverGlobalCluster(self, environ, start_response, region, params):
        return self.global_change(start_response, params, "SwitchoverGlobalCluster", failing=False)

    def on_rds_FailoverGlobalCluster(self, environ, start_response, region, params):
        # As AWS: AllowDataLoss makes it a global failover; without it (or with Switchover)
        # it is a switchover; both together are refused.
        allow = params.get("AllowDataLoss", "false").lower() == "true"
        switch = params.get("Switchover", "false").lower() == "true"
        if allow and switch:
            return self.error(start_response, "rds", "400 Bad Request", "InvalidParameterCombination",
                              "Cannot specify both AllowDataLoss and Switchover.")
        return self.global_change(start_response, params, "FailoverGlobalCluster", failing=allow)

    # ---- Route 53 ---------------------------------------------------------------------
    def on_route53_ChangeResourceRecordSets(self, environ, start_response, region, params):
        # Validated and applied atomically in route53.py; records the change in state.changes/waits.
        return route53.change_resource_record_sets(self, environ, start_response, region)

    def on_route53_GetChange(self, environ, start_response, region, params):
        change_id = environ.get("PATH_INFO", "").rstrip("/").split("/")[-1]
        with self.state.lock:
            change = self.state.changes.get(change_id)
        if change is None:
            return self.error(start_response, "route53", "404 Not Found", "NoSuchChange",
                              f"A change with the specified change ID does not exist: {change_id}")
        submitted, insync_at = change
        self.wait_observed(("dns", change_id))
        status = "INSYNC" if time.time() >= insync_at else "PENDING"
        stamp = datetime.fromtimestamp(submitted, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        body = (f'<?xml version="1.0"?><GetChangeResponse xmlns="{R53_NS}"><ChangeInfo>'
                f"<Id>/change/{change_id}</Id><Status>{status}</Status>"
                f"<SubmittedAt>{stamp}</SubmittedAt></ChangeInfo></GetChangeResponse>")
        return self.respond(start_response, "200 OK", body)

    def on_route53_GetHealthCheckStatus(self, environ, start_response, region, params):
        # Per checker region, as the bed decides; outages and unknown IDs as AWS (health.py).
        return health.status(self, environ, start_response, route53.account_of(environ))

    # ---- control API --------------------------------------------------------------------
    def control(self, environ, start_response):
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "")[len("/_bed"):]
        raw = self.read_body(environ)
        try:
            payload = json.loads(raw) if raw else {}
        except ValueError as e:
            return self.json(start_response, {"error": f"invalid JSON: {e}"}, "400 Bad Request")
        handler = CONTROL.get((method, path))
        if handler is None:
            return self.json(start_response, {"error": f"no control endpoint {method} {path}",
                                              "endpoints": sorted(f"{m} /_bed{p}" for m, p in CONTROL)},
                             "404 Not Found")
        try:
            return self.json(start_response, handler(self, payload))
        except (KeyError, ValueError, TypeError) as e:
            return self.json(start_response, {"error": str(e)}, "400 Bad Request")

    def json(self, start_response, obj, status="200 OK"):
        return self.respond(start_response, status, json.dumps(obj), "application/json")

    def ctl_health(self, _):
        return {"ok": True}

    def ctl_reset(self, _):
        from moto.moto_api._internal.models import moto_api_backend
        moto_api_backend.reset()
        with self.state.lock:
            self.state.reset()
        self.replication.reset()  # outside state.lock: replication takes its own lock first
        self.postgres.reset()
        return {"reset": True}

    def ctl_calls(self, _):
        with self.state.lock:
            items = sorted(self.state.calls.items())
            peaks = {}
            for (service, _), n in self.state.calls_per_second.items():
                peaks[service] = max(peaks.get(service, 0), n)
        return {"calls": [{"service": s, "region": r, "operation": o, "count": n,
                           "mutating": is_mutating(o)} for (s, r, o), n in items],
                "peak_per_second": peaks}

    def ctl_operations(self, _):
        """Every operation each access key called since the emulator started."""
        with self.state.lock:
            items = sorted(self.operations_by_key.items())
        return {"operations": [{"access_key": k, "service": s, "operation": o, "count": n}
                               for (k, s, o), n in items]}

    def ctl_calls_reset(self, _):
        with self.state.lock:
            self.state.calls.clear()
            self.state.calls_per_second.clear()
            self.state.route53.throttled.clear()
            self.state.rds_throttled.clear()
        return {"reset": True}

    def ctl_waits(self, _):
        """Each asynchronous change: when it was requested, done, and first seen done."""
        with self.state.lock:
            items = list(self.state.waits.items())
        out = []
        for (kind, *ident), w in items:
            slack = (w["noticed_at"] - w["done_at"]) if w["noticed_at"] and w["done_at"] else None
            out.append({"kind": kind, "id": "/".join(ident), "describes": w["describes"],
                        "requested_at": w["requested_at"], "noticed_at": w["noticed_at"],
                        "wait": (w["done_at"] - w["requested_at"]) if w["done_at"] else None,
                        "slack": slack})
        return {"waits": out}

    def ctl_waits_reset(self, _):
        with self.state.lock:
            self.state.waits.clear()
        return {"reset": True}

    def ctl_add_fault(self, p):
        kind = p["kind"]
        if kind not in ("throttle", "error5xx", "reject", "latency", "unreachable"):
            raise ValueError(f"unknown fault kind {kind!r}")
        fault = {k: p.get(k) for k in ("service", "region", "operation", "count", "latency_ms", "code")}
        fault["kind"] = kind
        fault["rate"] = float(p.get("rate", 1.0))
        with self.state.lock:
            fault["id"] = next(self.state.fault_ids)
            self.state.faults.append(fault)
        return fault

    def ctl_faults(self, _):
        with self.state.lock:
            return {"faults": list(self.state.faults), "outages": sorted(self.state.outages)}

    def ctl_clear_faults(self, _):
        with self.state.lock:
            self.state.faults.clear()
            self.state.outages.clear()
        self.postgres.set_outages(set())
        return {"cleared": True}

    def ctl_outage(self, p):
        region = p["region"]
        with self.state.lock:
            if p.get("down", True):
                self.state.outages.add(region)
            else:
                self.state.outages.discard(region)
            outages = set(self.state.outages)
        self.postgres.set_outages(outages)  # its servers stop, its links are cut
        return {"outages": sorted(outages)}

    def ctl_config(self, p):
        # time_factor, metric_period, lag_drain_rate, lag_growth_rate, steady_lag (replication.py)
        lag = self.replication.configure(p)
        with self.state.lock:
            r53 = route53.configure(self.state, p)  # route53_rate (req/s, 0 = unlimited), route53_burst
            if "rds_rate" in p or "rds_burst" in p:
                rate = float(p.get("rds_rate", self.state.rds_limit[0]))
                burst = float(p.get("rds_burst", self.state.rds_limit[1]))
                if rate < 0 or burst < 1:
                    raise ValueError("rds_rate must be >= 0 and rds_burst >= 1")
                self.state.rds_limit = (rate, burst)
                self.state.rds_buckets = {}  # full again, at the new rate
            r53["rds_rate"], r53["rds_burst"] = self.state.rds_limit
            keys = ("promotion_delay", "switchover_delay", "dns_sync_delay",
                    "replica_create_delay", "delete_delay", "rejoin_delay")
            for key in keys:
                if key in p:
                    setattr(self.state, key, float(p[key]))
            if "postgres" in p:
                if not isinstance(p["postgres"], bool):
                    raise ValueError("postgres must be true or false")
                self.state.postgres = p["postgres"]
            return {**{k: getattr(self.state, k) for k in keys}, **r53, **lag, "postgres": self.state.postgres}

    def ctl_health_check(self, p):
        with self.state.lock:
            return health.control(self.state, p)

    def ctl_lag(self, p):
        """Sets a replica's steady lag under load and its lag now (seconds), published at once."""
        return self.replication.set_lag(p)

    def on_monitoring_GetMetricData(self, environ, start_response, region, params):
        return self.replication.get_metric_data(environ, start_response, region, params)


CONTROL = {
    ("GET", "/health"): Bed.ctl_health,
    ("POST", "/reset"): Bed.ctl_reset,
    ("GET", "/calls"): Bed.ctl_calls,
    ("POST", "/calls/reset"): Bed.ctl_calls_reset,
    ("GET", "/throttled"): lambda bed, _: bed.throttled_view(),  # Route 53 and RDS rate limits
    ("GET", "/operations"): Bed.ctl_operations,
    ("GET", "/waits"): Bed.ctl_waits,
    ("POST", "/waits/reset"): Bed.ctl_waits_reset,
    ("POST", "/faults"): Bed.ctl_add_fault,
    ("GET", "/faults"): Bed.ctl_faults,
    ("DELETE", "/faults"): Bed.ctl_clear_faults,
    ("POST", "/outage"): Bed.ctl_outage,
    ("POST", "/config"): Bed.ctl_config,
    ("POST", "/health-checks"): Bed.ctl_health_check,
    ("POST", "/lag"): Bed.ctl_lag,
    ("POST", "/writes"): lambda bed, p: bed.replication.set_writes(p),
    ("GET", "/replication"): lambda bed, p: bed.replication.list(p),
    ("POST", "/replication"): lambda bed, p: bed.replication.set_broken(p),
    ("POST", "/metrics/publish"): lambda bed, p: bed.replication.publish_now(p),
    # Real writers of backed instances (postgres.py): what each acknowledged, and what a
    # backed instance lacks of it ({"writer": [region, id], "in": [region, id]}).
    ("GET", "/writers"): lambda bed, p: {"writers": bed.postgres.writer_summaries()},
    ("POST", "/writers/lost"): lambda bed, p: bed.postgres.lost(*p["writer"], *p["in"]),
}
