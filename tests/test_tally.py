"""The report's counting, checked value by value against independent references.

Counts against numpy (``np.histogram``, ``np.count_nonzero``), mean and σ
against exact rationals (fractions), per key against a plain per-key loop;
never against the tally's own helpers.  No cluster: the tally runs in the
task's thread and sees numpy arrays only.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from pipeline.summary import STEP, KeyMoments, Reference, Summary
from pipeline.tally import CHUNK, Tally

pytestmark = pytest.mark.fast

IDENTITY = Reference(np.zeros(1), np.ones(1))


def _exact(values: np.ndarray) -> tuple[float, float]:
    """Mean and σ: the mean from the exact sum (fractions), σ from exactly summed squares of
    the deviations from it (each deviation and square rounded once: 1e-16 relative)."""
    xs = values.tolist()
    mean = sum(map(Fraction, xs), Fraction(0)) / len(xs)
    m = float(mean)
    return m, math.sqrt(math.fsum((x - m) ** 2 for x in xs) / len(xs))


def _fine_counts(z: np.ndarray) -> list[int]:
    """Counts of z in [-16, 16) at STEP, by numpy (edges exact: multiples of a power of two).

    numpy's last bin is closed: 16 itself is left out first (it is in the high tail)."""
    return np.histogram(z[z < 16], bins=np.arange(-16.0, 16.0 + STEP / 2, STEP))[0].tolist()


def _summary_fine(s: Summary) -> list[int]:
    full = np.zeros(int(32 / STEP), dtype=np.int64)
    full[s.first:s.first + s.fine.size] = s.fine
    return full.tolist()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_counts_and_moments_of_written_values(dtype):
    rng = np.random.default_rng(7)
    values = (rng.standard_t(4, 3 * CHUNK + 123) * 1.3 + 0.2).astype(dtype)
    values[::11] = np.nan
    values[:6] = [4.0, -4.0, np.nextafter(4.0, 5.0), 16.0, -16.0, 0.0]  # on the edges
    values[CHUNK:CHUNK + 500] = 2.5  # a constant stretch
    tally = Tally(IDENTITY)
    tally.add(values)
    s = tally.result()
    z = values[~np.isnan(values)].astype(np.float64)
    assert s.moments.count == z.size and s.moments.missing == values.size - z.size
    assert (s.moments.minimum, s.moments.maximum) == (z.min(), z.max())
    mean, std = _exact(z)
    assert abs(s.moments.mean - mean) <= 1e-12 * std
    assert abs(s.moments.std() - std) <= 1e-12 * std
    assert _summary_fine(s) == _fine_counts(z)
    assert s.beyond == np.count_nonzero(np.abs(z) > 4)
    assert sum(s.low.values()) == np.count_nonzero(z < -16)
    assert sum(s.high.values()) == np.count_nonzero(z >= 16)


def test_a_constant_feature_has_exact_moments():
    tally = Tally(IDENTITY)
    tally.add(np.full(2 * CHUNK + 7, 0.1))
    m = tally.result().moments
    assert (m.count, m.mean, m.std(), m.minimum, m.maximum) == (2 * CHUNK + 7, 0.1, 0.0, 0.1, 0.1)


def _per_key_reference(z: np.ndarray, r: np.ndarray) -> dict[int, tuple[int, int, float, float]]:
    """Per key: rows with a value, missing rows, exact mean and σ (a plain loop)."""
    out = {}
    for k in sorted(set(r.tolist())):
        mine = z[r == k]
        finite = mine[~np.isnan(mine)]
        mean, std = _exact(finite) if finite.size else (math.nan, math.nan)
        out[k] = (finite.size, mine.size - finite.size, mean, std)
    return out


def test_per_key_moments_in_chunks_and_merged_match_a_plain_loop():
    rng = np.random.default_rng(11)
    rows = CHUNK + 5000
    r = rng.integers(-1, 300, rows)  # -1: unseen keys made missing
    r[:50] = 299  # a key seen in the first chunk only ...
    r[r == 298] = 297
    r[-3:] = 298  # ... and one in the last only
    z = rng.normal(0.3, 1.7, rows) + r * 0.01
    z[rng.random(rows) < 0.05] = np.nan
    z[r == 5] = np.nan  # a key with no value at all
    ref = Reference(np.zeros(301), np.ones(301))
    whole, halves = Tally(ref, grouped=True), [Tally(ref, grouped=True) for _ in range(2)]
    whole.add(z, r)
    halves[0].add(z[:rows // 3], r[:rows // 3])
    for start in range(rows // 3, rows, 1000):  # small batches, buffered
        halves[1].add(z[start:start + 1000], r[start:start + 1000])
    want = _per_key_reference(z, r)
    merged = halves[0].result().merge(halves[1].result())
    for s in (whole.result(), merged, Summary.from_dict(merged.to_dict())):
        assert isinstance(s.keys, KeyMoments) and list(s.keys) == sorted(want)
        for k, (count, missing, mean, std) in want.items():
            m = s.keys[k]
            assert (m.count, m.missing) == (count, missing), k
            if count:
                assert abs(m.mean - mean) <= 1e-12 * max(std, 1.0), k
                assert abs(m.std() - std) <= 1e-12 * max(std, 1.0), k
                finite = z[(r == k) & ~np.isnan(z)]
                assert (m.minimum, m.maximum) == (finite.min(), finite.max())
        assert 300 not in s.keys and -2 not in s.keys
    assert whole.result() == Tally(ref, grouped=True).result().merge(whole.result())
