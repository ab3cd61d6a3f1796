"""Sans-IO protocol tests: no server, no event loop; canned RESP2/RESP3 bytes split everywhere."""

from __future__ import annotations

import errno
import math
import os
import random
from typing import Any

import anyio
import pytest
from redis import exceptions as rex

from streaq._redis import BusyGroupError, NoGroupError, WrongTypeError, pairs
from streaq._redis._errors import error_from_reply, map_io_error
from streaq._redis._protocol import NEED_DATA, Parser, PushNotification, pack_command, pack_commands

# (wire bytes, expected replies) -- exceptions are compared by type and message.
CASES: list[tuple[bytes, list[Any]]] = [
    (b"+OK\r\n", [b"OK"]),
    (b"$5\r\nhello\r\n", [b"hello"]),
    (b"$0\r\n\r\n", [b""]),
    (b"$-1\r\n*-1\r\n_\r\n", [None, None, None]),
    (b":42\r\n:-7\r\n", [42, -7]),
    (b"*3\r\n:1\r\n$1\r\na\r\n*1\r\n+x\r\n", [[1, b"a", [b"x"]]]),
    (b"*0\r\n", [[]]),
    (b",1.5\r\n,inf\r\n", [1.5, math.inf]),
    (b"#t\r\n#f\r\n", [True, False]),
    (b"%2\r\n+a\r\n:1\r\n$1\r\nb\r\n*1\r\n:2\r\n", [{b"a": 1, b"b": [2]}]),
    (b"~2\r\n:1\r\n:2\r\n", [[1, 2]]),
    (b"=15\r\ntxt:Some string\r\n", [b"Some string"]),
    (b"(34928903284092385093248509438509\r\n", [b"34928903284092385093248509438509"]),
    (b"-ERR unknown command 'FOO'\r\n", [rex.ResponseError("unknown command 'FOO'")]),
    (b"*3\r\n:1\r\n-WRONGTYPE Operation against a key\r\n$1\r\nz\r\n",
     [[1, WrongTypeError("WRONGTYPE Operation against a key"), b"z"]]),
    (b"*1\r\n*1\r\n-NOSCRIPT No script\r\n", [[[rex.NoScriptError("No script")]]]),
    # XREADGROUP, RESP3 and RESP2 shapes
    (b"%1\r\n$1\r\ns\r\n*1\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n",
     [{b"s": [[b"1-0", [b"f", b"v"]]]}]),
    (b"*1\r\n*2\r\n$1\r\ns\r\n*1\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n",
     [[[b"s", [[b"1-0", [b"f", b"v"]]]]]]),
]  # fmt: skip


def _normalise(value: Any) -> Any:
    if isinstance(value, Exception):
        return (type(value), str(value))
    if isinstance(value, list):
        return [_normalise(item) for item in value]
    if isinstance(value, dict):
        return {key: _normalise(item) for key, item in value.items()}
    return value


def _parse_chunks(chunks: list[bytes]) -> list[Any]:
    parser = Parser()
    replies = []
    for chunk in chunks:
        parser.feed(chunk)
        while (reply := parser.next_reply()) is not NEED_DATA:
            replies.append(reply)
    return replies


@pytest.mark.parametrize(("wire", "expected"), CASES)
def test_split_at_every_byte(wire: bytes, expected: list[Any]) -> None:
    """Splitting the stream at any position (and byte by byte) gives the same replies."""
    want = _normalise(expected)
    assert _normalise(_parse_chunks([wire])) == want
    for cut in range(len(wire) + 1):
        assert _normalise(_parse_chunks([wire[:cut], wire[cut:]])) == want, cut
    assert _normalise(_parse_chunks([wire[i : i + 1] for i in range(len(wire))])) == want


def test_random_concatenation_fuzz() -> None:
    """Many replies concatenated and cut into random chunks parse to the same sequence."""
    rng = random.Random(1234)
    for _ in range(200):
        picked = [rng.choice(CASES) for _ in range(rng.randint(1, 8))]
        wire = b"".join(case[0] for case in picked)
        want = _normalise([reply for case in picked for reply in case[1]])
        cuts = sorted(rng.sample(range(len(wire) + 1), k=min(len(wire), rng.randint(0, 10))))
        chunks = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]
        assert _normalise(_parse_chunks(chunks)) == want


