"""Merging per-piece moments into the artifact: the last step of every statistics pass.

:func:`finalize` folds the moments of each piece (a file, a partition) in the
order given, refuses what no statistics can come from (infinite values under
``inf="error"``, a feature without values, a std outside float64's range, an
unusable total weight) and builds the :class:`~pipeline.artifact.FittedStats`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .artifact import FittedStats, now_iso, tool_version
from .errors import DataError, option
from .feature_stats import FeatureStats
from .moments import FileMoments
from .schema import dtype_name
from .stats import Moments, std_in_range
from .weights import check_weighted, no_weight_error


def finalize(features: Sequence[str], dtypes: Mapping[str, str],
             pieces: Sequence[tuple[str, FileMoments]], *, ddof: int, inf: str,
             source: Mapping[str, Any], warn: Any = None, weight: str | None = None
             ) -> FittedStats:
    """Merge per-piece moments in the order given and build the artifact.

    ``pieces`` pairs a label (a file's relative path) with its moments, in the
    canonical order; the label names the culprit in errors.  ``weight``: the
    weight column the moments were weighted by.

    Raises
    ------
    DataError
        A feature with infinite values (``inf="error"``) or with no value at all.
    """
    warn = warn or (lambda msg: None)
    feats: dict[str, FeatureStats] = {}
    for name in features:
        total = Moments.merge_all(fm[name] for _, fm in pieces)
        if total.inf and inf == "error":
            where = next(label for label, fm in pieces if fm[name].inf)
            raise DataError(f"column '{name}' has {total.inf} infinite value(s), e.g. in "
                            f"{where}; fix the data, exclude the column, or pass "
                            f"{option('inf', 'null')} to treat them as missing", column=name,
                            path=where)
        if total.count == 0 and not total.missing + total.inf:
            raise DataError("the input has no rows: every file is empty; there is nothing to "
                            "fit", column=name)
        if total.count == 0 and weight:
            raise no_weight_error(name, weight, total)
        if total.count == 0:
            raise DataError(f"column '{name}' has no values (all {total.missing + total.inf} "
                            f"are missing); exclude it with {option('exclude', name)}",
                            column=name)
        check_weighted(name, total, weight, ddof)
        feats[name] = FeatureStats.from_moments(total, dtype_name(dtypes[name]), ddof)
        check_spread(name, feats[name])
        if total.constant:
            warn(f"column '{name}' is constant ({feats[name].min!r}): its std is 0 and its "
                 "standardized values will be 0.0")
    return FittedStats(features=feats, ddof=ddof, inf=inf, created=now_iso(),
                       tool_version=tool_version(), input=dict(source), weight=weight)


def check_spread(name: str, f: FeatureStats, key: str = "") -> None:
    """Refuse a non-constant feature whose std is outside float64's range for squares.

    See :data:`pipeline.stats.MIN_STD`: below it squares of deviations underflow, so
    no digit of the std can be trusted; above :data:`~pipeline.stats.MAX_STD` sums of
    squares overflow.  ``key`` names a ``--group-by`` key in the message.
    """
    if f.constant or std_in_range(f.std):
        return
    where = f" within {key}" if key else ""
    if f.std < 1:
        what, fix = "too small", "multiply it by a power of ten"
    else:
        what, fix = "too large", "divide it by a power of ten"
    raise DataError(f"column '{name}'{where} has std {f.std:.3g}, {what} for float64 squares "
                    "(the supported range is 1.5e-154 to 6.7e153); rescale the column "
                    f"({fix}) or exclude it with {option('exclude', name)}", column=name)
