"""--filter on hive partition keys: typed comparisons, pruning, and clear errors."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.cli import main
from pipeline.dataset import list_files
from pipeline.errors import InputError
from pipeline.partitions import Filter, allowed
from pipeline.storage import resolve

pytestmark = pytest.mark.fast  # in make test-fast, except tests marked slow


@pytest.fixture(scope="module")
def hourly(tmp_path_factory):
    root = tmp_path_factory.mktemp("hourly")
    for day in ["2025-12-31", "2026-01-01", "2026-01-02", "2026-02-01"]:
        for hour in [9, 10, 23]:
            d = root / f"day={day}" / f"hour={hour}"
            d.mkdir(parents=True)
            pq.write_table(pa.table({"x": [float(hour), hour + 0.5]}), d / "part-0.parquet")
    return root


def rels(root, *filters):
    return [f.rel for f in list_files(resolve(root), filters)]


def test_dates_and_integers_compare_by_value(hourly):
    got = rels(hourly, "day >= 2026-01-01", "day < 2026-02-01", "hour > 9")
    assert got == ["day=2026-01-01/hour=10/part-0.parquet", "day=2026-01-01/hour=23/part-0.parquet",
                   "day=2026-01-02/hour=10/part-0.parquet", "day=2026-01-02/hour=23/part-0.parquet"]
    assert rels(hourly, "day == 2025-12-31", "hour != 10") == [
        "day=2025-12-31/hour=23/part-0.parquet", "day=2025-12-31/hour=9/part-0.parquet"]


def test_excluded_partitions_are_not_read(hourly, tmp_path, capsys):
    import shutil

    root = tmp_path / "d"
    shutil.copytree(hourly, root)
    (root / "day=2025-12-31" / "hour=9" / "junk.parquet").write_text("not parquet")
    assert main(["fit", str(root), "--stats", str(tmp_path / "s.json"), "-q"]) == 2
    assert "junk.parquet is not a readable Parquet file" in capsys.readouterr().err
    assert main(["fit", str(root), "--stats", str(tmp_path / "s.json"), "-q",
                 "--filter", "day >= 2026-01-01"]) == 0


@pytest.mark.parametrize("expr, message", [
    ("month >= 3", "--filter names 'month', which is not a partition key of the input (its "
                   "keys: day, hour)"),
    ("day >= 2026-13-45", "value '2026-13-45' of --filter 'day >= 2026-13-45' is not a date or "
                          "time like the values of 'day' (e.g. 2025-12-31)"),
    ("hour < nine", "value 'nine' of --filter 'hour < nine' is not an integer like the values "
                    "of 'hour' (e.g. 10)"),
    ("day", "--filter 'day' is not KEY OP VALUE"),
])
def test_bad_filters_name_the_culprit(hourly, expr, message):
    with pytest.raises(InputError) as info:
        rels(hourly, expr)
    assert info.value.render(cli=True).startswith(message)  # what the command line prints
    # A Python caller reads the keyword it passed.
    assert "--filter" not in str(info.value) and "filters" in str(info.value)
    assert info.value.options[0] == "filters"


def test_no_match_is_an_error(hourly):
    with pytest.raises(InputError) as info:
        rels(hourly, "day > 2030-01-01")
    assert "no data files matching --filter 'day > 2030-01-01'" in info.value.render(cli=True)
    assert "no data files matching filters=['day > 2030-01-01']" in str(info.value)


def test_text_values_compare_as_text():
    f = Filter.parse("city < m")
    assert allowed([f], ["lisbon", "oslo", "madrid"]) == {"lisbon"}


def test_fit_and_transform_a_window_through_the_cli(hourly, tmp_path, capsys):
    code = main(["fit", str(hourly), "--stats", str(tmp_path / "s.json"), "--filter",
                 "day >= 2026-01-01", "--filter", "day < 2026-02-01"])
    out = capsys.readouterr().out
    assert code == 0 and "on 12 rows in 6 files" in out
    code = main(["transform", str(hourly), str(tmp_path / "o"), "--stats", str(tmp_path / "s.json"),
                 "--filter", "day == 2026-02-01"])
    assert code == 0
    written = sorted(p.relative_to(tmp_path / "o").as_posix()
                     for p in (tmp_path / "o").rglob("*.parquet"))
    assert written == [f"day=2026-02-01/hour={h}/part-0.parquet" for h in (10, 23, 9)]


def test_linked_partitions_are_followed_and_filtered_like_the_others(hourly, tmp_path):
    import shutil

    from pipeline.errors import DataError

    root = tmp_path / "d"
    shutil.copytree(hourly, root)
    ext = tmp_path / "archive" / "hour=9"
    ext.mkdir(parents=True)
    pq.write_table(pa.table({"x": [1.0, 2.0]}), ext / "part-0.parquet")
    (root / "day=2026-03-01").mkdir()
    (root / "day=2026-03-01" / "hour=9").symlink_to(ext)  # a partition kept elsewhere
    (root / "day=2026-03-01" / "hour=10").mkdir()
    (root / "day=2026-03-01" / "hour=10" / "part-0.parquet").symlink_to(ext / "part-0.parquet")
    assert rels(root, "day >= 2026-02-01", "hour <= 10") == [
        "day=2026-02-01/hour=10/part-0.parquet", "day=2026-02-01/hour=9/part-0.parquet",
        "day=2026-03-01/hour=10/part-0.parquet", "day=2026-03-01/hour=9/part-0.parquet"]
    assert rels(root, "day >= 2026-03-01", "hour > 9") == ["day=2026-03-01/hour=10/part-0.parquet"]
    (root / "day=2026-01-01" / "hour=23" / "again").symlink_to(root)
    with pytest.raises(DataError, match="day=2026-01-01/hour=23/again is a symbolic link to .*"
                                        "which contains the link itself: a loop"):
        rels(root, "day == 2026-01-01")
    assert len(rels(root, "day == 2026-01-02")) == 3  # the loop sits in a pruned partition


def test_escaped_partition_values_are_filtered_as_readers_show_them(tmp_path):
    # Spark and pyarrow write 'New York' as city=New%20York and read it back decoded: a
    # filter names the value the user sees in their data, not its escaped directory name.
    import pyarrow.dataset as ds

    decoded = {"New%20York": "New York", "a%3Db": "a=b", "Z%C3%BCrich": "Zürich",
               "plain": "plain"}
    for raw in decoded:
        (tmp_path / f"city={raw}").mkdir()
        pq.write_table(pa.table({"x": [1.0]}), tmp_path / f"city={raw}" / "p.parquet")
    shown = ds.dataset(tmp_path, partitioning="hive").to_table().column("city").to_pylist()
    assert sorted(shown) == sorted(decoded.values())  # what a reader shows the user
    for raw, value in decoded.items():
        assert rels(tmp_path, f"city == {value}") == [f"city={raw}/p.parquet"]
    assert rels(tmp_path, "city != New York") == sorted(
        ["city=a%3Db/p.parquet", "city=Z%C3%BCrich/p.parquet", "city=plain/p.parquet"])
