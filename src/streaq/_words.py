"""Counted nouns for log lines and command output: ``1 task``, ``2 tasks``, ``1 library``."""

from __future__ import annotations

__all__ = ["plural"]


def plural(count: int, noun: str, many: str | None = None) -> str:
    """``count`` and ``noun``, the noun in the plural unless ``count`` is 1.

    :param count: how many
    :param noun: the singular, e.g. ``"dead letter"``
    :param many: the plural when it is not ``noun + "s"``, e.g. ``"libraries"``
    :return: e.g. ``"1 dead letter"``, ``"0 dead letters"``
    """
    return f"{count} {noun if count == 1 else many or noun + 's'}"
