"""Moments: exactness against a rational reference, merge algebra, split invariance."""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from reference import exact_reference

from pipeline.stats import Moments

pytestmark = pytest.mark.fast  # in make test-fast, except tests marked slow

finite = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False, allow_infinity=False)
arrays = st.lists(finite, min_size=0, max_size=40).map(lambda v: np.array(v, dtype=np.float64))


def moments(values) -> Moments:
    return Moments.from_array(np.asarray(values))


def close(a: Moments, b: Moments, tol: float = 1e-9) -> bool:
    if a.count != b.count or a.minimum != b.minimum or a.maximum != b.maximum:
        return False
    if a.count == 0:
        return True
    scale = max(abs(a.mean), abs(b.mean), math.sqrt(max(a.m2, b.m2) / a.count), 1e-300)
    return (abs(a.mean - b.mean) <= tol * scale
            and abs(a.m2 - b.m2) <= tol * max(a.m2, b.m2, 1e-300) + 1e-12 * scale**2 * a.count)


@given(arrays, arrays)
def test_merge_is_commutative(a, b):
    assert close(moments(a).merge(moments(b)), moments(b).merge(moments(a)))


@given(arrays, arrays, arrays)
def test_merge_is_associative(a, b, c):
    left = moments(a).merge(moments(b)).merge(moments(c))
    right = moments(a).merge(moments(b).merge(moments(c)))
    assert close(left, right)


@given(arrays)
def test_empty_side_is_identity(a):
    m = moments(a)
    assert Moments().merge(m) == m
    assert m.merge(Moments()) == m


integers = st.lists(st.integers(min_value=-2**63, max_value=2**63 - 1), min_size=0,
                   max_size=12).map(lambda v: np.array(v, dtype=np.int64))


@given(st.lists(st.one_of(arrays, integers), max_size=12), st.booleans())
def test_merge_all_is_the_left_fold_of_merge_bit_for_bit(chunks, integer):
    # merge_all folds unweighted pieces without an object per step: the same bits as
    # merging one piece at a time (the fold every saved artifact was computed with).
    pieces = [Moments.from_array(c, missing=len(c) % 3) for c in chunks
              if (c.dtype.kind == "i") == integer]
    folded = Moments()
    for p in pieces:
        folded = folded.merge(p)
    got = Moments.merge_all(iter(pieces))
    assert [repr(v) for v in dataclasses.astuple(got)] == \
        [repr(v) for v in dataclasses.astuple(folded)]


@given(arrays, st.integers(min_value=0, max_value=40))
def test_merge_agrees_with_one_pass_and_reference(a, cut):
    merged = moments(a[:cut]).merge(moments(a[cut:]))
    assert close(merged, moments(a))
    if a.size:
        mean, std = exact_reference(a.tolist())
        assert merged.mean == pytest.approx(mean, rel=1e-12, abs=1e-12 * (std + 1e-300))
        assert merged.std() == pytest.approx(std, rel=1e-9, abs=1e-300)


def test_missing_and_inf_counts_add_up():
    a = Moments.from_array(np.array([1.0, 2.0]), missing=3, inf=1)
    b = Moments.from_array(np.array([], dtype=float), missing=2, inf=4)
    m = a.merge(b)
    assert (m.count, m.missing, m.inf) == (2, 5, 5)


def _assert_accurate(values: np.ndarray, pieces: int, ddof: int = 0):
    chunks = np.array_split(values, pieces)
    m = Moments.merge_all(Moments.from_array(c) for c in chunks)
    mean, std = exact_reference(values.tolist(), ddof)
    assert abs(m.std(ddof) - std) <= 1e-12 * std, (m.std(ddof), std)
    assert abs(m.mean - mean) <= 1e-12 * std + np.spacing(abs(mean)), (m.mean, mean)


HOSTILE = {
    "mean 1e9, std 1e-3": lambda rng, n: 1e9 + 1e-3 * rng.standard_normal(n),
    "float32 at mean 1e4": lambda rng, n: (1e4 + rng.standard_normal(n)).astype(np.float32),
    "int64 epoch seconds": lambda rng, n: 1_767_225_600 + rng.integers(0, 86_400 * 365, n),
    "int64 epoch nanoseconds": lambda rng, n: 1_767_225_600 * 10**9
    + rng.integers(0, 86_400 * 10**9, n),
    "uint64 near 2**63": lambda rng, n: np.uint64(2**63) + rng.integers(0, 10**6, n).astype(
        np.uint64),
    "int8 full range": lambda rng, n: rng.integers(-128, 128, n).astype(np.int8),
    "heavy tail": lambda rng, n: rng.standard_cauchy(n),
    "tiny values": lambda rng, n: 1e-100 * rng.standard_normal(n),
    "huge values": lambda rng, n: 1e100 * rng.standard_normal(n),
}


@pytest.mark.parametrize("case", list(HOSTILE))
@pytest.mark.parametrize("pieces", [1, 7, 250])
def test_accuracy_against_exact_reference(case, pieces):
    rng = np.random.default_rng(42)
    values = HOSTILE[case](rng, 5_000)
    _assert_accurate(values, pieces)
    _assert_accurate(values, pieces, ddof=1)


