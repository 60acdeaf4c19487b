"""What reaches a terminal or a log: names escaped, credentials removed, one line per message."""

from __future__ import annotations

import io
import json
import os
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.cli import main
from pipeline.progress import Console, escape, printable
from pipeline.redaction import redact, remember_options

# Anything that could drive a terminal, forge a log line or reorder text: C0 but newline,
# DEL, C1, bidi controls, line/paragraph separators, lone surrogates.
RAW = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029"
                 "\u202a-\u202e\u2066-\u2069\ud800-\udfff]")

HOSTILE = {"\x1b[31mred\x1b[0m": "\\x1b[31mred\\x1b[0m",
           "new\nline": "new\\nline",
           "bidi\u202eevil": "bidi\\u202eevil",
           "csi\x9b2J": "csi\\x9b2J",
           "del\x7f": "del\\x7f",
           "tab\tbed": "tab\\tbed",
           "\u2028sep": "\\u2028sep"}


@pytest.mark.parametrize("raw, shown", [*HOSTILE.items(),
                                        ("bad\udcff.parquet", "bad\\xff.parquet"),
                                        ("back\\slash é 日本", "back\\slash é 日本")])
def test_escape_shows_every_control_character(raw, shown):
    assert escape(raw) == shown
    assert not RAW.search(escape(raw))


@pytest.mark.parametrize("text, shown", [
    ("s3://AKIA:wJalrXUtnFEMI@bucket/in", "s3://***@bucket/in"),
    ("cannot open https://user:pa55word@host/x.parquet: 403",
     "cannot open https://***@host/x.parquet: 403"),
    ("gs://b/o?X-Goog-Signature=abc123&X-Goog-Date=2026",
     "gs://b/o?X-Goog-Signature=***&X-Goog-Date=2026"),
    ("abfs://c@acct.dfs.core.windows.net/p?sv=2024&sig=s%2Fecret&se=1",
     "abfs://c@acct.dfs.core.windows.net/p?sv=2024&sig=***&se=1"),
    ("http://h/f?access_key=AK&token=T0K&x=1", "http://h/f?access_key=***&token=***&x=1"),
    ("s3://b/k?X-Amz-Credential=AK%2F2026&X-Amz-Signature=f00",
     "s3://b/k?X-Amz-Credential=***&X-Amz-Signature=***"),
    ("sftp://me@host/data", "sftp://me@host/data"),  # a user name alone is not a secret
])
def test_redact_removes_credentials_from_urls_and_queries(text, shown):
    assert redact(text) == shown


def test_redact_removes_remembered_secrets_wherever_they_appear():
    remember_options({"secret": "canary-remembered-1", "key": "AKIDEXAMPLE77",
                      "endpoint_url": "http://127.0.0.1:9000", "anon": False,
                      "client_kwargs": {"aws_session_token": "sess-token-xyz"}})
    text = ('Invalid bucket name "AKIDEXAMPLE77:canary-remembered-1@b" at '
            "http://127.0.0.1:9000 (sess-token-xyz)")
    assert redact(text) == 'Invalid bucket name "***:***@b" at http://127.0.0.1:9000 (***)'


def test_console_lines_are_one_line_each_and_escaped():
    stream = io.StringIO()
    console = Console(stream=stream)
    console.info("features (1): a\nzscore: error: forged")
    console.warn("column '\x1b]0;title\x07' s3://u:secretpw@b/x")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and not RAW.search(stream.getvalue().replace("\n", ""))
    assert lines[0].endswith("zscore: features (1): a\\nzscore: error: forged")
    assert lines[1].endswith("zscore: warning: column '\\x1b]0;title\\x07' s3://***@b/x")
    assert printable("a\x1b") == "a\\x1b"


# ------------------------------------------------------------- end to end
def _hostile_dataset(root):
    root.mkdir()
    rng = np.random.default_rng(3)
    table = pa.table({name: rng.normal(i, 1 + i, 50) for i, name in enumerate(HOSTILE)})
    for name in ("esc\x1b]0;pwned\x07.parquet", "nl\nname.parquet", "plain.parquet"):
        pq.write_table(table, root / name)
    return table


