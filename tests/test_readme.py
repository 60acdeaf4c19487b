"""The README's documented calls work: every ```python block runs, on generated data.

Each block runs in a fresh directory holding ``data/train`` and ``data/val`` (small
``zscore sample`` datasets, hive-partitioned by ``day``), with the session's real
LocalCluster as the current Dask client; blocks run in order and share one namespace,
as a reader pasting them into one session would.  A block needing anything else must
create it itself.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline.sample import make_dataset

pytestmark = pytest.mark.fast  # in make test-fast, except tests marked slow

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(first line number, source) of every fenced ```python block."""
    blocks = []
    for m in re.finditer(r"^```python[ \t]*\n(.*?)^```[ \t]*$", text, re.M | re.S):
        blocks.append((text.count("\n", 0, m.start()) + 2, m.group(1)))
    return blocks


def test_the_readme_has_python_blocks():
    assert len(python_blocks(README.read_text())) >= 1


def test_every_python_block_of_the_readme_runs(tmp_path, monkeypatch, cluster):
    make_dataset(tmp_path / "data" / "train", rows=6_000, days=3, files_per_day=2, seed=1)
    make_dataset(tmp_path / "data" / "val", rows=3_000, days=2, files_per_day=1, seed=2)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__readme__"}
    with cluster.as_current():
        for line, source in python_blocks(README.read_text()):
            code = compile("\n" * (line - 1) + source, str(README), "exec")
            try:
                exec(code, namespace)  # noqa: S102 - the README is ours
            except Exception as exc:  # noqa: BLE001 - name the block, keep the cause
                pytest.fail(f"README.md block at line {line} failed: {type(exc).__name__}: "
                            f"{exc}")
    # The calls did what the comments say (a block that silently did nothing would pass).
    import pipeline

    if "z" in namespace and "stats" in namespace:
        assert isinstance(namespace["stats"], pipeline.FittedStats)
        assert (tmp_path / "data" / "train_z" / "_SUCCESS").exists()
        assert (tmp_path / "data" / "val_z" / "_SUCCESS").exists()