def test_false_is_a_reply_not_missing_data() -> None:
    parser = Parser()
    assert parser.next_reply() is NEED_DATA
    parser.feed(b"#f\r\n")
    assert parser.next_reply() is False
    assert parser.next_reply() is NEED_DATA
    assert not parser.has_data()


def test_push_messages() -> None:
    parser = Parser()
    parser.feed(b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$4\r\ndata\r\n")
    reply = parser.next_reply()
    assert type(reply) is PushNotification
    assert reply == [b"message", b"ch", b"data"]


def test_pack_command_arguments() -> None:
    assert pack_command(["SET", b"k\x00", 12, 1.5]) == (
        b"*4\r\n$3\r\nSET\r\n$2\r\nk\x00\r\n$2\r\n12\r\n$3\r\n1.5\r\n"
    )
    assert pack_command(("GET", "ключ")) == "*2\r\n$3\r\nGET\r\n$8\r\nключ\r\n".encode()
    assert pack_commands([("PING",), ("ECHO", "x")]) == (
        b"*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nECHO\r\n$1\r\nx\r\n"
    )


@pytest.mark.parametrize(
    ("message", "cls", "text"),
    [
        ("NOSCRIPT No matching script", rex.NoScriptError, "No matching script"),
        ("BUSYGROUP Consumer Group name already exists", BusyGroupError, None),
        ("NOGROUP No such key", NoGroupError, None),
        ("WRONGTYPE Operation against a key", WrongTypeError, None),
        ("NOAUTH Authentication required.", rex.AuthenticationError, "Authentication required."),
        ("WRONGPASS invalid username-password pair", rex.AuthenticationError, None),
        ("READONLY You can't write against a read only replica.", rex.ReadOnlyError, None),
        ("MOVED 3999 127.0.0.1:6381", rex.MovedError, None),
        ("ASK 3999 127.0.0.1:6381", rex.AskError, None),
        ("LOADING Redis is loading the dataset in memory", rex.BusyLoadingError, None),
        ("EXECABORT Transaction discarded", rex.ExecAbortError, None),
        ("ERR max number of clients reached", rex.ConnectionError, None),
        ("ERR Function not found", rex.ResponseError, "Function not found"),
        ("SOMETHINGNEW else", rex.ResponseError, "SOMETHINGNEW else"),
    ],
)
def test_error_table(message: str, cls: type[Exception], text: str | None) -> None:
    error = error_from_reply(message)
    assert type(error) is cls
    if text is not None:
        assert str(error) == text


def test_moved_error_parses_target() -> None:
    error = error_from_reply("MOVED 3999 127.0.0.1:6381")
    assert isinstance(error, rex.MovedError)
    assert (error.slot_id, error.host, error.port) == (3999, "127.0.0.1", 6381)


def test_pairs_reads_both_protocols() -> None:
    assert pairs({b"a": 1}) == [(b"a", 1)]
    assert pairs([b"a", 1, b"b", 2]) == [(b"a", 1), (b"b", 2)]
    assert pairs([[b"s", [1]]]) == [(b"s", [1])]
    assert pairs(None) == []


def test_io_errors_name_their_cause() -> None:
    def broken_by(code: int) -> anyio.BrokenResourceError:
        # as anyio raises it: from the socket's OSError
        broken = anyio.BrokenResourceError()
        broken.__cause__ = OSError(code, os.strerror(code))
        return broken

    # keepalive probes went unanswered: the connection is lost, not merely slow
    lost = map_io_error(broken_by(errno.ETIMEDOUT), "h:1")
    assert isinstance(lost, rex.ConnectionError)
    assert str(lost) == f"Error talking to h:1: {os.strerror(errno.ETIMEDOUT)}"
    reset = map_io_error(broken_by(errno.ECONNRESET), "h:1")
    assert str(reset) == f"Error talking to h:1: {os.strerror(errno.ECONNRESET)}"
    expired = map_io_error(TimeoutError(), "h:1")
    assert isinstance(expired, rex.TimeoutError)
    assert str(expired) == "Timeout talking to h:1"
