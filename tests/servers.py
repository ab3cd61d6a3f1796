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
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import trustme

__all__ = ["RedisServer", "ServerFactory", "TLSFiles", "free_port"]

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
    ) -> None:
        self.directory = directory
        self.port = free_port()
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
        self._process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:port`` (``rediss://`` for TLS), without credentials."""
        scheme = "rediss" if self.tls is not None else "redis"
        return f"{scheme}://127.0.0.1:{self.port}"

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
