"""Python and the server-side library speak the same vocabulary (``streaq._schema``,
``streaq._keys`` and the tables at the top of ``lua/base.lua``)."""

from __future__ import annotations

import re
from importlib.resources import files

import pytest

from streaq import _codec, _keys, _schema
from streaq._library import LIBRARY_PARTS
from streaq.task import EventKind

LUA = "\n".join(
    files("streaq").joinpath("lua", part).read_text(encoding="utf-8") for part in LIBRARY_PARTS
)


def lua_table(name: str) -> dict[str, str | int]:
    """The ``local NAME = {...}`` table of the library as a dict (string and integer values)."""
    found = re.search(rf"^local {name} = \{{(.*?)\}}$", LUA, re.MULTILINE | re.DOTALL)
    assert found is not None, f"no table {name} in the library"
    entries: dict[str, str | int] = {}
    for key, quoted, number in re.findall(
        r"\[?'?([a-z_]+)'?\]?\s*=\s*(?:'([^']*)'|(\d+))", found.group(1)
    ):
        entries[key] = quoted if not number else int(number)
    return entries


@pytest.mark.parametrize(
    ("table", "python"),
    [
        ("KEY", _keys.SUFFIXES),
        ("STATE", _schema.STATES),
        ("OUTCOME", _schema.OUTCOMES),
        ("FIELD", _schema.FIELDS),
        ("LINK", _schema.LINKS),
        (
            "KIND",
            {
                "value": _codec.KIND_VALUE,
                "tuple": _codec.KIND_TUPLE,
                "error": _codec.KIND_ERROR,
                "values": _codec.KIND_VALUES,
                "results": _codec.KIND_RESULTS,
            },
        ),
        ("EVENT", _schema.EVENT_KINDS),
        ("EVENT_FIELD", _schema.EVENT_FIELDS),
    ],
)
def test_lua_and_python_agree(table: str, python: dict[str, str | int]) -> None:
    assert lua_table(table) == python


def test_lua_uses_the_names_not_the_letters() -> None:
    """Below its tables the library spells no field name or state letter as a literal
    argument of ``field``/``set_field`` or in an index entry."""
    body = LUA[LUA.index("local GROUP") :]
    literals = re.findall(r"(?<![a-z_])(?:set_)?field\([^,]+, '([^']*)'", body)
    assert set(literals) & set(_schema.FIELDS.values()) == set()
    assert re.findall(r"cmsgpack\.pack\(\{'", body) == []
    assert re.findall(r"(?<![a-z_])p \.\. '", body) == []


def test_every_field_and_state_letter_is_distinct() -> None:
    for mapping in (
        _schema.FIELDS,
        _schema.STATES,
        _schema.OUTCOMES,
        _keys.SUFFIXES,
        _schema.EVENT_KINDS,
        _schema.EVENT_FIELDS,
    ):
        assert len(set(mapping.values())) == len(mapping)


def test_event_kinds_are_the_public_ones() -> None:
    """The stream's kinds are those of :class:`streaq.task.EventKind`, by name."""
    assert set(_schema.EVENT_KINDS) == {kind.value for kind in EventKind}
