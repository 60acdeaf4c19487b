"""Shared by zscore's DAGs: Airflow 2/3 imports, settings, running zscore, storage checks.

Copy this file into the DAGs folder beside ``zscore_dags.py`` (and ``zscore_k8s.py`` for
the Kubernetes variants); it defines no DAG. It imports nothing of zscore: the DAGs run
the ``zscore`` command, and read or write only small JSON files (a training set's
manifest) with fsspec, which comes with Airflow (``s3fs`` / ``gcsfs`` beside Airflow for
object store paths).

Airflow 2.10 and 3.x differ in where things live (``airflow.sdk`` in 3, ``airflow.*`` in
2; Datasets became Assets); the names below are the same in both.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shlex
import subprocess
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

try:  # Airflow 3
    from airflow.sdk import (
        DAG,
        Asset,
        CronDataIntervalTimetable,
        Param,
        PokeReturnValue,
        TriggerRule,
        Variable,
        task,
    )
    from airflow.sdk.exceptions import (
        AirflowException,
        AirflowFailException,
        AirflowSkipException,
    )

    AIRFLOW_MAJOR = 3
except ImportError:  # Airflow 2.x (2.10 tested): the same things under their old names
    from airflow import DAG  # type: ignore[no-redef]
    from airflow.datasets import Dataset as Asset  # type: ignore[no-redef]
    from airflow.decorators import task  # type: ignore[no-redef]
    from airflow.exceptions import (  # type: ignore[no-redef]
        AirflowException,
        AirflowFailException,
        AirflowSkipException,
    )
    from airflow.models import Variable  # type: ignore[no-redef]
    from airflow.models.param import Param  # type: ignore[no-redef]
    from airflow.sensors.base import PokeReturnValue  # type: ignore[no-redef]
    from airflow.timetables.interval import (  # type: ignore[no-redef]
        CronDataIntervalTimetable,
    )
    from airflow.utils.trigger_rule import TriggerRule  # type: ignore[no-redef]

    AIRFLOW_MAJOR = 2

__all__ = ["DAG", "Asset", "CronDataIntervalTimetable", "Param", "PokeReturnValue",
           "TriggerRule", "task", "AirflowException", "AirflowFailException",
           "AirflowSkipException", "AIRFLOW_MAJOR"]

log = logging.getLogger("zscore_dag")

# zscore's documented exit codes (`zscore --help`).
EXIT_OK = 0
EXIT_INFRA = 1
NOT_RETRIED = {2: "bad input or data", 3: "drift past the limits"}

# Read when the DAG file is parsed: operator arguments cannot come from a run's params.
RETRIES = int(os.environ.get("ZSCORE_AIRFLOW_RETRIES", "2"))
RETRY_DELAY = float(os.environ.get("ZSCORE_AIRFLOW_RETRY_DELAY", "300"))
WAIT_TIMEOUT = float(os.environ.get("ZSCORE_AIRFLOW_WAIT_TIMEOUT", str(12 * 3600)))
POKE_INTERVAL = float(os.environ.get("ZSCORE_AIRFLOW_POKE_INTERVAL", "300"))

_JSON_TYPE = {str: "string", int: "integer", float: "number", bool: "boolean"}

# name -> (type, default, help), shared by both patterns. A string default may use the
# resolved root as {root}.
COMMON: dict[str, tuple[type, Any, str]] = {
    "executable": (str, "zscore", "the zscore executable: a name on PATH or a path"),
    "scheduler": (str, "", "Dask scheduler address (tcp://host:8786); empty: the worker's "
                  "$DASK_SCHEDULER_ADDRESS, else an embedded local cluster per command"),
    "workers": (int, 0, "workers of the embedded local cluster; 0: one per core"),
    "root": (str, "/data/zscore", "parent of the paths below when they are not set"),
    "partition_key": (str, "day", "the hive key whose values are dates (YYYY-MM-DD)"),
    "input_marker": (str, "_SUCCESS", "wait for this file in the day's input partition; "
                     "empty: for the partition directory itself"),
    "exclude": (str, "id,label", "comma-separated columns that are not features"),
}


# ------------------------------------------------------------------ settings
def _coerce(spec: Mapping[str, tuple[type, Any, str]], name: str, value: Any,
            source: str) -> Any:
    """``value`` as the setting's type: Variables are strings, params arrive as JSON."""
    kind = spec[name][0]
    try:
        if kind is bool and not isinstance(value, bool):
            value = {"true": True, "1": True, "yes": True, "on": True, "false": False,
                     "0": False, "no": False, "off": False}[str(value).strip().lower()]
        if kind is int and not isinstance(value, int):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            value = int(value)
        return kind(value)
    except (KeyError, TypeError, ValueError):
        raise AirflowFailException(f"{source} is {value!r}, expected {_JSON_TYPE[kind]}: "
                                   f"{spec[name][2]}") from None


