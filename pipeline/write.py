"""The transform pass: each task reads whole files, transforms them and writes them.

One output file per input file, at the same relative path (so hive partition
directories and file names are mirrored), with the input's row groups (split
at :data:`pipeline.rowgroups.MAX_ROWS` rows), rows in the same order, the input's
compression codec per column (except a feature the codec did not compress, see
:func:`encodings`), and dictionary encoding and min/max statistics only for the
pass-through columns (dictionary-encoding normalized floats is slow and bloats
files; see :func:`writer_options` for the statistics).
Nothing in a data file depends on time or run id, so a rerun writes the same
bytes.

Each file is written under a temporary name and renamed into place (local), or
written to a local temporary file and uploaded in one request (object stores):
a task re-executed after a worker died overwrites its file whole.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Container, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from .blocks import BLOCK_ROWS, plain
from .dataset import Dataset, SourceFile
from .errors import StorageError, ZscoreError, os_error_text
from .groups import UnseenTally, hive_keys_of, with_hive_keys
from .plan import Plan, output_schema, transform_table
from .rowgroups import read_pieces
from .storage import Location, local_tempfile, open_parquet
from .summary import Reference, Summary
from .tally import Tally
from .worker import breadcrumb, corrupt_file

if TYPE_CHECKING:
    from .cluster import Session

WRITE_BUFFER = 1 << 20  # bytes gathered before each write() call

# A feature whose plain-encoded input the codec shrank by less than 2 % is written
# uncompressed (see :func:`encodings`), if its input chunk had at least 64 KiB of
# values: below that, compressing costs microseconds, and the input's codec is kept.
INCOMPRESSIBLE = 0.98
INCOMPRESSIBLE_BYTES = 1 << 16
_PLAIN = frozenset({"PLAIN", "RLE", "BIT_PACKED"})  # values plain; RLE/BIT_PACKED: levels

_CODECS = {"SNAPPY": "snappy", "ZSTD": "zstd", "GZIP": "gzip", "BROTLI": "brotli",
           "LZ4": "lz4", "LZ4_RAW": "lz4", "UNCOMPRESSED": "none"}


@dataclass(frozen=True)
class Written:
    """One output file: its relative path, rows and size in bytes.

    ``summaries`` (the report's) are those of all the files of the task, on its
    last file only.
    """

    rel: str
    rows: int
    bytes: int
    summaries: dict[str, Summary] | None = None
    unseen: UnseenTally | None = None  # with --group-by: rows whose key was not fitted
    clipped: dict[str, int] | None = None  # with clip: values clamped, per feature


def encodings(md: pq.FileMetaData, features: Container[str] = ()
              ) -> tuple[dict[str, str], set[str]]:
    """The codec and the dictionary-encoded leaf columns of a file (from its first row group).

    Keyed by leaf column path (``s.a`` for a struct field), as pyarrow's writer
    options are.  Columns in ``features`` are not looked at for dictionaries
    (:func:`writer_options` never keeps one for a feature), and a feature whose
    values were plain-encoded and which its codec shrank by less than 2 %
    (:data:`INCOMPRESSIBLE`: random-looking floats; chunks of at least
    :data:`INCOMPRESSIBLE_BYTES`) gets ``UNCOMPRESSED``: its
    z-scores would not compress either (a dictionary- or delta-encoded input says
    nothing about that, so those keep their codec), and compressing them was a
    fifth of the cost of writing a file of M (issue 12).
    """
    codecs: dict[str, str] = {}
    dictionary: set[str] = set()
    if md.num_row_groups:
        rg = md.row_group(0)
        # Some 4 µs a column to ask (the Python objects of the metadata): on 10,000
        # small files of 36 columns, only what the options need is asked.
        for j, path in enumerate(_PATHS.get(md.schema)):
            col = rg.column(j)
            codec = col.compression
            if path not in features:
                if any("DICTIONARY" in e for e in col.encodings):
                    dictionary.add(path)
            elif codec != "UNCOMPRESSED" and _incompressible(col):
                codec = "UNCOMPRESSED"
            codecs.setdefault(path, codec)
    return codecs, dictionary


def _incompressible(col: pq.ColumnChunkMetaData) -> bool:
    raw = col.total_uncompressed_size  # the sizes first: 0.1 µs to ask, encodings 1.5 µs
    return raw >= INCOMPRESSIBLE_BYTES and col.total_compressed_size >= INCOMPRESSIBLE * raw and \
        _PLAIN.issuperset(col.encodings)


class _Paths:
    """The leaf column paths of a Parquet schema, worked out once per distinct schema."""

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self.entries: list[tuple[pq.ParquetSchema, list[str]]] = []

    def get(self, schema: pq.ParquetSchema) -> list[str]:
        for s, paths in self.entries:
            if s.equals(schema):
                return paths
        paths = [schema.column(j).path for j in range(len(schema))]
        self.entries = [(schema, paths), *self.entries[:self.size - 1]]
        return paths


_PATHS = _Paths()


def writer_options(codecs: Mapping[str, str], dictionary: Iterable[str], plan: Plan
                   ) -> dict[str, Any]:
    """Parquet writer options that keep the input's choices for pass-through columns."""
    features = {c.name for c in plan.columns}
    names = {path: _CODECS.get(codec, "snappy") for path, codec in codecs.items()}
    distinct = set(names.values())
    compression: str | dict[str, str] = distinct.pop() if len(distinct) == 1 else names
    if not names:
        compression = "snappy"
    kept = sorted(path for path in dictionary if path not in features)
    # No min/max statistics for the features: z-scores of unsorted data span about the same
    # range in every row group, so they would prune nothing, and computing them was 8 % of
    # the CPU of a run on M (issue 12).  Pass-through columns keep theirs.
    stats = sorted(path for path in names if path not in features)
    return {"compression": compression, "use_dictionary": kept or False,
            "write_statistics": stats or False}


def write_file(src_fs: Any, file: SourceFile, target: Location, plan: Plan,
               tallies: Mapping[str, Tally] | None = None) -> Written:
    """Transform one input file into ``target/<file.rel>``; return what was written.

    With ``tallies``, also count each feature's values into them.
    """
    return _write_opened(file, _open(src_fs, file), target, plan, tallies)


def _open(src_fs: Any, file: SourceFile) -> pq.ParquetFile:
    breadcrumb(file.rel)
    try:
        return open_parquet(src_fs, file.path)
    except (OSError, pa.ArrowException, ValueError) as exc:
        raise corrupt_file(file.rel, exc) from None


def _write_opened(file: SourceFile, pf: pq.ParquetFile, target: Location, plan: Plan,
                  tallies: Mapping[str, Tally] | None) -> Written:
    """:func:`write_file` of a file already opened as ``pf``."""
    try:
        arrow_schema = pf.schema_arrow
        schema = output_schema(arrow_schema, plan)
    except (OSError, pa.ArrowException, ValueError) as exc:
        raise corrupt_file(file.rel, exc) from None
    tally = UnseenTally() if plan.groups is not None else None
    clipped = {c.name: 0 for c in plan.columns} if plan.finishing.clip is not None else None
    # --group-by a hive key: its value comes from the file's directory, for the lookup only
    hive = hive_keys_of(plan.groups, file.partition, arrow_schema.names) \
        if plan.groups is not None else {}
    observe = _observer(tallies)

    def tables() -> Iterator[pa.Table]:
        for piece in _pieces(pf, file):
            keyed = with_hive_keys(piece, hive) if hive else piece
            table = transform_table(keyed, plan, where=file.rel, observe=observe,
                                    tally=tally, clipped=clipped)
            yield table.drop_columns(list(hive)) if hive else table

    rows, size = _publish(file, target, pf.metadata, schema, plan, tables())
    return Written(rel=file.rel, rows=rows, bytes=size, unseen=tally, clipped=clipped)


def _observer(tallies: Mapping[str, Tally] | None) -> Any:
    if tallies is None:
        return None

    def observe(name: str, values: Any, rows: Any) -> None:
        tallies[name].add(values, rows)

    return observe


def _publish(file: SourceFile, target: Location, md: pq.FileMetaData, schema: pa.Schema,
             plan: Plan, tables: Iterable[pa.Table]) -> tuple[int, int]:
    """Write ``tables`` (``file`` transformed, a row group each) to ``target/<file.rel>``,
    whole or not at all; return the rows and bytes written."""
    dest = target.join(file.rel)
    options = writer_options(*encodings(md, {c.name for c in plan.columns}), plan)
    if target.local:
        directory = os.path.dirname(dest)
        tmp = os.path.join(directory, f".{os.path.basename(dest)}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            # No makedirs here: the client created every directory, so a task still
            # running after its run was aborted (and its staging removed) fails to open
            # its file instead of recreating the staging area.
            rows, size = _write_tables(tmp, schema, options, tables)
            os.replace(tmp, dest)
        except BaseException as exc:
            with contextlib.suppress(OSError):  # only on failure: a syscall per file saved
                os.unlink(tmp)
            if isinstance(exc, OSError):
                raise StorageError(f"cannot write {dest}: {os_error_text(exc)}",
                                   path=dest) from None
            raise
        return rows, size
    with local_tempfile() as tmp:
        try:
            rows, size = _write_tables(tmp, schema, options, tables)
            target.fs.put_file(tmp, dest)
        except OSError as exc:
            raise StorageError(f"cannot write {target.display.rstrip('/')}/{file.rel}: "
                               f"{os_error_text(exc)}", path=file.rel) from None
    return rows, size


def _write_tables(dest: str, schema: pa.Schema, options: Mapping[str, Any],
                  tables: Iterable[pa.Table]) -> tuple[int, int]:
    """Write each of ``tables`` as a row group of a new Parquet file at ``dest``; return
    its rows and size in bytes."""
    rows = 0
    # Buffered: unbuffered, the writer makes a write() call per page header and page,
    # about 100 per file: a third of the cost of writing a 100-row file.
    with pa.OSFile(dest, "wb") as raw, pa.BufferedOutputStream(raw, WRITE_BUFFER) as sink, \
            pq.ParquetWriter(sink, schema, **options) as writer:
        for table in tables:
            writer.write_table(table, row_group_size=max(table.num_rows, 1))
            rows += table.num_rows
        writer.close()  # the footer, before the size is read off the stream
        sink.flush()
        size = raw.tell()
    return rows, size


def _pieces(pf: pq.ParquetFile, file: SourceFile) -> Iterator[pa.Table]:
    """Each row group of ``file`` as one table (see :func:`pipeline.rowgroups.read_pieces`);
    a read error names the file (a write error is the caller's)."""
    pieces = read_pieces(pf, None)
    while True:
        try:
            piece = next(pieces)
        except StopIteration:
            return
        except (OSError, pa.ArrowException, ValueError) as exc:
            raise corrupt_file(file.rel, exc) from None
        yield piece


@dataclass
class _Small:
    """Small files of one schema, read and waiting to be transformed together."""

    schema: pa.Schema
    files: list[tuple[SourceFile, pq.FileMetaData, list[pa.Table]]] = field(
        default_factory=list)
    rows: int = 0

    def takes(self, md: pq.FileMetaData, schema: pa.Schema) -> bool:
        return self.rows + md.num_rows <= BLOCK_ROWS and schema.equals(
            self.schema, check_metadata=True)


def write_files(src_fs: Any, files: Sequence[SourceFile], target: Location,
                plan: Plan, refs: Mapping[str, Reference] | None = None) -> list[Written]:
    """:func:`write_file` over a batch of files: the unit of work of one task.

    Consecutive small files of one schema (together at most
    :data:`pipeline.blocks.BLOCK_ROWS` rows), under a plan the block path computes
    (:func:`pipeline.blocks.plain`), are transformed as one table, then each
    written to its own file with its own row groups (10,000 files of 100 rows: the
    whole default run in 0.82x the CPU and wall time, paired runs).  Every step of a
    transform works value by value, so the values written are the same bits as
    file by file, and pass-through columns keep their own chunks (a dictionary
    column is not merged with another file's dictionary).

    With ``refs`` (the report's, see :mod:`pipeline.summary`), the task's
    summaries (one tally per feature, shared by its files) travel with its last
    file's result.
    """
    grouped = plan.groups is not None
    tallies = {name: Tally(ref, grouped) for name, ref in refs.items()} if refs else None
    together = plain(plan)
    written: list[Written] = []
    small: _Small | None = None
    for f in files:
        pf = _open(src_fs, f)
        md = pf.metadata
        schema = pf.schema_arrow if together and md.num_rows <= BLOCK_ROWS else None
        if small is not None and (schema is None or not small.takes(md, schema)):
            written += _write_small(small, target, plan, tallies)
            small = None
        if schema is None:  # not a small file: on its own
            written.append(_write_opened(f, pf, target, plan, tallies))
            continue
        small = small or _Small(schema)
        small.files.append((f, md, list(_pieces(pf, f))))
        small.rows += md.num_rows
    if small is not None:
        written += _write_small(small, target, plan, tallies)
    if tallies is not None and written:
        written[-1] = replace(written[-1], summaries={n: t.result() for n, t in
                                                      tallies.items()})
    return written


def _write_small(small: _Small, target: Location, plan: Plan,
                 tallies: Mapping[str, Tally] | None) -> list[Written]:
    """Transform the files of ``small`` as one table, then write each to its own file."""
    pieces = [p for _, _, ps in small.files for p in ps]
    try:
        table = transform_table(pa.concat_tables(pieces), plan,
                                observe=_observer(tallies)) if pieces else None
    except ZscoreError:
        # The error again, from the file that holds the value, to name it (the run
        # fails: what was counted so far is dropped with it).
        for f, _, ps in small.files:
            for p in ps:
                transform_table(p, plan, where=f.rel)
        raise
    schema = output_schema(small.schema, plan)
    written, start = [], 0
    for f, md, ps in small.files:
        slices = []
        for p in ps:  # none when no file has a row group (then there is no table)
            assert table is not None
            slices.append(table.slice(start, p.num_rows))
            start += p.num_rows
        rows, size = _publish(f, target, md, schema, plan, slices)
        written.append(Written(rel=f.rel, rows=rows, bytes=size))
    return written


def write_dataset(session: Session, dataset: Dataset, plan: Plan, target: Location,
                  refs: Mapping[str, Reference] | None = None
                  ) -> tuple[list[Written], dict[str, Summary] | None]:
    """The transform pass on the cluster; checks every file arrived with all its rows.

    Returns what was written per file and, with ``refs``, the report's summaries
    merged in file order.

    Raises
    ------
    StorageError
        An output file whose row count differs from its input's.
    """
    pairs = list(zip(dataset.files, dataset.footers, strict=True))
    if target.local:
        for directory in sorted({os.path.dirname(target.join(f.rel)) for f in dataset.files}):
            os.makedirs(directory, exist_ok=True)
    written = session.map(partial(write_files, dataset.location.fs, target=target, plan=plan,
                                  refs=refs),
                          list(dataset.files), label="transform",
                          weights=[f.size for f in dataset.files],
                          rows=[footer.rows for footer in dataset.footers])
    for (f, footer), w in zip(pairs, written, strict=True):
        if w.rows != footer.rows or w.rel != f.rel:
            raise StorageError(f"output for {f.rel} has {w.rows} rows, input has {footer.rows}; "
                               "nothing was published")
    merged: dict[str, Summary] | None = None
    if refs:
        merged = {name: Summary() for name in refs}
        for w in written:
            for name, s in (w.summaries or {}).items():
                merged[name] = merged[name].merge(s)
    return [replace(w, summaries=None) for w in written], merged
