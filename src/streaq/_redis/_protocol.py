"""RESP2/RESP3 protocol, sans-IO: commands in -> bytes out, bytes in -> replies out.

Theory of operation
-------------------
Nothing here awaits or touches a socket. :func:`pack_command` and :func:`pack_commands` turn
commands into the bytes to write (``hiredis.pack_command``, which accepts
``str``/``bytes``/``int``/``float`` arguments; ``str`` is encoded as UTF-8, numbers are written in
decimal). A :class:`Parser` wraps one ``hiredis.Reader``: the connection feeds it whatever bytes
arrived, in chunks of any size, and calls :meth:`Parser.next_reply` until it returns
:data:`NEED_DATA`. Server error replies are built into ``redis.exceptions`` instances by
:func:`streaq._redis._errors.error_from_reply`; they are *returned* (never raised) so that an error
inside an array, or one command's error in a pipeline, stays in place.

Reply shapes (the same Python types for both protocols where the wire types coincide):

=====================  ==========================  =============================================
RESP type              Python                      notes
=====================  ==========================  =============================================
simple / bulk string   ``bytes``                   never decoded (``+OK`` -> ``b"OK"``)
verbatim string (=)    ``bytes``                   the ``txt:`` format prefix is dropped
integer                ``int``
big number (()         ``bytes``                   the decimal digits, as hiredis gives them
null, nil bulk/array   ``None``
double (,)             ``float``                   RESP3 only; RESP2 sends doubles as bulk bytes
boolean (#)            ``bool``                    RESP3 only; RESP2 sends ``1``/``0`` integers
array                  ``list``
set (~)                ``list``                    order as sent; RESP2 sends an array anyway
map (%)                ``dict``                    RESP2 sends a flat ``[k1, v1, k2, v2]`` list
push (>)               ``hiredis.PushNotification``  a ``list`` subclass (pub/sub in RESP3)
error (-)              exception instance          ``redis.exceptions.*``, see ``_errors``
=====================  ==========================  =============================================

Consequences callers rely on: ``XREADGROUP`` returns a ``dict`` ``{stream: [[id, [f, v, ...]],
...]}`` under RESP3 and a ``list`` ``[[stream, [[id, [f, v, ...]], ...]], ...]`` under RESP2 (use
:func:`pairs` to read both); Lua/function table replies are arrays in both protocols (a Lua table
converts to an array; ``redis.setresp(3)`` inside a script is what would produce maps). hiredis does
not support RESP3 attributes (``|``) as out-of-band data nor blob errors (``!``); Redis sends
neither unless ``CLIENT TRACKING`` or a module asks for them, which streaq never does.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final

import hiredis

from ._errors import error_from_reply

__all__ = [
    "NEED_DATA",
    "Arg",
    "Parser",
    "PushNotification",
    "pack_command",
    "pack_commands",
    "pairs",
]

#: One command argument as accepted by :func:`pack_command`.
Arg = str | bytes | int | float

#: Push messages (RESP3 ``>``) come back as this ``list`` subclass.
PushNotification = hiredis.PushNotification


class _NeedData:
    """Type of :data:`NEED_DATA`; a dedicated class so that ``False`` stays a valid reply."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


#: Returned by :meth:`Parser.next_reply` when the buffered bytes do not hold a complete reply.
NEED_DATA: Final = _NeedData()


def pack_command(args: Sequence[Arg]) -> bytes:
    """Encode one command as a RESP array of bulk strings.

    :param args: the command name and its arguments.
    :return: the bytes to write.
    :raises TypeError: for an argument that is not ``str``, ``bytes``, ``int`` or ``float``.
    """
    return hiredis.pack_command(tuple(args))


def pack_commands(commands: Iterable[Sequence[Arg]]) -> bytes:
    """Encode many commands into one buffer, so a pipeline needs a single write.

    :param commands: the commands, each as for :func:`pack_command`.
    :return: the concatenated bytes.
    """
    pack = hiredis.pack_command
    return b"".join([pack(tuple(command)) for command in commands])


class Parser:
    """Incremental reply parser around one ``hiredis.Reader``."""

    __slots__ = ("_reader",)

    def __init__(self) -> None:
        self._reader = hiredis.Reader(replyError=error_from_reply, notEnoughData=NEED_DATA)

    def feed(self, data: bytes) -> None:
        """Buffer bytes received from the server.

        :param data: any chunk of the byte stream, split anywhere.
        """
        self._reader.feed(data)

    def next_reply(self) -> Any:
        """Take the next complete reply out of the buffer.

        :return: the reply (see the table in the module docstring) or :data:`NEED_DATA`.
        :raises hiredis.ProtocolError: when the bytes are not valid RESP (the stream is then
            unusable).
        """
        return self._reader.gets()

    def has_data(self) -> bool:
        """:return: whether unparsed bytes are buffered."""
        return self._reader.has_data()


def pairs(reply: Any) -> list[tuple[Any, Any]]:
    """Read a map reply the same way under both protocols.

    :param reply: a RESP3 ``dict`` or a RESP2 flat ``[k1, v1, k2, v2, ...]`` list, or ``None``.
    :return: the ``(key, value)`` pairs in order (empty for ``None``).
    """
    if reply is None:
        return []
    if isinstance(reply, dict):
        return list(reply.items())
    if len(reply) and isinstance(reply[0], list):
        # RESP2 XREAD-style nesting: [[key, value], [key, value], ...]
        return [(item[0], item[1]) for item in reply]
    return list(zip(reply[::2], reply[1::2], strict=True))
