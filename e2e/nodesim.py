#!/usr/bin/env python3
"""Readiness emulator for clusters without kubelets or controllers.

Watches Deployments and StatefulSets in the given clusters, as a kubelet and controller
would. When one's status does not match its spec, it waits a delay and then writes status
(replicas, readyReplicas, availableReplicas, updatedReplicas, observedGeneration) to match.
The delay is the `bed.drover.io/ready-delay-ms` annotation, else NODESIM_READY_DELAY_MS
(default 1500), counted from when the change was seen.

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
KINDS = ["deployments", "statefulsets"]
WATCH_SECONDS = 240
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

    def request(self, method, path, body=None, timeout=5):
        req = urllib.request.Request(
            self.server + path, method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {self.token}",
                     "Content-Type": "application/merge-patch+json"},
        )
        return urllib.request.urlopen(req, context=self.tls, timeout=timeout)

    def call(self, method, path, body=None):
        with self.request(method, path, body) as r:
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


class Emulator:
    """One per (cluster, kind): a watch, and a timer per pending status change."""

    def __init__(self, ci, cluster, kind):
        self.ci, self.cluster, self.kind = ci, cluster, kind
        self.pending = {}  # (namespace, name) -> desired status the timer will write
        self.lock = threading.Lock()

    def seen(self, obj):
        meta = obj["metadata"]
        want = desired_status(obj)
        key = (meta["namespace"], meta["name"])
        with self.lock:
            if matches(obj, want) or self.pending.get(key) == want:
                return
            self.pending[key] = want
        delay = int((meta.get("annotations") or {}).get(
            "bed.drover.io/ready-delay-ms", DEFAULT_DELAY_MS)) / 1000
        timer = threading.Timer(delay, self.ready, args=(key, want))
        timer.daemon = True
        timer.start()

    def ready(self, key, want):
        with self.lock:
            if self.pending.get(key) != want:
                return  # superseded by a newer change, which has its own timer
            del self.pending[key]
        ns, name = key
        path = f"/apis/apps/v1/namespaces/{ns}/{self.kind}/{name}"
        try:
            current = self.cluster.call("GET", path)
            if desired_status(current) == want:
                self.cluster.call("PATCH", path + "/status", {"status": want})
        except Exception as e:  # deleted meanwhile, or the cluster is stopped on purpose
            print(f"cluster {self.ci}: ready {path}: {e}", flush=True)

    def run(self):
        while running:
            try:
                listed = self.cluster.call("GET", f"/apis/apps/v1/{self.kind}")
                for obj in listed["items"]:
                    self.seen(obj)
                rv = listed["metadata"]["resourceVersion"]
                path = (f"/apis/apps/v1/{self.kind}?watch=true&resourceVersion={rv}"
                        f"&timeoutSeconds={WATCH_SECONDS}")
                with self.cluster.request("GET", path, timeout=WATCH_SECONDS + 30) as stream:
                    for line in stream:
                        event = json.loads(line)
                        if event.get("type") in ("ADDED", "MODIFIED"):
                            self.seen(event["object"])
                        elif event.get("type") == "ERROR":
                            break  # e.g. resourceVersion too old: list again
            except Exception as e:  # stopped cluster, dropped watch: list and watch again
                print(f"cluster {self.ci}: watch {self.kind}: {e}", flush=True)
                time.sleep(0.5)


def main(paths):
    threads = []
    for ci, path in enumerate(paths):
        cluster = Cluster(path)
        for kind in KINDS:
            t = threading.Thread(target=Emulator(ci, cluster, kind).run, daemon=True)
            t.start()
            threads.append(t)
    while running and any(t.is_alive() for t in threads):
        time.sleep(0.2)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, stop)
    main(sys.argv[1:])
