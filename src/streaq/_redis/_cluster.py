"""Redis Cluster: slot routing with ``MOVED``/``ASK`` handling, one pool per master.

Theory of operation
-------------------
**Slots.** Which slot a command belongs to is sans-IO arithmetic (:mod:`._slots`): a command whose
keys hash to different slots fails before it is sent, with ``ClusterCrossSlotError``; a command
without keys goes to any master.

**Slot map.** :class:`ClusterClient` reads ``CLUSTER SLOTS`` from the first node that answers
(known masters first, then the startup nodes; nodes that could not be reached lately last, since a
dead host may take ``socket_connect_timeout`` to fail) into a 16384-entry table of master
addresses. Replicas are ignored: ``CLUSTER SLOTS`` lists them after each range's master and only
the master is kept, so every command -- writes, reads, blocking reads, subscriptions -- goes to a
master, even when the startup nodes are all replicas. The map is re-read when a node says ``MOVED``
(after patching the one slot at once, so the retry goes to the right node even before the
refresh), when a node cannot be reached, and when a dedicated connection is opened. Refreshes are
serialised, and a caller whose refresh was overtaken by another's does not repeat it.

**Nodes.** Each master gets its own :class:`~streaq._redis._client.RedisClient` (its own bounded
pool, its own idle-connection retry rule, and its own function-library state, so a library is
loaded on each node the first time a call is routed there, and reloaded there if that node forgets
it).

**Redirections.**

* ``MOVED slot host:port`` -- the slot has a new owner: patch the map, refresh it, retry there.
* ``ASK slot host:port`` -- the slot is being migrated and the key is already on the target: send
  ``ASKING`` and the command in one round trip to the target. Except for ``FCALL``: streaq's
  functions declare only the queue prefix as a key but read and write the queue's other keys,
  which may be split between the two nodes mid-migration; running a function on either half would
  see part of the queue. So a function call redirected with ``ASK`` (or refused with ``TRYAGAIN``)
  waits with backoff and retries until the migration is finished and ``MOVED`` points to the new
  owner (bounded by :data:`_REDIRECT_PATIENCE`).
* ``TRYAGAIN``/``CLUSTERDOWN`` -- wait and retry.

**Failover.** When a master dies, commands routed to it fail to connect until its replica is
promoted (after ``cluster-node-timeout`` plus about a second) and the other nodes' slot maps name
the replica. A command whose connection to its master was refused was not sent, so it waits,
re-reading the map with backoff, until the slot has a reachable master (bounded by
:data:`_REDIRECT_PATIENCE`): callers see a pause, not an error. A command whose connection broke
*after* it was sent is not retried (it may have run): it raises ``ConnectionError``, and the next
command finds the new master. A connection attempt that times out raises ``TimeoutError`` at once
as well (a slow master is not necessarily a dead one), but the master is asked for the slot map
last from then on. Dedicated connections and pub/sub wait for the new master in every case (see
below).

**Statistics.** :attr:`ClusterClient.stats` (a :class:`ClusterStats`) counts redirections,
waits, unreachable masters and slot map reads: a diagnostic for operators, and the proof in tests
that a migration or a failover really happened under a workload.

**Dedicated connections and pub/sub.** A client made for a worker has a *home key* (the queue's
key prefix). Blocking reads get a :class:`~streaq._redis._routed.RoutedConnection` to the master of
the home slot, so ``MOVED``/``ASK`` on them become ``ConnectionError`` and the reader reconnects to
the new owner; when that owner cannot be reached, connecting waits for its replacement. Pub/sub
connects to the home slot's master too, but only for locality: in Redis 7 plain ``PUBLISH`` is
broadcast over the cluster bus to every node, so a subscriber on any node gets every message, and
a subscriber that loses its node simply reconnects to whichever master owns the home slot now.
(``SSUBSCRIBE``/``SPUBLISH`` would save the broadcast traffic but would require following slot
moves on the subscriber; the queue's channels carry little traffic.)
"""

from __future__ import annotations

import dataclasses
import functools
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeVar

import anyio
from redis import exceptions as rex

from ._backoff import Backoff
from ._client import RedisClient
from ._config import RedisConfig
from ._connection import Connection, connect, raise_first_error
from ._functions import FcallSpec, FunctionLibrary
from ._protocol import Arg
from ._pubsub import PubSub, open_pubsub
from ._routed import as_routed
from ._slots import SLOTS, commands_slot, key_slot

