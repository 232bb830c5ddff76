#!/usr/bin/env python3
"""Starts and stops Drover's local sandbox: one etcd + kube-apiserver per cluster
(mgmt, and the member clusters use1, usw2, euw1), the extended AWS emulator, and the pod
emulator (nodesim).

Everything binds to 127.0.0.1. Every process started is recorded by PID in the state
directory and stopped by that PID.

    sandbox.py up      start everything, wait until it answers, seed the clusters
    sandbox.py down    stop what `up` started
"""

import base64
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("DROVER_CACHE", Path.home() / ".cache" / "drover"))
STATE = Path(os.environ.get("DROVER_SANDBOX_DIR", ROOT / "target" / "sandbox"))
APISERVER = CACHE / "bin" / "kube-apiserver"
PYTHON = CACHE / "venv" / "bin" / "python"

# name -> (etcd client port, etcd peer port, apiserver port). DROVER_PORT_OFFSET shifts every
# port, so that two sandboxes (with their own DROVER_SANDBOX_DIR) can run side by side.
PORT_OFFSET = int(os.environ.get("DROVER_PORT_OFFSET", "0"))
CLUSTERS = {
    name: (etcd + PORT_OFFSET, peer + PORT_OFFSET, api + PORT_OFFSET)
    for name, (etcd, peer, api) in {
        "mgmt": (23791, 23891, 16443),
        "use1": (23792, 23892, 16444),
        "usw2": (23793, 23893, 16445),
        "euw1": (23794, 23894, 16446),
    }.items()
}
MEMBERS = ["use1", "usw2", "euw1"]
AWS_PORT = int(os.environ.get("DROVER_AWS_PORT", str(15000 + PORT_OFFSET)))
ADMIN_TOKEN_FILE = "admin.token"
MEMBER_USER = "drover-member"


def log(msg):
    print(f"[sandbox] {msg}", flush=True)


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def start(name, cmd, env=None):
    """Starts a long-lived process in its own session and records its PID."""
    logf = open(STATE / "logs" / f"{name}.log", "ab")
    proc = subprocess.Popen(
        cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True, env=env,
    )
    with open(STATE / "pids", "a") as f:
        f.write(f"{proc.pid} {name}\n")
    return proc


def wait_for(what, check, timeout=60.0, proc=None):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"{what}: process exited with {proc.returncode}; see {STATE}/logs")
        try:
            if check():
                return
        except Exception as e:  # not up yet
            last = e
        time.sleep(0.1)
    raise SystemExit(f"{what}: not ready within {timeout:.0f}s (last error: {last})")


def tls_context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def api_healthy(port, token):
    req = urllib.request.Request(
        f"https://127.0.0.1:{port}/readyz", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(req, context=tls_context(), timeout=2) as r:
        return r.status == 200


def ca_of(cert_dir):
    """The last certificate of the self-signed bundle is its CA."""
    pem = (cert_dir / "apiserver.crt").read_text()
    blocks = pem.strip().split("-----END CERTIFICATE-----")
    blocks = [b + "-----END CERTIFICATE-----\n" for b in blocks if b.strip()]
    return blocks[-1].lstrip()


def kubeconfig(name, port, token, ca_pem, user):
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {
            "server": f"https://127.0.0.1:{port}",
            "certificate-authority-data": base64.b64encode(ca_pem.encode()).decode(),
        }}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": user}}],
        "current-context": name,
    }


def kubectl(cluster, *args, stdin=None):
    cmd = ["kubectl", "--kubeconfig", str(STATE / cluster / "admin.kubeconfig"), *args]
    return run(cmd, input=stdin)