def test_hostile_names_are_escaped_on_the_terminal_and_kept_in_the_artifact(tmp_path, capsys):
    table = _hostile_dataset(tmp_path / "in")
    code = main(["run", str(tmp_path / "in"), str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert code == 0, err
    for stream in (out, err):
        assert not RAW.search(stream), stream
    assert "Glyph" not in err and "Warning" not in err  # the report escapes the names itself
    rows = out.splitlines()[4:]  # after the summary lines: the statistics table
    assert len(rows) == 1 + len(HOSTILE)
    for shown in HOSTILE.values():
        assert any(row.startswith(shown + " ") for row in rows), shown
    features_line = next(line for line in err.splitlines() if "features (" in line)
    assert features_line.endswith("features (7): " + ", ".join(HOSTILE.values()))
    stats = json.loads((tmp_path / "out" / "_stats.json").read_text())
    assert list(stats["features"]) == table.column_names  # the real names, not escapes
    assert sorted(os.listdir(tmp_path / "out")) == sorted(
        ["_SUCCESS", "_report", "_stats.json", "esc\x1b]0;pwned\x07.parquet", "nl\nname.parquet",
         "plain.parquet"])
    assert pq.read_table(tmp_path / "out" / "nl\nname.parquet").column_names == \
        table.column_names


def test_errors_naming_hostile_files_and_columns_are_one_escaped_line(tmp_path, capsys):
    src = tmp_path / "in"
    _hostile_dataset(src)
    (src / "nl\nname.parquet").write_bytes(b"PAR1 not really")
    code = main(["run", str(src), str(tmp_path / "out"), "--no-report"])
    _, err = capsys.readouterr()
    assert code == 2 and not RAW.search(err)
    assert err.splitlines()[-1].startswith(
        "zscore: error: nl\\nname.parquet is not a readable Parquet file")
    empty = pa.array([None, None], pa.float64())
    pq.write_table(pa.table({"ok": [1.0, 2.0], "\x1b[2Jgone": empty}), src / "nl\nname.parquet")
    (src / "plain.parquet").unlink()
    (src / "esc\x1b]0;pwned\x07.parquet").unlink()
    code = main(["fit", str(src), "--stats", str(tmp_path / "s.json")])
    _, err = capsys.readouterr()
    assert code == 2 and not RAW.search(err)
    assert err.splitlines()[-1] == ("zscore: error: column '\\x1b[2Jgone' has no values (all 2 "
                                    "are missing); exclude it with --exclude '\\x1b[2Jgone'")
    # The remedy, typed with the real name, works.
    assert main(["fit", str(src), "--stats", str(tmp_path / "s.json"), "--exclude",
                 "\x1b[2Jgone"]) == 0


def test_a_file_name_that_is_not_utf8_is_refused_naming_it(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    pq.write_table(pa.table({"x": [1.0, 2.0]}), src / "good.parquet")
    with open(os.fsencode(src) + b"/bad\xff.parquet", "wb") as f:
        pq.write_table(pa.table({"x": [1.0, 2.0]}), f)
    code = main(["run", str(src), str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and not RAW.search(err)
    assert err.splitlines()[-1] == ("zscore: error: file name bad\\xff.parquet is not valid "
                                    "UTF-8, which Parquet readers (pyarrow, Dask) cannot open; "
                                    "rename it")
    assert not (tmp_path / "out").exists()


def test_verbose_logs_of_a_failing_task_are_scrubbed_one_record_per_line(tmp_path):
    """--verbose shows Dask's own logs: a worker's 'Compute Failed' record included."""
    from procs import run_zscore

    name = "bad\x1b[2J\nname"
    train = tmp_path / "train"
    train.mkdir()
    pq.write_table(pa.table({name: [1.0, 2.0, 4.0]}), train / "a.parquet")
    val = tmp_path / "val"
    val.mkdir()
    pq.write_table(pa.table({name: [1.0, float("inf")]}), val / "nl\nfile.parquet")
    assert main(["fit", str(train), "--stats", str(tmp_path / "s.json"), "-q"]) == 0
    r = run_zscore("transform", val, tmp_path / "out", "--stats", tmp_path / "s.json", "-v")
    assert r.returncode == 2
    assert not RAW.search(r.stderr)
    stamp = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} - |\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ "
                       r"zscore: |zscore: error: )")
    assert all(stamp.match(line) for line in r.stderr.splitlines()), r.stderr
    assert any("Compute Failed" in line for line in r.stderr.splitlines())
    assert r.stderr.splitlines()[-1] == (
        "zscore: error: column 'bad\\x1b[2J\\nname' has 1 infinite value(s) in nl\\nfile.parquet;"
        " fix the data or use statistics fitted with --inf null")


def test_the_summary_line_repeats_each_pass_throughput_of_its_progress_line(tmp_path):
    """A real zscore process, stderr not a terminal: the last line of each pass and the
    summary show the same MB/s, and the bytes read are the input files' sizes on disk."""
    import subprocess
    import sys

    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(3)
    for i in range(4):
        pq.write_table(pa.table({"x": rng.normal(size=20_000)}), src / f"p{i}.parquet")
    done = subprocess.run([sys.executable, "-m", "pipeline", "run", str(src),
                           str(tmp_path / "out"), "--no-report"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    last = {}
    for line in done.stderr.splitlines():
        m = re.search(r"zscore: (fit|transform) +4/4 files .*  ([0-9.]+ [kMG]?B/s)  ", line)
        if m:
            last[m.group(1)] = m.group(2)
    assert set(last) == {"fit", "transform"}, done.stderr
    summary = done.stdout.splitlines()[0]
    on_disk = sum(p.stat().st_size for p in src.iterdir())
    assert 1e5 < on_disk < 1e6  # printed in kB
    assert f"({on_disk / 1e3:.1f} kB read, fit {last['fit']}, transform {last['transform']})" \
        in summary, (summary, done.stderr)
