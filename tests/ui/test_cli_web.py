"""``streaq web``'s defences: ``--auth module:callable``, ``--allowed-host`` and the loopback
default of the Host check, with the security headers, against a real uvicorn in a child process.

They run once, not per backend: ``streaq web`` serves with uvicorn on asyncio whatever the tests'
backend.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from servers import free_port

from ._support import spawn_streaq, streaq_command
from .test_security import assert_secured

CLI_MODULE = """
import os

from fastapi import Depends, HTTPException
from fastapi.security import HTTPBasic, HTTPBasicCredentials

from streaq import Worker

worker = Worker(redis_url={redis_url!r}, queue_name={queue!r})
basic = HTTPBasic()


def admin_only(credentials: HTTPBasicCredentials = Depends(basic)) -> None:
    if (credentials.username, credentials.password) != ("admin", "pw"):
        raise HTTPException(401, headers={{"WWW-Authenticate": "Basic"}})


not_callable = 42
"""


@contextmanager
def streaq_web(project: Path, *args: str) -> Iterator[httpx.Client]:
    """``streaq web web_app:worker --port P *args`` in a child; a client of it once it answers."""
    port = free_port()
    process = spawn_streaq(project, "web", "web_app:worker", "--port", str(port), *args)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            deadline = time.monotonic() + 20
            while True:
                assert process.poll() is None, process.communicate()[1]
                try:
                    client.get("/queue")
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "streaq web did not start"
                    time.sleep(0.1)
            yield client
    finally:
        process.terminate()
        process.communicate(timeout=20)


def test_streaq_web_serves_auth_and_allowed_hosts(
    tmp_path: Path, redis_url: str, clean_queue: str
) -> None:
    (tmp_path / "web_app.py").write_text(CLI_MODULE.format(redis_url=redis_url, queue=clean_queue))
    hosts = ["--allowed-host", "ui.example", "--allowed-host", "127.0.0.1"]
    with streaq_web(tmp_path, "--auth", "web_app:admin_only", *hosts) as client:
        first = client.get("/queue")
        assert first.status_code == 401
        assert first.headers["www-authenticate"] == "Basic"
        assert_secured(first)
        page = client.get("/queue", auth=("admin", "pw"))
        assert page.status_code == 200
        assert f"Queue {clean_queue}" in page.text
        assert client.get("/queue", auth=("admin", "no")).status_code == 401
        named = client.get("/queue", auth=("admin", "pw"), headers={"Host": "ui.example"})
        assert named.status_code == 200
        for host in ["localhost", "evil.example"]:  # localhost is not in the list given
            refused = client.get("/queue", auth=("admin", "pw"), headers={"Host": host})
            assert refused.status_code == 400
    for auth, message in [
        ("web_app:missing", "has no attribute 'missing'"),
        ("web_app:not_callable", "is not callable"),
        ("no_such_module:auth", "no module named 'no_such_module'"),
    ]:
        done = streaq_command(tmp_path, "web", "web_app:worker", "--auth", auth)
        assert done.returncode == 1
        assert done.stderr.startswith("streaq: error: --auth ")
        assert message in done.stderr
        assert done.stderr.count("\n") == 1


def test_streaq_web_on_loopback_refuses_foreign_hosts(
    tmp_path: Path, redis_url: str, clean_queue: str
) -> None:
    (tmp_path / "web_app.py").write_text(CLI_MODULE.format(redis_url=redis_url, queue=clean_queue))
    with streaq_web(tmp_path) as client:
        first = client.get("/queue")
        assert first.status_code == 200
        assert_secured(first)
        for host in ["localhost:1234", "[::1]"]:
            assert client.get("/queue", headers={"Host": host}).status_code == 200
        assert client.get("/queue", headers={"Host": "evil.example"}).status_code == 400