def _variable(name: str) -> str | None:
    if AIRFLOW_MAJOR >= 3:
        return Variable.get(f"zscore_{name}", default=None)
    return Variable.get(f"zscore_{name}", default_var=None)


def resolve_settings(spec: Mapping[str, tuple[type, Any, str]], params: Mapping[str, Any],
                     variable: Callable[[str], str | None] = _variable) -> dict[str, Any]:
    """Every setting of ``spec``: the run's param, else the Variable, else the default.

    Parameters
    ----------
    spec
        ``name -> (type, default, help)``; defaults may refer to ``{root}``.
    params
        The run's params; ``None`` (every param's default) means "not given".
    variable
        Looks up the Airflow Variable of a setting: ``name -> str | None``.

    Raises
    ------
    AirflowFailException
        A value of the wrong type; the message names the param or Variable.
    """
    out: dict[str, Any] = {}
    for name, (_, default, _) in spec.items():
        if params.get(name) is not None:
            out[name] = _coerce(spec, name, params[name], f"param {name}")
        elif (raw := variable(name)) is not None:
            out[name] = _coerce(spec, name, raw, f"Variable zscore_{name}")
        elif isinstance(default, str):
            out[name] = default.format(root=out.get("root", "").rstrip("/"))
        else:
            out[name] = default
    return out


def params_of(spec: Mapping[str, tuple[type, Any, str]]) -> dict[str, Any]:
    """The DAG's params: every setting, unset by default (then Variable, then default)."""
    return {name: Param(None, type=["null", _JSON_TYPE[kind]],
                        description=f"{text}. Unset: Variable zscore_{name}, else {default!r}")
            for name, (kind, default, text) in spec.items()}


def default_args() -> dict[str, Any]:
    from datetime import timedelta

    return {"retries": RETRIES, "retry_delay": timedelta(seconds=RETRY_DELAY)}


def join(base: str, *parts: str) -> str:
    """``base/part/...``; not os.path.join, as base may be a URL (s3://bucket/train)."""
    return "/".join([base.rstrip("/"), *parts])


def cluster_args(s: Mapping[str, Any]) -> list[str]:
    if s["scheduler"]:
        return ["--scheduler", s["scheduler"]]
    return ["--workers", str(s["workers"])] if s["workers"] else []


def exclude_args(s: Mapping[str, Any]) -> list[str]:
    return ["--exclude", s["exclude"]] if s["exclude"] else []


def logical_day(context: Mapping[str, Any], dag_id: str, what: str) -> str:
    ds = context.get("ds")
    if not ds:
        raise AirflowFailException(f"{dag_id} needs a logical date: it names {what}")
    return str(ds)