__all__ = ["ClusterClient", "ClusterStats"]

#: Redirections followed for one command before giving up.
_MAX_REDIRECTS = 16
#: Seconds a command waits for a slot migration to finish (ASK/TRYAGAIN), for the cluster to
#: recover (CLUSTERDOWN), or for an unreachable master to be replaced by a failover -- which with
#: the default ``cluster-node-timeout`` of 15 s takes about 17 s -- before failing.
_REDIRECT_PATIENCE = 30.0

T = TypeVar("T")
Address = tuple[str, int]


class NodeUnreachableError(rex.ConnectionError):
    """Connecting to a cluster node failed. Unlike a connection lost mid-command, this means the
    command was not sent, so routing may send it again once the slot map names a reachable
    master. Callers see it as the ``ConnectionError`` it is."""


@dataclasses.dataclass(slots=True)
class ClusterStats:
    """Counters of the work a :class:`ClusterClient` did beyond sending each command to the
    master of its slot, since the client was opened. Plain integers, bumped only on the rare
    path, so keeping them costs nothing on the hot one.

    A steady trickle of ``moved`` means clients keep working from a stale slot map (a resharding
    in progress, or nodes re-added); ``unreachable`` and ``refreshes`` growing together mean a
    master was lost and the client is looking for its replacement.

    :param moved: ``MOVED`` replies followed (the slot has a new owner), including those that
        sent a blocking reader to the new owner.
    :param ask: ``ASK`` replies (the slot is being migrated): followed with ``ASKING``, or waited
        out for function calls.
    :param retried: ``TRYAGAIN``/``CLUSTERDOWN`` replies waited out (a migration or a failover
        in progress).
    :param unreachable: commands or connections that failed because their master could not be
        reached.
    :param refreshes: slot maps read (``CLUSTER SLOTS``).
    """

    moved: int = 0
    ask: int = 0
    retried: int = 0
    unreachable: int = 0
    refreshes: int = 0

    @property
    def redirections(self) -> int:
        """``MOVED`` plus ``ASK`` replies."""
        return self.moved + self.ask


