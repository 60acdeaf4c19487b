"""The weight column of a weighted fit (``--weight``, scikit-learn's ``sample_weight``).

What a weight means, decided here once for every front end (``zscore fit/run
--weight``, ``pipeline.fit(weight=...)``, ``StandardScaler(sample_weight=...)``):

* weights are **frequency weights**: a row of weight 2 counts as the same row
  twice, so the weighted mean is ``sum(w x) / sum(w)`` and the variance
  ``sum(w (x - mean)**2) / (sum(w) - ddof)``.  A column of ones gives exactly the
  unweighted statistics for ``ddof`` 0 and 1.  ``ddof=1`` with weights that are
  not counts (probabilities summing to 1, say) is rarely meaningful; when
  ``sum(w) <= ddof`` the fit is refused rather than returning NaN or a negative
  variance;
* a weight of 0 removes the row: it is in neither the count nor the min and max
  (so a column is constant when every row of positive weight has one value); a
  feature whose rows all weigh 0 is refused, naming the weight column;
* a missing, NaN, negative or infinite weight is refused (exit 2), naming the
  file and the column (:func:`pipeline.moments.weight_values`); a missing
  feature value with a valid weight is a missing value, as without weights, and
  missing and infinite feature values are counted whatever their weight (an
  infinite value of weight 0 is still refused under ``inf="error"``: nothing
  wrong in the data passes unseen);
* the weight column is any integer or floating column (any width; used as
  float64); it is never a feature and passes through the transform unchanged;
* ``--group-by`` with ``--weight`` gives weighted statistics per key, by the
  same moments; a key whose rows all weigh 0 has no statistics for that feature
  and its rows use the global ones.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from .errors import DataError, InputError, option
from .stats import Moments


def weight_type_ok(t: pa.DataType) -> bool:
    """An integer or floating Arrow type (booleans and decimals are not weights)."""
    return pa.types.is_integer(t) or pa.types.is_floating(t)


def check_weight_column(weight: str | None, names: Sequence[str], type_of: Any,
                        features: Sequence[str], group_by: Sequence[str] = (),
                        varying: Sequence[str] = ()) -> None:
    """Refuse a weight column that is absent, not numeric, a feature or a key column.

    ``type_of(name)`` gives the column's Arrow type; ``varying`` lists columns
    whose type or presence differs between files.
    """
    if not weight:
        return
    named = f"{option('weight')} column '{weight}'"
    if weight not in names:
        raise InputError(f"{named} is not a column of the input (hive partition keys cannot "
                         "be weights); available: " + ", ".join(list(names)[:30]), column=weight)
    if weight in varying:
        raise InputError(f"{named} differs in type or presence between files (see the warning "
                         "above); write it with one numeric type in every file", column=weight)
    t = type_of(weight)
    if not weight_type_ok(t):
        raise InputError(f"{named} is {t}, not an integer or floating column; cast it to a "
                         "number", column=weight)
    if weight in features:
        raise InputError(f"{named} is also a selected feature; a weight is never normalized: "
                         f"leave it out of {option('features')} or exclude it with "
                         f"{option('exclude', weight)}", column=weight)
    if weight in group_by:
        raise InputError(f"{named} is also a {option('group_by')} column; choose another "
                         "weight or key", column=weight)


def without_weight(chosen: list[str], weight: str | None, *, explicit: bool) -> list[str]:
    """Drop the weight column from a default feature selection (it is never a feature)."""
    if not weight or explicit or weight not in chosen:
        return chosen
    kept = [c for c in chosen if c != weight]
    if not kept:
        raise InputError(f"no numeric feature column left besides the {option('weight')} "
                         f"column '{weight}'")
    return kept


def check_weighted(name: str, total: Moments, weight: str | None, ddof: int,
                   key: str = "") -> None:
    """Refuse weighted moments no standard deviation can come from.

    Every row of positive weight missing (or none at all), a total weight beyond
    float64's range, or (frequency weights) a total weight not above ``ddof``.
    ``key`` names a ``--group-by`` key in the message.
    """
    if not weight or total.count == 0:
        return
    where = f" within {key}" if key else ""
    w = total.total_weight
    if not math.isfinite(w):
        raise DataError(f"column '{name}'{where}: the total of weight column '{weight}' is "
                        "beyond float64's range (1.8e308); divide the weights by a power of "
                        "ten (only their ratios matter)", column=weight)
    if ddof and not total.constant and total.denominator(ddof) <= 0:
        raise DataError(f"column '{name}'{where} has total weight {w:.6g} in '{weight}', not "
                        f"more than ddof {ddof}: with ddof 1 weights are frequencies (a row of "
                        f"weight 2 counts twice); pass {option('ddof', 0)} or scale the "
                        "weights to counts", column=name)


def no_weight_error(name: str, weight: str, total: Moments) -> DataError:
    """The error for a feature none of whose values has a positive weight."""
    return DataError(f"column '{name}' has no value with a positive weight in '{weight}' "
                     f"({total.missing + total.inf:,} missing, every other row of weight 0); "
                     f"exclude it with {option('exclude', name)} or fix the weights",
                     column=name)
