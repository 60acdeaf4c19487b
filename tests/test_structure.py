"""The package's structural rules, checked on its source so that they stay true.

* no import cycle between modules of ``pipeline`` (every import counts: module level,
  inside functions, and under ``if TYPE_CHECKING``);
* no module over 400 lines, no function over 60 lines of code (docstring, comments
  and blank lines not counted), no private function with more than 8 parameters;
* no public name of the package is also the name of one of its modules (importing
  the module would bind it over the function);
* mypy accepts a user script that calls the public API.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import pipeline

pytestmark = pytest.mark.fast  # in make test-fast, except tests marked slow

PACKAGE = Path(pipeline.__file__).resolve().parent
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")
MAX_MODULE_LINES, MAX_FUNCTION_LINES, MAX_PRIVATE_PARAMS = 400, 60, 8


def _tree(name: str) -> ast.Module:
    return ast.parse((PACKAGE / f"{name}.py").read_text())


def imports(name: str) -> set[str]:
    """The modules of ``pipeline`` that module ``name`` imports, wherever the import is."""
    found = set()
    for node in ast.walk(_tree(name)):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(a.name for a in node.names if a.name in MODULES)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pipeline."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names
                         if a.name.startswith("pipeline."))
    return found & set(MODULES) - {name}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of nodes (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle():
    graph = {m: imports(m) for m in MODULES}
    assert find_cycle(graph) is None


def test_no_module_over_400_lines():
    long = {m: n for m in MODULES + ["__init__"]
            if (n := len((PACKAGE / f"{m}.py").read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}


def code_lines(fn: ast.FunctionDef | ast.AsyncFunctionDef, source: list[str]) -> int:
    """Lines of code of a function: not blank, not a comment, not its docstring."""
    skip = set()
    body = fn.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        skip.update(range(body[0].lineno, (body[0].end_lineno or body[0].lineno) + 1))
    first = min([fn.lineno] + [d.lineno for d in fn.decorator_list])
    return sum(1 for i in range(first, (fn.end_lineno or fn.lineno) + 1)
               if i not in skip and source[i - 1].strip()
               and not source[i - 1].strip().startswith("#"))


def functions() -> list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef, list[str]]]:
    out = []
    for m in MODULES + ["__init__"]:
        text = (PACKAGE / f"{m}.py").read_text()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                out.append((m, node, text.splitlines()))
    return out


def test_the_line_counter_skips_docstrings_comments_and_blanks():
    src = 'def f(a):\n    """Doc.\n\n    More.\n    """\n    # why\n\n    return a\n'
    fn = ast.parse(src).body[0]
    assert isinstance(fn, ast.FunctionDef)
    assert code_lines(fn, src.splitlines()) == 2


def test_no_function_over_60_lines_of_code():
    long = {f"{m}.{fn.name}": n for m, fn, src in functions()
            if (n := code_lines(fn, src)) > MAX_FUNCTION_LINES}
    assert long == {}


def test_no_private_function_with_more_than_8_parameters():
    def count(a: ast.arguments) -> int:
        names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
        names += [x.arg for x in (a.vararg, a.kwarg) if x is not None]
        return len([n for n in names if n not in ("self", "cls")])

    many = {f"{m}.{fn.name}": n for m, fn, _ in functions()
            if fn.name.startswith("_") and not fn.name.startswith("__")
            and (n := count(fn.args)) > MAX_PRIVATE_PARAMS}
    assert many == {}


def test_no_public_name_is_also_a_module():
    assert set(pipeline.__all__) & set(MODULES) == set()
    for name in pipeline.__all__:
        assert not isinstance(getattr(pipeline, name), type(pipeline)), name


USER_SCRIPT = '''\
import dask.dataframe as dd
import pandas as pd

import pipeline

stats: pipeline.FittedStats = pipeline.fit("data/train", exclude="id,label")
z: dd.DataFrame = pipeline.transform(dd.read_parquet("data/val"), stats)
back: dd.DataFrame = pipeline.inverse_transform(z, stats)
df: pd.DataFrame = pipeline.apply(pd.DataFrame({"x": [1.0]}), stats)
result: pipeline.RunResult = pipeline.run("data/train", "data/train_z")
merged: pipeline.FittedStats = pipeline.merge([stats, stats])
'''


@pytest.mark.slow  # mypy over the package: about a minute
def test_mypy_accepts_a_user_script_calling_the_public_api(tmp_path):
    script = tmp_path / "user.py"
    script.write_text(USER_SCRIPT)
    bad = tmp_path / "bad.py"  # the check can fail: a wrong call is reported
    bad.write_text("import pipeline\n\npipeline.apply(1, 2, mode=3)\n")
    args = [sys.executable, "-m", "mypy", "--no-incremental", "--cache-dir", str(tmp_path / "c"),
            "--ignore-missing-imports", "--follow-imports=silent"]
    ok = subprocess.run([*args, str(script)], capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    wrong = subprocess.run([*args, str(bad)], capture_output=True, text=True, timeout=300)
    assert wrong.returncode == 1 and "bad.py:3: error" in wrong.stdout
