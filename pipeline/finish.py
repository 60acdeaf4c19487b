"""The training-ready steps after scaling: clip, fill missing values, missing indicators.

Every front end (the writer's Arrow path, :func:`pipeline.apply`, the lazy Dask
transform, :class:`pipeline.StandardScaler`, the SQL and ONNX exports) applies
them in the same order, to the scaled value of each feature:

1. **scale** (``mode``, per key with ``group_by``), in float64;
2. **infinite inputs** follow the ``inf`` policy (an error, or missing);
3. **clip** (``clip=K``): a value beyond ``[-K, K]`` becomes ``-K`` or ``K`` and is
   counted; missing values stay missing;
4. **cast** to the output dtype (a clipped value becomes K rounded to it: 0.1 in
   float32 is 0.100000001);
5. **fill** (``fill_missing=V``): every missing value (null, NaN, an infinity made
   missing by ``inf="null"``, an unseen key made missing by ``unseen="null"``)
   becomes V, in output units and in the output dtype; with ``missing_indicator``,
   a boolean ``<feature>__missing`` column right after the feature says which.

A fill value outside ``[-K, K]`` is refused (it would put values outside the
range clipping promises).  Clipping and filling are not undone by an inverse
transform: a clipped value comes back as the bound's inverse and a filled one
as the fill value's, so the inverse front ends warn (:class:`LossyInverseWarning`);
with the indicator columns present, ``pipeline.inverse_transform`` and
``pipeline.apply(inverse=True)`` make the filled values missing again and drop
the indicators.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import DataError, InputError, option

INDICATOR_SUFFIX = "__missing"


class LossyInverseWarning(UserWarning):
    """An inverse transform of values that were clipped or filled: those do not come back."""


@dataclass(frozen=True)
class FinishOptions:
    """The steps after scaling (see the module docstring); all off by default.

    Parameters
    ----------
    fill_missing : float, optional
        Missing values become this, in output units (0.0 is the mean under ``standard``).
    missing_indicator : bool
        Add a boolean ``<feature>__missing`` column after each feature (needs
        ``fill_missing``).
    clip : float, optional
        Clamp scaled values to ``[-clip, clip]``; ``clip > 0``.
    """

    fill_missing: float | None = None
    missing_indicator: bool = False
    clip: float | None = None

    def __post_init__(self) -> None:
        clip, fill = self.clip, self.fill_missing
        if clip is not None:
            if not _real(clip) or not math.isfinite(clip) or clip <= 0:
                raise InputError(f"{option('clip')} must be a finite number > 0, not "
                                 f"{clip!r}; for example {option('clip', 5)}")
            object.__setattr__(self, "clip", float(clip))
        if fill is not None:
            if not _real(fill) or not math.isfinite(fill):
                raise InputError(f"{option('fill_missing')} must be a finite number, not "
                                 f"{fill!r}; for example {option('fill_missing', 0)}")
            object.__setattr__(self, "fill_missing", float(fill))
            if clip is not None and abs(float(fill)) > float(clip):
                raise InputError(f"{option('fill_missing')} {fill} is outside [-{clip}, "
                                 f"{clip}], the range {option('clip')} keeps values in; "
                                 "choose a fill value inside it, or a larger clip")
        if self.missing_indicator and fill is None:
            raise InputError(f"{option('missing_indicator')} marks filled values: pass "
                             f"{option('fill_missing', 0)} with it")

    @property
    def active(self) -> bool:
        return self.clip is not None or self.fill_missing is not None

    @property
    def lossy(self) -> bool:
        """Whether an inverse transform cannot give every input value back."""
        return self.active

    def to_dict(self) -> dict[str, Any]:
        """What the manifest and the exports record."""
        return {"fill_missing": self.fill_missing, "missing_indicator": self.missing_indicator,
                "clip": self.clip}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> FinishOptions:
        d = d or {}
        return cls(fill_missing=d.get("fill_missing"),
                   missing_indicator=bool(d.get("missing_indicator", False)),
                   clip=d.get("clip"))

    def indicators(self, names: Iterable[str]) -> list[str]:
        """The indicator columns of ``names`` (none without ``missing_indicator``)."""
        return [indicator(n) for n in names] if self.missing_indicator else []


NO_FINISH = FinishOptions()


def _real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def indicator(name: str) -> str:
    """The name of feature ``name``'s missing-value indicator column."""
    return name + INDICATOR_SUFFIX


def check_indicator_names(columns: Iterable[str], features: Iterable[str],
                          finish: FinishOptions, where: str | None = None) -> None:
    """Refuse an indicator column whose name the input already has."""
    have = set(columns)
    for name in finish.indicators(features):
        if name in have:
            place = f" {where}" if where else " the input"
            raise DataError(f"column '{name}' already exists in{place}, so "
                            f"{option('missing_indicator')} cannot add it; rename or drop "
                            "that column, or leave the indicators out", column=name, path=where)


def clip_in_place(z: np.ndarray, x: np.ndarray, k: float) -> int:
    """Clamp the float64 scaled values ``z`` to [-k, k]; return how many were clamped.

    Missing values (NaN) are left as they are, and so are the results of infinite
    inputs: those follow the ``inf`` policy (an error, or missing), never the clip.
    """
    with np.errstate(invalid="ignore"):
        over = np.abs(z) > k
    if x.dtype.kind == "f":
        over &= ~np.isinf(x)
    n = int(np.count_nonzero(over))
    if n:
        z[over] = np.copysign(k, z[over])
    return n


def fill_in_place(values: np.ndarray, fill: float) -> np.ndarray:
    """Replace every NaN of ``values`` (any float dtype) by ``fill``; return where they were."""
    missing = np.isnan(values)
    values[missing] = fill
    return missing


def clip_warning(what: str, finish: FinishOptions) -> str:
    """The one line an inverse transform says when the forward one clipped or filled."""
    done = [f"clipped to [-{finish.clip}, {finish.clip}]" if finish.clip is not None else "",
            f"filled with {finish.fill_missing}" if finish.fill_missing is not None else ""]
    return (f"{what}: the values were {' and '.join(d for d in done if d)} by the transform; "
            "those do not come back (a clipped value inverts to the bound's, a filled one to "
            "the fill value's" + (", unless its indicator column is given" if
                                  finish.missing_indicator else "") + ")")
