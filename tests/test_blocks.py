"""The block path (many columns per numpy call): the per-column path's bits, and exact."""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import numpy as np
import pyarrow as pa
import pytest

import pipeline
from pipeline.artifact import FeatureStats, FittedStats
from pipeline.blocks import BLOCK_ROWS, block_moments, block_transform, plain
from pipeline.moments import column_moments
from pipeline.plan import Plan, transform_array
from pipeline.stats import Moments

pytestmark = pytest.mark.fast


def _table(rows: int, seed: int) -> pa.Table:
    """Every type the block path takes or leaves, with the traps: offsets, NaN, nulls, constants."""
    rng = np.random.default_rng(seed)
    nulls = rng.random(rows) < 0.2
    cols = {
        "normal": pa.array(rng.standard_normal(rows)),
        "offset_1e9": pa.array(1e9 + rng.standard_normal(rows) * 1e-3),
        "f32": pa.array((1e4 + rng.standard_normal(rows)).astype(np.float32)),
        "f32_small": pa.array((rng.standard_normal(rows) * 1e-20).astype(np.float32)),
        "with_nan": pa.array(np.where(rng.random(rows) < 0.3, np.nan, rng.random(rows))),
        "with_nulls": pa.array(rng.random(rows), mask=nulls),
        "f32_nulls": pa.array(rng.random(rows).astype(np.float32), mask=nulls),
        "constant": pa.array(np.full(rows, 0.1)),
        "i8": pa.array(rng.integers(-128, 128, rows, dtype=np.int8)),
        "i32": pa.array(rng.integers(-2**31, 2**31, rows, dtype=np.int32)),
        "u32": pa.array(rng.integers(2**32 - 9, 2**32, rows, dtype=np.uint32)),
        "i64": pa.array(rng.integers(2**62, 2**62 + 9, rows, dtype=np.int64)),
        # within 2**52, nulls included: taken into the block (exact in float64)
        "i64_small": pa.array(rng.integers(-2**52, 2**52 + 1, rows, dtype=np.int64),
                              mask=rng.random(rows) < 0.2),
        "f16": pa.array(rng.random(rows).astype(np.float16)),
        "signed_zeros": pa.array(np.where(rng.random(rows) < 0.5, -0.0, 0.0)),
        "text": pa.array([str(i) for i in range(rows)]),
    }
    return pa.table(cols)


FEATURES = ["normal", "offset_1e9", "f32", "f32_small", "with_nan", "with_nulls", "f32_nulls",
            "constant", "i8", "i32", "u32", "i64", "i64_small", "f16", "signed_zeros"]
SHAPES = [1, 2, 3, 7, 100, 257, BLOCK_ROWS, BLOCK_ROWS + 1]


def _bits(m: Moments) -> tuple:
    return tuple(struct if not isinstance(struct, float) else
                 np.float64(struct).view(np.uint64).item()
                 for struct in dataclasses.astuple(m))


@pytest.mark.parametrize("rows", SHAPES)
def test_block_moments_are_the_per_column_moments_bit_for_bit(rows):
    table = _table(rows, seed=rows)
    got = block_moments(table, FEATURES, column_moments)
    for name in FEATURES:
        want = column_moments(table.column(name))
        assert _bits(got[name]) == _bits(want), name


def test_block_moments_are_exact():
    table = _table(300, seed=3)
    got = block_moments(table, FEATURES, column_moments)
    for name in ("normal", "offset_1e9", "f32", "f32_small"):
        xs = [Fraction(v) for v in table.column(name).to_pylist()]
        mean = sum(xs, Fraction(0)) / len(xs)
        std = math.sqrt(sum(((x - mean) ** 2 for x in xs), Fraction(0)) / len(xs))
        # shift + offset: the mean as a double-double (at 1e9 a float64 alone is too coarse)
        total = Fraction(got[name].shift) + Fraction(got[name].offset)
        assert abs(total - mean) <= Fraction(1, 10**12) * Fraction(std)
        assert abs(got[name].std() - std) <= 1e-12 * std


