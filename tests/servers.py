"""Throwaway ``redis-server`` processes for tests that restart, break or reconfigure a server.

Theory of operation
-------------------
A :class:`RedisServer` is one ``redis-server`` subprocess on a port picked by binding port 0. It
runs in its own temporary directory, persists nothing unless asked (``--save ''``, AOF off), and is
considered started only once it answers ``PING`` (over TLS when it is a TLS server, with the
password when it has one), within a deadline. :meth:`RedisServer.restart` stops it and starts it
again on the *same* port, which is what reconnect tests need. :class:`ServerFactory` (behind the
``redis_server`` fixture) creates servers and kills every one of them in teardown, whatever the test
did. TLS servers get certificates from a throwaway CA made with ``trustme``.

Topologies for the Sentinel and Cluster tests are built from the same processes:
:class:`SentinelTopology` (one master, two replicas, three sentinels -- ``redis-server
--sentinel`` with a generated config -- with a short ``down-after-milliseconds`` so failovers take
seconds) and :class:`ClusterTopology` (masters, optionally replicas, joined with ``redis-cli
--cluster create``, with a short ``cluster-node-timeout`` so a killed master's replica takes over
in about two seconds). Both wait until the topology is really usable (replicas in sync, sentinels
aware of each other; ``cluster_state:ok`` everywhere, every node seeing every other) and kill
every process in :meth:`stop`. Cluster failover tests wait for conditions, never for a fixed
time: ``wait_for_replication`` before the crash, ``wait_for_failover`` after it, and ``rejoin``
to bring the old master back as a replica, so the next test finds a complete topology.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import redis
import trustme

__all__ = [
    "ClusterNode",
    "ClusterTopology",
    "RedisServer",
    "SentinelTopology",
    "ServerFactory",
    "TLSFiles",
    "free_port",
]

_START_TIMEOUT = 10.0


def free_port() -> int:
    """A TCP port that was free a moment ago (bound to port 0, then released).

    :return: the port number.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class TLSFiles:
    """A throwaway CA and a server (and client) certificate for ``localhost``/``127.0.0.1``.

    :param directory: where to write the PEM files.
    """

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA()
        server = ca.issue_cert("localhost", "127.0.0.1")
        client = ca.issue_cert("streaq-test-client")
        self.ca_file = str(directory / "ca.pem")
        self.cert_file = str(directory / "server.pem")
        self.key_file = str(directory / "server.key")
        self.client_cert_file = str(directory / "client.pem")
        self.client_key_file = str(directory / "client.key")
        ca.cert_pem.write_to_path(self.ca_file)
        server.private_key_pem.write_to_path(self.key_file)
        client.private_key_pem.write_to_path(self.client_key_file)
        with open(self.cert_file, "wb") as out:
            for blob in server.cert_chain_pems:
                out.write(blob.bytes())
        with open(self.client_cert_file, "wb") as out:
            for blob in client.cert_chain_pems:
                out.write(blob.bytes())


