"""Counted nouns in log lines and command output."""

from __future__ import annotations

from streaq._words import plural


def test_plural() -> None:
    assert plural(1, "task") == "1 task"
    assert plural(0, "task") == "0 tasks"
    assert plural(2, "dead letter") == "2 dead letters"
    assert plural(1, "library", "libraries") == "1 library"
    assert plural(3, "library", "libraries") == "3 libraries"
