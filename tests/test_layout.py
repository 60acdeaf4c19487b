"""The README's table of modules lists every module of ``pipeline/``, each with its docstring.

A row is ``| `NAME.py` | SUMMARY |``, where SUMMARY is the first paragraph of the
module's docstring on one line (reST roles and double backticks written as Markdown
code).  A new module, a removed one or a changed summary fails here with the row to
write.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import pipeline

pytestmark = pytest.mark.fast  # in make test-fast, except tests marked slow

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = Path(pipeline.__file__).resolve().parent
ROW = re.compile(r"^\| `([\w]+\.py)` \| (.*) \|$", re.M)


def summary(path: Path) -> str:
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    text = " ".join(doc.split("\n\n")[0].split())
    text = re.sub(r":\w+:`~?([^`]+)`", r"`\1`", text)
    return text.replace("``", "`").replace("|", "\\|")


def test_the_readme_lists_every_module_with_its_summary():
    rows = dict(ROW.findall((ROOT / "README.md").read_text()))
    want = {p.name: summary(p) for p in sorted(PACKAGE.glob("*.py"))}
    missing = [f"| `{n}` | {s} |" for n, s in want.items() if n not in rows]
    assert missing == [], "add these rows to the README's module table"
    assert sorted(set(rows) - set(want)) == [], "rows for modules that do not exist"
    stale = {n: want[n] for n in want if rows[n] != want[n]}
    assert stale == {}, "rows whose text differs from the module's docstring"


def test_a_summary_is_the_first_paragraph_in_markdown(tmp_path):
    module = tmp_path / "m.py"
    module.write_text('"""See :func:`pipeline.fit` and\n``x``.\n\nMore."""\n')
    assert summary(module) == "See `pipeline.fit` and `x`."