def _plan(table: pa.Table, **options) -> Plan:
    feats = {}
    for name in FEATURES:
        m = column_moments(table.column(name))
        feats[name] = FeatureStats.from_moments(m, str(table.schema.field(name).type), 0)
    return Plan.build(FittedStats(features=feats), features=FEATURES, **options)


def _array_bits(a: pa.Array) -> tuple:
    values = np.frombuffer(a.buffers()[1], dtype=a.type.to_pandas_dtype(), count=len(a),
                           offset=a.offset * a.type.bit_width // 8)
    return (str(a.type), a.null_count, a.is_valid().to_pylist(), values.tobytes())


@pytest.mark.parametrize("rows", [1, 3, 100, BLOCK_ROWS])
@pytest.mark.parametrize("mode", ["standard", "scale", "center"])
@pytest.mark.parametrize("dtype", ["preserve", "float32", "float64"])
def test_block_transform_is_transform_array_bit_for_bit(rows, mode, dtype):
    table = _table(rows, seed=rows + 11)
    # Statistics of other data, so that z is not centred on this batch.
    plan = _plan(_table(500, seed=99), mode=mode, dtype=dtype)
    seen: dict[str, np.ndarray] = {}
    got = block_transform(table, plan, lambda n, v, r: seen.__setitem__(n, v.copy()))
    taken = {"normal", "offset_1e9", "f32", "f32_small", "with_nan", "with_nulls", "f32_nulls",
             "constant", "i8", "i32", "u32", "i64_small", "signed_zeros"}
    # int64 beyond 2**52 (its values; under standard and center its mean too) and float16
    # are left to the per-column path
    assert set(got) == taken
    for col in plan.columns:
        if col.name in got:
            want = transform_array(table.column(col.name), col, plan)
            assert _array_bits(got[col.name]) == _array_bits(want), col.name
            assert np.array_equal(seen[col.name], np.nan_to_num(
                np.asarray(got[col.name].fill_null(np.nan)), nan=np.nan), equal_nan=True)


def test_block_transform_is_exact():
    table = _table(200, seed=5)
    plan = _plan(_table(300, seed=6), dtype="float64")
    got = block_transform(table, plan)
    for col in plan.columns:
        if col.name not in ("offset_1e9", "u32", "f32"):
            continue
        mean, std = col.mean[-1], col.std[-1]
        for x, z in zip(table.column(col.name).to_pylist(), got[col.name].to_pylist(),
                        strict=True):
            # z against (x - mean) / std exactly, with the fitted mean as the
            # double-double the artifact holds
            want = (Fraction(x) - Fraction(mean) - Fraction(col.residual[-1])) / Fraction(std)
            assert abs(Fraction(z) - want) <= Fraction(1, 10**12) * max(1, abs(want))


def test_infinities_and_overflows_are_left_to_the_per_column_path():
    table = _table(50, seed=1)
    plan = _plan(table)
    with_inf = table.set_column(0, "normal", pa.array([math.inf] + [0.0] * 49))
    assert block_transform(with_inf, plan) == {}
    huge = pa.table({"a": pa.array([1e300, -1e300, 0.0]), "b": pa.array([1.0, 2.0, 3.0])})
    stats = FittedStats(features={n: FeatureStats.from_moments(Moments.from_array(
        np.array([0.0, 1e-100])), "float64", 0) for n in ("a", "b")})
    assert block_transform(huge, Plan.build(stats)) == {}  # 1e300 / 5e-101 overflows


def test_plans_the_block_path_does_not_know_take_the_per_column_path():
    table = _table(20, seed=2)
    plan = _plan(table)
    assert plain(plan)
    assert not plain(dataclasses.replace(plan, inverse=True))
    assert not plain(dataclasses.replace(plan, mode="minmax"))
    assert not plain(dataclasses.replace(plan, finish=pipeline.FinishOptions(clip=3.0)))
    # An option added to Plan later: honoured only at its default.
    extended = dataclasses.make_dataclass("Extended", [("clip", float | None, None)],
                                          bases=(Plan,), frozen=True, eq=False)
    base = {f.name: getattr(plan, f.name) for f in dataclasses.fields(plan)}
    assert plain(extended(**base))
    clipped = extended(**base, clip=3.0)
    assert not plain(clipped)
    assert block_transform(table, clipped) == {}
