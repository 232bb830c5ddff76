#!/usr/bin/env python3
"""Pod emulator for the bed's clusters, which have no kubelet, controller-manager or scheduler.

For every Deployment and StatefulSet in the given clusters it does what Kubernetes' controllers
and a kubelet would, through the API server, driven by watches:

  * ReplicaSet / StatefulSet controller: creates real Pods from the pod template (labels from
    the template, `spec.nodeName: bed-node`, `automountServiceAccountToken: false`, the owner
    in the `bed.drover.io/owner` annotation as `Kind/name/uid`), and deletes the excess ones on
    scale-down with a grace period, so they stay Terminating (deletionTimestamp set). A
    Deployment whose template changed rolls out by surge: new pods first, old ones deleted
    as new ones become ready. StatefulSet pods are `NAME-ORDINAL`, created and deleted in
    parallel; an ordinal is recreated only once its old pod is gone.
  * It writes the workload's status as those controllers do: `replicas` counts the pods that
    are not terminating, `readyReplicas` / `availableReplicas` the ready ones among them.
    So status can say 0 replicas while pods are still Terminating.
  * Kubelet: a pod becomes Running and Ready `bed.drover.io/ready-delay-ms` (annotation on the
    workload, else NODESIM_READY_DELAY_MS, default 1500) after it was created. A terminating pod
    is deleted for good (gracePeriodSeconds=0) `bed.drover.io/termination-grace-ms` (annotation
    on the workload, else NODESIM_TERMINATION_GRACE_MS, default 1000) after it began
    terminating.
  * Garbage collector: the pods of a deleted (or replaced) workload are deleted gracefully.
  * ServiceAccount admission needs the namespace's `default` ServiceAccount; with no controller
    to create it, this creates it when missing.
  * Writes: a workload annotated `bed.drover.io/writes-to: "us-east-1/db-a,us-east-1/db-b"` is
    writing to those RDS instances / Aurora clusters while it has ready pods that are not
    terminating. Each transition of an identifier (and its first state, at start) is POSTed to
    NODESIM_AWS_ENDPOINT + /_bed/writes as {"region", "identifier", "writing"}; an identifier
    named by several workloads is writing while any of them is. A missing endpoint, or one
    that answers 404, is logged once.

    nodesim.py [--namespace NS] KUBECONFIG [KUBECONFIG...]

--namespace limits it to one namespace (a test can run its own nodesim against a namespace
of a cluster the sandbox's nodesim does not watch).
"""

import argparse
import base64
import copy
import hashlib
import heapq
import http.client
import io
import itertools
import json
import math
import os
import queue
import signal
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from datetime import datetime, timezone

DEFAULT_DELAY_MS = int(os.environ.get("NODESIM_READY_DELAY_MS", "1500"))
DEFAULT_GRACE_MS = int(os.environ.get("NODESIM_TERMINATION_GRACE_MS", "1000"))
AWS_ENDPOINT = os.environ.get("NODESIM_AWS_ENDPOINT", "")
KINDS = {"deployments": "Deployment", "statefulsets": "StatefulSet"}
PLURALS = {v: k for k, v in KINDS.items()}
NODE = "bed-node"
OWNER = "bed.drover.io/owner"            # pod annotation: Kind/name/uid of its workload
OWNER_KIND = "bed.drover.io/owner-kind"  # pod label; the pod watch selects on it
OWNER_NAME = "bed.drover.io/owner-name"  # pod label, for people (when the name fits a label)
READY_DELAY = "bed.drover.io/ready-delay-ms"
GRACE = "bed.drover.io/termination-grace-ms"
WORKERS = 4
WRITES_TO = "bed.drover.io/writes-to"
WATCH_SECONDS = 240
GONE_KEEP_SECONDS = 120  # how long a deleted object's uid shields against late watch events
running = True


def stop(*_):
    global running
    running = False


def log(msg):
    print(f"[nodesim] {msg}", flush=True)


