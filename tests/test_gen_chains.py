"""tools/gen_chains.py: the committed file is current, staleness is caught, round trip."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # pytest puts tests/ on the path, not the repository root
    sys.path.insert(0, str(ROOT))

from tools import gen_chains  # noqa: E402


def test_committed_file_is_current() -> None:
    assert gen_chains.TARGET.read_text(encoding="utf-8") == gen_chains.render()


def test_check_mode_on_current_file_passes(capsys: pytest.CaptureFixture[str]) -> None:
    assert gen_chains.main(["--check"]) == 0
    assert capsys.readouterr().out == ""


def test_check_detects_stale_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "_generated_chains.py"
    stale = gen_chains.render().replace("T8 = TypeVar", "T8 = TypeVar  # edited by hand\nT8x = ")
    target.write_text(stale, encoding="utf-8")
    assert gen_chains.main(["--check", "--target", str(target)]) == 1
    captured = capsys.readouterr()
    assert "--- " in captured.out
    assert "+++ " in captured.out
    assert "-T8 = TypeVar  # edited by hand" in captured.out
    assert "is stale" in captured.err
    assert target.read_text(encoding="utf-8") == stale  # --check writes nothing


def test_round_trip(tmp_path: Path) -> None:
    target = tmp_path / "_generated_chains.py"
    assert gen_chains.main(["--check", "--target", str(target)]) == 1  # missing counts as stale
    assert not target.exists()
    assert gen_chains.main(["--target", str(target)]) == 1  # changed something
    assert target.read_text(encoding="utf-8") == gen_chains.render()
    assert gen_chains.main(["--target", str(target)]) == 0  # already current
    assert gen_chains.main(["--check", "--target", str(target)]) == 0


def _overloads(tree: ast.Module, method: str) -> list[ast.FunctionDef]:
    (mixin,) = [node for node in tree.body if isinstance(node, ast.ClassDef)]
    return [
        node
        for node in mixin.body
        if isinstance(node, ast.FunctionDef)
        and node.name == method
        and any(isinstance(d, ast.Name) and d.id == "overload" for d in node.decorator_list)
    ]


def test_overloads_cover_every_arity() -> None:
    tree = ast.parse(gen_chains.render())
    for method in ("then", "__or__"):
        overloads = _overloads(tree, method)
        # one per arity, the longer-tuple fallback, the whole-tuple trap, the single value
        assert len(overloads) == gen_chains.ARITY + 3
        # (ast.unparse spells a starred subscript "*Ts," on some Pythons)
        selfs = [
            ast.unparse(o.args.args[0].annotation or ast.Constant(None)).replace(",]", "]")
            for o in overloads
        ]
        for arity in range(1, gen_chains.ARITY + 1):
            names = ", ".join(f"T{i}" for i in range(1, arity + 1))
            assert selfs[arity - 1] == f"ChainMixin[Any, tuple[{names}]]"
        assert selfs[-3:] == [
            "ChainMixin[Any, _Longer]",
            "ChainMixin[Any, tuple[*Ts]]",
            "ChainMixin[Any, R]",
        ]
    for method in ("otherwise", "__xor__"):
        assert _overloads(tree, method) == []


def test_longer_alias_starts_after_the_last_arity() -> None:
    source = gen_chains.render()
    anys = ", ".join(["Any"] * (gen_chains.ARITY + 1))
    assert f"_Longer: TypeAlias = tuple[{anys}, *tuple[Any, ...]]" in source


def test_rendered_text_is_ruff_formatted() -> None:
    if importlib.util.find_spec("ruff") is None:
        pytest.skip("ruff is not installed (lint dependency group)")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ruff",
            "format",
            "--stdin-filename",
            str(gen_chains.TARGET),
            "-",
        ],
        input=gen_chains.render(),
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    assert result.stdout == gen_chains.render()