def up():
    if (STATE / "pids").exists():
        raise SystemExit(f"sandbox already running (state in {STATE}); run `down` first")
    if not APISERVER.exists():
        raise SystemExit(f"{APISERVER} missing; run e2e/install-deps.sh")
    started = time.monotonic()
    (STATE / "logs").mkdir(parents=True, exist_ok=True)
    procs = {}
    tokens = {}
    for name, (etcd_port, peer_port, api_port) in CLUSTERS.items():
        d = STATE / name
        (d / "pki").mkdir(parents=True, exist_ok=True)
        admin_token = os.urandom(16).hex()
        member_token = os.urandom(16).hex()
        tokens[name] = (admin_token, member_token)
        (d / ADMIN_TOKEN_FILE).write_text(admin_token)
        (d / "pki" / "tokens.csv").write_text(
            f'{admin_token},admin,admin,"system:masters"\n'
            f"{member_token},{MEMBER_USER},{MEMBER_USER}\n"
        )
        os.chmod(d / "pki" / "tokens.csv", 0o600)
        if not (d / "pki" / "sa.key").exists():
            run(["openssl", "genrsa", "-out", str(d / "pki" / "sa.key"), "2048"])
            run(["openssl", "rsa", "-in", str(d / "pki" / "sa.key"), "-pubout",
                 "-out", str(d / "pki" / "sa.pub")])
        procs[f"etcd-{name}"] = start(f"etcd-{name}", [
            "etcd", "--name", name, "--data-dir", str(d / "etcd"),
            "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
            "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-cluster", f"{name}=http://127.0.0.1:{peer_port}",
            "--listen-metrics-urls", "",
        ])

    env = dict(os.environ)
    for name, (etcd_port, _peer, api_port) in CLUSTERS.items():
        d = STATE / name
        procs[f"apiserver-{name}"] = start(f"apiserver-{name}", [
            str(APISERVER),
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            "--bind-address=127.0.0.1", f"--secure-port={api_port}",
            f"--cert-dir={d / 'pki'}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={d / 'pki' / 'sa.pub'}",
            f"--service-account-signing-key-file={d / 'pki' / 'sa.key'}",
            f"--token-auth-file={d / 'pki' / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--advertise-address=127.0.0.1",
            "--enable-priority-and-fairness=false",
        ], env=env)

    # Real PostgreSQL behind RDS instances, when a test turns it on (awsbed/postgres.py).
    subprocess.run(["rm", "-rf", str(STATE / "pg")], check=False)
    aws_env = dict(os.environ, PYTHONPATH=str(ROOT / "e2e"), DROVER_PG_DIR=str(STATE / "pg"),
                   DROVER_SANDBOX_PIDS=str(STATE / "pids"))
    procs["aws"] = start("aws", [str(PYTHON), "-m", "awsbed", "--port", str(AWS_PORT)], env=aws_env)

    for name, (_e, _p, api_port) in CLUSTERS.items():
        wait_for(f"kube-apiserver {name}", lambda: api_healthy(api_port, tokens[name][0]),
                 timeout=90, proc=procs[f"apiserver-{name}"])
    wait_for("AWS emulator", lambda: urllib.request.urlopen(
        f"http://127.0.0.1:{AWS_PORT}/_bed/health", timeout=2).status == 200,
        timeout=30, proc=procs["aws"])
    log(f"API servers and AWS emulator answer after {time.monotonic() - started:.1f}s")

    kubeconfigs = {}
    for name, (_e, _p, api_port) in CLUSTERS.items():
        d = STATE / name
        ca = ca_of(d / "pki")
        admin = kubeconfig(name, api_port, tokens[name][0], ca, "admin")
        (d / "admin.kubeconfig").write_text(json.dumps(admin, indent=2))
        os.chmod(d / "admin.kubeconfig", 0o600)
        member = kubeconfig(name, api_port, tokens[name][1], ca, MEMBER_USER)
        kubeconfigs[name] = json.dumps(member, indent=2)

    seed(kubeconfigs)

    env_lines = {
        "KUBECONFIG": STATE / "mgmt" / "admin.kubeconfig",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{AWS_PORT}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "DROVER_SANDBOX_DIR": STATE,
        "DROVER_AWS_PORT": AWS_PORT,
    }
    (STATE / "env.sh").write_text(
        "".join(f"export {k}={v}\n" for k, v in env_lines.items())
    )
    log(f"sandbox up in {time.monotonic() - started:.1f}s; `source {STATE}/env.sh`")


def seed(member_kubeconfigs):
    """Namespaces, member RBAC, workloads, and the kubeconfig Secrets, as a user would."""
    kubectl("mgmt", "create", "namespace", "drover-system")
    for member in MEMBERS:
        kubectl(member, "apply", "-f", str(ROOT / "config" / "member-rbac"))
        kubectl(member, "apply", "-f", str(ROOT / "e2e" / "manifests" / "keda-scaledobject-crd.yaml"))
        kubectl(member, "create", "clusterrolebinding", "drover-member",
                "--clusterrole=drover-member", f"--user={MEMBER_USER}")
        kubectl(member, "apply", "-f", str(ROOT / "e2e" / "manifests" / "workloads.yaml"))
        secret = {
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": f"{member}-kubeconfig", "namespace": "drover-system"},
            "type": "Opaque",
            "data": {"kubeconfig": base64.b64encode(member_kubeconfigs[member].encode()).decode()},
        }
        kubectl("mgmt", "apply", "-f", "-", stdin=json.dumps(secret))
    # nodesim reports which databases the workloads write to (bed.drover.io/writes-to).
    nodesim_env = dict(os.environ, NODESIM_AWS_ENDPOINT=f"http://127.0.0.1:{AWS_PORT}")
    start("nodesim", [str(PYTHON), str(ROOT / "e2e" / "nodesim.py"),
                      *[str(STATE / m / "admin.kubeconfig") for m in MEMBERS]], env=nodesim_env)


def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def is_postgres(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"postgres" in f.read().split(b"\0")[0]
    except OSError:
        return False


def stop_group(entries, timeout=10.0):
    # PostgreSQL servers of the AWS emulator (awsbed/postgres.py), recorded as pg-*: the
    # emulator stops them itself; any left (it died first) get a fast shutdown, resumed first
    # if an outage had stopped them, and only if the PID is still a postgres.
    entries = [(pid, name) for pid, name in entries
               if not name.startswith("pg-") or is_postgres(int(pid))]
    for pid, name in entries:
        try:
            if name.startswith("pg-"):
                os.kill(int(pid), signal.SIGCONT)
                os.kill(int(pid), signal.SIGINT)
            else:
                os.kill(int(pid), signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    for pid, name in entries:
        while alive(int(pid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        if alive(int(pid)):
            os.kill(int(pid), signal.SIGKILL)
            log(f"killed {name} ({pid}) after SIGTERM timeout")


def down():
    pids_file = STATE / "pids"
    if not pids_file.exists():
        log("nothing to stop")
        return
    entries = [line.split(" ", 1) for line in pids_file.read_text().splitlines() if line]
    # Stop emulators first, then API servers, then etcd, so each can shut down cleanly.
    groups = [
        [e for e in entries if not e[1].startswith(("apiserver-", "etcd-"))],
        [e for e in entries if e[1].startswith("apiserver-")],
        [e for e in entries if e[1].startswith("etcd-")],
    ]
    for group in groups:
        stop_group(group)
    pids_file.unlink()
    for name in CLUSTERS:
        subprocess.run(["rm", "-rf", str(STATE / name / "etcd")], check=False)
    subprocess.run(["rm", "-rf", str(STATE / "pg")], check=False)
    log("sandbox stopped")


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "up":
        try:
            up()
        except BaseException:
            down()
            raise
    elif cmd == "down":
        down()
    else:
        raise SystemExit(__doc__)
