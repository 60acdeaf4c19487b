"""zscore: exact global z-score normalization of partitioned Parquet datasets on Dask.

>>> import pipeline
>>> stats = pipeline.fit("data/train")                         # doctest: +SKIP
>>> stats.save("stats.json")                                   # doctest: +SKIP
>>> z = pipeline.transform(dd.read_parquet("data/val"), stats) # doctest: +SKIP
>>> pipeline.run("data/train", "data/train_z")                 # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING

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

if TYPE_CHECKING:
    from .artifact import FittedStats
    from .compose import diff, merge
    from .estimator import StandardScaler
    from .feature_stats import FeatureStats
    from .finish import FinishOptions, LossyInverseWarning
    from .fitting import fit
    from .frames import apply, inverse_transform, transform
    from .jobs import RunResult, run, transform_dataset
    from .lakehouse import TableOptions
    from .stats import Moments

    __version__: str

# Everything else loads on first use: `import pipeline` stays cheap, so that the command line
# installs its signal handlers before numpy, pyarrow and Dask are imported (a Ctrl-C during
# start-up then gets zscore's one-line message, not a traceback from an import), and the
# command line never needs pandas (the frames module).  No public name is also the name of a
# submodule: importing a submodule binds it as an attribute of the package, which would hide
# the function (tests/test_structure.py keeps it so).
_LAZY = {"FeatureStats": "feature_stats", "FittedStats": "artifact", "diff": "compose",
         "merge": "compose", "fit": "fitting", "RunResult": "jobs", "run": "jobs",
         "transform_dataset": "jobs", "Moments": "stats", "apply": "frames",
         "inverse_transform": "frames", "transform": "frames", "TableOptions": "lakehouse",
         "StandardScaler": "estimator",
         "FinishOptions": "finish", "LossyInverseWarning": "finish"}


def __getattr__(name: str) -> object:
    if name == "__version__":
        globals()[name] = _version()
        return globals()[name]
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def _version() -> str:
    # importlib.metadata costs tens of milliseconds (zipfile, email): only when asked.
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dask-zscore")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0+unknown"


__all__ = [
    "ArtifactError", "ClusterError", "DataError", "FeatureStats", "FinishOptions", "FittedStats",
    "InputError", "LossyInverseWarning",
    "LockedError", "Moments", "OutputError", "RunResult", "StandardScaler", "StorageError",
    "TableOptions", "ZscoreError",
    "__version__", "apply", "diff", "fit", "inverse_transform", "merge", "run", "transform",
    "transform_dataset",
]
