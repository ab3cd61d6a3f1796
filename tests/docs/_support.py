"""Loading the documentation's examples (``docs/examples/*.py``) as fresh modules."""

from __future__ import annotations

import importlib.util
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import cast

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
EXAMPLES = DOCS / "examples"


def example_names() -> list[str]:
    """Every example file, by stem."""
    return sorted(path.stem for path in EXAMPLES.glob("*.py"))


def load_example(
    name: str, monkeypatch: pytest.MonkeyPatch, redis_url: str, queue_name: str
) -> ModuleType:
    """Import ``docs/examples/<name>.py`` afresh, its worker pointed at ``queue_name``.

    Examples read ``REDIS_URL`` and ``STREAQ_QUEUE`` at import time, as an application reads
    its configuration; a fresh module per test gives each test its own worker.
    """
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("STREAQ_QUEUE", queue_name)
    monkeypatch.syspath_prepend(str(EXAMPLES))
    spec = importlib.util.spec_from_file_location(
        f"docs_example_{name}_{uuid.uuid4().hex[:8]}", EXAMPLES / f"{name}.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def main_of(module: ModuleType) -> Callable[[], Awaitable[None]]:
    """The example's ``async def main() -> None``."""
    return cast("Callable[[], Awaitable[None]]", module.main)