class Cluster:
    """A tiny Kubernetes REST client for one kubeconfig (also used by e2e/bench.py)."""

    def __init__(self, path):
        with open(path) as f:
            cfg = json.load(f)
        self.name = cfg["clusters"][0].get("name", path)
        cluster = cfg["clusters"][0]["cluster"]
        self.server = cluster["server"]
        self.token = cfg["users"][0]["user"]["token"]
        ca = base64.b64decode(cluster["certificate-authority-data"]).decode()
        self.tls = ssl.create_default_context(cadata=ca)
        self.tls.check_hostname = False  # the self-signed serving cert names "localhost"
        parsed = urllib.parse.urlsplit(self.server)
        self.host, self.port = parsed.hostname, parsed.port or 443
        self.local = threading.local()  # one kept-alive connection per thread

    def headers(self, method):
        ctype = "application/merge-patch+json" if method == "PATCH" else "application/json"
        return {"Authorization": f"Bearer {self.token}", "Content-Type": ctype, "Accept": "application/json"}

    def request(self, method, path, body=None, timeout=5):
        """A response to read as a stream (watches); its own connection."""
        req = urllib.request.Request(
            self.server + path, method=method,
            data=json.dumps(body).encode() if body is not None else None, headers=self.headers(method))
        return urllib.request.urlopen(req, context=self.tls, timeout=timeout)

    def call(self, method, path, body=None, timeout=5):
        """The decoded answer, over a kept-alive connection; HTTP errors raise
        urllib.error.HTTPError (see `.code`)."""
        data = json.dumps(body).encode() if body is not None else None
        for attempt in (0, 1):
            conn = getattr(self.local, "conn", None)
            reused = conn is not None
            if conn is None:
                conn = self.local.conn = http.client.HTTPSConnection(
                    self.host, self.port, context=self.tls, timeout=timeout)
            try:
                if conn.sock is not None:
                    conn.sock.settimeout(timeout)
                conn.request(method, path, body=data, headers=self.headers(method))
                response = conn.getresponse()
                raw = response.read()
            except (ConnectionResetError, BrokenPipeError, http.client.BadStatusLine,
                    http.client.CannotSendRequest):
                # The server closed an idle connection: open a new one, once.
                conn.close()
                self.local.conn = None
                if reused and attempt == 0:
                    continue
                raise
            except BaseException:
                conn.close()
                self.local.conn = None
                raise
            if response.status >= 400:
                raise urllib.error.HTTPError(self.server + path, response.status, response.reason,
                                             response.headers, io.BytesIO(raw))
            return json.loads(raw) if raw else {}


def http_error(e):
    """A short form of an API error, with the server's message."""
    try:
        return f"{e.code} {json.loads(e.read()).get('message', '')}"
    except Exception:
        return str(e)


def rv(obj):
    try:
        return int(obj["metadata"].get("resourceVersion") or 0)
    except ValueError:
        return 0


def uid(obj):
    return obj["metadata"].get("uid")


def annotation(obj, name):
    return ((obj or {}).get("metadata", {}).get("annotations") or {}).get(name)


def ms(obj, name, default):
    try:
        value = annotation(obj, name)
        return int(value) if value is not None else default
    except ValueError:
        return default


def terminating(pod):
    return bool(pod["metadata"].get("deletionTimestamp"))


def ready(pod):
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def owner(pod):
    """(workload key, workload uid) of a pod this emulator created, else (None, None)."""
    try:
        kind, name, owner_uid = annotation(pod, OWNER).split("/")
        return (PLURALS[kind], pod["metadata"]["namespace"], name), owner_uid
    except (AttributeError, KeyError, ValueError):
        return None, None


def template_hash(workload):
    template = json.dumps(workload["spec"].get("template") or {}, sort_keys=True)
    return hashlib.sha256(template.encode()).hexdigest()[:10]


def now_iso():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def ordinal(pod, name):
    suffix = pod["metadata"]["name"][len(name) + 1:]
    return int(suffix) if suffix.isdigit() else -1


class WorkQueue:
    """Workload keys to reconcile; a key is queued at most once, and re-queued if it changes
    while being reconciled."""

    def __init__(self):
        self.cv = threading.Condition()
        self.items = deque()
        self.queued, self.busy, self.again = set(), set(), set()

    def add(self, key):
        with self.cv:
            if key in self.busy:
                self.again.add(key)
            elif key not in self.queued:
                self.queued.add(key)
                self.items.append(key)
                self.cv.notify()

    def get(self, timeout):
        with self.cv:
            if not self.items:
                self.cv.wait(timeout)
            if not self.items:
                return None
            key = self.items.popleft()
            self.queued.discard(key)
            self.busy.add(key)
            return key

    def done(self, key):
        with self.cv:
            self.busy.discard(key)
            if key in self.again:
                self.again.discard(key)
                if key not in self.queued:
                    self.queued.add(key)
                    self.items.append(key)
                    self.cv.notify()


