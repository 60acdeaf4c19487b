"""Lineage: log a published output's artifact, manifest and report to an MLflow run.

``zscore run/transform ... --mlflow`` calls :func:`prepare` before any work (so that a
missing client, tracking store or run fails the command before it computes anything,
exit 2) and :meth:`Lineage.log` after the output is published. What lands in the run:

- artifacts under ``zscore/<output name>/`` (characters MLflow refuses in a name, such
  as ``=``, become ``_``): ``_stats.json`` (the fitted statistics the
  output was normalized with), ``_SUCCESS`` (the output's manifest) and every file of
  ``_report/`` (when the run drew one);
- tags ``zscore.<output name>.*``: the output's URL (without credentials), rows, files,
  the statistics' sha256 and the zscore version. Tags, not params: MLflow refuses to
  change a param, and one training run may log several outputs (train, validation).

Which run: ``run_id`` (``--mlflow-run-id``, else MLflow's own ``MLFLOW_RUN_ID``) names an
existing run, which is logged into and left as it is (the caller owns it); without one, a
new run is created in the experiment ``MLFLOW_EXPERIMENT_NAME`` (default ``zscore``) and
ended. The store is MLflow's ``MLFLOW_TRACKING_URI``; without it and without a run id,
``--mlflow`` is refused rather than writing to an ``./mlruns`` nobody looks at.

The client is ``mlflow-skinny`` (the ``mlflow`` extra): the tracking client without the
server and the UI.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import InputError, ZscoreError
from .storage import REPORT_DIR

EXPERIMENT = "zscore"
ARTIFACT_ROOT = "zscore"
LOGGED = ("_stats.json", "_SUCCESS")


@dataclass(frozen=True)
class Lineage:
    """Where to log: an MLflow client and the run (``None``: create one per output)."""

    client: Any
    run_id: str | None
    experiment: str

    def log(self, output: str, storage_options: Mapping[str, Any] | None = None) -> str:
        """Log the published ``output`` (its statistics, manifest, report); return the run id.

        Parameters
        ----------
        output
            The OUTPUT of a finished ``zscore run`` or ``zscore transform`` (path or URL).
        storage_options
            fsspec options for ``output``.

        Raises
        ------
        ZscoreError
            The store refused (exit 1): the output stays published; rerun with
            ``--overwrite`` to publish and log it again.
        """
        import fsspec

        fs, root = fsspec.core.url_to_fs(output.rstrip("/"), **dict(storage_options or {}))
        name = _name(output)
        with tempfile.TemporaryDirectory(prefix="zscore-mlflow-") as tmp:
            local = os.path.join(tmp, name)
            os.makedirs(local)
            for rel in LOGGED:
                fs.get_file(f"{root}/{rel}", os.path.join(local, rel))
            if fs.isdir(f"{root}/{REPORT_DIR}"):
                fs.get(f"{root}/{REPORT_DIR}/", os.path.join(local, REPORT_DIR) + "/",
                       recursive=True)
            with open(os.path.join(local, "_SUCCESS"), encoding="utf-8") as f:
                manifest = json.load(f)
            try:
                run_id = self.run_id or self._new_run(name)
                self.client.log_artifacts(run_id, local, artifact_path=f"{ARTIFACT_ROOT}/{name}")
                for key, value in _tags(output, manifest).items():
                    self.client.set_tag(run_id, f"zscore.{name}.{key}", value)
                if self.run_id is None:
                    self.client.set_terminated(run_id)
            except Exception as exc:  # noqa: BLE001 - MLflow and its stores raise many types
                raise ZscoreError(f"{_redact(output)} was published, but logging it to MLflow "
                                  f"failed: {type(exc).__name__}: {_first_line(exc)}; rerun "
                                  "with --overwrite to publish and log it again") from None
        return run_id

    def _new_run(self, name: str) -> str:
        found = self.client.get_experiment_by_name(self.experiment)
        experiment = (found.experiment_id if found is not None
                      else self.client.create_experiment(self.experiment))
        run = self.client.create_run(experiment, run_name=f"zscore {name}")
        return str(run.info.run_id)


def prepare(run_id: str | None = None, environ: Mapping[str, str] | None = None) -> Lineage:
    """Check that MLflow logging can work, before the command does anything else.

    Parameters
    ----------
    run_id
        An existing MLflow run to log into; default ``MLFLOW_RUN_ID``, else a new run.
    environ
        Where to read ``MLFLOW_TRACKING_URI``, ``MLFLOW_RUN_ID`` and
        ``MLFLOW_EXPERIMENT_NAME`` (default ``os.environ``; MLflow's client reads the
        tracking URI from ``os.environ`` itself).

    Raises
    ------
    InputError
        mlflow is not installed, no tracking store or run is named, or the run does not
        exist (exit 2: nothing was computed).
    """
    env = os.environ if environ is None else environ
    run_id = run_id or env.get("MLFLOW_RUN_ID") or None
    if not env.get("MLFLOW_TRACKING_URI") and run_id is None:
        raise InputError("--mlflow needs a tracking store: set MLFLOW_TRACKING_URI (for "
                         "example http://mlflow.internal:5000 or sqlite:///mlflow.db), or "
                         "name a run with --mlflow-run-id")
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise InputError("--mlflow needs the MLflow client: pip install 'zscore[mlflow]' "
                         "(mlflow-skinny)") from None
    client = MlflowClient()
    if run_id is not None:
        try:
            client.get_run(run_id)
        except Exception as exc:  # noqa: BLE001 - MlflowException, or the store's own error
            raise InputError(f"MLflow run {run_id!r} cannot be read from "
                             f"{_redact(client.tracking_uri)}: {_first_line(exc)}; give the "
                             "id of an existing run") from None
    return Lineage(client, run_id, env.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT)


def _name(output: str) -> str:
    """The output's last path component as MLflow accepts it in a key: ``day_2026-01-03``."""
    name = output.rstrip("/").rsplit("/", 1)[-1] or "output"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _tags(output: str, manifest: Mapping[str, Any]) -> dict[str, str]:
    return {"output": _redact(output), "rows": str(manifest.get("rows", "")),
            "files": str(len(manifest.get("files", []))),
            "statistics_sha256": str(manifest.get("statistics_sha256", "")),
            "tool_version": str(manifest.get("tool_version", "")),
            "command": str(manifest.get("command", ""))}


def _redact(url: str) -> str:
    from .redaction import redact

    return redact(url)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]
