"""# zscore_daily: fit on a trailing window, gate on drift, normalize the day

An Airflow 3 DAG that drives the `zscore` command line. The worker needs Airflow and the
`zscore` executable (the project's image or virtual environment), and never imports
zscore's Python package. The run for logical date `ds` (the day it normalizes; the
timetable starts it once that day is over) has five tasks:

| task | runs |
|---|---|
| `plan` | nothing: resolves the settings, returns the command lines (its XCom) |
| `fit` | `zscore fit TRAIN --filter "day >= ds-N" --filter "day < ds" --stats S/ds.json` |
| `drift_gate` | `zscore diff S/ds-1.json S/ds.json`; skipped without `S/ds-1.json` |
| `transform_train` | `zscore transform TRAIN/day=ds TRAIN_Z/day=ds --stats S/ds.json --overwrite` |
| `transform_validation` | the same for the validation split (skipped if there is none) |

S is `stats_dir`. A rerun for the same `ds` overwrites `S/ds.json` and replaces each
`day=ds` output atomically (zscore publishes a complete staging directory by rename).

zscore's exit code decides whether Airflow retries a task:

| exit | meaning | task |
|---|---|---|
| 0 | done | success |
| 2 | bad input or data | failed, not retried (`AirflowFailException`) |
| 3 | drift past the limits (`zscore diff`) | failed, not retried (`AirflowFailException`) |
| 1 | infrastructure: I/O, lost scheduler, ... | failed, retried while `retries` last |
| other | killed (130, 143, or a signal) | failed, retried while `retries` last |

Settings: each is the run's param (trigger form, `--conf`) if given, else the Airflow
Variable `zscore_<name>` (an `AIRFLOW_VAR_ZSCORE_<NAME>` environment variable provides it
too), else the default in `SETTINGS`. Retries are read when the file is parsed:
`ZSCORE_AIRFLOW_RETRIES` (default 2) and `ZSCORE_AIRFLOW_RETRY_DELAY` seconds (default 300).
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from airflow.sdk import DAG, CronDataIntervalTimetable, Param, TriggerRule, Variable, task
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

log = logging.getLogger("zscore_dag")

DAG_ID = "zscore_daily"

# zscore's documented exit codes (`zscore --help`).
EXIT_OK = 0
EXIT_INFRA = 1
NOT_RETRIED = {2: "bad input or data", 3: "drift past the limits"}

# name -> (type, default, help). A string default may use the resolved root as {root}.
SETTINGS: dict[str, tuple[type, Any, str]] = {
    "executable": (str, "zscore", "the zscore executable: a name on PATH or a path"),
    "scheduler": (str, "", "Dask scheduler address (tcp://host:8786); empty: the worker's "
                  "$DASK_SCHEDULER_ADDRESS, else an embedded local cluster per command"),
    "workers": (int, 0, "workers of the embedded local cluster; 0: one per core"),
    "root": (str, "/data/zscore", "parent of the five paths below when they are not set"),
    "train_input": (str, "{root}/train", "hive-partitioned training data (path or URL)"),
    "validation_input": (str, "{root}/validation",
                         "hive-partitioned validation split; empty: no validation task"),
    "train_output": (str, "{root}/train_z", "normalized training data, one dir per day"),
    "validation_output": (str, "{root}/validation_z", "normalized validation split"),
    "stats_dir": (str, "{root}/stats", "fitted artifacts, one YYYY-MM-DD.json per day"),
    "partition_key": (str, "day", "the hive key whose values are dates (YYYY-MM-DD)"),
    "window_days": (int, 30, "fit on this many days before the logical date"),
    "exclude": (str, "id,label", "comma-separated columns that are not features"),
    "drift_gate": (bool, True, "compare with the previous day's fit and fail on drift"),
    "max_shift": (float, 0.5, "drift: a mean moved by more than this many old sigmas"),
    "max_ratio": (float, 1.5, "drift: a sigma grew or shrank by more than this factor"),
}
_JSON_TYPE = {str: "string", int: "integer", float: "number", bool: "boolean"}


# ------------------------------------------------------------------ settings and plan
def _coerce(name: str, value: Any, source: str) -> Any:
    """``value`` as the setting's type: Variables are strings, params arrive as JSON."""
    kind = SETTINGS[name][0]
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
                                   f"{SETTINGS[name][2]}") from None


def _variable(name: str) -> str | None:
    return Variable.get(f"zscore_{name}", default=None)


