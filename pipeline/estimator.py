"""``pipeline.StandardScaler``: scikit-learn's StandardScaler with zscore's exact numbers.

Swap ``from sklearn.preprocessing import StandardScaler`` (or dask-ml's) for
``from pipeline import StandardScaler``: same parameters, attributes and methods,
plus ``ddof`` and ``inf``.  The moments are :class:`pipeline.stats.Moments` (the
shifted, mergeable moments of :func:`pipeline.fit`, so ``partial_fit`` is exact),
the statistics are :class:`pipeline.FeatureStats` and every value goes through
:func:`pipeline.kernel.scale_array`: one set of numbers for the estimator, the
command line and the artifact.

Where it differs from scikit-learn's:

* a feature is constant when its min equals its max, never because its variance
  is small next to its mean (scikit-learn's heuristic sets ``scale_ = 1`` for mean
  1e9 / std 1e-3 from about 10**5 rows);
* constant features follow scikit-learn (``scale_ = 1``, output ``x - mean``,
  exactly 0.0 on the training values); the command line and :func:`pipeline.apply`
  give 0.0 for every value of a constant feature, even a new one;
* int64 columns (of a pandas DataFrame or an int64 array) are centred in exact
  integer arithmetic, not rounded to float64 first;
* infinite values are an error (``inf="error"``, naming the column) or missing
  (``inf="null"``), as in zscore; NaN and pandas' NA are missing, as in scikit-learn;
* sparse input is refused;
* ``sample_weight`` (in-memory input) gives the exact weighted mean and std of
  :mod:`pipeline.weights` (frequency weights; ``ddof=1`` divides by
  ``sum(w) - 1``); negative, NaN and infinite weights are refused, and rows of
  weight 0 count for nothing, not even for the min/max constant test.  As
  scikit-learn, ``n_samples_seen_`` is then the total weight (a float, or an
  array when features differ through missing values).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

try:
    from sklearn import get_config
    from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError as exc:  # pragma: no cover - only without the extra
    raise ImportError("pipeline.StandardScaler needs scikit-learn: "
                      "pip install 'dask-zscore[sklearn]'") from exc

from .artifact import FittedStats, now_iso, tool_version
from .choices import DDOFS, INF_POLICIES
from .errors import option
from .estimator_data import (
    KEPT_DTYPES,
    LAZY_KINDS,
    Column,
    ScalerDataError,
    array_columns,
    check_weights,
    container,
    few,
    fit_dask,
    frame_columns,
    kind_of,
    lazy_transform,
    merge_moments,
    refuse_inf,
    sample_weights,
    samples_seen,
    variance,
)
from .estimator_scale import mode_of, scale_columns, warn_lossy
from .feature_stats import FeatureStats
from .finish import indicator
from .moments import column_moments
from .stats import Moments, std_in_range

OUTPUTS = ("default", "pandas", "polars")


# Output containers are chosen by set_output below, not by scikit-learn's wrapper, which
# would turn a lazy Dask result into a pandas DataFrame.
class StandardScaler(OneToOneFeatureMixin, TransformerMixin, BaseEstimator,  # type: ignore[call-arg]
                     auto_wrap_output_keys=None):
    """Standardize features by removing the mean and scaling to unit variance, exactly.

    Parameters
    ----------
    copy : bool, default=True
        False: write the result into a float ndarray input of the output dtype
        when it is writeable (else a copy is made, as scikit-learn).
    with_mean : bool, default=True
        Subtract the mean.
    with_std : bool, default=True
        Divide by the standard deviation.
    ddof : {0, 1}, default=0
        0: population variance (scikit-learn); 1: sample variance (Spark, pandas).
    inf : {"error", "null"}, default="error"
        Infinite values are an error naming the column, or missing values.
    minmax : bool, default=False
        Scale to ``(x - min) / (max - min)`` with the fitted min and max instead
        (constant features give 0.0); no ``inverse_transform``.
    clip : float, optional
        Clamp transformed values to ``[-clip, clip]`` (``clip > 0``).
    fill_missing : float, optional
        Missing values (NaN, NA, infinities under ``inf="null"``) become this after
        scaling, in output units.
    missing_indicator : bool, default=False
        Follow each feature's column with its indicator (1.0 where the value was
        missing; needs ``fill_missing``); ``get_feature_names_out`` names them
        ``<feature>__missing``.  See :mod:`pipeline.finish` for the order of these
        steps; ``inverse_transform`` warns that clipped and filled values do not
        come back (with the indicator columns given, filled values become NaN again).

    Attributes
    ----------
    mean_ : ndarray of shape (n_features,) or None
        Correctly rounded means; None when ``with_mean=False`` and ``with_std=False``.
    var_ : ndarray of shape (n_features,) or None
        ``m2 / (count - ddof)``, 0.0 for a constant feature; None when ``with_std=False``
        (as scikit-learn does, whatever its documentation says).
    scale_ : ndarray of shape (n_features,) or None
        ``sqrt(var_)``, 1.0 for a constant feature; None when ``with_std=False``.
    n_samples_seen_ : int or ndarray of shape (n_features,)
        Values used per feature: an int when no value was missing, else an array.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        When fitted on a DataFrame (pandas, Dask), a Parquet dataset or statistics.

    Notes
    -----
    Input: numpy arrays and pandas DataFrames (in memory); Dask DataFrames and
    Arrays and a Parquet directory or URL, fitted by :func:`pipeline.fit` on the
    current Dask client (an embedded local cluster when there is none).  The
    transform of a Dask input is lazy and returns the same kind of Dask
    collection (``set_output`` applies to in-memory results).  A Parquet fit uses
    every numeric column; to choose, use ``StandardScaler.from_stats(
    pipeline.fit(path, exclude=...))``.

    Examples
    --------
    >>> from pipeline import StandardScaler                       # doctest: +SKIP
    >>> z = StandardScaler().fit_transform(X)                       # doctest: +SKIP
    >>> StandardScaler().fit("data/train").to_stats().save("s.json")  # doctest: +SKIP
    """

    n_features_in_: int

    def __init__(self, *, copy: bool = True, with_mean: bool = True, with_std: bool = True,
                 ddof: int = 0, inf: str = "error", minmax: bool = False,
                 clip: float | None = None, fill_missing: float | None = None,
                 missing_indicator: bool = False):
        self.copy = copy
        self.with_mean = with_mean
        self.with_std = with_std
        self.ddof = ddof
        self.inf = inf
        self.minmax = minmax
        self.clip = clip
        self.fill_missing = fill_missing
        self.missing_indicator = missing_indicator

    # ------------------------------------------------------------------ fit
    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> StandardScaler:
        """Compute the mean and std of every feature of ``X`` (see the class Notes)."""
        for name in ("mean_", "var_", "scale_", "n_samples_seen_", "n_features_in_",
                     "feature_names_in_", "_features", "_weight_column"):
            self.__dict__.pop(name, None)
        return self.partial_fit(X, y, sample_weight)

    def partial_fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> StandardScaler:
        """Add ``X`` to the statistics: exact, as if every batch had been fitted at once.

        The moments of the batch are merged with Chan, Golub & LeVeque's update (see
        :meth:`pipeline.stats.Moments.merge`), as zscore merges files.
        ``sample_weight``: one non-negative weight per row of an in-memory ``X`` (a
        scalar: every row); a batch without weights after weighted ones counts each
        row once, as scikit-learn.
        """
        if self.ddof not in DDOFS:
            raise ValueError(f"ddof must be 0 or 1, not {self.ddof!r}")
        if self.inf not in INF_POLICIES:
            raise ValueError(f"inf must be 'error' or 'null', not {self.inf!r}")
        first = not hasattr(self, "_features")
        kind = kind_of(X)
        if kind in LAZY_KINDS:
            if sample_weight is not None:
                raise ScalerDataError("sample_weight applies to in-memory X; for a Dask or "
                                      "Parquet input use StandardScaler.from_stats(pipeline."
                                      "fit(X, weight='column'))")
            names, stats = fit_dask(X, ddof=self.ddof, inf=self.inf)
            self._check_lazy_names(names, kind, reset=first)
            new = [stats.features[n].moments for n in names]
            dtypes = [stats.features[n].dtype for n in names]
        else:
            cols = self._columns(X, kind, reset=first)
            w = sample_weights(sample_weight, len(cols[0].values) if cols else 0)
            new = [self._moments(c, w) for c in cols]
            dtypes = [c.dtype_name for c in cols]
        if not first:
            new = [merge_moments(old, m) for old, m in zip(self._features, new, strict=True)]
            dtypes = [old.dtype for old in self._features]
        self._set_features([self._feature(n, m, d) for n, m, d in
                            zip(self._names(), new, dtypes, strict=True)])
        return self

    def _columns(self, X: Any, kind: str, reset: bool) -> list[Column]:
        if kind == "pandas":
            validate_data(self, X, reset=reset, skip_check_array=True)
            if len(X) == 0:
                raise ScalerDataError(f"the DataFrame has 0 rows (shape {X.shape}); a minimum "
                                      "of 1 sample is required")
            return frame_columns(X, self._names())
        X = validate_data(self, X, reset=reset, dtype=list(KEPT_DTYPES),
                          ensure_all_finite=False, copy=False)
        return array_columns(X, self._names())

    def _check_lazy_names(self, names: list[str], kind: str, reset: bool) -> None:
        fitted = list(getattr(self, "feature_names_in_", [])) or None
        if not reset and (len(names) != self.n_features_in_ or
                          (fitted is not None and fitted != names)):
            raise ScalerDataError(f"X has features {few(names)}, but the scaler was fitted "
                                  f"on {few(self._names())}")
        self.n_features_in_ = len(names)
        if kind == "dask-array":
            self.__dict__.pop("feature_names_in_", None)
        else:
            self.feature_names_in_ = np.asarray(names, dtype=object)

    def _names(self) -> list[str]:
        names = getattr(self, "feature_names_in_", None)
        if names is not None:
            return [str(n) for n in names]
        return [f"x{i}" for i in range(self.n_features_in_)]

    def _moments(self, c: Column, weights: np.ndarray | None = None) -> Moments:
        """The moments of one column, through the one path files and frames take.

        :func:`pipeline.moments.column_moments`: missing values (the mask, NaN) left
        out, infinite ones counted apart (refused unless ``inf="null"``), so a pandas
        frame gives the same moments here as in ``pipeline.fit``, bit for bit.
        """
        m = column_moments(pa.array(np.ascontiguousarray(c.values), mask=c.missing), weights)
        if m.inf:
            refuse_inf(c.name, m.inf, self.inf)
        return m

    def _feature(self, name: str, m: Moments | None, dtype: str) -> FeatureStats:
        if m is None:  # pragma: no cover - pipeline.fit always returns moments
            raise ScalerDataError(f"column '{name}' has no moments", column=name)
        if m.inf and self.inf == "error":
            refuse_inf(name, m.inf, self.inf)
        if m.count == 0:
            raise ScalerDataError(f"column '{name}' has no values (all {m.missing + m.inf} are "
                                  "missing, or weigh 0); drop the column", column=name)
        check_weights(name, m, self.ddof)
        f = FeatureStats.from_moments(m, dtype, self.ddof)
        if not f.constant and not std_in_range(f.std):
            raise ScalerDataError(f"column '{name}' has std {f.std:.3g}, outside float64's "
                                  "range for squares (1.5e-154 to 6.7e153); rescale it by a "
                                  "power of ten", column=name)
        return f

    def _set_features(self, features: Sequence[FeatureStats]) -> None:
        """Keep the statistics and publish scikit-learn's attributes from them."""
        self._features = list(features)
        self._fit_ddof = self.ddof
        constant = np.array([f.constant for f in features], dtype=bool)
        self.n_samples_seen_: int | float | np.ndarray = samples_seen(features)
        fitted = self.with_mean or self.with_std
        self.mean_ = np.array([f.mean for f in features]) if fitted else None
        self.var_ = np.array([variance(f, self.ddof) for f in features]) if self.with_std \
            else None
        std = np.array([f.std for f in features], dtype=np.float64)
        self.scale_ = np.where(constant, 1.0, std) if self.with_std else None

    # ------------------------------------------------------------ transform
    def transform(self, X: Any, copy: bool | None = None) -> Any:
        """Standardize ``X``: ``(x - mean_) / scale_``, NaN and NA kept missing.

        Returns an ndarray (a pandas or polars DataFrame after ``set_output``), or
        a lazy Dask DataFrame/Array for a Dask input or a Parquet path (its features).
        """
        check_is_fitted(self)
        return self._apply(X, inverse=False, copy=self.copy if copy is None else copy)

    def inverse_transform(self, X: Any, copy: bool | None = None) -> Any:
        """Undo :meth:`transform`: ``z * scale_ + mean_``."""
        check_is_fitted(self)
        mode_of(self, inverse=True)
        warn_lossy(self)
        kind = kind_of(X)
        if self.missing_indicator and kind in ("array", "pandas") and \
                np.shape(X)[1:] == (2 * self.n_features_in_,):
            # transform's output, indicators included: the marked values become NaN again
            names = self._names()
            values = X[names] if kind == "pandas" else np.asarray(X)[:, 0::2]
            marks = X[[indicator(n) for n in names]] if kind == "pandas" else \
                np.asarray(X)[:, 1::2]
            out = self._apply(values, inverse=True, copy=True)
            out[np.asarray(marks, dtype=np.float64) != 0] = np.nan
            return out
        return self._apply(X, inverse=True, copy=self.copy if copy is None else copy)

    def _apply(self, X: Any, *, inverse: bool, copy: bool) -> Any:
        kind = kind_of(X)
        if kind in LAZY_KINDS:
            return lazy_transform(self, X, kind, inverse)
        cols = self._columns(X, kind, reset=False)
        into = X if not copy and isinstance(X, np.ndarray) and X.flags.writeable else None
        out = self._scale(cols, inverse, into)
        return out if inverse else self._wrap(out, X)

    def _scale(self, cols: list[Column], inverse: bool, into: np.ndarray | None = None
               ) -> np.ndarray:
        """Every column through the kernel, then clip and fill (:mod:`pipeline.estimator_scale`)."""
        return scale_columns(self, cols, inverse, into)

    def _wrap(self, out: np.ndarray, X: Any) -> Any:
        """``set_output``: the result as a pandas or polars DataFrame when asked."""
        config = getattr(self, "_sklearn_output_config", {}).get("transform") or \
            get_config()["transform_output"]
        return container(out, X, config, list(self.get_feature_names_out()))

    def _frame_part(self, df: Any, inverse: bool) -> Any:
        """One pandas partition of a Dask DataFrame, transformed (a DataFrame again)."""
        import pandas as pd

        names = self._names() if inverse else list(self.get_feature_names_out())
        return pd.DataFrame(self._scale(frame_columns(df, self._names()), inverse),
                            index=df.index, columns=names, copy=False)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """The output's column names: the features, each followed by its indicator if asked."""
        names = super().get_feature_names_out(input_features)
        if not self.missing_indicator:
            return names
        return np.asarray([m for n in names for m in (n, indicator(str(n)))], dtype=object)

    # ----------------------------------------------------------- scikit-learn
    def set_output(self, *, transform: str | None = None) -> StandardScaler:
        """Output container of :meth:`transform` and ``fit_transform``.

        Parameters
        ----------
        transform : {"default", "pandas", "polars"} or None
            None leaves the configuration unchanged; "default" is an ndarray.
        """
        if transform is None:
            return self
        if transform not in OUTPUTS:
            raise ValueError(f"transform must be one of {', '.join(OUTPUTS)} or None, not "
                             f"{transform!r}")
        self._sklearn_output_config = {**getattr(self, "_sklearn_output_config", {}),
                                       "transform": transform}
        return self

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        # NaN is missing: ignored by fit, kept by transform (as scikit-learn's scaler).
        tags.input_tags.allow_nan = True
        # Sparse input is refused in every mode (the kernel is dense); the error says so.
        tags.input_tags.sparse = False
        # float32 in, float32 out: computed in float64 and rounded once, as pipeline.apply.
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    # ------------------------------------------------------------ artifacts
    @classmethod
    def from_stats(cls, stats: FittedStats, *, copy: bool = True, with_mean: bool = True,
                   with_std: bool = True) -> StandardScaler:
        """A fitted scaler from zscore statistics (``pipeline.fit``, ``FittedStats.load``).

        Raises
        ------
        ScalerDataError
            Per-key statistics (``group_by``): a scaler has one mean and std per feature.
        """
        if stats.groups is not None:
            raise ScalerDataError(f"these statistics were fitted with {option('group_by')} (a "
                                  "mean and std per key); a StandardScaler has one per "
                                  "feature: use pipeline.apply(df, stats), or refit without "
                                  f"{option('group_by')}")
        est = cls(copy=copy, with_mean=with_mean, with_std=with_std, ddof=stats.ddof,
                  inf=stats.inf)
        est.n_features_in_ = len(stats.features)
        est.feature_names_in_ = np.asarray(list(stats.features), dtype=object)
        est._set_features(list(stats.features.values()))
        est._weight_column = stats.weight
        return est

    def to_stats(self) -> FittedStats:
        """The fitted statistics as a zscore artifact (``.save("stats.json")``, ``zscore``)."""
        check_is_fitted(self)
        rows = max(f.count + f.missing for f in self._features)
        return FittedStats(features=dict(zip(self._names(), self._features, strict=True)),
                           ddof=self._fit_ddof, inf=self.inf,
                           input={"path": "<StandardScaler>", "rows": rows},
                           created=now_iso(), tool_version=tool_version(),
                           weight=(getattr(self, "_weight_column", None) or "sample_weight")
                           if self._features[0].weight is not None else None)

