"""The README's promises name the tests that prove them; those tests must exist.

A guarantee whose test was renamed or deleted is a promise without proof, so every
``test_...`` name cited in README.md and docs/*.md must be a test function in ``tests/``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _defined_tests() -> set[str]:
    names = set()
    for path in (ROOT / "tests").glob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names.add(node.name)
    return names


def _cited_tests() -> dict[str, set[str]]:
    cited: dict[str, set[str]] = {}
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        # Only names in backticks: file names such as tests/test_s3.py are not tests.
        for name in re.findall(r"`(test_[a-z0-9_]+)`", doc.read_text(encoding="utf-8")):
            cited.setdefault(name, set()).add(doc.name)
    return cited


def test_every_test_the_docs_name_exists():
    defined = _defined_tests()
    cited = _cited_tests()
    assert len(cited) > 40, "the Guarantees section should cite its tests"
    missing = {name: sorted(docs) for name, docs in cited.items() if name not in defined}
    assert not missing, f"tests named in the docs but not defined: {missing}"

