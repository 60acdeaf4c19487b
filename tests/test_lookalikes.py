"""Default feature selection warns about integer ids and 0/1 labels, and never about others.

The expected columns come from pyarrow itself (``count_distinct`` against the
row count, min/max over the whole dataset read at once), not from zscore's rule.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from pipeline import fit
from pipeline.cli import main


def _write(root, n_files: int = 3, rows: int = 400) -> None:
    rng = np.random.default_rng(7)
    root.mkdir()
    for i in range(n_files):
        ids = np.arange(i * rows, (i + 1) * rows, dtype=np.int64)
        pq.write_table(pa.table({
            "user_id": rng.permutation(ids),                      # distinct, disjoint per file
            "label": rng.integers(0, 2, rows).astype(np.int8),    # only 0 and 1
            # distinct within each file, but files share values: not an identifier
            "shared": rng.permutation(np.arange(rows, dtype=np.int32) + i * (rows // 2)),
            # disjoint ranges per file, one repeat in the last file: not an identifier
            "almost": np.concatenate([ids[:-1], ids[:1]]) if i == n_files - 1 else ids,
            "age": rng.integers(18, 90, rows).astype(np.int16),
            "score": rng.normal(size=rows),
        }), root / f"part-{i}.parquet")


def _expected(root) -> tuple[set[str], set[str]]:
    table = ds.dataset(root).to_table()
    ints = [f.name for f in table.schema if pa.types.is_integer(f.type)]
    ids = {n for n in ints if pc.count_distinct(table[n]).as_py() == table.num_rows}
    zero_one = {n for n in ints if set(pc.unique(table[n]).to_pylist()) == {0, 1}}
    return ids, zero_one


def _warning(err: str) -> str:
    lines = [line for line in err.splitlines() if "look(s) like" in line]
    assert len(lines) <= 1, err
    return lines[0].split("zscore: ", 1)[1] if lines else ""


def test_fit_warns_naming_ids_and_labels_only(tmp_path, capsys):
    src = tmp_path / "data"
    _write(src)
    ids, zero_one = _expected(src)
    assert ids == {"user_id"} and zero_one == {"label"}  # the data is what the test means
    assert main(["fit", str(src), "--stats", str(tmp_path / "s.json")]) == 0
    line = _warning(capsys.readouterr().err)
    assert "warning: integer feature(s) user_id look(s) like an identifier" in line
    assert "label look(s) like a label (only 0 and 1)" in line
    assert "--exclude user_id,label" in line
    for other in ("shared", "almost", "age", "score"):
        assert other not in line
    # The remedy works and silences the warning; so does naming the features.
    assert main(["fit", str(src), "--stats", str(tmp_path / "t.json"), "--exclude",
                 "user_id,label"]) == 0
    assert _warning(capsys.readouterr().err) == ""
    assert main(["fit", str(src), "--stats", str(tmp_path / "u.json"), "--features",
                 "user_id,label,age"]) == 0
    assert _warning(capsys.readouterr().err) == ""


def test_ordinary_integers_stay_quiet(tmp_path, capsys):
    # Every file has distinct values, but the ranges overlap (hashed ids would look
    # the same): zscore cannot prove they are all distinct, so it does not warn.
    src = tmp_path / "data"
    src.mkdir()
    for i in range(2):
        pq.write_table(pa.table({"x": np.arange(i, 400 + i, dtype=np.int64),
                                 "small": np.arange(50, dtype=np.int64)[:50].repeat(8)}),
                       src / f"p{i}.parquet")
    ids, _ = _expected(src)
    assert ids == set()
    assert main(["fit", str(src), "--stats", str(tmp_path / "s.json")]) == 0
    assert _warning(capsys.readouterr().err) == ""


def test_pandas_fit_warns_through_python_warnings():
    frame = pd.DataFrame({"id": np.arange(200), "flag": np.arange(200) % 2,
                          "age": np.arange(200) % 37, "y": np.linspace(0, 1, 200)})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(frame)
    text = " ".join(str(w.message) for w in caught)
    assert "id look(s) like an identifier" in text and "flag look(s) like a label" in text
    assert "exclude='id,flag'" in text and "age" not in text.split("standardized")[0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(frame, exclude=["id", "flag"])
    assert not [w for w in caught if "look(s) like" in str(w.message)]
