"""Real PostgreSQL 15 behind the bed's RDS instances (issue 13): real replication, real promotion,
real data loss.

Opt-in, because every backed instance is a running server: POST /_bed/config {"postgres": true}
backs each RDS instance created from then on (CreateDBInstance, CreateDBInstanceReadReplica) with
its own PostgreSQL cluster on 127.0.0.1; instances created before, and Aurora, stay modelled
(replication.py). Debian's postgresql-15 is installed by e2e/install-deps.sh.

  * A primary is a copy of one initialised data directory (initdb runs once per bed, about 1.3 s;
    a copy and a start take about 0.3 s), run as the `postgres` user, its PID in the sandbox's
    pids file so `sandbox.py down` stops it even if the bed dies first.
  * A read replica is a pg_basebackup of its source, then a streaming standby. It streams through
    its *link*: a relay in the bed that hands the standby each byte of the replication stream
    `delay` seconds after the source sent it, as a slow cross-region link would (POST /_bed/lag
    sets the delay). Bytes still in the link when it is cut never arrive: that is real data loss.
  * PromoteReadReplica runs pg_promote() after the bed's promotion delay, cuts the link for good,
    and only then shows the instance `available` (replication.py's lag model stops with it).
  * A region outage stops (SIGSTOP) its servers and cuts every link to or from the region:
    nothing there answers, nothing there is lost. When the region returns, they go on (SIGCONT)
    and the standbys reconnect.
  * ReplicaLag is read from the standby: -1 unless its WAL receiver is streaming, else now minus
    the commit time of the last transaction it replayed. Each primary commits a heartbeat row
    every `HEARTBEAT` seconds (RDS writes its own heartbeat for the same reason), so an idle
    primary does not look like a growing lag; the reading is at most that much above the truth.
  * DescribeDBInstances shows the real endpoint: Address 127.0.0.1 and the server's port.
"""

import collections
import os
import shutil
import signal
import socket
import subprocess
import threading
import time

import pg8000.native

PG_BIN = os.environ.get("DROVER_PG_BIN", "/usr/lib/postgresql/15/bin")
PG_USER = "postgres"
HEARTBEAT = 0.5
CONF = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = ''
shared_buffers = 16MB
max_connections = 30
wal_level = replica
max_wal_senders = 5
wal_keep_size = 256MB
hot_standby = on
fsync = off
full_page_writes = off
wal_receiver_timeout = 5s
wal_retrieve_retry_interval = 1s
wal_sender_timeout = 5s
log_min_messages = warning
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def connect(port, timeout=5.0):
    return pg8000.native.Connection(PG_USER, host="127.0.0.1", port=port, database="postgres",
                                    timeout=timeout)