def resolve_settings(params: Mapping[str, Any],
                     variable: Callable[[str], str | None] = _variable) -> dict[str, Any]:
    """Every setting of ``SETTINGS``: the run's param, else the Variable, else the default.

    Parameters
    ----------
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
    for name, (_, default, _) in SETTINGS.items():
        if params.get(name) is not None:
            out[name] = _coerce(name, params[name], f"param {name}")
        elif (raw := variable(name)) is not None:
            out[name] = _coerce(name, raw, f"Variable zscore_{name}")
        elif isinstance(default, str):
            out[name] = default.format(root=out.get("root", "").rstrip("/"))
        else:
            out[name] = default
    if out["window_days"] < 1:
        raise AirflowFailException(f"window_days is {out['window_days']}, expected at least 1")
    return out


def _join(base: str, *parts: str) -> str:
    # Not os.path.join: base may be a URL (s3://bucket/train).
    return "/".join([base.rstrip("/"), *parts])


def plan_commands(ds: str, s: Mapping[str, Any]) -> dict[str, Any]:
    """The zscore command lines of the run for logical date ``ds`` (``YYYY-MM-DD``).

    Parameters
    ----------
    ds
        The day to normalize; the fit window is the ``window_days`` days before it.
    s
        Resolved settings (:func:`resolve_settings`).

    Returns
    -------
    dict
        ``fit``, ``diff``, ``transform_train``, ``transform_validation``: argv lists
        (``diff`` and ``transform_validation`` are ``None`` when switched off), and
        ``previous_stats``, the artifact that ``diff`` compares with.

    Examples
    --------
    >>> p = plan_commands("2026-01-31", resolve_settings({}, lambda name: None))
    >>> p["fit"][-4:]
    ['--filter', 'day >= 2026-01-01', '--filter', 'day < 2026-01-31']
    >>> p["transform_train"][2:4]
    ['/data/zscore/train/day=2026-01-31', '/data/zscore/train_z/day=2026-01-31']
    >>> p["previous_stats"]
    '/data/zscore/stats/2026-01-30.json'
    """
    day = date.fromisoformat(ds)
    key, zscore = s["partition_key"], s["executable"]
    stats = _join(s["stats_dir"], f"{ds}.json")
    previous = _join(s["stats_dir"], f"{day - timedelta(days=1)}.json")
    cluster = (["--scheduler", s["scheduler"]] if s["scheduler"]
               else ["--workers", str(s["workers"])] if s["workers"] else [])

    def transform(src: str, dest: str) -> list[str]:
        return [zscore, "transform", _join(src, f"{key}={ds}"), _join(dest, f"{key}={ds}"),
                "--stats", stats, "--overwrite", *cluster]

    return {
        "fit": [zscore, "fit", s["train_input"], "--stats", stats,
                *(["--exclude", s["exclude"]] if s["exclude"] else []), *cluster,
                "--filter", f"{key} >= {day - timedelta(days=s['window_days'])}",
                "--filter", f"{key} < {ds}"],
        "diff": ([zscore, "diff", previous, stats, "--max-shift", str(s["max_shift"]),
                  "--max-ratio", str(s["max_ratio"])] if s["drift_gate"] else None),
        "previous_stats": previous,
        "transform_train": transform(s["train_input"], s["train_output"]),
        "transform_validation": (transform(s["validation_input"], s["validation_output"])
                                 if s["validation_input"] else None),
    }


# ------------------------------------------------------------------ running zscore
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
        Exit 2 (bad input or data), exit 3 (drift), or the executable cannot be started:
        Airflow fails the task without using its retries.
    AirflowException
        Any other failure (1: infrastructure; 130, 143 or a signal: killed): retried.
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
    if rc == EXIT_OK:
        return
    what = f"{' '.join(cmd[:2])} exited {rc}"
    if rc in NOT_RETRIED:
        raise AirflowFailException(f"{what} ({NOT_RETRIED[rc]}; not retried): {detail}")
    kind = "infrastructure" if rc == EXIT_INFRA else "killed"
    raise AirflowException(f"{what} ({kind}; retried while retries last): {detail}")


def _exists(path: str) -> bool:
    # fsspec comes with Airflow's task SDK; an s3:// stats_dir also needs s3fs on the worker.
    import fsspec

    fs, inner = fsspec.core.url_to_fs(path)
    return bool(fs.exists(inner))


# ------------------------------------------------------------------ the DAG
with DAG(
    dag_id=DAG_ID,
    description="zscore: fit on the trailing window, gate on drift, normalize the day",
    # Data-interval semantics: the run for ds starts at the end of day ds.
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    # One run at a time, in date order: a backfill's gate then finds the previous day's fit.
    max_active_runs=1,
    default_args={
        "retries": int(os.environ.get("ZSCORE_AIRFLOW_RETRIES", "2")),
        "retry_delay": timedelta(seconds=float(os.environ.get("ZSCORE_AIRFLOW_RETRY_DELAY",
                                                              "300"))),
    },
    params={name: Param(None, type=["null", _JSON_TYPE[kind]],
                        description=f"{text}. Unset: Variable zscore_{name}, else {default!r}")
            for name, (kind, default, text) in SETTINGS.items()},
    tags=["zscore"],
    doc_md=__doc__,
) as dag:

    @task(task_id="plan")
    def plan_run(**context: Any) -> dict[str, Any]:
        """Resolve the settings; the returned plan is what the other tasks run."""
        ds = context.get("ds")
        if not ds:
            raise AirflowFailException(f"{DAG_ID} needs a logical date: it names the day to "
                                       "normalize and ends the fit window")
        plan = plan_commands(ds, resolve_settings(context["params"]))
        for step in ("fit", "diff", "transform_train", "transform_validation"):
            log.info("%s: %s", step, shlex.join(plan[step]) if plan[step] else "off")
        return plan

    @task
    def fit(plan: dict[str, Any]) -> None:
        run_zscore(plan["fit"])

    @task
    def drift_gate(plan: dict[str, Any]) -> None:
        if plan["diff"] is None:
            raise AirflowSkipException("the drift gate is off (drift_gate=false)")
        if not _exists(plan["previous_stats"]):
            raise AirflowSkipException(f"no previous fit {plan['previous_stats']} to compare "
                                       "with")
        run_zscore(plan["diff"])

    # none_failed: a skipped gate (the first day, or switched off) lets them run.
    @task(trigger_rule=TriggerRule.NONE_FAILED)
    def transform_train(plan: dict[str, Any]) -> None:
        run_zscore(plan["transform_train"])

    @task(trigger_rule=TriggerRule.NONE_FAILED)
    def transform_validation(plan: dict[str, Any]) -> None:
        if plan["transform_validation"] is None:
            raise AirflowSkipException("no validation split (validation_input is empty)")
        run_zscore(plan["transform_validation"])

    planned = plan_run()
    fit(planned) >> drift_gate(planned) >> [transform_train(planned),
                                            transform_validation(planned)]
