"""zscore: exact global z-score normalization of partitioned Parquet datasets on Dask.

>>> import pipeline
>>> stats = pipeline.fit("data/train")                         # doctest: +SKIP
>>> stats.save("stats.json")                                   # doctest: +SKIP
>>> z = pipeline.transform(dd.read_parquet("data/val"), stats) # doctest: +SKIP
>>> pipeline.run("data/train", "data/train_z")                 # doctest: +SKIP
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("zscore")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

from .artifact import FeatureStats, FittedStats
from .compose import diff, merge
from .errors import (
    ArtifactError,
    ClusterError,
    DataError,
    InputError,
    LockedError,
    OutputError,
    StorageError,
    ZscoreError,
)
from .fit import fit
from .run import RunResult, run, transform_dataset
from .stats import Moments

_FRAMES = ("apply", "inverse_transform", "transform")
# Importing .run loaded the submodule pipeline.transform, which Python binds as this
# package's attribute 'transform': it would shadow the lazy front end below
# (pipeline.transform(ddf, stats) was "'module' object is not callable").
globals().pop("transform", None)


def __getattr__(name: str) -> object:
    # The pandas/Dask front ends load on first use: the command line never needs pandas.
    if name in _FRAMES:
        from . import frames

        return getattr(frames, name)
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")


__all__ = [
    "ArtifactError", "ClusterError", "DataError", "FeatureStats", "FittedStats", "InputError",
    "LockedError", "Moments", "OutputError", "RunResult", "StorageError", "ZscoreError",
    "__version__", "apply", "diff", "fit", "inverse_transform", "merge", "run", "transform",
    "transform_dataset",
]
