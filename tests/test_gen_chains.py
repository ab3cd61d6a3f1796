"""tools/gen_chains.py: formatting by ruff, the check and write modes, the overloads it renders."""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # pytest puts tests/ on the path, not the repository root
    sys.path.insert(0, str(ROOT))

from tools import gen_chains  # noqa: E402


@pytest.fixture(scope="module")
def generated() -> str:
    """The generated text (one ruff run for the module)."""
    return gen_chains.generate()


def test_committed_file_is_current(generated: str) -> None:
    assert gen_chains.TARGET.read_text(encoding="utf-8") == generated


def test_check_mode_on_current_file_passes(capsys: pytest.CaptureFixture[str]) -> None:
    assert gen_chains.main(["--check"]) == 0
    assert capsys.readouterr().out == ""


def test_check_prints_a_diff_and_writes_nothing(
    generated: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "_generated_chains.py"
    stale = generated.replace('T8 = TypeVar("T8")', 'T8 = TypeVar("T8")  # edited by hand')
    target.write_text(stale, encoding="utf-8")
    assert gen_chains.main(["--check", "--target", str(target)]) == 1
    captured = capsys.readouterr()
    assert f"--- {target} (committed)" in captured.out
    assert f"+++ {target} (generated)" in captured.out
    assert '-T8 = TypeVar("T8")  # edited by hand\n+T8 = TypeVar("T8")\n' in captured.out
    assert "is stale" in captured.err
    assert target.read_text(encoding="utf-8") == stale


def test_write_mode_round_trip(generated: str, tmp_path: Path) -> None:
    target = tmp_path / "_generated_chains.py"
    assert gen_chains.main(["--check", "--target", str(target)]) == 1  # missing counts as stale
    assert not target.exists()
    assert gen_chains.main(["--target", str(target)]) == 1  # changed something
    assert target.read_text(encoding="utf-8") == generated
    assert gen_chains.main(["--target", str(target)]) == 0  # already current
    assert gen_chains.main(["--check", "--target", str(target)]) == 0


def test_output_is_the_formatted_render(generated: str) -> None:
    rendered = gen_chains.render()
    assert rendered != generated  # rendered without regard to layout: ruff lays it out
    assert ast.dump(ast.parse(rendered)) == ast.dump(ast.parse(generated))
    assert gen_chains.format_source(generated) == generated


def test_format_source_uses_the_project_settings() -> None:
    line = "value = some_function(" + ", ".join(f"argument_{i}" for i in range(6)) + ")"
    assert 88 < len(line) <= 100  # one line at the project's line length, split at ruff's own
    source = line.replace("(", "( ").replace(", ", ",   ") + "\n"
    assert gen_chains.format_source(source) == line + "\n"


def test_format_source_rejects_invalid_code() -> None:
    with pytest.raises(gen_chains.FormatError, match="ruff format failed"):
        gen_chains.format_source("class not valid code ><\n")


def test_main_reports_a_formatter_failure(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "_generated_chains.py"
    monkeypatch.setattr(gen_chains, "render", lambda: "def broken(:\n")
    assert gen_chains.main(["--target", str(target)]) == 2
    assert "ruff format failed" in capsys.readouterr().err
    assert not target.exists()


def test_missing_ruff_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    find_spec = importlib.util.find_spec

    def without_ruff(name: str, package: str | None = None) -> object:
        return None if name == "ruff" else find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", without_ruff)
    with pytest.raises(gen_chains.FormatError, match="ruff is not installed"):
        gen_chains.format_source("x = 1\n")


def _mixin(source: str) -> ast.ClassDef:
    (mixin,) = [
        node
        for node in ast.parse(source).body
        if isinstance(node, ast.ClassDef) and node.name == "ChainMixin"
    ]
    return mixin


def _overloads(mixin: ast.ClassDef, method: str) -> list[ast.FunctionDef]:
    return [
        node
        for node in mixin.body
        if isinstance(node, ast.FunctionDef)
        and node.name == method
        and any(isinstance(d, ast.Name) and d.id == "overload" for d in node.decorator_list)
    ]


def _unparse(node: ast.expr | None) -> str:
    # ast.unparse spells a starred subscript "*Ts," on some Pythons
    return ast.unparse(node or ast.Constant(None)).replace(",]", "]")


def _is_deprecated(function: ast.FunctionDef) -> bool:
    return any(
        isinstance(d, ast.Call) and isinstance(d.func, ast.Name) and d.func.id == "deprecated"
        for d in function.decorator_list
    )


@pytest.mark.parametrize("method", ["then", "__or__"])
def test_overloads_in_order(generated: str, method: str) -> None:
    overloads = _overloads(_mixin(generated), method)
    pairs = method == "then"  # then: each arity without, then with extra arguments
    arities = [arity for arity in range(1, gen_chains.ARITY + 1) for _ in range(1 + pairs)]
    selfs = [_unparse(o.args.args[0].annotation) for o in overloads]
    expected = [f"ChainMixin[Any, tuple[{', '.join(gen_chains._typevars(n))}]]" for n in arities]
    expected += [
        "ChainMixin[Any, tuple[*Ts]]",
        "Task[Any, _Tuple]",
        "ChainMixin[Any, _Longer]",
        *["ChainMixin[Any, R]"] * (1 + pairs),
    ]
    assert selfs == expected
    extras = [o.args.vararg is not None for o in overloads]
    if pairs:
        assert extras == [False, True] * gen_chains.ARITY + [False, True, True, False, True]
    else:
        assert not any(extras)
    returns = [_unparse(o.returns) for o in overloads]
    whole = overloads[len(arities) + 1]
    assert returns[len(arities) + 1] == "TupleResultIsUnpacked"
    assert [o for o in overloads if _is_deprecated(o)] == [whole]
    assert returns.count("TupleResultIsUnpacked") == 1


def test_otherwise_has_one_signature(generated: str) -> None:
    mixin = _mixin(generated)
    for method in ("otherwise", "__xor__"):
        assert _overloads(mixin, method) == []
        (function,) = [
            node for node in mixin.body if isinstance(node, ast.FunctionDef) and node.name == method
        ]
        assert _unparse(function.returns) == "Task[P, R]"


def test_longer_alias_starts_after_the_last_arity(generated: str) -> None:
    anys = ", ".join(["Any"] * (gen_chains.ARITY + 1))
    assert f"_Longer: TypeAlias = tuple[{anys}, *tuple[Any, ...]]" in generated
