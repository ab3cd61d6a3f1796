"""Redis Cluster hash slots, sans-IO: which slot a key, a command or a pipeline belongs to.

Theory of operation
-------------------
Nothing here awaits or touches a socket. A key belongs to slot ``CRC16(tag) mod 16384``, where
the tag is the part between the first ``{`` and the next ``}`` when that is non-empty, else the
whole key (:func:`key_slot`). The CRC is CRC-16/XMODEM (polynomial ``0x1021``, initial value 0),
which the standard library computes as ``binascii.crc_hqx(data, 0)``. Every key of a streaq queue
carries ``{<queue>}``, so a queue lives in one slot and its server functions, which touch many
keys of the queue at once, run atomically on one node.

:func:`command_keys` knows where the keys of the commands streaq sends are (``FCALL``'s
``numkeys``, ``XREADGROUP``'s ``STREAMS``, every argument of ``MGET``/``DEL``, ``SCAN``'s ``MATCH``
pattern); :func:`commands_slot` finds the one slot of a command or a pipeline, and refuses keys
that hash to different slots with ``ClusterCrossSlotError`` before anything is sent.
"""

from __future__ import annotations

import binascii
import functools
from collections.abc import Sequence

from redis import exceptions as rex

from ._protocol import Arg

__all__ = ["SLOTS", "command_keys", "commands_slot", "key_slot"]

#: The number of hash slots of a Redis Cluster.
SLOTS = 16384


@functools.lru_cache(maxsize=4096)
def _tag_slot(tag: bytes) -> int:
    # Keys of a queue share their tag, so caching by tag makes routing a dict lookup.
    return binascii.crc_hqx(tag, 0) % SLOTS


def key_slot(key: Arg) -> int:
    """The hash slot of a key, honouring ``{hash tags}``.

    :param key: the key (``str`` is UTF-8 encoded, numbers as Redis sees them).
    :return: the slot, ``0 <= slot < 16384``.
    """
    data = key.encode() if isinstance(key, str) else key if isinstance(key, bytes) else b"%r" % key
    start = data.find(b"{")
    if start >= 0:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            return _tag_slot(data[start + 1 : end])
    return _tag_slot(data)


def _upper(arg: Arg) -> str:
    return (arg.decode() if isinstance(arg, bytes) else str(arg)).upper()


_SCRIPT_CALLS = frozenset(("FCALL", "FCALL_RO", "EVAL", "EVAL_RO", "EVALSHA", "EVALSHA_RO"))
_ALL_KEYS = frozenset(("MGET", "DEL", "UNLINK", "EXISTS", "TOUCH", "WATCH"))
# A subcommand comes first, then the key: ``XINFO STREAM <key>``, ``XGROUP CREATE <key> ...``,
# ``OBJECT ENCODING <key>``, ``MEMORY USAGE <key>`` (none for ``... HELP``, ``MEMORY STATS``).
_SUBCOMMAND_KEYED = frozenset(("XINFO", "XGROUP", "OBJECT", "MEMORY"))
_KEYLESS = frozenset(
    (
        "ASKING", "AUTH", "CLIENT", "CLUSTER", "COMMAND", "CONFIG", "DBSIZE", "DEBUG", "ECHO",
        "FLUSHALL", "FLUSHDB", "FUNCTION", "HELLO", "INFO", "MULTI", "EXEC", "DISCARD", "PING",
        "ROLE", "SCRIPT", "SELECT", "TIME", "WAIT",
    )
)  # fmt: skip


def command_keys(args: Sequence[Arg]) -> Sequence[Arg]:
    """The arguments of a command that decide its slot.

    :param args: the command name and arguments.
    :return: its keys (the channel for ``PUBLISH``, the ``MATCH`` pattern for ``SCAN`` when it has
        a hash tag); empty for commands any node can serve.
    """
    name = _upper(args[0])
    if name in _SCRIPT_CALLS:
        numkeys = int(args[2])
        return args[3 : 3 + numkeys]
    if name in ("XREAD", "XREADGROUP"):
        for index, arg in enumerate(args):
            if _upper(arg) == "STREAMS":
                rest = args[index + 1 :]
                return rest[: len(rest) // 2]
        return ()
    if name in _ALL_KEYS:
        return args[1:]
    if name in _SUBCOMMAND_KEYED:
        return args[2:3]
    if name in ("MSET", "MSETNX"):
        return args[1::2]
    if name == "SCAN":
        # A cluster SCAN walks one node; with a tagged pattern that is the node holding the tag.
        for index, arg in enumerate(args[:-1]):
            if _upper(arg) == "MATCH":
                pattern = args[index + 1]
                text = pattern if isinstance(pattern, bytes) else str(pattern).encode()
                start = text.find(b"{")
                if start >= 0 and text.find(b"}", start + 2) > start:
                    return (pattern,)
        return ()
    if name in _KEYLESS or len(args) < 2:
        return ()
    return args[1:2]


def commands_slot(commands: Sequence[Sequence[Arg]]) -> int | None:
    """The one slot all keys of ``commands`` hash to.

    :param commands: commands (one for a single command).
    :return: the slot, or ``None`` when no command has a key.
    :raises redis.exceptions.ClusterCrossSlotError: when keys hash to different slots.
    """
    slot: int | None = None
    first: Arg = b""
    for command in commands:
        for key in command_keys(command):
            this = key_slot(key)
            if slot is None:
                slot, first = this, key
            elif this != slot:
                raise rex.ClusterCrossSlotError(
                    f"keys {first!r} (slot {slot}) and {key!r} (slot {this}) are in different "
                    "cluster slots; keys used together need a common {hash tag}"
                )
    return slot