class Timers:
    """Queues a key at a given monotonic time: one thread, one heap."""

    def __init__(self, work):
        self.work = work
        self.cv = threading.Condition()
        self.heap, self.due = [], {}
        self.seq = itertools.count()
        threading.Thread(target=self.run, daemon=True).start()

    def at(self, when, key):
        with self.cv:
            if key in self.due and self.due[key] <= when:
                return  # an earlier reconcile will schedule this again if still needed
            self.due[key] = when
            heapq.heappush(self.heap, (when, next(self.seq), key))
            self.cv.notify()

    def run(self):
        while running:
            fire = []
            with self.cv:
                now = time.monotonic()
                while self.heap and self.heap[0][0] <= now:
                    when, _, key = heapq.heappop(self.heap)
                    if self.due.get(key) == when:
                        del self.due[key]
                        fire.append(key)
                if not fire:
                    self.cv.wait(min(self.heap[0][0] - now, 1.0) if self.heap else 1.0)
            for key in fire:
                self.work.add(key)


class Reporter:
    """Tells the AWS emulator which databases are being written to."""

    def __init__(self, endpoint):
        self.url = endpoint.rstrip("/") + "/_bed/writes" if endpoint else None
        self.lock = threading.Lock()
        self.claims = {}   # workload id -> targets it names
        self.writers = {}  # target (region, identifier) -> workload ids writing to it now
        self.sent = {}     # target -> last state queued for posting
        self.outbox = queue.Queue()
        self.quiet = set()  # kinds of failure already logged
        if self.url:
            threading.Thread(target=self.post_loop, daemon=True).start()
        else:
            log("NODESIM_AWS_ENDPOINT is not set: writes are not reported")

    @staticmethod
    def targets(workload):
        out = set()
        for item in (annotation(workload, WRITES_TO) or "").split(","):
            region, _, identifier = item.strip().partition("/")
            if region and identifier:
                out.add((region, identifier))
        return out

    def update(self, wid, targets, writing):
        with self.lock:
            before = self.claims.pop(wid, set())
            if targets:
                self.claims[wid] = targets
            for t in before | targets:
                writers = self.writers.setdefault(t, set())
                if writing and t in targets:
                    writers.add(wid)
                else:
                    writers.discard(wid)
                state = bool(writers)
                if self.sent.get(t) != state:
                    self.sent[t] = state
                    if self.url:
                        self.outbox.put((t, state))

    def once(self, kind, msg):
        if kind not in self.quiet:
            self.quiet.add(kind)
            log(msg)

    def post_loop(self):
        while running:
            try:
                (region, identifier), writing = self.outbox.get(timeout=1)
            except queue.Empty:
                continue
            body = {"region": region, "identifier": identifier, "writing": writing}
            req = urllib.request.Request(self.url, method="POST", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    r.read()
            except urllib.error.HTTPError as e:
                if e.code == 404:
                    self.once("404", f"{self.url} answers 404: writes are not reported")
                else:
                    self.once(f"http-{e.code}", f"POST {self.url} {body}: {http_error(e)}")
            except Exception as e:  # refused, timeout: the emulator is not there
                self.once("unreachable", f"{self.url} unreachable ({e}): writes are not reported")


class Sim:
    """One cluster: caches fed by watches, and a few workers reconciling workload keys
    (each key by one worker at a time)."""

    def __init__(self, cluster, namespace, reporter):
        self.c, self.ns, self.reporter = cluster, namespace, reporter
        self.lock = threading.Lock()
        self.workloads = {}   # (plural, ns, name) -> object
        self.pods = {}        # (ns, name) -> object
        self.gone = {}        # uid -> when it was deleted: late watch events are ignored
        self.listed = set()   # resources listed at least once
        self.synced = threading.Event()
        self.ready_at = {}    # pod uid -> monotonic time it becomes ready
        self.finish_at = {}   # terminating pod uid -> monotonic time it is removed
        self.sa_ok = set()    # namespaces whose default ServiceAccount exists
        self.failures = {}    # key -> consecutive failed reconciles (for backoff)
        self.work = WorkQueue()
        self.timers = Timers(self.work)

    # ---- watches ---------------------------------------------------------------------------
    def collection(self, base, resource):
        return f"{base}/namespaces/{self.ns}/{resource}" if self.ns else f"{base}/{resource}"

    def watch(self, base, resource, selector, on_list, on_event):
        path = self.collection(base, resource)
        query = f"labelSelector={urllib.parse.quote(selector)}&" if selector else ""
        version = None
        while running:
            try:
                if version is None:
                    listed = self.c.call("GET", f"{path}?{query}", timeout=60)
                    version = listed["metadata"]["resourceVersion"]
                    on_list(listed["items"], int(version))
                url = (f"{path}?{query}watch=true&allowWatchBookmarks=true"
                       f"&resourceVersion={version}&timeoutSeconds={WATCH_SECONDS}")
                with self.c.request("GET", url, timeout=WATCH_SECONDS + 30) as stream:
                    for line in stream:
                        event = json.loads(line)
                        kind, obj = event.get("type"), event.get("object") or {}
                        if kind == "ERROR":  # e.g. 410 Gone: list again
                            version = None
                            break
                        version = obj["metadata"]["resourceVersion"]
                        if kind != "BOOKMARK":
                            on_event(kind, obj)
            except Exception as e:  # stopped cluster, dropped watch: list and watch again
                if running:
                    log(f"{self.c.name}: watch {resource}: {e}")
                version = None
                time.sleep(0.5)

    def replace(self, cache, items, version, key_of, belongs=lambda k: True):
        """Replaces the part of `cache` that `belongs` with a list; keeps entries written
        after the list's version. Returns every key touched."""
        fresh = {key_of(o): o for o in items}
        for k, o in cache.items():
            if belongs(k) and k not in fresh and rv(o) > version:
                fresh[k] = o
        old = [k for k in cache if belongs(k)]
        for k in old:
            if k not in fresh:
                del cache[k]
        cache.update(fresh)
        return set(old) | set(fresh)

    def mark_listed(self, resource):
        self.listed.add(resource)
        if self.listed >= {"deployments", "statefulsets", "pods"}:
            self.synced.set()

    def store(self, cache, key, obj):
        """Write-through of an object, unless the cache has a newer one or it was deleted."""
        if uid(obj) in self.gone:
            return False
        current = cache.get(key)
        if current is not None and uid(current) == uid(obj) and rv(current) >= rv(obj):
            return False
        cache[key] = obj
        return True

    def forget(self, cache, key, obj):
        self.gone[uid(obj)] = time.monotonic()
        current = cache.get(key)
        if current is not None and uid(current) == uid(obj):
            del cache[key]

    def workload_key(self, plural, obj):
        return plural, obj["metadata"]["namespace"], obj["metadata"]["name"]

    def on_workload_list(self, plural, items, version):
        for o in items:
            o["kind"] = KINDS[plural]
        with self.lock:
            keys = self.replace(self.workloads, items, version,
                                lambda o: self.workload_key(plural, o), lambda k: k[0] == plural)
            self.mark_listed(plural)
        for k in keys:
            self.work.add(k)

    def on_workload_event(self, plural, kind, obj):
        key = self.workload_key(plural, obj)
        with self.lock:
            if kind == "DELETED":
                self.forget(self.workloads, key, obj)
            elif not self.store(self.workloads, key, obj):
                return
        self.work.add(key)

    def pod_key(self, pod):
        return pod["metadata"]["namespace"], pod["metadata"]["name"]

    def on_pod_list(self, items, version):
        with self.lock:
            owners = {owner(p)[0] for p in self.pods.values()}  # including pods now gone
            self.replace(self.pods, items, version, self.pod_key)
            owners |= {owner(p)[0] for p in self.pods.values()}
            self.mark_listed("pods")
        for k in owners - {None}:
            self.work.add(k)

    def on_pod_event(self, kind, pod):
        key = self.pod_key(pod)
        with self.lock:
            if kind == "DELETED":
                self.forget(self.pods, key, pod)
                self.ready_at.pop(uid(pod), None)
                self.finish_at.pop(uid(pod), None)
            elif not self.store(self.pods, key, pod):
                return
        workload, _ = owner(pod)
        if workload:
            self.work.add(workload)

    # ---- the workers -----------------------------------------------------------------------
    def run(self):
        for plural in KINDS:
            threading.Thread(target=self.watch, daemon=True, args=(
                "/apis/apps/v1", plural, None,
                lambda items, v, p=plural: self.on_workload_list(p, items, v),
                lambda kind, o, p=plural: self.on_workload_event(p, kind, o))).start()
        threading.Thread(target=self.watch, daemon=True, args=(
            "/api/v1", "pods", OWNER_KIND, self.on_pod_list, self.on_pod_event)).start()
        while running and not self.synced.wait(0.5):
            pass
        # Kubelets on different nodes act at once: a few workers, never two on one workload
        # (the queue hands a key to one worker at a time).
        for _ in range(WORKERS - 1):
            threading.Thread(target=self.work_loop, daemon=True).start()
        self.work_loop()

    def work_loop(self):
        while running:
            key = self.work.get(timeout=1.0)
            if key is None:
                self.prune()
                continue
            try:
                self.reconcile(key)
                self.failures.pop(key, None)
            except Exception as e:  # the API server said no, or is away: try again later
                n = self.failures[key] = self.failures.get(key, 0) + 1
                delay = min(30.0, 0.25 * 2 ** n)
                if isinstance(e, urllib.error.HTTPError):
                    e = http_error(e)
                log(f"{self.c.name}: {key[0]} {key[1]}/{key[2]}: {e} (retry in {delay:.1f}s)")
                self.timers.at(time.monotonic() + delay, key)
            finally:
                self.work.done(key)

    def prune(self):
        cutoff = time.monotonic() - GONE_KEEP_SECONDS
        with self.lock:
            for u in [u for u, t in self.gone.items() if t < cutoff]:
                del self.gone[u]

    def reconcile(self, key):
        plural, ns, name = key
        now = time.monotonic()
        with self.lock:
            wl = copy.deepcopy(self.workloads.get(key))
            pods = [copy.deepcopy(p) for p in self.pods.values()
                    if owner(p)[0] == key and uid(p) not in self.gone]
        wl_uid = uid(wl) if wl else None
        mine = [p for p in pods if owner(p)[1] == wl_uid]
        alive = [p for p in mine if not terminating(p)]
        grace_ms = ms(wl, GRACE, DEFAULT_GRACE_MS) if wl else DEFAULT_GRACE_MS
        wid = (self.c.name, *key)

        # Kubelet: a terminating pod goes away after the grace period.
        for p in pods:
            if terminating(p):
                pod_grace = grace_ms if owner(p)[1] == wl_uid else ms(p, GRACE, DEFAULT_GRACE_MS)
                finish = self.finish_at.setdefault(uid(p), now + pod_grace / 1000)
                if finish <= now:
                    self.remove_pod(p)
                else:
                    self.timers.at(finish, key)

        # Garbage collector: pods of a deleted or replaced workload.
        for p in pods:
            if owner(p)[1] != wl_uid and not terminating(p):
                self.delete_pod(p, ms(p, GRACE, DEFAULT_GRACE_MS), key)
        if wl is None:
            self.reporter.update(wid, set(), False)
            return

        desired = wl["spec"].get("replicas", 1)
        h = template_hash(wl)
        if plural == "deployments":
            alive = self.scale_deployment(wl, key, alive, desired, h, grace_ms)
        else:
            alive = self.scale_statefulset(wl, key, mine, alive, desired, h, grace_ms)

        # Kubelet: pods become ready after the delay.
        delay = ms(wl, READY_DELAY, DEFAULT_DELAY_MS) / 1000
        became_ready = False
        for i, p in enumerate(alive):
            if ready(p):
                continue
            at = self.ready_at.setdefault(uid(p), now + delay)
            if at <= now:
                alive[i] = self.make_ready(p)
                became_ready = True
            else:
                self.timers.at(at, key)
        if became_ready and plural == "deployments":
            # A rollout removes old pods as new ones become ready: look again now rather
            # than wait for an event, which this process's own pod write may not bring.
            self.work.add(key)

        self.write_status(wl, key, alive, desired, h)
        self.reporter.update(wid, Reporter.targets(wl), any(ready(p) for p in alive))

    def scale_deployment(self, wl, key, alive, desired, h, grace_ms):
        """ReplicaSet controllers of a Deployment: the current template's pods at `desired`;
        pods of an older template are removed as the new ones become ready."""
        new = [p for p in alive if p["metadata"]["labels"].get("pod-template-hash") == h]
        old = [p for p in alive if p["metadata"]["labels"].get("pod-template-hash") != h]
        for p in deletion_order(new)[:max(0, len(new) - desired)]:
            self.delete_pod(p, grace_ms, key)
            new.remove(p)
        for _ in range(desired - len(new)):
            new.append(self.create_pod(wl, key, h, grace_ms))
        keep_old = max(0, desired - sum(1 for p in new if ready(p)))
        for p in deletion_order(old)[:max(0, len(old) - keep_old)]:
            self.delete_pod(p, grace_ms, key)
            old.remove(p)
        return new + old

    def scale_statefulset(self, wl, key, mine, alive, desired, h, grace_ms):
        """StatefulSet controller with parallel pod management: ordinals 0..desired-1; an
        ordinal whose pod is terminating is recreated once that pod is gone."""
        name = key[2]
        keep = []
        for p in sorted(alive, key=lambda p: -ordinal(p, name)):
            stale = p["metadata"]["labels"].get("controller-revision-hash") != revision(name, h)
            if ordinal(p, name) >= desired or stale:
                self.delete_pod(p, grace_ms, key)
            else:
                keep.append(p)
        taken = {ordinal(p, name) for p in mine}
        for i in range(desired):
            if i not in taken:
                pod = self.create_pod(wl, key, h, grace_ms, index=i)
                if pod is not None:
                    keep.append(pod)
        return keep

    # ---- API calls -------------------------------------------------------------------------
    def ensure_service_account(self, ns):
        if ns in self.sa_ok:
            return
        path = f"/api/v1/namespaces/{ns}/serviceaccounts"
        try:
            self.c.call("GET", f"{path}/default")
        except urllib.error.HTTPError as e:
            if e.code != 404:
                raise
            try:
                self.c.call("POST", path, {"apiVersion": "v1", "kind": "ServiceAccount",
                                           "metadata": {"name": "default", "namespace": ns}})
                log(f"{self.c.name}: created ServiceAccount {ns}/default")
            except urllib.error.HTTPError as e2:
                if e2.code != 409:
                    raise
        self.sa_ok.add(ns)

    def create_pod(self, wl, key, h, grace_ms, index=None):
        plural, ns, name = key
        self.ensure_service_account(ns)
        template = wl["spec"].get("template") or {}
        tmeta = template.get("metadata") or {}
        labels = dict(tmeta.get("labels") or {})
        labels[OWNER_KIND] = KINDS[plural]
        if len(name) <= 63:
            labels[OWNER_NAME] = name
        annotations = dict(tmeta.get("annotations") or {})
        annotations[OWNER] = f"{KINDS[plural]}/{name}/{uid(wl)}"
        annotations[GRACE] = str(grace_ms)
        spec = copy.deepcopy(template.get("spec") or {})
        spec["nodeName"] = NODE
        spec["automountServiceAccountToken"] = False
        spec["terminationGracePeriodSeconds"] = grace_seconds(grace_ms)
        meta = {"namespace": ns, "labels": labels, "annotations": annotations}
        if plural == "deployments":
            labels["pod-template-hash"] = h
            meta["generateName"] = f"{name}-{h}-"
        else:
            meta["name"] = f"{name}-{index}"
            labels["controller-revision-hash"] = revision(name, h)
            labels["statefulset.kubernetes.io/pod-name"] = meta["name"]
            spec["hostname"] = meta["name"]
            if wl["spec"].get("serviceName"):
                spec["subdomain"] = wl["spec"]["serviceName"]
        body = {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}
        try:
            pod = self.c.call("POST", f"/api/v1/namespaces/{ns}/pods", body)
        except urllib.error.HTTPError as e:
            if e.code == 409 and index is not None:
                return None  # the ordinal's pod exists; its watch event is on the way
            self.sa_ok.discard(ns)  # in case the ServiceAccount was deleted
            raise
        with self.lock:
            self.store(self.pods, self.pod_key(pod), pod)
        return pod

    def delete_pod(self, pod, grace_ms, key):
        """Graceful deletion, as a controller asks for it: the pod is Terminating until
        the kubelet (`remove_pod`) deletes it for good."""
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": grace_seconds(grace_ms),
                "preconditions": {"uid": uid(pod)}}
        self.finish_at.setdefault(uid(pod), time.monotonic() + grace_ms / 1000)
        ns, name = self.pod_key(pod)
        try:
            deleted = self.c.call("DELETE", f"/api/v1/namespaces/{ns}/pods/{name}", body)
        except urllib.error.HTTPError as e:
            if e.code not in (404, 409):
                raise
            return
        with self.lock:
            if deleted.get("kind") == "Pod":
                self.store(self.pods, (ns, name), deleted)
        finish = self.finish_at.get(uid(pod))
        if finish is not None:  # None: already gone (a watch event raced this call)
            self.timers.at(finish, key)

    def remove_pod(self, pod):
        ns, name = self.pod_key(pod)
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                "preconditions": {"uid": uid(pod)}}
        try:
            self.c.call("DELETE", f"/api/v1/namespaces/{ns}/pods/{name}", body)
        except urllib.error.HTTPError as e:
            if e.code not in (404, 409):
                raise
        with self.lock:
            self.forget(self.pods, (ns, name), pod)
            self.finish_at.pop(uid(pod), None)
            self.ready_at.pop(uid(pod), None)

    def make_ready(self, pod):
        stamp = now_iso()
        ip = "10.244.{}.{}".format(*hashlib.sha256(uid(pod).encode()).digest()[:2])
        conditions = [{"type": t, "status": "True", "lastTransitionTime": stamp}
                      for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")]
        status = {
            "phase": "Running", "hostIP": "127.0.0.1", "podIP": ip, "podIPs": [{"ip": ip}],
            "startTime": stamp, "conditions": conditions,
            "containerStatuses": [
                {"name": c["name"], "image": c.get("image", ""), "imageID": "", "ready": True,
                 "started": True, "restartCount": 0, "state": {"running": {"startedAt": stamp}}}
                for c in pod["spec"].get("containers", [])],
        }
        ns, name = self.pod_key(pod)
        try:
            updated = self.c.call("PATCH", f"/api/v1/namespaces/{ns}/pods/{name}/status", {"status": status})
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return pod  # deleted meanwhile
            raise
        with self.lock:
            self.store(self.pods, (ns, name), updated)
        return updated

    def write_status(self, wl, key, alive, desired, h):
        plural, ns, name = key
        ready_count = sum(1 for p in alive if ready(p))
        if plural == "deployments":
            updated = sum(1 for p in alive if p["metadata"]["labels"].get("pod-template-hash") == h)
            want = {"replicas": len(alive), "updatedReplicas": updated, "readyReplicas": ready_count,
                    "availableReplicas": ready_count,
                    "unavailableReplicas": max(0, desired - ready_count)}
        else:
            updated = sum(1 for p in alive
                          if p["metadata"]["labels"].get("controller-revision-hash") == revision(name, h))
            want = {"replicas": len(alive), "readyReplicas": ready_count, "currentReplicas": updated,
                    "updatedReplicas": updated, "currentRevision": revision(name, h),
                    "updateRevision": revision(name, h)}
        want["observedGeneration"] = wl["metadata"].get("generation", 1)
        status = wl.get("status") or {}
        if all(status.get(k, 0 if isinstance(v, int) else None) == v for k, v in want.items()):
            return
        path = f"/apis/apps/v1/namespaces/{ns}/{plural}/{name}/status"
        try:
            updated_wl = self.c.call("PATCH", path, {"metadata": {"resourceVersion": wl["metadata"]["resourceVersion"]},
                                                     "status": want})
        except urllib.error.HTTPError as e:
            if e.code in (404, 409):  # deleted or changed meanwhile: its event requeues it
                return
            raise
        updated_wl["kind"] = KINDS[plural]
        with self.lock:
            self.store(self.workloads, key, updated_wl)


def deletion_order(pods):
    """The order a ReplicaSet deletes pods in, roughly: not ready first, then the newest."""
    newest = sorted(pods, key=lambda p: (p["metadata"].get("creationTimestamp", ""), p["metadata"]["name"]),
                    reverse=True)
    return sorted(newest, key=ready)


def grace_seconds(grace_ms):
    """The pod's deletion grace in whole seconds; at least 1, so deletion is graceful."""
    return max(1, math.ceil(grace_ms / 1000))


def revision(name, h):
    value = f"{name}-{h}"
    return value if len(value) <= 63 else h


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--namespace", help="only this namespace")
    parser.add_argument("kubeconfigs", nargs="+")
    args = parser.parse_args(argv)
    reporter = Reporter(AWS_ENDPOINT)
    threads = []
    for path in args.kubeconfigs:
        t = threading.Thread(target=Sim(Cluster(path), args.namespace, reporter).run, daemon=True)
        t.start()
        threads.append(t)
    log(f"watching {', '.join(args.kubeconfigs)}" + (f" (namespace {args.namespace})" if args.namespace else ""))
    while running and any(t.is_alive() for t in threads):
        time.sleep(0.2)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    main()
