"""Serving exports of fitted statistics: a SQL ``SELECT`` that reproduces :func:`pipeline.apply`.

The numbers are the kernel's (:class:`pipeline.plan.Plan`, built exactly as
``apply`` builds it) and so is the order of operations, so an engine with IEEE
float64 arithmetic gives ``apply``'s values bit for bit:

* ``standard``: ``((x - mean) - residual) / std``; ``center`` leaves out ``/ std``;
  ``scale`` is ``x / std``.  ``residual`` (the low half of a double-double mean,
  see :attr:`pipeline.FeatureStats.kernel_residual`) appears only where it
  matters: at mean 1e9 with std 1e-3 one float mean would move z by up to 6e-5.
* 64-bit integers whose values or mean pass 2**52 are centred in two steps,
  ``CAST(x - W AS DOUBLE) - r`` with ``W = round(mean)`` in exact integer
  arithmetic, as the kernel does; smaller integers convert to float64 exactly.
* A constant feature gives ``x - x`` under ``standard`` and ``center`` (0.0, and
  NULL or NaN where ``x`` is missing) and ``x`` under ``scale``.
* NULL stays NULL and NaN stays NaN (IEEE arithmetic does it).  An infinite value
  fails the query (statistics fitted with ``inf="error"``) or becomes NaN
  (``inf="null"``), as ``apply`` raises or makes it missing.
* ``dtype="preserve"`` casts features stored as float16/float32 to the dialect's
  4-byte float (BigQuery has none: FLOAT64); ``float32`` casts all, ``float64`` none.

* ``minmax``: ``(x - min) / (max - min)``, 64-bit integers past 2**52 subtracted in
  the dialect's exact wide integer type (HUGEINT, NUMERIC(38,0), BIGNUMERIC, DECIMAL(38,0)).
* After scaling, as :mod:`pipeline.finish`: ``clip`` clamps to ``[-K, K]`` (NaN and
  NULL untouched), ``fill_missing`` replaces NULL and NaN, each before the cast to
  a 4-byte float (which gives ``apply``'s values: the cast commutes with them);
  ``missing_indicator`` adds ``<feature>__missing`` (a BOOLEAN).

DuckDB and BigQuery get ``SELECT * REPLACE (...)``: every other column passes
through, in its place, as ``apply`` does; indicator columns come after all the
input's columns (the export does not know the table's other columns).  PostgreSQL
and Spark SQL have no ``REPLACE``: the ``SELECT`` lists the features only, each
followed by its indicator (join on your key for the rest).
Float constants are written as shortest round-trip decimal literals in exponent
form, which every one of these engines reads as the same float64.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .choices import SQL_DIALECTS
from .errors import InputError, option
from .finish import NO_FINISH, FinishOptions, indicator
from .kernel import ColumnPlan
from .plan import Plan

__all__ = ["DIALECTS", "export_header", "plan_for_export", "to_sql"]

_INT_EXACT = 2.0**52  # below, an integer and the float64 mean subtract in float64 exactly


@dataclass(frozen=True)
class Dialect:
    """How one SQL engine spells the few things the export needs."""

    double: str
    single: str | None  # a 4-byte float type (None: the engine has none)
    text: str
    quote: str
    isinf: str  # a boolean expression of {x}
    fail: str  # an expression that fails the query with the message {msg} (a string expr)
    replace: bool  # SELECT * REPLACE (...)
    isnan: str = "isnan({x})"  # a boolean expression of {x}
    wide: str = "HUGEINT"  # an exact integer type holding any int64 or uint64 difference


DIALECTS: dict[str, Dialect] = {
    "duckdb": Dialect("DOUBLE", "REAL", "VARCHAR", '"', "isinf({x})", "error({msg})", True),
    # PostgreSQL has no function that raises: a failed cast of the (non-constant, so not
    # folded at plan time) message does, and shows it.
    "postgres": Dialect("DOUBLE PRECISION", "REAL", "TEXT", '"',
                        "abs({x}) = CAST('Infinity' AS DOUBLE PRECISION)",
                        "CAST({msg} AS DOUBLE PRECISION)", False,
                        "{x} = CAST('NaN' AS DOUBLE PRECISION)", "NUMERIC(38,0)"),
    "bigquery": Dialect("FLOAT64", None, "STRING", "`", "IS_INF({x})", "ERROR({msg})", True,
                        "IS_NAN({x})", "BIGNUMERIC"),
    "spark": Dialect("DOUBLE", "FLOAT", "STRING", "`", "abs({x}) = CAST('Infinity' AS DOUBLE)",
                     "raise_error({msg})", False, "isnan({x})", "DECIMAL(38,0)"),
}


def plan_for_export(stats: Any, mode: str, dtype: str, features: Sequence[str] | None,
                    finish: FinishOptions = NO_FINISH) -> Plan:
    """The kernel's plan for ``stats`` (what ``apply`` would use); per-key statistics refused."""
    if stats.groups is not None:
        raise InputError(f"these statistics were fitted per key ({option('group_by')}): "
                         "exports hold one mean and std per feature; refit without "
                         f"{option('group_by')} to export")
    if features is not None and not list(features):
        # An unset shell variable (--features "$COLS") must not give an export of nothing.
        raise InputError(f"{option('features')} is empty; name the features to export, or "
                         f"leave {option('features')} out to export every feature")
    return Plan.build(stats, mode=mode, dtype=dtype, features=features, finish=finish)


