"""Helpers shared by the pytest files that talk to the running bed: the AWS emulator's
endpoint, boto3 clients with retries off (so each refusal is seen as is), the control API,
and polling with a deadline."""

import json
import os
import time
import urllib.request
import uuid

import boto3
import botocore.config

PORT = int(os.environ.get("DROVER_AWS_PORT", "15000"))
ENDPOINT = f"http://127.0.0.1:{PORT}"
NO_RETRY = botocore.config.Config(retries={"total_max_attempts": 1, "mode": "standard"},
                                  connect_timeout=2, read_timeout=10)


def aws(service, region="us-east-1"):
    return boto3.client(service, region_name=region, endpoint_url=ENDPOINT,
                        aws_access_key_id="testing", aws_secret_access_key="testing",
                        config=NO_RETRY)


def bed(method, path, body=None):
    req = urllib.request.Request(f"{ENDPOINT}/_bed{path}", method=method,
                                 data=json.dumps(body or {}).encode())
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.load(r)


def wait_for(what, check, timeout=15.0, poll=0.1):
    """Polls `check` until it returns something truthy, which it returns."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(poll)


def uid():
    return uuid.uuid4().hex[:8]


def create_global_cluster(suffix):
    """A global cluster with a writer member `east-SUFFIX` in us-east-1 and a secondary
    `west-SUFFIX` in us-west-2; returns (global cluster id, east id, west id)."""
    east, west = aws("rds", "us-east-1"), aws("rds", "us-west-2")
    gc_id = f"gc-{suffix}"
    east.create_global_cluster(GlobalClusterIdentifier=gc_id, Engine="aurora-postgresql",
                               EngineVersion="15.4")
    east.create_db_cluster(DBClusterIdentifier=f"east-{suffix}", Engine="aurora-postgresql",
                           EngineVersion="15.4", GlobalClusterIdentifier=gc_id,
                           MasterUsername="admin", MasterUserPassword="password123")
    west.create_db_cluster(DBClusterIdentifier=f"west-{suffix}", Engine="aurora-postgresql",
                           EngineVersion="15.4", GlobalClusterIdentifier=gc_id)
    return gc_id, f"east-{suffix}", f"west-{suffix}"
