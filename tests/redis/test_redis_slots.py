"""Sans-IO Redis Cluster slot maths: key hashing, hash tags, where a command's keys are."""

from __future__ import annotations

import random

import pytest
from redis import exceptions as rex

from streaq._keys import QueueKeys
from streaq._redis._slots import SLOTS, command_keys, commands_slot, key_slot


def _crc16_xmodem(data: bytes) -> int:
    """CRC-16/XMODEM bit by bit, as the Redis Cluster specification describes it."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021 if crc & 0x8000 else crc << 1) & 0xFFFF
    return crc


def test_key_slot_matches_redis() -> None:
    # reference values from the Redis Cluster specification / CLUSTER KEYSLOT
    assert key_slot("foo") == 12182
    assert key_slot("123456789") == 12739  # CRC16-XModem check value 0x31C3 mod 16384
    assert key_slot("{user1000}.following") == key_slot("{user1000}.followers")
    assert key_slot("foo{}{bar}") == key_slot("foo{}{bar}")  # empty tag: the whole key hashes
    assert key_slot("foo{}{bar}") != key_slot("bar")
    keys = QueueKeys("q")
    assert key_slot(keys.stream("normal")) == key_slot(keys.prefix) == key_slot("q")


def test_key_slot_is_crc16_xmodem() -> None:
    # the check value of CRC-16/XMODEM: what the table-free standard library CRC must give
    assert _crc16_xmodem(b"123456789") == 0x31C3
    rng = random.Random(16384)
    for _ in range(500):
        key = rng.randbytes(rng.randrange(0, 40)).replace(b"{", b"(")
        assert key_slot(key) == _crc16_xmodem(key) % SLOTS
    assert key_slot(b"a{tag}b") == _crc16_xmodem(b"tag") % SLOTS
    assert key_slot(7) == key_slot(b"7")


def test_command_keys() -> None:
    assert command_keys(["FCALL", "f", 1, "k", "arg"]) == ["k"]
    assert command_keys(["XREADGROUP", "GROUP", "g", "c", "STREAMS", "a", "b", ">", ">"]) == [
        "a",
        "b",
    ]
    assert command_keys(["MGET", "a", "b"]) == ["a", "b"]
    assert command_keys(["SCAN", 0, "MATCH", "streaq:{q}:r:*"]) == ("streaq:{q}:r:*",)
    assert command_keys(["PING"]) == ()
    # container commands: the key follows the subcommand
    assert command_keys(["XINFO", "STREAM", "k"]) == ["k"]
    assert command_keys(["XGROUP", "CREATE", "k", "g", "$"]) == ["k"]
    assert not command_keys(["XINFO", "HELP"])


def test_commands_slot() -> None:
    keys = QueueKeys("q")
    pipeline: list[list[str | int]] = [
        ["XLEN", keys.stream("high")],
        ["FCALL", "f", 1, keys.prefix],
        ["PING"],
    ]
    assert commands_slot(pipeline) == key_slot("q")
    assert commands_slot([["PING"], ["TIME"]]) is None
    with pytest.raises(rex.ClusterCrossSlotError, match="different cluster slots"):
        commands_slot([["GET", "{a}x"], ["GET", "{b}x"]])