def test_one_row_pieces_and_empty_pieces():
    rng = np.random.default_rng(1)
    values = 1e9 + 1e-3 * rng.standard_normal(300)
    pieces = [Moments.from_array(values[i:i + 1]) for i in range(300)]
    pieces.insert(5, Moments.from_array(values[:0]))
    m = Moments.merge_all(pieces)
    mean, std = exact_reference(values.tolist())
    assert abs(m.std() - std) <= 1e-12 * std
    assert abs(m.mean - mean) <= 1e-12 * std + np.spacing(mean)


def test_constant_is_decided_by_min_equal_max_not_by_variance():
    m = Moments.from_array(np.full(1001, 0.1))
    assert m.constant and m.std() == 0.0
    barely = Moments.from_array(np.array([0.1, np.nextafter(0.1, 1)]))
    assert not barely.constant and barely.std() > 0


def _slow_moments(chunks, batch):
    """A task; the first batch is held back so that others finish before it."""
    import time

    if batch[0] == 0:
        time.sleep(0.5)
    return [Moments.from_array(chunks[i]) for i in batch]


def test_a_pass_folds_in_item_order_whatever_finished_first(cluster):
    """Session.map hands results back in item order, so the fold has the sequential bits."""
    from functools import partial

    from pipeline.session import Session

    rng = np.random.default_rng(3)
    chunks = [1e9 + rng.standard_normal(int(n)) for n in rng.integers(1, 300, 40)]
    sequential = Moments.merge_all(Moments.from_array(c) for c in chunks)
    # The hazard is real: folded in another order the same pieces give other bits.
    pieces = [Moments.from_array(c) for c in chunks]
    assert Moments.merge_all(reversed(pieces)) != sequential
    finished = []
    got = Session(cluster).map(partial(_slow_moments, chunks), list(range(len(chunks))),
                               label="test", on_result=lambda i, _: finished.append(i))
    assert finished != sorted(finished)  # tasks did complete out of order
    assert Moments.merge_all(got) == sequential


def test_round_trip_through_dict():
    m = Moments.from_array(np.array([1, 2, 3, 2**60], dtype=np.int64), missing=2)
    assert Moments.from_dict(m.to_dict()) == m


# --------------------------------------------- every dtype, exact against Fraction
def _fraction_moments(values) -> tuple[Fraction, float]:
    """Exact mean and the float nearest the exact population std (independent of the code)."""
    xs = [Fraction(v) for v in values.tolist()]
    mean = sum(xs, Fraction(0)) / len(xs)
    return mean, math.sqrt(sum(((x - mean) ** 2 for x in xs), Fraction(0)) / len(xs))


def _dtype_cases(dtype, rng) -> dict[str, list]:
    if np.dtype(dtype).kind == "f":
        # Near the type's max; float64's max has an ulp past the largest supported std.
        top, spread = (float(np.finfo(dtype).max), 1 / 512) if dtype != np.float64 else \
            (1e160, 1e-10)
        return {"near max": (top - top * spread * rng.random(300)).tolist(),
                "offset 1e4": (1e4 + rng.standard_normal(300)).tolist(),
                "tiny": (1e-3 * rng.standard_normal(300)).tolist()}
    info = np.iinfo(dtype)
    lo, hi = int(info.min), int(info.max)
    few = [int(v) for v in rng.integers(0, 7, 300)]
    cases = {"near max": [hi - v for v in few], "near min": [lo + v for v in few],
             "whole range": [lo, hi, *map(int, rng.integers(lo, hi, 300, dtype=dtype))],
             "both ends": [lo + v for v in few[:150]] + [hi - v for v in few[150:]]}
    if np.dtype(dtype).itemsize == 8:  # ranges past 2**53, the old inexact branch
        cases["range 2**60"] = [hi - v * 2**54 for v in few]
    return cases


EVERY_DTYPE = [np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64,
               np.uint8, np.uint16, np.uint32, np.uint64]


@pytest.mark.parametrize("dtype", EVERY_DTYPE, ids=lambda t: np.dtype(t).name)
@pytest.mark.parametrize("pieces", [1, 7])
def test_every_dtype_is_exact_against_fractions(dtype, pieces):
    rng = np.random.default_rng(17)
    for case, values in _dtype_cases(dtype, rng).items():
        x = np.array(values, dtype=dtype)
        m = Moments.merge_all(Moments.from_array(c) for c in np.array_split(x, pieces))
        mean, std = _fraction_moments(x)
        assert abs(m.std() - std) <= 1e-12 * std, (case, m.std(), std)
        assert abs(Fraction(m.mean) - mean) <= Fraction(1e-12 * std) + Fraction(
            np.spacing(abs(float(mean)))), (case, m.mean, float(mean))
        assert (m.minimum, m.maximum) == (min(x.tolist()), max(x.tolist()))
