"""Server-side function libraries: load on demand, call by name, reload after the server forgot
them.

Theory of operation
-------------------
A :class:`FunctionLibrary` is the immutable source of one Redis function library (``#!lua
name=...``). :class:`FunctionCaller` (one per client) remembers which libraries it has loaded on the
server, each with a *generation* number bumped on every load. It calls first and loads only when a
call fails with *Function not found* -- the library was never loaded there, the server restarted
without persistence, or someone ran ``FUNCTION FLUSH`` or deleted an old version -- with
``FUNCTION LOAD REPLACE``, then retries that call once. A call that failed this way did not run, so
retrying is safe. Calling first means that a client whose ACL user may not load functions (a
producer given only ``FCALL``) works as soon as a worker has loaded the library.
A server that does not know ``FUNCTION`` or ``FCALL`` at all (renamed away, or a Redis-compatible
server without functions that passed the version check) raises
:class:`~streaq._redis._errors.RedisVersionError` saying so, instead of an error reply that
echoes the library's source.

Loading is serialised by one lock per caller, and the generation makes concurrent failures cheap:
a task that saw generation *g* fail reloads only if the library is still at *g*; if another task
already reloaded it meanwhile, it just retries. So a restart costs one ``FUNCTION LOAD`` per client,
not one per in-flight call.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Protocol

import anyio
from redis import exceptions as rex

from ._connection import raise_first_error
from ._errors import RedisVersionError
from ._protocol import Arg

__all__ = ["FcallSpec", "FunctionCaller", "FunctionLibrary", "is_function_missing"]

#: One call in :meth:`FunctionCaller.fcall_pipeline`: ``(function name, keys, args)``.
FcallSpec = tuple[str, Sequence[Arg], Sequence[Arg]]


@dataclasses.dataclass(frozen=True, slots=True)
class FunctionLibrary:
    """The source of a Redis function library.

    :param name: the library name; must match ``name=`` in the code's shebang line.
    :param code: the library source, starting with ``#!lua name=<name>``.
    :raises ValueError: when the shebang is missing or names another library.
    """

    name: str
    code: str

    def __post_init__(self) -> None:
        shebang = self.code.split("\n", 1)[0]
        words = shebang.split()
        if not words or words[0] != "#!lua" or f"name={self.name}" not in words[1:]:
            raise ValueError(
                f"the library code must start with '#!lua name={self.name}', not {shebang!r}"
            )


def is_function_missing(reply: object) -> bool:
    """Whether a reply says the called function is not loaded on the server.

    :param reply: a reply or exception.
    :return: true for ``Function not found`` (and ``NOSCRIPT``, for scripts).
    """
    if isinstance(reply, rex.NoScriptError):
        return True
    return isinstance(reply, rex.ResponseError) and "Function not found" in str(reply)


def _unsupported(error: object, address: str) -> RedisVersionError | None:
    """The readable error for a server that does not know ``FUNCTION``/``FCALL``, else ``None``.

    The version check cannot catch this: the command may be renamed or disabled
    (``rename-command``), or a Redis-compatible server may report a version it does not match.
    """
    if not isinstance(error, rex.ResponseError) or not str(error).startswith("unknown command"):
        return None
    # the server echoes the arguments, i.e. the library's source: keep only the command's name
    reason = str(error).split(", with args", 1)[0]
    return RedisVersionError(
        f"the server at {address} cannot run Redis functions ({reason}); streaq needs Redis >= 7.0 "
        "with FUNCTION and FCALL available (renamed or disabled with rename-command?)"
    )


class _Commands(Protocol):
    @property
    def address(self) -> str: ...

    async def execute(self, *args: Arg) -> Any: ...

    async def pipeline(
        self, commands: Sequence[Sequence[Arg]], *, raise_on_error: bool = True
    ) -> list[Any]: ...


def _fcall_command(verb: str, function: str, keys: Sequence[Arg], args: Sequence[Arg]) -> list[Arg]:
    return [verb, function, len(keys), *keys, *args]


class FunctionCaller:
    """Per-client function library state and the ``FCALL`` family.

    :param commands: what runs the commands (the client).
    """

    __slots__ = ("_commands", "_generation", "_loaded", "_lock")

    def __init__(self, commands: _Commands) -> None:
        self._commands = commands
        self._loaded: dict[str, int] = {}
        self._generation = 0
        self._lock = anyio.Lock()

    async def _load(self, library: FunctionLibrary, failed_generation: int | None) -> int:
        """Load ``library`` unless it is loaded at a generation other than ``failed_generation``
        (``None``: this caller never loaded it)."""
        async with self._lock:
            current = self._loaded.get(library.name)
            if current is not None and current != failed_generation:
                return current
            try:
                await self._commands.execute("FUNCTION", "LOAD", "REPLACE", library.code)
            except rex.ResponseError as exc:
                unsupported = _unsupported(exc, self._commands.address)
                if unsupported is not None:
                    raise unsupported from exc
                raise
            self._generation += 1
            self._loaded[library.name] = self._generation
            return self._generation

    async def fcall(
        self,
        library: FunctionLibrary,
        function: str,
        keys: Sequence[Arg] = (),
        args: Sequence[Arg] = (),
        *,
        read_only: bool = False,
    ) -> Any:
        """Call one function of ``library``, loading or reloading it as needed.

        :param library: the library defining ``function``.
        :param function: the function name.
        :param keys: key arguments (``numkeys`` is computed).
        :param args: other arguments.
        :param read_only: use ``FCALL_RO`` (allowed on replicas; the function must be
            ``no-writes``).
        :return: the function's reply.
        :raises redis.exceptions.ResponseError: for an error raised by the function.
        """
        command = _fcall_command("FCALL_RO" if read_only else "FCALL", function, keys, args)
        generation = self._loaded.get(library.name)
        try:
            return await self._commands.execute(*command)
        except rex.ResponseError as exc:
            unsupported = _unsupported(exc, self._commands.address)
            if unsupported is not None:
                raise unsupported from exc
            if not is_function_missing(exc):
                raise
        await self._load(library, generation)
        return await self._commands.execute(*command)

    async def fcall_pipeline(
        self, library: FunctionLibrary, calls: Sequence[FcallSpec], *, raise_on_error: bool = True
    ) -> list[Any]:
        """Run many ``FCALL`` s in one round trip, reloading the library once if needed.

        :param library: the library defining the functions.
        :param calls: ``(function, keys, args)`` triples.
        :param raise_on_error: raise the first error after all calls ran; otherwise errors are
            exception instances in the result.
        :return: one reply per call.
        :raises redis.exceptions.ResponseError: the first error, with ``raise_on_error``.
        """
        commands = [_fcall_command("FCALL", fn, keys, args) for fn, keys, args in calls]
        generation = self._loaded.get(library.name)
        replies = await self._commands.pipeline(commands, raise_on_error=False)
        unsupported = _unsupported(replies[0], self._commands.address) if replies else None
        if unsupported is not None:
            raise unsupported
        missing = [i for i, reply in enumerate(replies) if is_function_missing(reply)]
        if missing:
            # Only the calls that found no function are retried: the others ran already.
            await self._load(library, generation)
            retried = await self._commands.pipeline(
                [commands[i] for i in missing], raise_on_error=False
            )
            for index, reply in zip(missing, retried, strict=True):
                replies[index] = reply
        if raise_on_error:
            raise_first_error(replies)
        return replies
