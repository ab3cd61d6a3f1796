"""The public helpers of ``streaq.utils``."""

from __future__ import annotations

import io
import logging
import logging.config
import sys
import time
from collections.abc import Iterator
from datetime import UTC, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

import streaq.utils
from streaq.utils import default_log_config, import_string, now_ms, to_ms, to_seconds


def test_all_is_the_public_surface() -> None:
    assert sorted(streaq.utils.__all__) == [
        "default_log_config",
        "import_string",
        "now_ms",
        "to_ms",
        "to_seconds",
    ]
    for name in streaq.utils.__all__:
        assert hasattr(streaq.utils, name)


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A throwaway importable package ``<name>`` with a submodule ``mod``."""
    name = f"utils_pkg_{tmp_path.name.replace('-', '_')}"
    root = tmp_path / name
    root.mkdir()
    (root / "__init__.py").write_text("")
    (root / "mod.py").write_text(
        "class Box:\n    inner = 'inner value'\n\nvalue = 42\nbox = Box()\n"
    )
    (root / "broken.py").write_text("import streaq_no_such_dependency\n")
    (root / "raising.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    for mod in [m for m in sys.modules if m == name or m.startswith(f"{name}.")]:
        del sys.modules[mod]


def test_import_string_colon_and_dotted_forms(package: str) -> None:
    assert import_string(f"{package}.mod:value") == 42
    assert import_string(f"{package}.mod.value") == 42
    assert import_string(f"{package}.mod:box.inner") == "inner value"
    assert import_string("logging:getLogger") is logging.getLogger
    assert import_string("os.path.join") is __import__("os").path.join


def test_import_string_missing_module(package: str) -> None:
    with pytest.raises(ImportError, match=r"no module named 'streaq_nope'$") as info:
        import_string("streaq_nope.mod:worker")
    assert info.value.name == "streaq_nope.mod"
    with pytest.raises(ImportError, match=rf"no module named '{package}.nope'$"):
        import_string(f"{package}.nope:worker")


def test_import_string_missing_attribute(package: str) -> None:
    with pytest.raises(ImportError, match=rf"'{package}.mod' has no attribute 'worker'$"):
        import_string(f"{package}.mod:worker")
    with pytest.raises(ImportError, match=rf"'{package}.mod' has no attribute 'worker'$"):
        import_string(f"{package}.mod.worker")
    with pytest.raises(ImportError, match=rf"'{package}.mod:box' has no attribute 'nope'$"):
        import_string(f"{package}.mod:box.nope")


def test_import_string_missing_dependency_of_the_module(package: str) -> None:
    with pytest.raises(ImportError, match=r"failed to import 'streaq_no_such_dependency'") as info:
        import_string(f"{package}.broken:worker")
    assert f"'{package}.broken'" in str(info.value)


def test_import_string_lets_errors_of_the_module_itself_through(package: str) -> None:
    with pytest.raises(RuntimeError, match="boom at import"):
        import_string(f"{package}.raising:worker")


@pytest.mark.parametrize("path", ["", "worker", ":worker", "mod:", "a:b:c", "mod."])
def test_import_string_rejects_malformed_paths(path: str) -> None:
    with pytest.raises(ImportError, match="is not an import path"):
        import_string(path)


def test_to_seconds() -> None:
    assert to_seconds(None) is None
    assert to_seconds(timedelta(minutes=2, milliseconds=500)) == 120.5
    assert to_seconds(3) == 3.0
    assert isinstance(to_seconds(3), float)
    assert to_seconds(0.25) == 0.25


def test_to_ms() -> None:
    assert to_ms(None) is None
    assert to_ms(timedelta(seconds=1, milliseconds=5)) == 1005
    assert to_ms(timedelta(microseconds=1600)) == 2
    assert to_ms(timedelta(days=365 * 100)) == 365 * 100 * 86_400_000
    assert to_ms(5) == 5000
    assert to_ms(0.0015) == 2
    assert to_ms(0.001) == 1
    assert to_ms(0) == 0
    assert isinstance(to_ms(1.5), int)


def test_now_ms() -> None:
    before = time.time()
    now = now_ms()
    after = time.time()
    assert isinstance(now, int)
    assert int(before * 1000) - 1 <= now <= int(after * 1000) + 1


@pytest.fixture
def restore_streaq_logger() -> Iterator[logging.Logger]:
    log = logging.getLogger("streaq")
    saved = (list(log.handlers), log.level, log.propagate)
    yield log
    log.handlers[:] = saved[0]
    log.setLevel(saved[1])
    log.propagate = saved[2]


def _capture(log: logging.Logger) -> io.StringIO:
    """Point the configured handler at a buffer (dictConfig resolved stderr already)."""
    (handler,) = log.handlers
    assert isinstance(handler, logging.StreamHandler)
    assert handler.stream is sys.stderr
    buffer = io.StringIO()
    handler.setStream(buffer)
    return buffer


def test_default_log_config_format_and_time_zone(
    restore_streaq_logger: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = restore_streaq_logger
    logging.config.dictConfig(default_log_config(ZoneInfo("Asia/Tokyo"), verbose=False))
    buffer = _capture(log)
    # 2024-01-01 00:00:00 UTC is 09:00 in Tokyo
    monkeypatch.setattr(time, "time_ns", lambda: 1_704_067_200 * 10**9)
    monkeypatch.setattr(time, "time", lambda: 1_704_067_200.0)
    log.info("task %s started", "abc")
    log.debug("hidden")
    assert buffer.getvalue() == "[INFO] 2024-01-01 09:00:00: task abc started\n"
    assert log.propagate is False
    assert log.level == logging.INFO


def test_default_log_config_verbose(restore_streaq_logger: logging.Logger) -> None:
    log = restore_streaq_logger
    logging.config.dictConfig(default_log_config(UTC, verbose=True))
    buffer = _capture(log)
    log.debug("details")
    line = buffer.getvalue()
    assert line.startswith("[DEBUG] ")
    assert line.endswith(": details\n")
    assert logging.getLogger("streaq.worker").isEnabledFor(logging.DEBUG)


def test_default_log_config_keeps_other_loggers(restore_streaq_logger: logging.Logger) -> None:
    other = logging.getLogger("some.application")
    logging.config.dictConfig(default_log_config(UTC, verbose=False))
    assert other.disabled is False
