"""Every remedy an error message suggests, followed to the letter, works.

Each case provokes a real error, checks that it is one line with exit code 2,
reads the suggested options *out of the message* and reruns with them.  The
messages with a remedy are found with ``grep -rn "exclude it with\\|pass --\\|use
--\\|with --\\|drop one\\|create it with\\|e.g. --" pipeline/``.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from procs import zscore


def refused(capsys, *args) -> str:
    """Run, expect exit 2 with exactly one error line, return it."""
    code, _, err = zscore(capsys, *args)
    errors = [line for line in err.splitlines() if "error:" in line]
    assert code == 2 and len(errors) == 1 and err.splitlines()[-1] == errors[0], err
    return errors[0]


def remedy(line: str, pattern: str) -> list[str]:
    """The options a message suggests (the first group of ``pattern``), as argv items."""
    match = re.search(pattern, line)
    assert match, f"no remedy {pattern!r} in: {line}"
    return shlex.split(match.group(1))


def write(root: Path, files: dict[str, pa.Table]) -> Path:
    for rel, table in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, root / rel)
    return root


def test_exclude_a_feature_whose_type_differs_between_files(tmp_path, capsys):
    src = write(tmp_path / "in", {"a.parquet": pa.table({"x": [1.0, 2.0], "note": [1.0, 2.0]}),
                                  "b.parquet": pa.table({"x": [3.0, 4.0], "note": [3.0, 4.0]}),
                                  "c.parquet": pa.table({"x": [5.0, 6.0], "note": ["s", "t"]})})
    line = refused(capsys, "run", src, tmp_path / "out")
    assert line == ("zscore: error: column 'note' is string in c.parquet but double in 2 other "
                    "file(s); exclude it with --exclude note or fix the file")
    fix = remedy(line, r"exclude it with (--exclude \S+)")
    code, _, err = zscore(capsys, "run", src, tmp_path / "out", *fix)
    assert code == 0, err
    assert "warning: pass-through column 'note' is string in c.parquet" in err
    assert pq.read_table(tmp_path / "out" / "c.parquet").column("note").to_pylist() == ["s", "t"]
    assert pq.read_table(tmp_path / "out" / "a.parquet").column("note").to_pylist() == [1.0, 2.0]


def test_exclude_a_selected_feature_missing_from_a_file(tmp_path, capsys):
    src = write(tmp_path / "in", {"a.parquet": pa.table({"x": [1.0, 2.0], "y": [1.0, 9.0]}),
                                  "b.parquet": pa.table({"x": [3.0, 4.0]})})
    line = refused(capsys, "run", src, tmp_path / "out", "--features", "x,y")
    fix = remedy(line, r"exclude it with (--exclude \S+)")
    assert fix == ["--exclude", "y"]
    code, _, err = zscore(capsys, "run", src, tmp_path / "out", "--features", "x,y", *fix)
    assert code == 0, err
    assert pq.read_table(tmp_path / "out" / "a.parquet").column("y").to_pylist() == [1.0, 9.0]
    assert pq.read_table(tmp_path / "out" / "b.parquet").column_names == ["x"]


def test_exclude_a_column_without_values_and_null_the_infinities(tmp_path, capsys):
    src = write(tmp_path / "in", {"a.parquet": pa.table({
        "x": [1.0, 2.0, 3.0], "empty": pa.array([None] * 3, pa.float64()),
        "inf": [1.0, float("inf"), 3.0]})})
    line = refused(capsys, "fit", src, "--stats", tmp_path / "s.json")
    fix = remedy(line, r"exclude it with (--exclude \S+)")
    line = refused(capsys, "fit", src, "--stats", tmp_path / "s.json", *fix)
    fix += remedy(line, r"pass (--inf null)")
    code, _, err = zscore(capsys, "fit", src, "--stats", tmp_path / "s.json", *fix)
    assert code == 0, err
    features = json.loads((tmp_path / "s.json").read_text())["features"]
    assert sorted(features) == ["inf", "x"] and features["inf"]["count"] == 2


def test_statistics_fitted_with_inf_null_transform_infinities(tmp_path, capsys):
    train = write(tmp_path / "train", {"a.parquet": pa.table({"x": [1.0, 2.0, 3.0]})})
    val = write(tmp_path / "val", {"a.parquet": pa.table({"x": [1.0, float("-inf")]})})
    assert zscore(capsys, "fit", train, "--stats", tmp_path / "s.json")[0] == 0
    line = refused(capsys, "transform", val, tmp_path / "out", "--stats", tmp_path / "s.json")
    fix = remedy(line, r"use statistics fitted with (--inf null)")
    assert zscore(capsys, "fit", train, "--stats", tmp_path / "s.json", *fix)[0] == 0
    code, _, err = zscore(capsys, "transform", val, tmp_path / "out", "--stats",
                          tmp_path / "s.json")
    assert code == 0, err
    z = pq.read_table(tmp_path / "out" / "a.parquet").column("x").to_pylist()
    assert z[0] == pytest.approx(-1 / np.sqrt(2 / 3), rel=1e-15) and np.isnan(z[1])  # inf: missing


def test_group_by_a_selected_feature_and_unseen_keys(tmp_path, capsys):
    rng = np.random.default_rng(0)
    train = write(tmp_path / "train", {"a.parquet": pa.table({
        "x": rng.normal(size=40), "g": np.repeat([1, 2], 20)})})
    val = write(tmp_path / "val", {"a.parquet": pa.table({"x": [0.5, 1.5], "g": [2, 3]})})
    stats = tmp_path / "s.json"
    line = refused(capsys, "fit", train, "--stats", stats, "--features", "x,g", "--group-by", "g")
    fix = remedy(line, r"exclude it with (--exclude \S+)")
    assert zscore(capsys, "fit", train, "--stats", stats, "--features", "x,g", "--group-by", "g",
                  *fix)[0] == 0
    line = refused(capsys, "transform", val, tmp_path / "o", "--stats", stats, "--unseen", "error")
    for option in re.search(r"pass (--unseen \w+) or (--unseen \w+)", line).groups():
        out = tmp_path / option.split()[1]
        code, _, err = zscore(capsys, "transform", val, out, "--stats", stats, "--unseen",
                              "error", *shlex.split(option))
        assert code == 0, err
        z = pq.read_table(out / "a.parquet").column("x").to_pylist()
        assert np.isfinite(z[0]) and np.isnan(z[1]) == (option == "--unseen null")


def test_raise_max_keys(tmp_path, capsys):
    src = write(tmp_path / "in", {"a.parquet": pa.table({"x": [1.0, 2.0, 4.0, 5.0],
                                                         "g": [1, 2, 3, 3]})})
    args = ["fit", src, "--stats", tmp_path / "s.json", "--group-by", "g", "--max-keys", "2"]
    line = refused(capsys, *args)
    assert line.endswith("--group-by g found 3 distinct keys in a.parquet alone, more than the "
                         "limit of 2; group by a coarser key, or raise the limit with "
                         "--max-keys 6")
    code, _, err = zscore(capsys, *args[:-2], *remedy(line, r"(--max-keys \d+)$"))
    assert code == 0, err


def test_overwrite_an_existing_output(datasets, tmp_path, capsys):
    src = datasets.sample()
    assert zscore(capsys, "run", src, tmp_path / "out", "--no-report")[0] == 0
    line = refused(capsys, "run", src, tmp_path / "out", "--no-report")
    fix = remedy(line, r"pass (--overwrite)")
    code, _, err = zscore(capsys, "run", src, tmp_path / "out", "--no-report", *fix)
    assert code == 0, err
    assert (tmp_path / "out" / "_SUCCESS").exists()


def test_the_filter_example_and_the_fit_command_the_messages_show(datasets, tmp_path, capsys):
    src = datasets.sample()
    line = refused(capsys, "fit", src, "--stats", tmp_path / "s.json", "--filter", "day")
    example = remedy(line, r"e\.g\. (--filter '[^']+')")
    assert zscore(capsys, "fit", src, "--stats", tmp_path / "s.json", *example)[0] == 0
    missing = tmp_path / "missing.json"
    line = refused(capsys, "transform", src, tmp_path / "out", "--stats", missing)
    command = remedy(line, r"create it with '(zscore fit [^']+)'")
    assert command == ["zscore", "fit", "INPUT", "--stats", str(missing)]
    assert zscore(capsys, *[str(src) if a == "INPUT" else a for a in command[1:]])[0] == 0
    code, _, err = zscore(capsys, "transform", src, tmp_path / "out", "--stats", missing,
                          "--no-report")
    assert code == 0, err


def test_redraw_a_report_after_rerunning_with_the_report_on(datasets, tmp_path, capsys):
    src = datasets.sample()
    out = tmp_path / "out"
    line = refused(capsys, "report", tmp_path / "nowhere")
    assert line == (f"zscore: error: {tmp_path / 'nowhere'} is not a published zscore output "
                    "(it has no _SUCCESS); give the OUTPUT of a finished zscore run or transform")
    assert zscore(capsys, "run", src, out, "--no-report", "-q")[0] == 0
    line = refused(capsys, "report", out)
    fix = remedy(line, r"rerun its zscore run or transform with (--overwrite)")
    assert zscore(capsys, "run", src, out, "-q", *fix)[0] == 0
    (out / "_report" / "index.html").unlink()
    code, stdout, err = zscore(capsys, "report", out)
    assert code == 0, err
    assert stdout == f"report: {out}/_report/index.html\n"
    assert (out / "_report" / "index.html").exists()


def test_a_directory_where_a_file_belongs(datasets, tmp_path, capsys):
    (tmp_path / "adir").mkdir()
    line = refused(capsys, "inspect", tmp_path / "adir")
    assert line == f"zscore: error: cannot read {tmp_path / 'adir'}: Is a directory; give the " \
                   "path of a file"
    src = datasets.write("tiny", {"a.parquet": pa.table({"x": [1.0, 2.0]})})
    line = refused(capsys, "fit", src, "--stats", tmp_path / "adir")
    assert line.endswith("is a directory; give the path of a file")
    assert zscore(capsys, "fit", src, "--stats", tmp_path / "adir" / "s.json")[0] == 0
    assert zscore(capsys, "inspect", tmp_path / "adir" / "s.json")[0] == 0


def test_a_remedy_naming_a_column_with_a_comma_or_a_space_works_in_a_shell(tmp_path, capsys):
    src = write(tmp_path / "in", {
        "a.parquet": pa.table({"x": [1.0, 2.0], "rev, usd": [1.0, 2.0],
                               "no value": pa.array([None, None], pa.float64())}),
        "b.parquet": pa.table({"x": [3.0, 4.0], "rev, usd": ["a", "b"],
                               "no value": pa.array([None, None], pa.float64())})})
    line = refused(capsys, "run", src, tmp_path / "out")
    assert line.endswith("exclude it with --exclude 'rev\\, usd' or fix the file")
    fix = remedy(line, r"exclude it with (--exclude '[^']+')")  # what a shell passes on
    assert fix == ["--exclude", "rev\\, usd"]
    line = refused(capsys, "run", src, tmp_path / "out", *fix)
    more = remedy(line, r"exclude it with --exclude ('[^']+')")
    code, _, err = zscore(capsys, "run", src, tmp_path / "out", "--exclude",
                          f"{fix[1]},{more[0]}")
    assert code == 0, err
    assert json.loads((tmp_path / "out" / "_stats.json").read_text())["features"].keys() == {"x"}
