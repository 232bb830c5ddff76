#!/usr/bin/env python3
"""Readiness emulator for clusters without kubelets or controllers.

For each Deployment and StatefulSet in the given clusters whose status does not match its
spec, waits a delay and then writes status (replicas, readyReplicas, availableReplicas,
updatedReplicas, observedGeneration) to match, as nodes would. The delay is the
`bed.drover.io/ready-delay-ms` annotation, else NODESIM_READY_DELAY_MS (default 1500).

    nodesim.py KUBECONFIG [KUBECONFIG...]
"""

import base64
import json
import os
import signal
import ssl
import sys
import threading
import time
import urllib.request

DEFAULT_DELAY_MS = int(os.environ.get("NODESIM_READY_DELAY_MS", "1500"))
POLL_SECONDS = 0.05
KINDS = ["deployments", "statefulsets"]
running = True


def stop(*_):
    global running
    running = False


class Cluster:
    def __init__(self, path):
        with open(path) as f:
            cfg = json.load(f)
        cluster = cfg["clusters"][0]["cluster"]
        self.server = cluster["server"]
        self.token = cfg["users"][0]["user"]["token"]
        ca = base64.b64decode(cluster["certificate-authority-data"]).decode()
        self.tls = ssl.create_default_context(cadata=ca)
        self.tls.check_hostname = False  # the self-signed serving cert names "localhost"

    def call(self, method, path, body=None):
        req = urllib.request.Request(
            self.server + path, method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {self.token}",
                     "Content-Type": "application/merge-patch+json"},
        )
        with urllib.request.urlopen(req, context=self.tls, timeout=5) as r:
            return json.load(r)


def desired_status(obj):
    replicas = obj["spec"].get("replicas", 1)
    return {
        "replicas": replicas,
        "readyReplicas": replicas,
        "availableReplicas": replicas,
        "updatedReplicas": replicas,
        "observedGeneration": obj["metadata"].get("generation", 1),
    }


def matches(obj, want):
    status = obj.get("status") or {}
    return all(status.get(k, 0) == v for k, v in want.items())


def watch(ci, cluster):
    """One loop per cluster, so a stopped cluster does not delay the others."""
    first_seen = {}
    while running:
        for kind in KINDS:
            try:
                items = cluster.call("GET", f"/apis/apps/v1/{kind}")["items"]
            except Exception as e:  # cluster stopped on purpose in some tests
                print(f"list {kind} in cluster {ci}: {e}", flush=True)
                continue
            for obj in items:
                meta = obj["metadata"]
                want = desired_status(obj)
                key = (kind, meta["namespace"], meta["name"], json.dumps(want, sort_keys=True))
                if matches(obj, want):
                    first_seen.pop(key, None)
                    continue
                seen = first_seen.setdefault(key, time.monotonic())
                delay = int((meta.get("annotations") or {}).get(
                    "bed.drover.io/ready-delay-ms", DEFAULT_DELAY_MS)) / 1000
                if time.monotonic() - seen < delay:
                    continue
                path = f"/apis/apps/v1/namespaces/{meta['namespace']}/{kind}/{meta['name']}/status"
                try:
                    cluster.call("PATCH", path, {"status": want})
                    first_seen.pop(key, None)
                except Exception as e:
                    print(f"patch {path}: {e}", flush=True)
        time.sleep(POLL_SECONDS)


def main(paths):
    threads = [threading.Thread(target=watch, args=(i, Cluster(p)), daemon=True)
               for i, p in enumerate(paths)]
    for t in threads:
        t.start()
    while running and any(t.is_alive() for t in threads):
        time.sleep(0.2)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, stop)
    main(sys.argv[1:])