class RedisServer:
    """One ``redis-server`` subprocess.

    :param directory: its working directory (AOF files, logs).
    :param password: ``requirepass`` for the default user.
    :param acl_users: ACL rules, e.g. ``["alice on >secret ~* &* +@all"]``.
    :param tls: certificates to serve TLS with (then plain TCP is off).
    :param tls_auth_clients: whether clients must present a certificate.
    :param appendonly: enable the AOF (so data survives :meth:`restart`).
    :param extra_args: more ``redis-server`` options (``["--replicaof", host, port]`` ...).
    :param port: the port to listen on (default: a free one).
    """

    def __init__(
        self,
        directory: Path,
        *,
        password: str | None = None,
        acl_users: list[str] | None = None,
        tls: TLSFiles | None = None,
        tls_auth_clients: bool = False,
        appendonly: bool = False,
        extra_args: list[str] | None = None,
        port: int | None = None,
    ) -> None:
        self.directory = directory
        self.port = port if port is not None else free_port()
        self.password = password
        self.tls = tls
        self._args = [
            shutil.which("redis-server") or "redis-server",
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes" if appendonly else "no",
            "--dir",
            str(directory),
            "--logfile",
            str(directory / "redis.log"),
        ]
        if tls is None:
            self._args += ["--port", str(self.port)]
        else:
            self._args += [
                "--port",
                "0",
                "--tls-port",
                str(self.port),
                "--tls-cert-file",
                tls.cert_file,
                "--tls-key-file",
                tls.key_file,
                "--tls-ca-cert-file",
                tls.ca_file,
                "--tls-auth-clients",
                "yes" if tls_auth_clients else "no",
            ]
        if password is not None:
            self._args += ["--requirepass", password]
        for rule in acl_users or []:
            self._args += ["--user", *rule.split()]
        #: The unix socket the server also listens on.
        self.socket_path = str(directory / "redis.sock")
        self._args += ["--unixsocket", self.socket_path, "--unixsocketperm", "700"]
        self._args += extra_args or []
        self._process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:port`` (``rediss://`` for TLS), without credentials."""
        scheme = "rediss" if self.tls is not None else "redis"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def is_running(self) -> bool:
        """Whether the process was started and has not been stopped (nor exited)."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the process and wait until it answers ``PING``.

        :raises RuntimeError: when it exits or does not answer in time.
        """
        self._process = subprocess.Popen(
            self._args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"redis-server exited; see {self.directory / 'redis.log'}")
            if self._ping():
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server on port {self.port} did not answer PING in time")

    def _ping(self) -> bool:
        command = b"PING\r\n"
        if self.password is not None:
            command = f"AUTH {self.password}\r\n".encode() + command
        try:
            with contextlib.ExitStack() as stack:
                sock = stack.enter_context(
                    socket.create_connection(("127.0.0.1", self.port), timeout=1)
                )
                if self.tls is not None:
                    context = ssl.create_default_context(cafile=self.tls.ca_file)
                    context.load_cert_chain(self.tls.client_cert_file, self.tls.client_key_file)
                    sock = stack.enter_context(
                        context.wrap_socket(sock, server_hostname="localhost")
                    )
                sock.sendall(command)
                return b"PONG" in sock.recv(1024)
        except OSError:
            return False

    def stop(self, *, kill: bool = False) -> None:
        """Stop the process (SIGTERM, or SIGKILL with ``kill``) and wait for it to exit.

        :param kill: simulate a crash instead of a clean shutdown.
        """
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGCONT)  # a paused server could not handle SIGTERM
        if kill:
            process.kill()
        else:
            process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def pause(self) -> None:
        """Freeze the process (SIGSTOP): it accepts no bytes and answers nothing until resumed."""
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Unfreeze the process (SIGCONT)."""
        assert self._process is not None
        self._process.send_signal(signal.SIGCONT)

    def restart(self, *, kill: bool = False) -> None:
        """Stop and start again on the same port.

        :param kill: stop with SIGKILL (a crash) instead of SIGTERM.
        """
        self.stop(kill=kill)
        self.start()


class ServerFactory:
    """Creates :class:`RedisServer` instances and guarantees they are all stopped.

    :param directory: parent directory for the servers' working directories.
    """

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._servers: list[RedisServer] = []
        self._tls: TLSFiles | None = None

    def tls_files(self) -> TLSFiles:
        """:return: the (lazily created, shared) throwaway CA and certificates."""
        if self._tls is None:
            self._tls = TLSFiles(self._directory / "tls")
        return self._tls

    def __call__(
        self,
        *,
        password: str | None = None,
        acl_users: list[str] | None = None,
        tls: bool = False,
        tls_auth_clients: bool = False,
        appendonly: bool = False,
    ) -> RedisServer:
        """Start a new server (arguments as for :class:`RedisServer`, ``tls`` as a flag).

        :return: the running server.
        """
        server = RedisServer(
            self._directory / f"server-{len(self._servers)}",
            password=password,
            acl_users=acl_users,
            tls=self.tls_files() if tls else None,
            tls_auth_clients=tls_auth_clients,
            appendonly=appendonly,
        )
        self._servers.append(server)
        server.start()
        return server

    def stop_all(self) -> None:
        """Kill every server this factory started."""
        for server in self._servers:
            with contextlib.suppress(Exception):
                server.stop(kill=True)


#: A replica (re)joining is synced at once, not after the default 5 s wait for more replicas to
#: share the transfer: topologies start, and failed masters rejoin, in a fraction of a second.
_PROMPT_SYNC = ["--repl-diskless-sync-delay", "0"]


def _wait_for(what: str, predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll ``predicate`` (exceptions count as false) until it holds.

    :raises RuntimeError: when it does not hold within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if predicate():
                return
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


class SentinelTopology:
    """One master, ``replicas`` replicas and ``sentinels`` sentinels watching ``master_name``.

    :param directory: parent of the processes' working directories.
    :param sentinel_password: ``requirepass`` of the sentinels (they share it among themselves).
    :param down_after_ms: ``down-after-milliseconds``: how long a silent master is not yet dead.
    """

    def __init__(
        self,
        directory: Path,
        *,
        replicas: int = 2,
        sentinels: int = 3,
        master_name: str = "mymaster",
        sentinel_password: str | None = None,
        down_after_ms: int = 1000,
    ) -> None:
        self.directory = directory
        self.master_name = master_name
        self.sentinel_password = sentinel_password
        self.servers: list[RedisServer] = []
        self.sentinels: list[RedisServer] = []
        self._replicas = replicas
        self._sentinel_count = sentinels
        self._down_after_ms = down_after_ms

    @property
    def sentinel_nodes(self) -> list[tuple[str, int]]:
        """``(host, port)`` of the sentinels."""
        return [("127.0.0.1", s.port) for s in self.sentinels]

    def start(self) -> None:
        """Start the servers and sentinels and wait until failover is possible."""
        master = RedisServer(self.directory / "master", extra_args=_PROMPT_SYNC)
        self.servers.append(master)
        master.start()
        for index in range(self._replicas):
            replica = RedisServer(
                self.directory / f"replica-{index}",
                extra_args=["--replicaof", "127.0.0.1", str(master.port), *_PROMPT_SYNC],
            )
            self.servers.append(replica)
            replica.start()
        for index in range(self._sentinel_count):
            sentinel_dir = self.directory / f"sentinel-{index}"
            sentinel_dir.mkdir(parents=True, exist_ok=True)
            port = free_port()
            lines = [
                f"port {port}",
                "bind 127.0.0.1",
                f"dir {sentinel_dir}",
                f"logfile {sentinel_dir / 'sentinel.log'}",
                f"sentinel monitor {self.master_name} 127.0.0.1 {master.port} 2",
                f"sentinel down-after-milliseconds {self.master_name} {self._down_after_ms}",
                f"sentinel failover-timeout {self.master_name} 10000",
                f"sentinel parallel-syncs {self.master_name} 2",
            ]
            if self.sentinel_password is not None:
                lines += [
                    f"requirepass {self.sentinel_password}",
                    f"sentinel sentinel-pass {self.sentinel_password}",
                ]
            config = sentinel_dir / "sentinel.conf"
            config.write_text("\n".join(lines) + "\n")
            sentinel = RedisServer(sentinel_dir, password=self.sentinel_password)
            sentinel.port = port
            sentinel._args = [
                shutil.which("redis-server") or "redis-server",
                str(config),
                "--sentinel",
            ]
            self.sentinels.append(sentinel)
            sentinel.start()
        _wait_for("replicas in sync", lambda: self._online_replicas(master) == self._replicas)
        _wait_for("sentinels aware of each other and of the replicas", self._sentinels_ready)

    def _client(self, server: RedisServer) -> redis.Redis:
        return redis.Redis(port=server.port, password=server.password, socket_timeout=2)

    def _online_replicas(self, master: RedisServer) -> int:
        with self._client(master) as client:
            info = client.info("replication")
        return sum(
            1
            for key, value in info.items()
            if key.startswith("slave") and value["state"] == "online"
        )

    def _sentinels_ready(self) -> bool:
        for sentinel in self.sentinels:
            with self._client(sentinel) as client:
                fields = client.sentinel_master(self.master_name)
                if int(fields["num-slaves"]) != self._replicas:
                    return False
                if int(fields["num-other-sentinels"]) != self._sentinel_count - 1:
                    return False
        return True

    def master_port(self) -> int:
        """:return: the port of the current master, as the first sentinel names it."""
        with self._client(self.sentinels[0]) as client:
            host_port = client.execute_command(
                "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name
            )
        return int(host_port[1])

    def server_on(self, port: int) -> RedisServer:
        """:return: the data server listening on ``port``."""
        return next(s for s in self.servers if s.port == port)

    def wait_for_new_master(self, old_port: int, timeout: float = 30.0) -> int:
        """Wait until the sentinels name a master other than ``old_port`` and it says so itself.

        :return: the new master's port.
        """
        found: list[int] = []

        def promoted() -> bool:
            port = self.master_port()
            if port == old_port:
                return False
            with self._client(self.server_on(port)) as client:
                if client.execute_command("ROLE")[0] != b"master":
                    return False
            found.append(port)
            return True

        _wait_for("a promoted replica", promoted, timeout)
        return found[-1]

    def stop(self) -> None:
        """Kill every process of the topology."""
        for server in [*self.sentinels, *self.servers]:
            with contextlib.suppress(Exception):
                server.stop(kill=True)


def _cluster_port() -> int:
    """A free port that a cluster node may use: its bus port (+10000) must exist and be free."""
    while True:
        port = free_port()
        if port > 55535:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


class ClusterNode:
    """One line of ``CLUSTER NODES``, as a node sees the cluster.

    :param line: the line.
    """

    def __init__(self, line: str) -> None:
        fields = line.split()
        self.id = fields[0]
        self.port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
        self.flags = frozenset(fields[2].split(","))
        self.master_id = None if fields[3] == "-" else fields[3]
        self.connected = fields[7] == "connected"
        #: ``(first, last)`` slot ranges it serves (importing/migrating markers are skipped).
        self.slots = [
            (int(lo), int(hi or lo))
            for lo, _, hi in (spec.partition("-") for spec in fields[8:] if "[" not in spec)
        ]

    @property
    def is_master(self) -> bool:
        """Whether it is a master (failed or not)."""
        return "master" in self.flags

    @property
    def failing(self) -> bool:
        """Whether it is flagged ``fail`` or ``fail?`` (or cannot be reached over the bus)."""
        return bool(self.flags & {"fail", "fail?", "handshake", "noaddr"}) or not self.connected


class ClusterTopology:
    """A Redis Cluster of ``masters`` masters with ``replicas`` replicas each, created by
    ``redis-cli --cluster create``.

    The masters are whichever nodes ``redis-cli`` chose: ask :meth:`master_ports` and
    :meth:`replicas_of` rather than assuming an order of :attr:`nodes`.

    :param directory: parent of the nodes' working directories.
    :param masters: how many masters share the slots.
    :param replicas: replicas per master.
    :param node_timeout_ms: ``cluster-node-timeout``: how long an unreachable master is not yet
        failed. Small, so an automatic failover takes about two seconds.
    """

    def __init__(
        self, directory: Path, *, masters: int = 3, replicas: int = 0, node_timeout_ms: int = 2000
    ) -> None:
        self.directory = directory
        self.nodes: list[RedisServer] = []
        self._masters = masters
        self._replicas = replicas
        self._node_timeout_ms = node_timeout_ms

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        """``(host, port)`` of every node."""
        return [("127.0.0.1", node.port) for node in self.nodes]

    def start(self) -> None:
        """Start the nodes, create the cluster and wait until it is fully formed: every node
        sees every other, ``cluster_state:ok`` everywhere, every replica in sync."""
        for index in range(self._masters * (1 + self._replicas)):
            node_dir = self.directory / f"node-{index}"
            node = RedisServer(
                node_dir,
                port=_cluster_port(),
                extra_args=[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    str(node_dir / "nodes.conf"),
                    "--cluster-node-timeout",
                    str(self._node_timeout_ms),
                    *_PROMPT_SYNC,
                ],
            )
            self.nodes.append(node)
            node.start()
        subprocess.run(
            [
                shutil.which("redis-cli") or "redis-cli",
                "--cluster",
                "create",
                *[f"127.0.0.1:{node.port}" for node in self.nodes],
                "--cluster-replicas",
                str(self._replicas),
                "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
        )
        self.wait_until_healthy()

    def client(self, port: int) -> redis.Redis:
        """:return: a plain (non-cluster) redis-py client of one node."""
        return redis.Redis(port=port, socket_timeout=5)

    def node_on(self, port: int) -> RedisServer:
        """:return: the node listening on ``port``."""
        return next(node for node in self.nodes if node.port == port)

    def view(self, port: int | None = None) -> list[ClusterNode]:
        """The cluster as one node sees it (``CLUSTER NODES``).

        :param port: the node to ask (default: the first running one).
        :return: one entry per node it knows.
        """
        if port is None:
            port = next(node.port for node in self.nodes if node.is_running)
        with self.client(port) as client:
            text = client.execute_command("CLUSTER", "NODES").decode()
        return [ClusterNode(line) for line in text.splitlines() if line.strip()]

    def node_ids(self) -> dict[int, str]:
        """:return: port -> node id of the masters that are not failed."""
        return {n.port: n.id for n in self.view() if n.is_master and not n.failing}

    def master_ports(self) -> set[int]:
        """:return: the ports of the masters serving slots."""
        return {n.port for n in self.view() if n.is_master and n.slots and not n.failing}

    def replica_ports(self) -> set[int]:
        """:return: the ports of the replicas that are up."""
        return {n.port for n in self.view() if "slave" in n.flags and not n.failing}

    def replicas_of(self, port: int) -> set[int]:
        """:return: the ports of the replicas of the master on ``port``."""
        view = self.view()
        master = next(n.id for n in view if n.port == port)
        return {n.port for n in view if n.master_id == master and not n.failing}

    def master_of_slot(self, slot: int, *, asking: int | None = None) -> int:
        """:return: the port of the master serving ``slot``, according to ``asking``'s view."""
        for node in self.view(asking):
            if node.is_master and any(lo <= slot <= hi for lo, hi in node.slots):
                return node.port
        raise LookupError(f"no master serves slot {slot}")

    def wait_until_healthy(self, timeout: float = 30.0) -> None:
        """Wait until every node (all must be running) reports ``cluster_state:ok`` and sees every
        node connected and none failing, and every replica is in sync with its master.

        :raises RuntimeError: when that does not happen within ``timeout`` seconds.
        """

        def healthy() -> bool:
            for node in self.nodes:
                view = self.view(node.port)
                if len(view) != len(self.nodes) or any(n.failing for n in view):
                    return False
                with self.client(node.port) as client:
                    if b"cluster_state:ok" not in client.execute_command("CLUSTER", "INFO"):
                        return False
                    info = client.info("replication")
                if info["role"] == "slave" and (
                    info["master_link_status"] != "up" or info["master_sync_in_progress"]
                ):
                    return False
            return True

        _wait_for("a healthy cluster (all nodes ok, replicas in sync)", healthy, timeout)

    def wait_for_replication(self, master_port: int, timeout: float = 10.0) -> None:
        """Wait until every replica of a master acknowledged all that it has written so far.

        Replication is asynchronous; a test that kills a master calls this first when what it
        checks is the client's recovery, not Redis losing acknowledged writes.
        """
        with self.client(master_port) as client:
            target = int(client.info("replication")["master_repl_offset"])
        expected = len(self.replicas_of(master_port))

        def acknowledged() -> bool:
            with self.client(master_port) as client:
                info = client.info("replication")
            offsets = [
                int(value["offset"]) for key, value in info.items() if key.startswith("slave")
            ]
            return len(offsets) == expected and min(offsets, default=target) >= target

        _wait_for(
            f"the replicas of {master_port} to acknowledge offset {target}", acknowledged, timeout
        )

    def wait_for_failover(self, slot: int, old_port: int, timeout: float = 30.0) -> int:
        """Wait until a replica of the failed master ``old_port`` serves ``slot`` and every
        surviving node agrees and reports ``cluster_state:ok``.

        :return: the new master's port.
        """
        found: list[int] = []

        def promoted() -> bool:
            owners = set()
            for node in self.nodes:
                if not node.is_running:
                    continue
                owners.add(self.master_of_slot(slot, asking=node.port))
                with self.client(node.port) as client:
                    if b"cluster_state:ok" not in client.execute_command("CLUSTER", "INFO"):
                        return False
            if len(owners) != 1 or old_port in owners:
                return False
            (port,) = owners
            with self.client(port) as client:
                if client.execute_command("ROLE")[0] != b"master":
                    return False
            found.append(port)
            return True

        _wait_for(f"a replica of {old_port} promoted", promoted, timeout)
        return found[-1]

    def rejoin(self, port: int) -> None:
        """Start the (killed) node on ``port`` again, unless it still runs, and wait until the
        cluster is healthy: a failed-over master comes back as a replica of the master that
        replaced it."""
        node = self.node_on(port)
        if not node.is_running:
            node.start()
        self.wait_until_healthy()

    def stop(self) -> None:
        """Kill every node."""
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.stop(kill=True)
