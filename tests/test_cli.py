"""The ``streaq`` command line, run as ``python -m streaq`` in subprocesses.

A fake worker module (an object with ``tz``, ``burst`` and ``run_sync()``) stands in for the
real ``Worker``: its ``run_sync`` leaves marker files named after its pid, which the tests wait
for with deadlines rather than fixed sleeps.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from children import child_env
from servers import ServerFactory, free_port

import streaq

FAKE_WORKER = """
import logging
import os
import signal
import sys
import time
from datetime import timezone
from pathlib import Path

OUT = Path(os.environ["STREAQ_TEST_OUT"])


class FakeWorker:
    def __init__(self, mode):
        self.tz = timezone.utc
        self.burst = False
        self.mode = mode

    def run_sync(self):
        pid = os.getpid()
        if self.mode == "once":
            (OUT / f"ran-{pid}").write_text(f"burst={self.burst}")
        elif self.mode == "log":
            logging.getLogger("streaq").info("hello from the worker")
            logging.getLogger("streaq.worker").debug("some detail")
        elif self.mode == "crash_once":
            (OUT / f"run-{pid}").write_text("")
            try:
                os.close(os.open(OUT / "crashed", os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                return
            time.sleep(0.1)
            sys.exit(3)
        elif self.mode == "wait":
            def on_term(signum, frame):
                (OUT / f"term-{pid}").write_text("")
                sys.exit(0)

            signal.signal(signal.SIGTERM, on_term)
            (OUT / f"started-{pid}").write_text("")
            while True:
                time.sleep(60)


once = FakeWorker("once")
log = FakeWorker("log")
crash_once = FakeWorker("crash_once")
waiting = FakeWorker("wait")
"""

DEADLINE = 20.0


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A working directory holding ``fake_worker.py`` and an ``out/`` directory for markers."""
    (tmp_path / "fake_worker.py").write_text(FAKE_WORKER)
    (tmp_path / "out").mkdir()
    return tmp_path


def _env(project: Path) -> dict[str, str]:
    return child_env(STREAQ_TEST_OUT=str(project / "out"))


def streaq_cli(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streaq", *args],
        cwd=project,
        env=_env(project),
        capture_output=True,
        text=True,
        timeout=DEADLINE + 10,
        check=False,
    )


def start_cli(project: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "streaq", *args],
        cwd=project,
        env=_env(project),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(condition: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def markers(project: Path, prefix: str) -> list[Path]:
    return sorted((project / "out").glob(f"{prefix}-*"))


def finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    """Wait for ``process`` (killing it if it hangs) and return its status and stderr."""
    try:
        _, stderr = process.communicate(timeout=DEADLINE)
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate()
        pytest.fail(f"the CLI did not exit; stderr:\n{stderr}")
    return process.returncode, stderr


def test_version(project: Path) -> None:
    result = streaq_cli(project, "--version")
    assert result.returncode == 0
    assert result.stdout == f"streaq {streaq.__version__}\n"


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("no_such_module:worker", "no module named 'no_such_module'"),
        ("fake_worker:nope", "'fake_worker' has no attribute 'nope'"),
        ("fake_worker.nope", "'fake_worker' has no attribute 'nope'"),
        ("fake_worker:OUT", "is not a streaq Worker"),
        ("fake_worker", "is not an import path"),
    ],
)
def test_bad_worker_path_is_one_line(project: Path, path: str, message: str) -> None:
    result = streaq_cli(project, "run", path)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("streaq: error: ")
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_run_reports_an_unreachable_redis_in_one_line(project: Path, backend: str) -> None:
    port = free_port()  # nothing listens there
    (project / "unreachable.py").write_text(
        "from streaq import Worker\n"
        f"worker = Worker(redis_url='redis://127.0.0.1:{port}', anyio_backend={backend!r})\n"
    )
    result = streaq_cli(project, "run", "unreachable:worker")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("streaq: error: worker unreachable:worker cannot run: ConnectionError")
    assert f"127.0.0.1:{port}" in last


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_verbose_logs_the_connection_with_the_password_masked(
    project: Path, backend: str, redis_server: ServerFactory
) -> None:
    server = redis_server(password="s3cret")
    (project / "guarded.py").write_text(
        "from streaq import Worker\n"
        f"worker = Worker(redis_url='redis://:s3cret@127.0.0.1:{server.port}/0', "
        f"queue_name='cli-verbose', anyio_backend={backend!r})\n"
    )
    verbose = streaq_cli(project, "run", "guarded:worker", "--burst", "--verbose")
    assert verbose.returncode == 0, verbose.stderr
    line = re.search(r"\[DEBUG\] .*: (established connection to .*)", verbose.stderr)
    assert line is not None, verbose.stderr
    expected = (
        rf"established connection to redis://:\*\*\*@127\.0\.0\.1:{server.port}/0 "
        r"\(Redis \d+\.\d+\.\d+\) for queue 'cli-verbose'"
    )
    assert re.fullmatch(expected, line.group(1)), line.group(1)
    # the start-up banner names the server the same way, with the db and the backend
    assert f"  redis       redis://:***@127.0.0.1:{server.port}/0 (db 0)\n" in verbose.stderr
    assert f"  backend     {backend}\n" in verbose.stderr
    assert "s3cret" not in verbose.stderr
    quiet = streaq_cli(project, "run", "guarded:worker", "--burst")
    assert quiet.returncode == 0, quiet.stderr
    assert "established connection" not in quiet.stderr


@pytest.mark.parametrize(("flag", "burst"), [([], "False"), (["--burst"], "True")])
def test_run_imports_from_the_working_directory_and_runs(
    project: Path, flag: list[str], burst: str
) -> None:
    result = streaq_cli(project, "run", "fake_worker:once", *flag)
    assert result.returncode == 0, result.stderr
    (ran,) = markers(project, "ran")
    assert ran.read_text() == f"burst={burst}"


def test_run_configures_streaq_logging(project: Path) -> None:
    result = streaq_cli(project, "run", "fake_worker:log")
    assert result.returncode == 0
    line = r"\[INFO\] \d{4}-\d\d-\d\d \d\d:\d\d:\d\d: hello from the worker"
    assert re.fullmatch(line + "\n", result.stderr)
    verbose = streaq_cli(project, "run", "fake_worker:log", "--verbose")
    assert "[DEBUG] " in verbose.stderr
    assert verbose.stderr.rstrip().endswith(": some detail")


def test_workers_run_in_separate_processes(project: Path) -> None:
    result = streaq_cli(project, "run", "fake_worker:once", "--workers", "2", "--burst")
    assert result.returncode == 0, result.stderr
    ran = markers(project, "ran")
    assert len(ran) == 2
    assert [path.read_text() for path in ran] == ["burst=True"] * 2


def test_supervisor_forwards_sigterm(project: Path) -> None:
    process = start_cli(project, "run", "fake_worker:waiting", "--workers", "2")
    wait_for(lambda: len(markers(project, "started")) == 2, "two workers to start")
    process.send_signal(signal.SIGTERM)
    code, stderr = finish(process)
    assert code == 0, stderr
    started = {path.name.split("-")[1] for path in markers(project, "started")}
    stopped = {path.name.split("-")[1] for path in markers(project, "term")}
    assert stopped == started


def test_supervisor_restarts_a_crashed_worker(project: Path) -> None:
    result = streaq_cli(project, "run", "fake_worker:crash_once", "--workers", "2")
    assert result.returncode == 0, result.stderr
    assert len(markers(project, "run")) == 3
    assert "exited with status 3" in result.stderr
    assert "restarting it in 0.5 s" in result.stderr


def test_supervisor_gives_up_when_workers_fail_at_start(project: Path) -> None:
    result = streaq_cli(project, "run", "no_such_module:worker", "--workers", "2")
    assert result.returncode == 1
    assert "no module named 'no_such_module'" in result.stderr
    assert "right after starting, 3 times in a row" in result.stderr
    assert "giving up" in result.stderr
    assert "Traceback" not in result.stderr


def test_reload_restarts_the_worker_on_python_changes(project: Path) -> None:
    pytest.importorskip("watchfiles")
    process = start_cli(project, "run", "fake_worker:waiting", "--reload")
    wait_for(lambda: len(markers(project, "started")) == 1, "the worker to start")

    def restarted_after_touch() -> bool:
        # the watcher starts just after the child, so one write may go unseen: rewrite, but
        # only every few seconds, since a child killed before it started would never report
        (project / "module_changed.py").write_text(f"stamp = {time.monotonic()}\n")
        settle = time.monotonic() + 5
        while time.monotonic() < settle and process.poll() is None:
            if len(markers(project, "started")) >= 2:
                return True
            time.sleep(0.05)
        return False

    # the watcher can take seconds to start on a loaded machine: allow it twice the usual time
    deadline = time.monotonic() + 2 * DEADLINE
    restarted = False
    try:
        while not restarted and process.poll() is None and time.monotonic() < deadline:
            restarted = restarted_after_touch()
    finally:
        process.send_signal(signal.SIGTERM)
        code, stderr = finish(process)
    assert restarted, f"no restart within {2 * DEADLINE:.0f} s; the reloader said:\n{stderr}"
    assert len(markers(project, "term")) >= 1
    assert code == 0, stderr
    # every worker the reloader started was stopped with SIGTERM (a late rewrite may have
    # caused one more restart, so count rather than expect exactly two)
    assert len(markers(project, "term")) == len(markers(project, "started"))
    assert "module_changed.py" in stderr
    assert "; reloading" in stderr  # the word streaq 7.2 logs on a restart


def test_web_bad_worker_path(project: Path) -> None:
    # the UI itself is tested in tests/ui; here only the CLI's error path
    result = streaq_cli(project, "web", "no_such_module:worker", "--port", "8000")
    assert result.returncode == 1
    assert "streaq: error:" in result.stderr


@pytest.mark.parametrize(
    "args",
    [[], ["run"], ["run", "fake_worker:once", "--workers", "0"], ["run", "x:y", "--nope"]],
)
def test_usage_errors_exit_2(project: Path, args: list[str]) -> None:
    result = streaq_cli(project, *args)
    assert result.returncode == 2
    assert "usage: streaq" in result.stderr


#: every command, with the arguments it needs besides the worker
EVERY_COMMAND = [
    ["run"],
    ["info"],
    ["check"],
    ["enqueue", "{worker}", "add"],
    ["purge", "{worker}", "--yes"],
    ["web", "{worker}", "--port", "1"],
    ["dlq", "list"],
    ["dlq", "replay"],
    ["functions", "list"],
    ["pause"],
]


def _command(args: list[str], worker: str) -> list[str]:
    if "{worker}" in args:
        return [worker if arg == "{worker}" else arg for arg in args]
    # dlq and functions take an action before the worker
    return [*args, worker]


@pytest.mark.parametrize("command", EVERY_COMMAND, ids=lambda c: " ".join(c[:2]))
def test_every_command_fails_on_a_bad_setting_in_one_line(
    project: Path, command: list[str], redis_server: ServerFactory
) -> None:
    server = redis_server(password="s3cret")
    urls = {
        "down": (f"redis://127.0.0.1:{free_port()}", "Connection refused"),
        "http": ("http://127.0.0.1:6379", "Redis URL must specify one of the following schemes"),
        "nopassword": (
            f"redis://127.0.0.1:{server.port}",
            f"127.0.0.1:{server.port} requires a password and none was given: put it in the URL",
        ),
        "unknownhost": ("redis://no-such-host.invalid:6379", "cannot resolve the host name"),
    }
    for name, (url, _) in urls.items():
        (project / f"bad_{name}.py").write_text(
            "from streaq import Worker\n"
            f"worker = Worker(redis_url={url!r}, queue_name='cli-bad')\n"
            "@worker.task\n"
            "async def add() -> None: ...\n"
        )
    for name, (_, message) in urls.items():
        result = streaq_cli(project, *_command(command, f"bad_{name}:worker"))
        assert result.returncode == 1, (name, result.stderr)
        assert "Traceback" not in result.stderr
        assert result.stderr.count("\n") == 1, (name, result.stderr)
        assert result.stderr.startswith("streaq: error: ")
        assert message in result.stderr, (name, result.stderr)
        assert "HELLO" not in result.stderr
        assert "Unknown error" not in result.stderr
    verbose = streaq_cli(project, *_command(command, "bad_http:worker"), "--verbose")
    assert verbose.returncode == 1
    assert verbose.stderr.startswith("Traceback (most recent call last):")
    assert verbose.stderr.splitlines()[-1].startswith("streaq: error: could not import")