class ClusterClient(RedisClient):
    """A client for a Redis Cluster, with the interface of
    :class:`~streaq._redis._client.RedisClient`. Create with
    :func:`~streaq._redis._open.open_client` (``cluster_nodes=...``).

    :param config: settings for every node (``host``/``port`` are replaced per node).
    :param startup_nodes: ``(host, port)`` of some nodes, to read the slot map from.
    :param home_key: a key whose slot dedicated connections and pub/sub go to (a queue's prefix).
    """

    def __init__(
        self,
        config: RedisConfig,
        startup_nodes: Sequence[Address],
        *,
        home_key: str | None = None,
    ) -> None:
        if not startup_nodes:
            raise ValueError("at least one cluster node address is needed")
        if config.db:
            raise ValueError("Redis Cluster has only database 0")
        if config.path is not None:
            raise ValueError("cluster nodes are reached over TCP, not a unix socket")
        super().__init__(config, self._connect_home)
        self._startup = [(host, int(port)) for host, port in startup_nodes]
        self._home_key = home_key
        self._ssl: ssl.SSLContext | None = config.ssl_context() if config.ssl else None
        self._nodes: dict[Address, RedisClient] = {}
        self._slots: list[Address | None] = [None] * SLOTS
        self._generation = 0  # bumped by every slot map refresh
        self._stale = True
        self._refresh_lock = anyio.Lock()
        # nodes that could not be reached lately: asked for the slot map last, because a dead
        # host can take ``socket_connect_timeout`` to fail
        self._unreachable: set[Address] = set()
        #: What routing took beyond one round trip to the right master (see :class:`ClusterStats`).
        self.stats = ClusterStats()

    def __repr__(self) -> str:
        return f"<ClusterClient masters={sorted(set(filter(None, self._slots)))}>"

    @property
    def address(self) -> str:
        """The startup nodes, for messages."""
        return ",".join(f"{host}:{port}" for host, port in self._startup)

    @property
    def masters(self) -> list[Address]:
        """The masters in the current slot map."""
        return sorted({addr for addr in self._slots if addr is not None})

    def node_for_slot(self, slot: int) -> Address | None:
        """The master serving ``slot`` according to the current map.

        :param slot: a hash slot.
        :return: its master's address, or ``None`` when the map does not cover it.
        """
        return self._slots[slot]

    def node(self, address: Address) -> RedisClient:
        """The (pooled) client of one node, created on first use.

        :param address: ``(host, port)`` of the node.
        :return: its client.
        """
        client = self._nodes.get(address)
        if client is None:
            host, port = address
            config = dataclasses.replace(self.config, host=host, port=port)
            client = RedisClient(
                config, functools.partial(self._connect_node, config), watchdog=self.watchdog
            )
            self._nodes[address] = client
        return client

    async def _connect_node(self, config: RedisConfig) -> Connection:
        try:
            return await connect(config, self._ssl)
        except rex.AuthenticationError:
            raise
        except rex.ConnectionError as exc:
            # Marked, so that routing knows the command is unsent and may wait for a failover.
            self._unreachable.add((config.host, config.port))
            raise NodeUnreachableError(str(exc)) from exc

    # -- slot map ------------------------------------------------------------------------------

    async def refresh(self, seen_generation: int | None = None) -> None:
        """Re-read the slot map.

        :param seen_generation: the generation the caller found stale; when another refresh
            finished since, this one is skipped.
        :raises redis.exceptions.ConnectionError: when no node answers ``CLUSTER SLOTS``.
        """
        async with self._refresh_lock:
            if seen_generation is not None and seen_generation != self._generation:
                return
            problems: list[str] = []
            candidates = list(dict.fromkeys([*self.masters, *self._startup]))
            candidates.sort(key=lambda address: address in self._unreachable)  # stable
            for address in candidates:
                try:
                    reply = await self.node(address).execute("CLUSTER", "SLOTS")
                except (rex.ConnectionError, rex.TimeoutError, rex.ResponseError) as exc:
                    if isinstance(exc, rex.ConnectionError | rex.TimeoutError):
                        self._unreachable.add(address)
                    problems.append(str(exc))
                    continue
                self._unreachable.discard(address)
                slots: list[Address | None] = [None] * SLOTS
                for entry in reply:
                    start, end, master = int(entry[0]), int(entry[1]), entry[2]
                    host = bytes(master[0]).decode()
                    if host in ("", "?"):
                        host = address[0]  # the node does not know its own address: as dialled
                    owner = (host, int(master[1]))
                    for slot in range(start, end + 1):
                        slots[slot] = owner
                self._slots = slots
                self._generation += 1
                self.stats.refreshes += 1
                self._stale = False
                return
            raise rex.ConnectionError(
                "No cluster node answered CLUSTER SLOTS: " + "; ".join(problems)
            )

    async def _master(self, slot: int | None) -> RedisClient:
        if self._stale:
            await self.refresh(self._generation)
        if slot is None:
            masters = self.masters
            if not masters:
                raise rex.ClusterDownError("the cluster serves no slots")
            return self.node(masters[0])
        address = self._slots[slot]
        if address is None:
            await self.refresh(self._generation)
            address = self._slots[slot]
            if address is None:
                raise rex.ClusterDownError(f"no node serves slot {slot}")
        return self.node(address)

    # -- routing -------------------------------------------------------------------------------

    async def _route(
        self,
        slot: int | None,
        call: Callable[[RedisClient], Awaitable[T]],
        asking: Callable[[RedisClient], Awaitable[T]] | None,
    ) -> T:
        """Run ``call`` on the slot's master, following redirections (see the module doc).

        :param asking: how to run the command on an ``ASK`` target (after ``ASKING``); ``None``
            to wait for the migration instead.
        """
        # capped low: a waiting command should go as soon as the map names a reachable master
        # (a refresh is one cheap CLUSTER SLOTS, and concurrent waiters share refreshes)
        backoff = Backoff(initial=0.01, maximum=0.2)
        deadline = anyio.current_time() + _REDIRECT_PATIENCE
        redirects = 0
        while True:
            node = await self._master(slot)
            try:
                return await call(node)
            except rex.MovedError as exc:
                self.stats.moved += 1
                redirects += 1
                if redirects > _MAX_REDIRECTS:
                    raise
                self._slots[exc.slot_id] = (exc.host, exc.port)
                self._stale = True
                # The server hashed the command's key itself: follow its slot, so a command whose
                # key we located wrongly is still served instead of bouncing off the same node.
                slot = exc.slot_id
                continue
            except rex.AskError as exc:
                self.stats.ask += 1
                if asking is not None:
                    return await self._follow_ask(exc, call, asking)
                problem: rex.RedisError = exc
            except (rex.TryAgainError, rex.ClusterDownError) as exc:
                self.stats.retried += 1
                problem = exc
                self._stale = True
            except NodeUnreachableError as exc:
                # Not sent: wait until a failover names a new master (or this one is back).
                self.stats.unreachable += 1
                problem = exc
                self._stale = True
            except (rex.ConnectionError, rex.TimeoutError):
                # Not retried (the command may have run), but the next one finds the new master.
                self.stats.unreachable += 1
                self._unreachable.add((node.config.host, node.config.port))
                self._stale = True
                raise
            if anyio.current_time() > deadline:
                raise problem
            await backoff.sleep()

    async def _follow_ask(
        self,
        exc: rex.AskError,
        call: Callable[[RedisClient], Awaitable[T]],
        asking: Callable[[RedisClient], Awaitable[T]],
    ) -> T:
        try:
            return await asking(self.node((exc.host, exc.port)))
        except rex.MovedError as moved:
            # The migration finished in between: the target owns the slot now.
            self.stats.moved += 1
            self._slots[moved.slot_id] = (moved.host, moved.port)
            self._stale = True
            return await call(self.node((moved.host, moved.port)))

    async def execute(self, *args: Arg) -> Any:
        """Run one command on the master of its keys' slot (see :meth:`RedisClient.execute`).

        :param args: command name and arguments.
        :return: the reply.
        :raises redis.exceptions.ClusterCrossSlotError: when its keys are in different slots.
        :raises redis.exceptions.RedisError: as for :meth:`RedisClient.execute`.
        """

        async def asking(node: RedisClient) -> Any:
            replies = await node.pipeline([("ASKING",), args], raise_on_error=False)
            raise_first_error(replies)
            return replies[1]

        return await self._route(commands_slot((args,)), lambda node: node.execute(*args), asking)

    async def pipeline(
        self, commands: Sequence[Sequence[Arg]], *, raise_on_error: bool = True
    ) -> list[Any]:
        """Run commands whose keys share one slot in one round trip to its master.

        Redirected commands (and only those: the others ran) are sent again where they belong.

        :param commands: the commands.
        :param raise_on_error: raise the first error reply after reading all replies.
        :return: one reply per command.
        :raises redis.exceptions.ClusterCrossSlotError: when keys are in different slots.
        """
        if not commands:
            return []
        slot = commands_slot(commands)
        replies = await self._route(
            slot, lambda node: node.pipeline(commands, raise_on_error=False), None
        )
        for _ in range(_MAX_REDIRECTS):
            redirected = [i for i, r in enumerate(replies) if isinstance(r, rex.AskError)]
            if not redirected:
                break
            for index in redirected:
                # Rare (a slot moving under a pipeline): one command at a time, fully routed.
                try:
                    replies[index] = await self.execute(*commands[index])
                except rex.ResponseError as exc:
                    replies[index] = exc
        if raise_on_error:
            raise_first_error(replies)
        return replies

    async def fcall(
        self,
        library: FunctionLibrary,
        function: str,
        keys: Sequence[Arg] = (),
        args: Sequence[Arg] = (),
    ) -> Any:
        """``FCALL`` on the master of the keys' slot, loading the library on that node on demand.

        :param library: the library defining ``function``.
        :param function: the function name.
        :param keys: key arguments (all in one slot).
        :param args: other arguments.
        :return: the function's reply.
        :raises redis.exceptions.ResponseError: for an error raised by the function.
        """
        slot = commands_slot((("FCALL", function, len(keys), *keys),))
        return await self._route(slot, lambda node: node.fcall(library, function, keys, args), None)

    async def fcall_ro(
        self,
        library: FunctionLibrary,
        function: str,
        keys: Sequence[Arg] = (),
        args: Sequence[Arg] = (),
    ) -> Any:
        """``FCALL_RO`` on the master of the keys' slot (replicas are not used).

        :param library: the library defining ``function``.
        :param function: the function name.
        :param keys: key arguments (all in one slot).
        :param args: other arguments.
        :return: the function's reply.
        :raises redis.exceptions.ResponseError: for an error raised by the function.
        """
        slot = commands_slot((("FCALL_RO", function, len(keys), *keys),))
        return await self._route(
            slot, lambda node: node.fcall_ro(library, function, keys, args), None
        )

    async def fcall_pipeline(
        self, library: FunctionLibrary, calls: Sequence[FcallSpec], *, raise_on_error: bool = True
    ) -> list[Any]:
        """Many ``FCALL`` s on one slot's master in one round trip.

        :param library: the library defining the functions.
        :param calls: ``(function, keys, args)`` triples, all keys in one slot.
        :param raise_on_error: raise the first error after all calls ran.
        :return: one reply per call.
        :raises redis.exceptions.ClusterCrossSlotError: when keys are in different slots.
        """
        if not calls:
            return []
        slot = commands_slot([("FCALL", fn, len(keys), *keys) for fn, keys, _ in calls])

        async def call(node: RedisClient) -> list[Any]:
            replies = await node.fcall_pipeline(library, calls, raise_on_error=False)
            # All calls share a slot, so a redirection applies to all of them and none ran.
            for reply in replies:
                if isinstance(reply, rex.AskError | rex.TryAgainError | rex.ClusterDownError):
                    raise reply
            return replies

        replies = await self._route(slot, call, None)
        if raise_on_error:
            raise_first_error(replies)
        return replies

    # -- connections ---------------------------------------------------------------------------

    async def _connect_home(self, home_key: str | None = None) -> Connection:
        """Connect to the master of the slot of ``home_key``, else of the client's home key (any
        master without either).

        While the slot map names a master that cannot be reached (the other nodes answer), wait
        for a failover to replace it, re-reading the map with backoff, for up to
        :data:`_REDIRECT_PATIENCE`: a blocking reader or a subscriber then follows the promoted
        replica as soon as it serves the slot, instead of after its own, growing, reconnect
        delay. Nothing was sent yet, so trying again is always safe.

        :raises redis.exceptions.ConnectionError: when no node answers for the slot map, or the
            master stays unreachable.
        """
        home_key = home_key or self._home_key
        slot = None if home_key is None else key_slot(home_key)
        backoff = Backoff(initial=0.02, maximum=0.2)
        deadline = anyio.current_time() + _REDIRECT_PATIENCE
        while True:
            node = await self._master(slot)  # raises when no node answers at all
            try:
                return as_routed(await node._connector())
            except rex.AuthenticationError:
                raise
            except (rex.ConnectionError, rex.TimeoutError):
                self.stats.unreachable += 1
                self._unreachable.add((node.config.host, node.config.port))
                self._stale = True
                if anyio.current_time() > deadline:
                    raise
            await backoff.sleep()

    async def _connect_first(self) -> None:
        await self.refresh()
        node = await self._master(None)
        await node._connect_first()
        self.server_version = node.server_version

    async def aclose(self) -> None:
        """Close every node's connections."""
        for node in list(self._nodes.values()):
            await node.aclose()
        await super().aclose()

    @asynccontextmanager
    async def dedicated(self, *, home_key: str | None = None) -> AsyncIterator[Connection]:
        """A new connection to the home slot's master, outside the pools; closed on exit.

        The slot map is refreshed first (this is how a reader finds the new owner after its
        connection reported ``MOVED``), and the connection turns redirections into
        ``ConnectionError`` (see :mod:`streaq._redis._routed`). Its round trips are bounded as
        for :meth:`RedisClient.dedicated <streaq._redis.RedisClient.dedicated>`.

        :param home_key: the key whose slot to connect to, instead of the client's home key (a
            client shared by the workers of several queues has one home key, at most).
        :return: the connection (as the context value).
        :raises redis.exceptions.ConnectionError: when connecting fails.
        """
        await self.refresh(self._generation)
        conn = await self._connect_home(home_key)
        try:
            yield conn
        except rex.ConnectionError as exc:
            # the routed connection gave up on a redirection (see _routed): count it as such
            cause = exc.__cause__
            if isinstance(cause, rex.MovedError):
                self.stats.moved += 1
            elif isinstance(cause, rex.AskError):
                self.stats.ask += 1
            elif isinstance(cause, rex.TryAgainError | rex.ClusterDownError):
                self.stats.retried += 1
            raise
        finally:
            await conn.aclose()

    def pubsub(
        self, *, max_buffered: int = 10_000, backoff: Backoff | None = None
    ) -> AbstractAsyncContextManager[PubSub]:
        """A subscriber connected to the home slot's master (see the module doc on broadcast).

        :param max_buffered: messages buffered before backpressure.
        :param backoff: reconnect delays.
        :return: an async context manager yielding a :class:`~streaq._redis._pubsub.PubSub`.
        """
        return open_pubsub(
            self._connector,
            max_buffered=max_buffered,
            backoff=backoff,
            health_check_interval=self.config.health_check_interval,
            health_check_timeout=self.config.health_check_timeout,
        )
