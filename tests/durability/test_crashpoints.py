"""Worker processes that SIGKILL themselves at named protocol steps lose nothing.

The kill workload of ``test_kill`` (:class:`KillScenario`) runs with three worker processes
started with ``STREAQ_CRASHPOINTS`` (``streaq._runtime._crashpoints``): each dies, with a small
probability, right after claiming messages, inside a task body, before sending its outcomes,
after the server applied a ``finish`` call (any, one scheduling a retry, one releasing
dependents) or a ``promote`` call. A dead process is replaced at once. The disruption goes on
until every step has killed a process at least once; then the same end checks as the random
kills: one result per task and per cron firing, nothing stuck, no leaked key, no run repeated
unless a kill interrupted it. The crashes of each step are counted from the line a crash point
writes on the dying process' stderr, and every SIGKILLed process must have written exactly one.

The hook itself (parsing, killing at a step, staying inert otherwise) is tested first, quickly.
"""

from __future__ import annotations

import collections
import os
import re
import subprocess
import sys

import anyio
import pytest
from servers import ServerFactory

from streaq._runtime._crashpoints import ENV, STEPS, parse

from ._support import KillScenario
from .conftest import ProcessFactory

SEED = 20240611
SECONDS = 25.0
#: the disruption ends at the latest after this long, fired steps or not (the test then fails)
MAX_SECONDS = 75.0
WAVES = 15
#: chances per step, for about five crashes of each step in SECONDS: a step passed often
#: (claims, finishes, body starts: thousands of times) gets a small one
CHANCES = {
    "after_claim": 0.003,
    "mid_run": 0.0015,
    "before_finish": 0.003,
    "during_finish": 0.003,
    "during_retry": 0.015,
    "during_release": 0.025,
    "during_promotion": 0.012,
}
CRASH_LINE = re.compile(r"^streaq crashpoint: (\w+)$", re.MULTILINE)


def test_parse_reads_chances_and_rejects_mistakes() -> None:
    assert parse("") == {}
    assert parse(" after_claim:0.5, mid_run:0 ,during_finish:1") == {
        "after_claim": 0.5,
        "during_finish": 1.0,
    }
    for bad in ("after_clam:0.1", "after_claim", "after_claim:2", "mid_run:-0.1", "x:y"):
        with pytest.raises(ValueError, match=ENV):
            parse(bad)


def _python(code: str, spec: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != ENV}
    if spec is not None:
        env[ENV] = spec
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30
    )


CALL = (
    "from streaq._runtime._crashpoints import ARMED, crashpoint\n"
    "print(ARMED, flush=True)\n"
    "crashpoint('mid_run', {when})\n"
    "print('alive')\n"
)


def test_a_set_step_kills_the_process_and_says_so() -> None:
    done = _python(CALL.format(when=True), "mid_run:1")
    assert done.returncode == -9
    assert done.stdout == "True\n"
    assert CRASH_LINE.findall(done.stderr) == ["mid_run"]


@pytest.mark.parametrize(
    ("spec", "when", "armed"),
    [(None, True, "False"), ("after_claim:1", True, "True"), ("mid_run:1", False, "True")],
    ids=["unset", "other-step", "not-reached"],
)
def test_crash_points_are_inert_otherwise(spec: str | None, when: bool, armed: str) -> None:
    done = _python(CALL.format(when=when), spec)
    assert (done.returncode, done.stdout, done.stderr) == (0, f"{armed}\nalive\n", "")


@pytest.mark.anyio
@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_crash_points_lose_nothing(
    redis_server: ServerFactory,
    worker_processes: ProcessFactory,
    backend_name: str,
    queue_name: str,
) -> None:
    assert set(CHANCES) == STEPS
    spec = ",".join(f"{step}:{chance}" for step, chance in CHANCES.items())
    scenario = KillScenario(
        redis_server(),
        worker_processes,
        backend_name,
        queue_name,
        SEED,
        env={"STREAQ_CRASHPOINTS": spec},
    )
    crashes: collections.Counter[str] = collections.Counter()
    counted: set[subprocess.Popen[bytes]] = set()
    all_fired = anyio.Event()

    def count(proc: subprocess.Popen[bytes]) -> None:
        if proc not in counted and proc.returncode == -9:
            counted.add(proc)
            crashes.update(CRASH_LINE.findall(scenario.procs.log_of(proc)))
            if all(crashes[step] for step in STEPS):
                all_fired.set()

    async def restarter() -> None:
        while True:
            for proc in scenario.reap():
                if proc is not scenario.steady:
                    count(proc)
                    scenario.start_worker()
            await anyio.sleep(0.05)

    await scenario.run(
        restarter,
        waves=WAVES,
        seconds=SECONDS,
        enough=all_fired,
        max_seconds=MAX_SECONDS,
    )
    # processes that crashed while stopping (SIGTERM at the end) count too
    for proc in scenario.procs.procs:
        count(proc)
    figures = scenario.check()
    figures.kills = len(counted)
    figures.extra["crashes"] = dict(sorted(crashes.items()))
    print(figures.line(f"crashpoints/{backend_name}"))
    # every SIGKILL of this test is a crash point's, and says which
    assert sum(crashes.values()) == len(counted)
    assert {step: crashes[step] for step in STEPS if not crashes[step]} == {}, (
        "steps that never fired"
    )
