"""Poison: claimed messages that can never succeed move to the dead-letter stream.

What makes a message poison, and what a dead letter holds, is described in :mod:`streaq._dlq`
(which lists and replays them). This module decides it for one claimed job and dead-letters it in
one server call that also writes its failed result, so that waiters wake and dependents fail.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .._codec import KIND_ERROR, ArgumentError
from .._dlq import (
    REASON_BAD_SIGNATURE,
    REASON_MAX_TRIES,
    REASON_UNDECODABLE,
    REASON_UNKNOWN_FUNCTION,
)
from .._encryption import DecryptionError
from .._schema import F_LAST_ERROR
from .._signing import SignatureError
from ..types import StreaqError
from ..utils import now_ms
from ._retry import retrying
from ._state import NO_OUTCOME, Job, WorkerState

if TYPE_CHECKING:
    from ..task import AnyRegisteredTask

logger = logging.getLogger("streaq")


@dataclass(frozen=True, slots=True)
class Poison:
    """Why a claimed message must be dead-lettered, and the failure its waiters get."""

    reason: str
    error: BaseException


def find_poison(state: WorkerState, job: Job, task: AnyRegisteredTask | None) -> Poison | None:
    """The reason ``job`` can never succeed on this worker, or ``None`` when it may run.

    A payload that cannot be decoded or verified is poison too; the runner finds that out when it
    decodes the arguments (:func:`undecodable`), so the payload is decoded once.
    """
    if task is None:
        return Poison(
            f"{REASON_UNKNOWN_FUNCTION} {job.fn_name!r}",
            StreaqError(
                f"missing function {job.fn_name!r}: no task of that "
                f"name is registered on worker {state.worker.id}"
            ),
        )
    if task.max_tries and job.tries > task.max_tries:
        last = job.fields.get(F_LAST_ERROR)
        error = (
            state.client.codec.decode_last_error(job.task_id, bytes(last))
            if last
            else StreaqError(
                f"task {job.task_id} reached max_tries={task.max_tries} "
                "(its worker stopped while running it)"
            )
        )
        return Poison(
            f"{REASON_MAX_TRIES}: delivered {job.tries} times, max_tries={task.max_tries}",
            error,
        )
    return None


def undecodable(error: ArgumentError | SignatureError | DecryptionError) -> Poison:
    """The poison of a payload that failed to decode (``ArgumentError``) or verify."""
    if isinstance(error, SignatureError):
        return Poison(REASON_BAD_SIGNATURE, error)
    return Poison(f"{REASON_UNDECODABLE}: {error}", error)


async def dead_letter(
    state: WorkerState, job: Job, task: AnyRegisteredTask | None, poison: Poison
) -> None:
    """Dead-letter ``job`` and write its failed result in one server call.

    Transient Redis trouble is waited out; when the run is cancelled meanwhile, the job's outcome
    stays undecided and the message is handed back as usual. Nothing is written when the worker
    no longer owns the message (another worker took it over).
    """
    worker = state.worker
    tries = job.tries
    if task is not None and task.max_tries and job.tries > task.max_tries:
        # the result reports the tries the task was allowed, as a retry-exhausted task does
        job.tries = task.max_tries
    record = job.record(KIND_ERROR, state.client.codec.encode_error(poison.error), 0, worker.id)
    unique = task.fn_name if task is not None and task.unique else ""
    functions = state.client.functions
    written = await retrying(
        state,
        f"cannot dead-letter task {job.task_id}",
        lambda: functions.dead_letter(
            worker.id,
            now_ms(),
            job.task_id,
            job.priority,
            job.msgid,
            record,
            job.ttl_ms,
            unique,
            poison.reason,
            tries,
        ),
    )
    # recorded already: the finisher has nothing to write
    job.outcome = NO_OUTCOME
    if written:
        worker.counters["failed"] += 1
        logger.error(
            "task %s × %s dead-lettered: %s (%s)",
            job.fn_name,
            job.task_id,
            poison.reason,
            poison.error,
        )
