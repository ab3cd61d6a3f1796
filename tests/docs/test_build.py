"""The documentation builds with warnings as errors, documents the CLI, and its examples type-check.

The nox ``docs`` session is the gate; these tests show breakage early, and are skipped when the
documentation tools are not installed (``pip install --group docs``).
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ._support import DOCS, ROOT


@pytest.mark.slow
def test_docs_build_without_warnings(tmp_path: Path) -> None:
    if importlib.util.find_spec("sphinx") is None:
        pytest.skip("sphinx is not installed: pip install --group docs (nox -s docs builds them)")
    out = tmp_path / "html"
    options = ["-W", "--keep-going", "-q", "-b", "html", "-d", str(tmp_path / "doctrees")]
    build = subprocess.run(
        [sys.executable, "-m", "sphinx", *options, str(DOCS), str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert build.returncode == 0, build.stderr
    assert (out / "api.html").exists()


@pytest.mark.parametrize(
    "command", ["run", "info", "check", "enqueue", "purge", "web", "dlq", "functions", "pause"]
)
def test_every_cli_option_is_documented(command: str) -> None:
    help_text = subprocess.run(
        [sys.executable, "-m", "streaq", command, "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    options = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]+)", help_text)) - {"--help"}
    assert options
    page = (DOCS / "cli.rst").read_text()
    missing = sorted(option for option in options if f"``{option}" not in page)
    assert not missing, f"docs/cli.rst does not document {missing}"


@pytest.mark.slow
def test_examples_type_check() -> None:
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed")
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "docs/examples"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