def export_header(stats: Any, plan: Plan, what: str) -> dict[str, Any]:
    """What an export records about itself: the mode, dtype and where the numbers came from."""
    src = stats.input or {}
    return {"export": what, "mode": plan.mode, "dtype": plan.dtype, **plan.finish.to_dict(),
            "inf": stats.inf,
            "ddof": stats.ddof, "features": [c.name for c in plan.columns],
            "statistics": {"created": stats.created, "tool_version": stats.tool_version,
                           "input": src.get("path"), "rows": src.get("rows")}}


def to_sql(stats: Any, dialect: str = "duckdb", *, mode: str = "standard",
           dtype: str = "preserve", table: str = "input_table",
           features: Sequence[str] | None = None, fill_missing: float | None = None,
           missing_indicator: bool = False, clip: float | None = None) -> str:
    """A ``SELECT`` that reproduces ``pipeline.apply(df, stats, mode=..., dtype=...)``.

    Parameters
    ----------
    stats : FittedStats
    dialect : {"duckdb", "postgres", "bigquery", "spark"}
    mode : {"standard", "scale", "center"}
    dtype : {"preserve", "float32", "float64"}
    table : str
        The ``FROM`` item, written as given (a table name, or DuckDB's
        ``read_parquet('data/**/*.parquet')``).
    features : list of str, optional
        A subset of the statistics' features; default all.
    fill_missing, missing_indicator, clip
        As for :func:`pipeline.apply` (see the module docstring).

    Returns
    -------
    str
        A comment line recording the export's settings, then the query.
    """
    if dialect not in DIALECTS:
        raise InputError(f"unknown SQL dialect {option('dialect', dialect)}; expected one of "
                         f"{', '.join(SQL_DIALECTS)}")
    d = DIALECTS[dialect]
    plan = plan_for_export(stats, mode, dtype, features,
                           FinishOptions(fill_missing, missing_indicator, clip))
    exprs, marks = [], []
    for c in plan.columns:
        expr, mark = _column(c, stats.features[c.name], plan, d, stats.inf)
        exprs.append(f"{expr} AS {_ident(c.name, d)}")
        if plan.finish.missing_indicator:
            marks.append(f"{mark} AS {_ident(indicator(c.name), d)}")
    header = "-- zscore " + json.dumps(export_header(stats, plan, f"sql/{dialect}"))
    if d.replace:
        tail = "".join(f",\n  {m}" for m in marks)
        return (f"{header}\nSELECT * REPLACE (\n  " + ",\n  ".join(exprs) + f"\n){tail}\n"
                f"FROM {table}\n")
    body = ",\n  ".join([e, *marks[i:i + 1]][j] for i, e in enumerate(exprs)
                        for j in range(2 if marks else 1))
    return f"{header}\nSELECT\n  {body}\nFROM {table}\n"