# ------------------------------------------------------------------ running zscore
def outcome(rc: int, what: str, detail: str) -> None:
    """Turn zscore's exit code into the task's outcome (the one table of the docs).

    Raises
    ------
    AirflowFailException
        2 (bad input or data) and 3 (drift): failed, the retries are not used.
    AirflowException
        1 (infrastructure) and anything else (130, 143, a signal: killed): retried.
    """
    if rc == EXIT_OK:
        return
    if rc in NOT_RETRIED:
        raise AirflowFailException(f"{what} exited {rc} ({NOT_RETRIED[rc]}; not retried): "
                                   f"{detail}")
    kind = "infrastructure" if rc == EXIT_INFRA else "killed"
    raise AirflowException(f"{what} exited {rc} ({kind}; retried while retries last): "
                           f"{detail}")


def run_zscore(argv: Sequence[str], *, grace: float = 60.0) -> None:
    """Run one zscore command with its output streamed into the task log; map its exit code.

    Parameters
    ----------
    argv
        The command line, executable first.
    grace
        Seconds zscore gets to clean up after SIGTERM when the task itself is interrupted
        (an ``execution_timeout``, say) before it is killed.

    Raises
    ------
    AirflowFailException
        Exit 2 or 3 (see :func:`outcome`), or the executable cannot be started.
    AirflowException
        Any other failure: retried.
    """
    cmd = list(argv)
    log.info("running: %s", shlex.join(cmd))
    try:
        # In the task's process group: when Airflow stops a task it signals the group, and
        # zscore's SIGTERM handler removes its staging directory. Unbuffered, so that its
        # stdout (the summary) and stderr (progress, errors) keep their order in the log.
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, text=True, errors="replace",
                                bufsize=1, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    except OSError as exc:
        raise AirflowFailException(
            f"cannot run {cmd[0]!r}: {exc.strerror or exc}; set the Variable "
            "zscore_executable (or the param executable) to the zscore executable") from None
    detail = ""
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            log.info("%s", line)
            # The error line, else the last line (diff's "N of M features drifted").
            if line and not detail.startswith("zscore: error:"):
                detail = line
        rc = proc.wait()
    finally:
        if proc.poll() is None:  # interrupted while zscore runs: let it clean up, then kill
            proc.terminate()
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    outcome(rc, " ".join(cmd[:2]), detail)


# ------------------------------------------------------------------ storage
def _fs(path: str) -> tuple[Any, str]:
    import fsspec

    return fsspec.core.url_to_fs(path)  # type: ignore[no-any-return]


def exists(path: str) -> bool:
    fs, inner = _fs(path)
    return bool(fs.exists(inner))


def read(path: str) -> bytes:
    fs, inner = _fs(path)
    with fs.open(inner, "rb") as f:
        return f.read()  # type: ignore[no-any-return]


def sha256(path: str) -> str:
    return hashlib.sha256(read(path)).hexdigest()


def remove(path: str) -> None:
    fs, inner = _fs(path)
    if fs.exists(inner):
        fs.rm(inner)


def publish_json(path: str, doc: Mapping[str, Any]) -> None:
    """Write ``doc`` at ``path`` so that a reader sees all of it or nothing.

    Local disks: a temporary file beside it, then a rename. Object stores: one PUT,
    which is atomic there.
    """
    data = (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()
    from fsspec.implementations.local import LocalFileSystem

    fs, inner = _fs(path)
    if isinstance(fs, LocalFileSystem):
        tmp = f"{inner}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, inner)
    else:
        fs.pipe_file(inner, data)


def wait_target(base: str, s: Mapping[str, Any], day: str) -> str:
    """What the input sensor waits for: the day's partition, or its marker file."""
    partition = join(base, f"{s['partition_key']}={day}")
    return join(partition, s["input_marker"]) if s["input_marker"] else partition


def poke(target: str) -> Any:
    """One look of the input sensor: done when ``target`` exists."""
    if exists(target):
        log.info("input ready: %s", target)
        return PokeReturnValue(is_done=True, xcom_value=target)
    log.info("waiting for %s (late data: the sensor looks again every %s s, for up to %s s "
             "in all)", target, int(POKE_INTERVAL), int(WAIT_TIMEOUT))
    return PokeReturnValue(is_done=False)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
