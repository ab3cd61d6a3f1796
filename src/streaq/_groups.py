"""Groups: fan out many tasks, fan their results in to one task.

A :class:`Group` is a task that never runs (its function name is :data:`GROUP_FN`): it waits for
its members through the dependencies of the server-side library and ends, in the call that ends
its last member, with every member's result in member order (``lua/groups.lua``). The tasks
linked to it are ordinary links with their own link kind (``_schema.LINK_*``):

- ``then`` (``LINK_ALL``): gets the members' values once all of them succeeded; fails, without
  running, naming the first failed member (in member order) otherwise;
- ``then_settled`` (``LINK_THEN``): gets every member's :class:`~streaq.task.TaskResult`;
- ``otherwise`` (``LINK_OTHERWISE``): runs only when a member failed; else ends with the values.

A member's end costs the server O(1) work, the group's end O(members) once, so the collector is
released exactly once, atomically, whatever the retries and redeliveries of the members.

``then`` needs no generated overloads (``tools/gen_chains.py`` writes those of :class:`Task`,
per tuple arity): a group always feeds one argument, a list.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Concatenate, Generic, overload

import anyio

from ._schema import LINK_ALL, LINK_THEN
from .task import RegisteredTask, Task, TaskResult, TaskStatus
from .types import POther, R, ROther, StreaqError

if TYPE_CHECKING:
    from ._generated_chains import Linkable
    from .task import AsyncRegisteredTask, SyncRegisteredTask
    from .worker import Worker

__all__ = ["GROUP_FN", "Group", "GroupsMixin"]

#: the function name of a group's own (never run) task
GROUP_FN = "streaq:group"

#: members aborted at once by :meth:`Group.abort`
_ABORTS_AT_ONCE = 32


class Group(Generic[R]):
    """Tasks that run in parallel and whose results are collected by one task.

    Build it with :meth:`Worker.group <streaq.worker.Worker.group>` (or enqueue it at once with
    ``enqueue_group``); awaiting it enqueues it, and its members, once. ``then`` enqueues the
    collector with it. See :doc:`/groups`.

    :param tasks: the members: tasks of one worker, not enqueued yet (each may be the last link
        of a chain, or the collector of another group)
    :param ttl: how long the group's outcome (every member's result) is kept once it ends
    :raises StreaqError: when there are no members, a member is enqueued already, appears twice,
        belongs to another worker, has a dedup key or repeats on a crontab
    """

    def __init__(
        self, tasks: Iterable[Task[Any, R]], *, ttl: timedelta | int | None = None
    ) -> None:
        members = tuple(tasks)
        if not members:
            raise StreaqError("a group needs at least one task")
        for member in members:
            if not isinstance(member, Task):
                raise StreaqError(
                    f"a group's members are tasks (`fn.enqueue(...)`), not {type(member).__name__}"
                    " (a group can be a member through its collector: `group.then(fn)`)"
                )
        worker = members[0].worker
        seen: set[str] = set()
        for member in members:
            if member.worker is not worker:
                raise StreaqError(f"task {member.id} belongs to another worker than the group")
            if member._enqueued:
                raise StreaqError(f"task {member.id} is enqueued already: a group enqueues its own")
            if member.id in seen:
                raise StreaqError(f"task {member.id} is given to the group twice")
            if member.dedup_key is not None or isinstance(member.schedule, str):
                raise StreaqError(
                    f"task {member.id}: a group member cannot have a dedup key or repeat on a "
                    "crontab"
                )
            seen.add(member.id)
        parent = RegisteredTask(
            expire=None,
            max_schedule_drift=None,
            max_tries=None,
            silent=True,
            timeout=None,
            ttl=ttl,
            unique=False,
            fn_name=GROUP_FN,
            crontab=None,
            worker=worker,
        )
        #: the worker of the members
        self.worker: Worker[Any] = worker
        #: the members, in member order (the order of every list of results)
        self.tasks: list[Task[Any, R]] = list(members)
        self._node: Task[[], list[TaskResult[R]]] = Task((), {}, parent, worker, _group=members)

    @property
    def id(self) -> str:
        """The group's id (the id of its own task, which holds its outcome)."""
        return self._node.id

    def __repr__(self) -> str:
        return f"<Group {self.id} of {len(self.tasks)} tasks>"

    async def _enqueue(self) -> Group[R]:
        await self._node
        return self

    def __await__(self) -> Generator[Any, None, Group[R]]:
        return self._enqueue().__await__()

    async def result(self, timeout: timedelta | int | float | None = None) -> list[TaskResult[R]]:
        """Wait until every member ended.

        :param timeout: how long to wait before raising ``TimeoutError``
        :return: the members' results, in member order
        :raises StreaqError: when the group was aborted (or purged) before its members ended
        """
        outcome = await self._node.result(timeout)
        if not outcome.success:
            raise StreaqError(f"group {self.id} ended early: {outcome.exception}")
        return outcome.result

    async def status(self) -> TaskStatus:
        """``SCHEDULED`` while a member has not ended, ``DONE`` after."""
        return await self._node.status()

    async def abort(self, timeout: timedelta | int = 5) -> bool:
        """Abort the group first (its collector fails at once, its fallback runs), then its
        members that have not ended (running ones are cancelled).

        :param timeout: how long to wait for each running member to confirm
        :return: whether the group was aborted (``False`` when it had ended already)
        """
        aborted = await self._node.abort(timeout)
        limiter = anyio.CapacityLimiter(_ABORTS_AT_ONCE)

        async def abort_member(member: Task[Any, R]) -> None:
            async with limiter:
                await member.abort(timeout)

        async with anyio.create_task_group() as tg:
            for member in self.tasks:
                tg.start_soon(abort_member, member)
        return aborted

    def _link(
        self,
        task: AsyncRegisteredTask[Any, Any] | SyncRegisteredTask[Any, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        kind: str,
        fails_over: bool = False,
    ) -> Task[Any, Any]:
        child: Task[Any, Any] = Task(
            args, kwargs, task, self.worker, _link_kind=kind, _fails_over=fails_over
        )
        child._after = self._node
        self._node._triggers = child
        return child

    @overload
    def then(
        self, task: Linkable[Callable[[list[R]], Any], ..., ROther]
    ) -> Task[[list[R]], ROther]: ...
    @overload
    def then(
        self,
        task: Linkable[Callable[Concatenate[list[R], ...], Any], Concatenate[Any, POther], ROther],
        *args: POther.args,
        **kwargs: POther.kwargs,
    ) -> Task[Concatenate[list[R], POther], ROther]: ...
    def then(self, task: Any, *args: Any, **kwargs: Any) -> Any:
        """Enqueue ``task`` to run once, after every member succeeded, with their values.

        ``task`` gets the members' results (in member order) as its first argument, then
        ``args`` and ``kwargs``. When a member fails, ``task`` does not run: once every member
        ended it fails with a :class:`~streaq.types.StreaqError` naming the first failed member
        (in member order), and the group's :meth:`otherwise` fallback runs.

        :param task: the collector
        :return: the collector's task (enqueued with the group when awaited)
        """
        return self._link(task, args, kwargs, LINK_ALL)

    @overload
    def then_settled(
        self, task: Linkable[Callable[[list[TaskResult[R]]], Any], ..., ROther]
    ) -> Task[[list[TaskResult[R]]], ROther]: ...
    @overload
    def then_settled(
        self,
        task: Linkable[
            Callable[Concatenate[list[TaskResult[R]], ...], Any],
            Concatenate[Any, POther],
            ROther,
        ],
        *args: POther.args,
        **kwargs: POther.kwargs,
    ) -> Task[Concatenate[list[TaskResult[R]], POther], ROther]: ...
    def then_settled(self, task: Any, *args: Any, **kwargs: Any) -> Any:
        """Enqueue ``task`` to run once, after every member ended, failed or not.

        ``task`` gets every member's :class:`~streaq.task.TaskResult` (in member order) as its
        first argument, then ``args`` and ``kwargs``.

        :param task: the collector
        :return: the collector's task (enqueued with the group when awaited)
        """
        return self._link(task, args, kwargs, LINK_THEN)

    def otherwise(
        self,
        task: AsyncRegisteredTask[POther, list[R]] | SyncRegisteredTask[POther, list[R]],
        *args: POther.args,
        **kwargs: POther.kwargs,
    ) -> Task[POther, list[R]]:
        """Enqueue ``task(*args, **kwargs)`` as the group's fallback: it runs only when a member
        failed (or the group was aborted), once every member ended. Otherwise it does not run and
        ends with the members' values, so its result is the group's values either way.

        :param task: the fallback, returning what stands for the members' values
        :return: the fallback's task (enqueued with the group when awaited)
        :raises ArgumentError: when ``args`` and ``kwargs`` do not fit the fallback
        """
        task.spec.check(args, kwargs)
        return self._link(task, args, kwargs, LINK_THEN, fails_over=True)


class GroupsMixin:
    """The group methods of :class:`~streaq.Worker`."""

    def group(
        self, tasks: Iterable[Task[Any, R]], *, ttl: timedelta | int | None = None
    ) -> Group[R]:
        """Make a group of ``tasks`` (not enqueued yet: await it, or enqueue a collector made
        with ``then``).

        :param tasks: the members, tasks of this worker not enqueued yet
        :param ttl: how long the group's outcome is kept once it ends
        :return: the group
        :raises StreaqError: as :class:`Group` says, or when a member belongs to another worker
        """
        group = Group(tasks, ttl=ttl)
        if group.worker is not self:
            raise StreaqError("the group's tasks belong to another worker")
        return group

    async def enqueue_group(
        self, tasks: Iterable[Task[Any, R]], *, ttl: timedelta | int | None = None
    ) -> Group[R]:
        """Make a group of ``tasks`` and enqueue it (see :meth:`group`).

        :return: the enqueued group
        """
        return await self.group(tasks, ttl=ttl)