def _column(c: ColumnPlan, f: Any, plan: Plan, d: Dialect, inf: str) -> tuple[str, str]:
    """One feature's expression and its indicator's (see the module docstring)."""
    x, dtype = _ident(c.name, d), f.dtype
    wide = dtype in ("int64", "uint64") and max(abs(f.min), abs(f.max)) > _INT_EXACT
    mean, std = float(c.mean[-1]), float(c.std[-1])
    lo, constant = float(c.residual[-1]), bool(c.constant[-1])
    xd = x if dtype.startswith("float") else f"CAST({x} AS {d.double})"
    if plan.mode == "minmax":
        expr = f"({xd} - {xd})" if constant else f"({_from_min(x, xd, wide, f.min, d)}) / " \
            f"{_num(float(c.span[-1]))}"
    elif plan.mode == "scale":
        expr = xd if constant else f"{xd} / {_num(std)}"
    elif constant:
        expr = f"({xd} - {xd})"
    else:
        expr = f"({_deviation(x, xd, wide, mean, d)}{' - ' + _num(lo) if lo else ''})"
        if plan.mode == "standard":
            expr = f"{expr} / {_num(std)}"
    if dtype.startswith("float"):
        msg = (f"CONCAT('zscore: column {_plain(c.name)} has an infinite value: ', "
               f"CAST({x} AS {d.text}))")
        bad = d.fail.format(msg=msg) if inf == "error" else f"CAST('NaN' AS {d.double})"
        expr = f"CASE WHEN {d.isinf.format(x=x)} THEN {bad} ELSE {expr} END"
    expr, mark = _finish(expr, plan.finish, d)
    single = plan.dtype == "float32" or (plan.dtype == "preserve" and
                                         dtype in ("float16", "float32"))
    return (f"CAST({expr} AS {d.single})" if single and d.single else expr), mark


def _finish(z: str, finish: FinishOptions, d: Dialect) -> tuple[str, str]:
    """Clip then fill the scaled value ``z`` (:mod:`pipeline.finish`); and the indicator.

    NaN compares greater than every number in DuckDB and PostgreSQL, so the clip
    tests for it first; a NULL falls through every ``WHEN`` and stays NULL.
    """
    missing = f"({z} IS NULL OR {d.isnan.format(x=z)})"
    if finish.clip is not None:
        k = _num(finish.clip)
        z = (f"CASE WHEN {d.isnan.format(x=z)} THEN {z} WHEN {z} > {k} THEN {k} "
             f"WHEN {z} < -{k} THEN -{k} ELSE {z} END")
    if finish.fill_missing is not None:
        z = f"CASE WHEN {missing} THEN {_num(finish.fill_missing)} ELSE {z} END"
    return z, missing


def _from_min(x: str, xd: str, wide: bool, low: float | int, d: Dialect) -> str:
    """``x - min`` rounded once: in the dialect's exact wide integers for big 64-bit ones."""
    if not wide:
        return f"{xd} - {_num(float(low))}"
    return f"CAST(CAST({x} AS {d.wide}) - ({int(low)}) AS {d.double})"


def _deviation(x: str, xd: str, wide: bool, mean: float, d: Dialect) -> str:
    """``x - mean`` rounded once, as :func:`pipeline.kernel._deviation` computes it.

    ``wide``: a 64-bit integer feature with values past 2**52 (as float64 they would be
    rounded before the subtraction).
    """
    if not wide:
        return f"{xd} - {_num(mean)}"
    whole = float(np.round(mean))
    rest = mean - whole  # exact: whole is the integer nearest the mean
    # In the wide type: x - W overflows int64 when the values span more than 2**63.
    return f"CAST(CAST({x} AS {d.wide}) - ({int(whole)}) AS {d.double})" + (
        f" - {_num(rest)}" if rest else "")


def _num(v: float) -> str:
    """A float64 literal every dialect reads as exactly ``v`` (shortest digits, exponent form)."""
    text = np.format_float_scientific(v, unique=True, trim="0", exp_digits=2)
    return f"({text})" if v < 0 else text


def _ident(name: str, d: Dialect) -> str:
    q = d.quote
    return q + name.replace(q, q + q) + q


def _plain(name: str) -> str:
    """A column name inside a message literal: quotes and backslashes dropped."""
    return "".join(ch for ch in name if ch not in "'\\\"`")
