"""nox sessions: the test matrix, lint, typecheck (mypy and pyright), codegen check and benchmarks.

``nox`` runs the default sessions (what CI runs); ``nox -s bench`` runs the benchmarks,
``nox -s soak`` the soak test and ``nox -s stateful`` the long model-based protocol test.
Every session installs what ``uv.lock`` pins; ``nox -s lock`` refreshes it.
"""

from __future__ import annotations

import glob
import os
import random
from pathlib import Path

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.error_on_missing_interpreters = True
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lint", "typecheck", "pyright", "codegen", "docs", "tests"]

PYTHONS = ["3.11", "3.12", "3.13"]
BACKENDS = ["asyncio", "trio"]


def _expose_pyenv_interpreters() -> None:
    """Put every pyenv-installed CPython on PATH so nox finds ``python3.X``."""
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    dirs = sorted(glob.glob(str(root / "versions" / "3.*" / "bin")), reverse=True)
    os.environ["PATH"] = os.pathsep.join([*dirs, os.environ.get("PATH", "")])


_expose_pyenv_interpreters()


def _install(session: nox.Session, *groups: str, extras: str = "") -> None:
    """Install streaq (editable) with ``extras`` and the dependency ``groups`` from ``uv.lock``.

    ``uv sync --locked`` fails instead of resolving again when the lock no longer matches
    ``pyproject.toml``; ``nox -s lock`` refreshes it.
    """
    args = ["--locked", "--no-default-groups"]
    args += [f"--group={group}" for group in groups]
    args += [f"--extra={extra}" for extra in extras.split(",") if extra]
    env = {"UV_PROJECT_ENVIRONMENT": session.virtualenv.location}
    session.run_install("uv", "sync", *args, env=env)


def _compile_bytecode(session: nox.Session) -> None:
    """Byte-compile the venv and ``src`` as a pip install does.

    uv installs without ``.pyc`` files, and with ``PYTHONDONTWRITEBYTECODE`` set none is ever
    written: every worker process would compile redis-py, trio and streaq from source at start-up
    (~0.2-0.9 s of CPU and ~10-15 MiB of peak RSS each), which skews benchmarks against the
    pip-installed peers and slows the tests that start many worker processes.
    """
    # exit status 1: some file did not compile (a dependency's module for a newer Python, as
    # pip also skips); the rest are compiled
    venv = session.virtualenv.location
    compileall = ["python", "-m", "compileall", "-q", "-j", "0", venv, "src"]
    session.run(*compileall, silent=True, success_codes=[0, 1])


@nox.session(python=PYTHONS)
@nox.parametrize("backend", [*BACKENDS, "asyncio+uvloop"])
def tests(session: nox.Session, backend: str) -> None:
    """Run the test suite on one Python and one event loop backend (slow tests on 3.11 only,
    not with uvloop)."""
    if backend == "asyncio+uvloop" and session.python != PYTHONS[0]:
        session.skip("uvloop runs on one Python only")
    _install(session, "test", extras="trio,uvloop")
    _compile_bytecode(session)
    # the slow tests (kill suite, Redis faults, Sentinel failover, browser) run on the first
    # Python only: they exercise processes and servers, not the interpreter version
    slow = session.python == PYTHONS[0] and backend != "asyncio+uvloop"
    markers = [] if slow else ["-m", "not slow"]
    # tests mostly wait on Redis, workers and timeouts (a third of the wall time is CPU): four
    # pytest processes side by side (each test has its own queue and servers) take half the time
    session.run(
        "pytest",
        "-n",
        "4",
        *markers,
        *session.posargs,
        env={"STREAQ_TEST_BACKEND": backend, "PYTHONDONTWRITEBYTECODE": "1"},
    )


@nox.session(python=PYTHONS[0])
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check on the whole tree."""
    _install(session, "lint")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHONS[0])
def typecheck(session: nox.Session) -> None:
    """mypy --strict on src, tests, tools, benchmarks and this file."""
    _install(session, "typecheck", "bench", extras="trio,uvloop")
    session.run("mypy")


@nox.session(python=PYTHONS[0])
def codegen(session: nox.Session) -> None:
    """Fail when generated code is stale (tools/gen_chains.py --check formats with ruff)."""
    _install(session, "lint")
    session.run("python", "tools/gen_chains.py", "--check")


@nox.session(python=PYTHONS[0])
def docs(session: nox.Session) -> None:
    """Build the documentation with warnings as errors (sphinx-build -W)."""
    _install(session, "docs")
    session.run(
        "sphinx-build", "-W", "--keep-going", "-b", "html", "docs", f"{session.create_tmp()}/html"
    )


@nox.session(python=PYTHONS[0])
def pyright(session: nox.Session) -> None:
    """pyright (strict, ``[tool.pyright]``) on the chain type tests, which mypy reads too."""
    _install(session, "pyright", extras="trio")
    session.run("pyright", "tests/typing")


@nox.session(venv_backend="none", default=False)
def lock(session: nox.Session) -> None:
    """Refresh ``uv.lock``: every pin moves to the newest release ``pyproject.toml`` allows."""
    session.run("uv", "lock", "--upgrade")


@nox.session(python=PYTHONS[0], default=False)
def bench(session: nox.Session) -> None:
    """Benchmarks against peers measured in the same run (see benchmarks/README.md)."""
    _install(session, "bench", extras="trio,uvloop")
    _compile_bytecode(session)
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session(python=PYTHONS[0], default=False)
def soak(session: nox.Session) -> None:
    """Soak: 1,000,000 no-op tasks, Redis memory and worker RSS (``-- --tasks N`` for fewer)."""
    _install(session, "bench")
    _compile_bytecode(session)
    session.run("python", "-m", "benchmarks.soak", *session.posargs)


@nox.session(python=PYTHONS[0], default=False)
@nox.parametrize("backend", BACKENDS)
def stateful(session: nox.Session, backend: str) -> None:
    """The model-based protocol test (tests/stateful) at length: many examples of many steps.

    ``STREAQ_STATEFUL_EXAMPLES``, ``_STEPS``, ``_IDLE`` and ``_SEED`` override the sizes; the seed
    is random unless given, and printed, so that a failure can be run again.
    """
    _install(session, "test", extras="trio")
    _compile_bytecode(session)
    seed = os.environ.get("STREAQ_STATEFUL_SEED") or str(random.randrange(2**32))
    session.log(f"seed {seed} (STREAQ_STATEFUL_SEED={seed} runs it again)")
    env = {
        "STREAQ_TEST_BACKEND": backend,
        "PYTHONDONTWRITEBYTECODE": "1",
        "STREAQ_STATEFUL_EXAMPLES": os.environ.get("STREAQ_STATEFUL_EXAMPLES", "60"),
        "STREAQ_STATEFUL_STEPS": os.environ.get("STREAQ_STATEFUL_STEPS", "40"),
        "STREAQ_STATEFUL_IDLE": os.environ.get("STREAQ_STATEFUL_IDLE", "2"),
        "STREAQ_STATEFUL_SEED": seed,
    }
    session.run("pytest", "tests/stateful", "-s", *session.posargs, env=env)