class Link:
    """A replica's cross-region link: a TCP relay on 127.0.0.1 from the standby to its source.
    The source-to-standby direction delivers each chunk `delay` seconds after it was read (the
    delay applies to what is already in flight too, so lowering it drains the link); the other
    direction (the standby's feedback) is passed at once. While cut, it closes every connection,
    dropping what is in flight, and refuses new ones."""

    def __init__(self, target_port, delay=0.0):
        self.target_port = target_port
        self.delay = float(delay)
        self.cut = False
        self.closed = False
        self.lock = threading.Condition()
        self.conns = []  # (standby socket, source socket)
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(8)
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while not self.closed:
            try:
                standby, _ = self.server.accept()
            except OSError:
                return
            with self.lock:
                refuse = self.cut or self.closed
            if refuse:
                standby.close()
                continue
            try:
                source = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
                source.settimeout(None)
            except OSError:
                standby.close()
                continue
            with self.lock:
                self.conns.append((standby, source))
            queue = collections.deque()
            threading.Thread(target=self.read_delayed, args=(source, standby, queue), daemon=True).start()
            threading.Thread(target=self.deliver, args=(standby, source, queue), daemon=True).start()
            threading.Thread(target=self.pump, args=(standby, source), daemon=True).start()

    def pump(self, src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        self.drop(src, dst)

    def read_delayed(self, source, standby, queue):
        # The delay models lag, not latency: the connection's handshake passes at once, and
        # the delay starts with the stream (the server's CopyBothResponse, message 'W').
        handshake, pending = True, b""
        try:
            while data := source.recv(65536):
                sent = time.monotonic()
                if handshake:
                    pending += data
                    while len(pending) >= 5:
                        length = int.from_bytes(pending[1:5], "big")
                        if len(pending) < 1 + length:
                            break
                        if pending[0] == ord("W"):
                            handshake = False
                        pending = pending[1 + length:]
                    sent = float("-inf")
                with self.lock:
                    queue.append((sent, data))
                    self.lock.notify_all()
        except OSError:
            pass
        with self.lock:
            queue.append((None, b""))  # end of stream, delivered in order
            self.lock.notify_all()

    def deliver(self, standby, source, queue):
        while True:
            with self.lock:
                while True:
                    if self.cut or self.closed:
                        queue.clear()
                        return self.drop(standby, source)
                    if queue:
                        sent, data = queue[0]
                        wait = 0.0 if sent is None else sent + self.delay - time.monotonic()
                        if wait <= 0:
                            queue.popleft()
                            break
                        self.lock.wait(min(wait, 0.1))
                    else:
                        self.lock.wait(0.1)
            if sent is None:
                return self.drop(standby, source)
            try:
                standby.sendall(data)
            except OSError:
                return self.drop(standby, source)

    def drop(self, a, b):
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        with self.lock:
            self.conns = [c for c in self.conns if c[0] is not a and c[0] is not b]

    def set_delay(self, seconds):
        with self.lock:
            self.delay = max(0.0, float(seconds))
            self.lock.notify_all()

    def set_cut(self, cut):
        with self.lock:
            self.cut = cut
            conns = list(self.conns) if cut else []
            self.lock.notify_all()
        for a, b in conns:
            self.drop(a, b)

    def close(self):
        with self.lock:
            self.closed = True
        self.set_cut(True)
        self.server.close()


class Server:
    """One PostgreSQL cluster: an RDS instance's database."""

    def __init__(self, fleet, region, ident, directory, port):
        self.fleet, self.region, self.ident = fleet, region, ident
        self.dir, self.port = directory, port
        self.proc = None
        self.source = None  # the Server it replicates from, while a standby
        self.link = None
        self.stopped = False  # SIGSTOPped by an outage
        self.heartbeat = None

    @property
    def name(self):
        return f"pg-{self.region}-{self.ident}"

    def start(self):
        log = open(os.path.join(self.dir, "server.log"), "ab")
        self.proc = subprocess.Popen([os.path.join(PG_BIN, "postgres"), "-D", self.dir], user=PG_USER,
                                     stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        self.fleet.record_pid(self.proc.pid, self.name)
        deadline = time.monotonic() + 30
        while True:
            try:
                connect(self.port, timeout=2).close()
                return
            except Exception:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL for {self.ident} did not start; see {self.dir}/server.log")
                time.sleep(0.05)

    def pids(self):
        """The postmaster and its children (an outage stops them all)."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        pids = [self.proc.pid]
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        if int(f.read().rsplit(")", 1)[1].split()[1]) == self.proc.pid:
                            pids.append(int(entry))
                except (OSError, IndexError, ValueError):
                    pass
        return pids

    def set_stopped(self, stopped):
        if stopped == self.stopped:
            return
        self.stopped = stopped
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGSTOP if stopped else signal.SIGCONT)
            except ProcessLookupError:
                pass

    def query(self, sql, **params):
        conn = connect(self.port)
        try:
            return conn.run(sql, **params)
        finally:
            conn.close()

    def lag(self):
        """The standby's ReplicaLag in seconds: -1 when it is not streaming, None before it has
        replayed a commit (nothing to publish yet)."""
        if self.stopped:
            return None
        rows = self.query(
            "select (select status from pg_stat_wal_receiver), "
            "extract(epoch from now() - pg_last_xact_replay_timestamp())::float8")
        status, lag = rows[0]
        if status != "streaming":
            return -1.0
        return None if lag is None else max(0.0, float(lag))

    def beat(self):
        """Commits a heartbeat every HEARTBEAT seconds while this server is a primary."""
        while not self.fleet.closed and self.heartbeat is threading.current_thread():
            if not self.stopped and self.source is None:
                try:
                    self.query("insert into bed_heartbeat (id, at) values (1, now()) "
                               "on conflict (id) do update set at = excluded.at")
                except Exception:
                    pass  # stopped mid-call, or shutting down: the next beat tries again
            time.sleep(HEARTBEAT)

    def start_heartbeat(self):
        self.heartbeat = threading.Thread(target=self.beat, daemon=True)
        self.heartbeat.start()

    def stop(self):
        self.heartbeat = None
        if self.link:
            self.link.close()
        if self.proc and self.proc.poll() is None:
            self.set_stopped(False)
            self.proc.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Writer:
    """A writer workload's real writes: while it runs, it commits a sequence-numbered row into
    its server every 1/rate seconds and records each commit the server acknowledged. A refused
    or unanswered write is not acknowledged, and is retried as the next number."""

    def __init__(self, server, name, rate):
        self.server, self.name, self.rate = server, name, float(rate)
        self.acked = []  # (seq, wall time of the acknowledgement)
        self.failed = 0
        self.running = True
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        seq, conn, due = 0, None, time.monotonic()
        while self.running:
            due += 1.0 / self.rate
            try:
                if conn is None:
                    conn = connect(self.server.port, timeout=2)
                    conn.run("create table if not exists bed_writes (writer text, seq bigint, "
                             "at timestamptz, primary key (writer, seq))")
                seq += 1
                conn.run("insert into bed_writes values (:w, :s, now())", w=self.name, s=seq)
                with self.lock:
                    self.acked.append((seq, time.time()))
            except Exception:
                with self.lock:
                    self.failed += 1
                if conn is not None:
                    try:
                        conn.close()
                    except Exception:
                        pass
                conn = None
            time.sleep(max(0.0, due - time.monotonic()))
            due = max(due, time.monotonic() - 1.0)  # after a stall, no burst to catch up
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def stop(self):
        self.running = False

    def summary(self):
        with self.lock:
            acked = list(self.acked)
            failed = self.failed
        return {"writer": self.name, "region": self.server.region, "identifier": self.server.ident,
                "rate": self.rate, "running": self.running, "acked": len(acked), "failed": failed,
                "first_ack": acked[0][1] if acked else None, "last_ack": acked[-1][1] if acked else None}

    def lost_in(self, other):
        """The acknowledged rows of this writer that `other` (a Server) does not have: how many,
        and the acknowledgement times of the first and last of them."""
        with self.lock:
            acked = list(self.acked)
        present = {r[0] for r in other.query("select seq from bed_writes where writer = :w", w=self.name)}
        lost = [(seq, at) for seq, at in acked if seq not in present]
        return {"writer": self.name, "acked": len(acked), "lost": len(lost),
                "first_lost_ack": lost[0][1] if lost else None,
                "last_lost_ack": lost[-1][1] if lost else None,
                "lost_seconds": round(len(lost) / self.rate, 3)}


class Fleet:
    """The PostgreSQL servers of the bed, by (region, instance identifier)."""

    def __init__(self, root, pids_file=None):
        self.root = root
        self.pids_file = pids_file
        self.lock = threading.Lock()
        self.servers = {}
        self.delays = {}  # (region, identifier) -> link delay, seconds (POST /_bed/lag)
        self.writers = {}  # (region, identifier) -> Writer (the last one, kept after it stops)
        self.wanted = {}  # (region, identifier) -> whether its workloads write (POST /_bed/writes)
        self.writer_starts = 0  # numbers each Writer's name
        self.write_rate = 20.0  # rows per second per writer
        self.template = None
        self.closed = False

    def record_pid(self, pid, name):
        if self.pids_file:
            with open(self.pids_file, "a") as f:
                f.write(f"{pid} {name}\n")

    def prepare(self, path):
        os.makedirs(path, exist_ok=True)
        shutil.chown(path, PG_USER, PG_USER)

    def ensure_template(self):
        """One initialised data directory, copied for every primary."""
        with self.lock:
            if self.template:
                return self.template
            path = os.path.join(self.root, "template")
            if not os.path.exists(os.path.join(path, "PG_VERSION")):
                shutil.rmtree(path, ignore_errors=True)
                self.prepare(self.root)
                subprocess.run([os.path.join(PG_BIN, "initdb"), "-D", path, "-U", PG_USER, "--auth=trust",
                                "-E", "UTF8", "--no-sync", "--no-instructions"], user=PG_USER,
                               check=True, capture_output=True)
                with open(os.path.join(path, "pg_hba.conf"), "a") as f:
                    f.write("host all all 127.0.0.1/32 trust\nhost replication all 127.0.0.1/32 trust\n")
            self.template = path
            return path

    def new_dir(self, region, ident):
        base = os.path.join(self.root, region)
        self.prepare(self.root)
        self.prepare(base)
        # A fresh directory per server: a deleted instance's identifier can be reused.
        path = os.path.join(base, f"{ident}-{time.time_ns()}")
        return path

    def write_conf(self, directory, port):
        with open(os.path.join(directory, "postgresql.conf"), "a") as f:
            f.write(CONF.format(port=port))

    def create_primary(self, region, ident):
        template = self.ensure_template()
        path = self.new_dir(region, ident)
        subprocess.run(["cp", "-a", template, path], check=True)
        port = free_port()
        self.write_conf(path, port)
        server = Server(self, region, ident, path, port)
        server.start()
        server.query("create table if not exists bed_heartbeat (id int primary key, at timestamptz)")
        server.start_heartbeat()
        self.register(server)
        return server

    def create_replica(self, region, ident, source, delay=0.0):
        """A streaming standby of `source` (a Server), through a link delayed by `delay` s."""
        path = self.new_dir(region, ident)
        subprocess.run([os.path.join(PG_BIN, "pg_basebackup"), "-h", "127.0.0.1", "-p", str(source.port),
                        "-U", PG_USER, "-D", path, "-X", "stream", "--checkpoint=fast", "--no-sync"],
                       user=PG_USER, check=True, capture_output=True)
        port = free_port()
        link = Link(source.port, delay)
        self.write_conf(path, port)
        with open(os.path.join(path, "postgresql.auto.conf"), "w") as f:
            # No SSL or GSS negotiation: the link reads the protocol's framed messages.
            f.write(f"primary_conninfo = 'host=127.0.0.1 port={link.port} user={PG_USER} "
                    f"sslmode=disable gssencmode=disable application_name={ident}'\n")
        open(os.path.join(path, "standby.signal"), "w").close()
        shutil.chown(os.path.join(path, "postgresql.auto.conf"), PG_USER, PG_USER)
        shutil.chown(os.path.join(path, "standby.signal"), PG_USER, PG_USER)
        server = Server(self, region, ident, path, port)
        server.source, server.link = source, link
        server.start()
        with self.lock:
            # A delay set while this replica was being created (set_delay found no server).
            link.set_delay(self.delays.get((region, ident), delay))
        self.register(server)
        return server

    def get(self, region, ident):
        with self.lock:
            return self.servers.get((region, ident))

    def last_ack(self, region, ident):
        """When the running writer of (region, ident) last had a commit acknowledged: None if
        none yet or no writer runs; False if the instance is not a real server."""
        with self.lock:
            if (region, ident) not in self.servers:
                return False
            writer = self.writers.get((region, ident))
        if writer is None or not writer.running:
            return None
        with writer.lock:
            return writer.acked[-1][1] if writer.acked else None

    def promote(self, region, ident):
        """pg_promote(), waiting until the server accepts writes; the link is cut for good."""
        server = self.get(region, ident)
        if server is None or server.source is None:
            return
        server.query("select pg_promote(true, 60)")
        if server.link:
            server.link.close()
        server.source, server.link = None, None
        server.start_heartbeat()

    def rename(self, region, old, new):
        """The instance keeps its server and writer; the old name's settings go with it."""
        with self.lock:
            server = self.servers.pop((region, old), None)
            if server:
                server.ident = new
                self.servers[(region, new)] = server
                for table in (self.writers, self.wanted, self.delays):
                    if (region, old) in table:
                        table[(region, new)] = table.pop((region, old))

    def delete(self, region, ident):
        with self.lock:
            server = self.servers.pop((region, ident), None)
            writer = self.writers.get((region, ident))
            if writer is not None:
                writer.stop()
        if server:
            server.stop()
            shutil.rmtree(server.dir, ignore_errors=True)

    def set_outages(self, outages):
        """Stops the servers of regions in an outage and cuts every link touching them."""
        with self.lock:
            servers = list(self.servers.values())
        for server in servers:
            server.set_stopped(server.region in outages)
            if server.link:
                server.link.set_cut(server.region in outages or server.source.region in outages)

    def set_delay(self, region, ident, seconds):
        """The link delay of a replica, now, and for one created later under that name."""
        with self.lock:
            self.delays[(region, ident)] = max(0.0, float(seconds))
        server = self.get(region, ident)
        if server is not None and server.link is not None:
            server.link.set_delay(seconds)

    def delay_for(self, region, ident):
        with self.lock:
            return self.delays.get((region, ident), 0.0)

    def set_writing(self, region, ident, writing):
        """Starts or stops the real writer of an instance (nodesim reports writer workloads
        with ready pods through POST /_bed/writes). Remembered for an instance not backed
        yet (the workloads may be ready before their database exists). False if not backed."""
        with self.lock:
            self.wanted[(region, ident)] = writing
            return self.apply_writing((region, ident))

    def apply_writing(self, key):
        """Makes the writer of `key` match what its workloads want. Called with the lock."""
        server = self.servers.get(key)
        if server is None:
            return False
        writing = self.wanted.get(key, False)
        current = self.writers.get(key)
        if writing and (current is None or not current.running):
            # A name of its own: a database promoted from a copy of an earlier writer's rows
            # (a failback) has that writer's sequence numbers already.
            self.writer_starts += 1
            self.writers[key] = Writer(server, f"{key[0]}/{key[1]}#{self.writer_starts}", self.write_rate)
        elif not writing and current is not None:
            current.stop()
        return True

    def register(self, server):
        """Adds a started server, and starts its writer if its workloads already write."""
        key = (server.region, server.ident)
        with self.lock:
            self.servers[key] = server
            self.apply_writing(key)

    def writer_summaries(self):
        with self.lock:
            writers = list(self.writers.values())
        return [w.summary() for w in writers]

    def lost(self, writer_region, writer_ident, region, ident):
        """What the writer of (writer_region, writer_ident) had acknowledged that the server
        of (region, ident) lacks."""
        with self.lock:
            writer = self.writers.get((writer_region, writer_ident))
        server = self.get(region, ident)
        if writer is None or server is None:
            raise ValueError("no such writer or backed instance")
        return writer.lost_in(server)

    def reset(self):
        """Stops every server (the bed's reset forgets their instances)."""
        with self.lock:
            servers = list(self.servers.values())
            self.servers.clear()
            self.delays.clear()
            for writer in self.writers.values():
                writer.stop()
            self.writers.clear()
            self.wanted.clear()
        for server in servers:
            server.stop()
            shutil.rmtree(server.dir, ignore_errors=True)

    def close(self):
        self.closed = True
        with self.lock:
            for writer in self.writers.values():
                writer.stop()
            servers = list(self.servers.values())
            self.servers.clear()
        for server in servers:
            server.stop()
