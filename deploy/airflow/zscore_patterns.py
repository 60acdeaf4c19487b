"""# zscore's two production patterns, as Airflow DAGs (Airflow 2.10 and 3.x)

This module builds them; `zscore_dags.py` and `zscore_k8s.py` instantiate them (a module
imported by two DAG files must not create DAGs itself: Airflow 2 would see them twice).

**`zscore_training_set`**: build a training set. One fit over the window
`[end - window_days, end)` and that window normalized with that one artifact
(`zscore run`, one pass), then `training_set.json` written last at the set's root:

| task | does |
|---|---|
| `plan` | resolves the settings; refuses a set whose manifest exists unless `replace` |
| `wait_for_input` | sensor: waits for the window's last day (its `input_marker`) |
| `build` | `zscore run INPUT SET/data --stats SET/stats.json --filter ...` |
| `publish` | writes `SET/training_set.json` (artifact path, sha256, days, rows, version) |

**`zscore_daily`**: validation / serving data. Each new day `ds` normalized with the
artifact of the model in production (the setting `training_set`: a `training_set.json`),
after a drift gate that compares that day's own statistics with it:

| task | does |
|---|---|
| `plan` | reads the training set's manifest, checks its artifact's sha256 |
| `wait_for_input` | sensor: waits for `INPUT/day=ds` (its `input_marker`) |
| `fit_day` | `zscore fit INPUT/day=ds --stats STATS/ds.json` (the day's own statistics) |
| `drift_gate` | `zscore diff ARTIFACT STATS/ds.json` (exit 3: drift, not retried) |
| `transform` | `zscore transform INPUT/day=ds OUTPUT/day=ds --stats ARTIFACT --overwrite` |
| `publish` | checks the output's manifest names the artifact; emits the daily Asset |

zscore's exit code decides retries: 0 success; 2 (bad input) and 3 (drift) fail without
retry; 1 (infrastructure) and kills are retried. Late input is waited for by the sensor
(reschedule mode: no worker slot held between looks), every `ZSCORE_AIRFLOW_POKE_INTERVAL`
seconds (300) for up to `ZSCORE_AIRFLOW_WAIT_TIMEOUT` (12 h); then the task fails.
See docs/airflow.md.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from zscore_airflow import (
    COMMON,
    DAG,
    POKE_INTERVAL,
    WAIT_TIMEOUT,
    AirflowException,
    AirflowFailException,
    Asset,
    CronDataIntervalTimetable,
    cluster_args,
    default_args,
    exclude_args,
    exists,
    join,
    log,
    logical_day,
    now_iso,
    params_of,
    poke,
    publish_json,
    read,
    remove,
    resolve_settings,
    run_zscore,
    sha256,
    task,
    wait_target,
)

MANIFEST = "training_set.json"
MANIFEST_FORMAT = "zscore-training-set/1"

TRAINING_SETTINGS: dict[str, tuple[type, Any, str]] = {
    **COMMON,
    "input": (str, "{root}/train", "hive-partitioned training data (path or URL)"),
    "training_sets": (str, "{root}/training_sets", "parent of the training sets"),
    "name": (str, "", "the set's directory under training_sets; empty: the logical date"),
    "window_days": (int, 30, "fit and normalize this many days before the logical date"),
    "replace": (bool, False, "rebuild a set whose training_set.json exists"),
}
DAILY_SETTINGS: dict[str, tuple[type, Any, str]] = {
    **COMMON,
    "training_set": (str, "", "training_set.json of the model in production (required)"),
    "input": (str, "{root}/validation", "hive-partitioned new days (path or URL)"),
    "output": (str, "{root}/validation_z", "normalized days, one directory per day"),
    "stats_dir": (str, "{root}/daily_stats", "each day's own statistics, ds.json"),
    "max_shift": (float, 0.5, "drift: a mean moved by more than this many sigmas"),
    "max_ratio": (float, 1.5, "drift: a sigma grew or shrank by more than this factor"),
}

# A step runs one of the plan's zscore command lines: (task_id, plan key) -> a callable
# that wires the task after the plan. The local steps run zscore in the Airflow worker;
# zscore_k8s.py passes steps that run it in a pod or on a DaskJob's cluster.
Step = Callable[[str, str], Callable[[Any], Any]]


def local_step(task_id: str, key: str) -> Callable[[Any], Any]:
    @task(task_id=task_id)
    def step(plan: dict[str, Any]) -> None:
        run_zscore(plan[key])

    return step  # type: ignore[no-any-return]


# ------------------------------------------------------------------ plans
def training_plan(ds: str, s: dict[str, Any]) -> dict[str, Any]:
    """What a training-set run does for logical date ``ds`` (the window ends before it).

    Examples
    --------
    >>> p = training_plan("2026-01-31", resolve_settings(TRAINING_SETTINGS, {},
    ...                                                  lambda name: None))
    >>> p["build"][:4], p["build"][-5:]
    (['zscore', 'run', '/data/zscore/train', '/data/zscore/training_sets/2026-01-31/data'], \
['--filter', 'day >= 2026-01-01', '--filter', 'day < 2026-01-31', '--overwrite'])
    >>> p["wait_for"]
    '/data/zscore/train/day=2026-01-30/_SUCCESS'
    """
    if s["window_days"] < 1:
        raise AirflowFailException(f"window_days is {s['window_days']}, expected at least 1")
    end = date.fromisoformat(ds)
    start = end - timedelta(days=s["window_days"])
    root = join(s["training_sets"], s["name"] or ds)
    key, stats = s["partition_key"], join(root, "stats.json")
    filters = [f"{key} >= {start}", f"{key} < {ds}"]
    return {
        "root": root, "manifest": join(root, MANIFEST), "stats": stats,
        "data": join(root, "data"), "input": s["input"], "key": key, "filters": filters,
        "days": [str(start + timedelta(days=i)) for i in range(s["window_days"])],
        "wait_for": wait_target(s["input"], s, str(end - timedelta(days=1))),
        "build": [s["executable"], "run", s["input"], join(root, "data"), "--stats", stats,
                  *exclude_args(s), *cluster_args(s),
                  *[a for f in filters for a in ("--filter", f)], "--overwrite"],
    }


def daily_plan(ds: str, s: dict[str, Any], production: dict[str, Any]) -> dict[str, Any]:
    """What a daily run does for ``ds`` with the training set ``production`` (its manifest).

    Examples
    --------
    >>> s = resolve_settings(DAILY_SETTINGS, {}, lambda name: None)
    >>> p = daily_plan("2026-02-01", s, {"artifact": {"path": "/sets/a/stats.json"}})
    >>> p["diff"][1:4]
    ['diff', '/sets/a/stats.json', '/data/zscore/daily_stats/2026-02-01.json']
    >>> p["transform"][2:6]
    ['/data/zscore/validation/day=2026-02-01', '/data/zscore/validation_z/day=2026-02-01', \
'--stats', '/sets/a/stats.json']
    """
    zscore, key, artifact = s["executable"], s["partition_key"], production["artifact"]["path"]
    day_in, day_out = join(s["input"], f"{key}={ds}"), join(s["output"], f"{key}={ds}")
    own = join(s["stats_dir"], f"{ds}.json")
    return {
        "artifact": artifact, "output": day_out, "own_stats": own,
        "wait_for": wait_target(s["input"], s, ds),
        "fit_day": [zscore, "fit", day_in, "--stats", own, *exclude_args(s), *cluster_args(s)],
        "diff": [zscore, "diff", artifact, own, "--max-shift", str(s["max_shift"]),
                 "--max-ratio", str(s["max_ratio"])],
        "transform": [zscore, "transform", day_in, day_out, "--stats", artifact, "--overwrite",
                      *cluster_args(s)],
    }


def load_training_set(path: str) -> dict[str, Any]:
    """The manifest at ``path``, its artifact checked against the recorded sha256."""
    import json

    if not path:
        raise AirflowFailException("no training set: set the Variable zscore_training_set "
                                   "(or the param training_set) to the training_set.json of "
                                   "the model in production")
    try:
        manifest = json.loads(read(path))
        artifact = manifest["artifact"]
        digest = sha256(artifact["path"])
    except FileNotFoundError as exc:
        raise AirflowFailException(f"training set {path}: {exc.filename or exc} does not "
                                   "exist; build it with zscore_training_set") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise AirflowFailException(f"{path} is not a zscore training set manifest "
                                   f"({type(exc).__name__}: {exc})") from None
    if digest != artifact["sha256"]:
        raise AirflowFailException(f"{artifact['path']} has sha256 {digest}, but {path} "
                                   f"recorded {artifact['sha256']}: the artifact changed "
                                   "after the training set was built; rebuild the set")
    return manifest  # type: ignore[no-any-return]


def training_manifest(plan: dict[str, Any], run_id: str) -> dict[str, Any]:
    """``training_set.json`` from what ``build`` published (its ``_SUCCESS`` manifest)."""
    import json

    success = json.loads(read(join(plan["data"], "_SUCCESS")))
    digest = sha256(plan["stats"])
    if digest != sha256(join(plan["data"], "_stats.json")):
        raise AirflowException(f"{plan['stats']} differs from {plan['data']}/_stats.json: "
                               "another run wrote one of them; rerun the build")
    days: dict[str, list[int]] = {}
    for f in success["files"]:
        part = next((p for p in f["path"].split("/") if p.startswith(plan["key"] + "=")), "")
        entry = days.setdefault(part.partition("=")[2], [0, 0])
        entry[0], entry[1] = entry[0] + f["rows"], entry[1] + 1
    return {
        "format": MANIFEST_FORMAT, "created": now_iso(), "airflow_run_id": run_id,
        "zscore_version": success["tool_version"],
        "artifact": {"path": plan["stats"], "sha256": digest},
        "data": {"path": plan["data"], "manifest_sha256": sha256(join(plan["data"],
                                                                       "_SUCCESS"))},
        "input": {"path": plan["input"], "filters": plan["filters"]},
        "days": [{"day": d, "rows": r, "files": n} for d, (r, n) in sorted(days.items())],
        "days_without_data": [d for d in plan["days"] if d not in days],
        "rows": success["rows"],
    }


# ------------------------------------------------------------------ DAGs
def _wait(planned: Any) -> Any:
    @task.sensor(task_id="wait_for_input", poke_interval=POKE_INTERVAL,
                 timeout=WAIT_TIMEOUT, mode="reschedule")
    def wait_for_input(plan: dict[str, Any]) -> Any:
        return poke(plan["wait_for"])

    return wait_for_input(planned)


def training_set_dag(dag_id: str, step: Step = local_step, **dag_kwargs: Any) -> DAG:
    """The training-set pattern; ``step`` runs ``zscore run`` (see ``Step``)."""
    asset = Asset(f"zscore://{dag_id}/training_set")
    with DAG(dag_id=dag_id, description="zscore: one fit over a window, the window "
             "normalized with it, a training_set.json", schedule=None,
             start_date=datetime(2026, 1, 1, tzinfo=UTC), catchup=False,
             default_args=default_args(), params=params_of(TRAINING_SETTINGS),
             tags=["zscore"], doc_md=__doc__, **dag_kwargs) as dag:

        @task(task_id="plan")
        def plan_run(**context: Any) -> dict[str, Any]:
            ds = logical_day(context, dag_id, "the day after the window")
            s = resolve_settings(TRAINING_SETTINGS, context["params"])
            plan = training_plan(ds, s)
            if exists(plan["manifest"]):
                if not s["replace"]:
                    raise AirflowFailException(
                        f"{plan['manifest']} exists: that training set is published; choose "
                        "another name, or set replace to rebuild it")
                remove(plan["manifest"])  # first: never a manifest beside other data
            log.info("build: %s", " ".join(plan["build"]))
            return plan

        @task(task_id="publish", outlets=[asset])
        def publish(plan: dict[str, Any], **context: Any) -> str:
            doc = training_manifest(plan, context["run_id"])
            publish_json(plan["manifest"], doc)
            context["outlet_events"][asset].extra = {
                "manifest": plan["manifest"], "artifact_sha256": doc["artifact"]["sha256"]}
            log.info("published %s: %d rows in %d days", plan["manifest"], doc["rows"],
                     len(doc["days"]))
            return str(plan["manifest"])

        planned = plan_run()
        _wait(planned) >> step("build", "build")(planned) >> publish(planned)
    return dag


def daily_dag(dag_id: str, step: Step = local_step, **dag_kwargs: Any) -> DAG:
    """The daily validation/serving pattern; ``step`` runs each zscore command."""
    asset = Asset(f"zscore://{dag_id}/output")
    with DAG(dag_id=dag_id, description="zscore: each new day normalized with the "
             "production artifact, behind a drift gate",
             # Data-interval semantics: the run for ds starts at the end of day ds.
             schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
             start_date=datetime(2026, 1, 1, tzinfo=UTC), catchup=False,
             max_active_runs=1, default_args=default_args(),
             params=params_of(DAILY_SETTINGS), tags=["zscore"], doc_md=__doc__,
             **dag_kwargs) as dag:

        @task(task_id="plan")
        def plan_run(**context: Any) -> dict[str, Any]:
            ds = logical_day(context, dag_id, "the day to normalize")
            s = resolve_settings(DAILY_SETTINGS, context["params"])
            production = load_training_set(s["training_set"])
            plan = daily_plan(ds, s, production)
            plan["training_set"] = s["training_set"]
            plan["artifact_sha256"] = production["artifact"]["sha256"]
            for key in ("fit_day", "diff", "transform"):
                log.info("%s: %s", key, " ".join(plan[key]))
            return plan

        @task(task_id="publish", outlets=[asset])
        def publish(plan: dict[str, Any], **context: Any) -> str:
            import json

            done = json.loads(read(join(plan["output"], "_SUCCESS")))
            if done.get("statistics_sha256") != plan["artifact_sha256"]:
                raise AirflowException(f"{plan['output']} was not normalized with "
                                       f"{plan['artifact']} (another run replaced it?)")
            context["outlet_events"][asset].extra = {
                "path": plan["output"], "rows": done["rows"],
                "training_set": plan["training_set"]}
            return str(plan["output"])

        planned = plan_run()
        (_wait(planned) >> step("fit_day", "fit_day")(planned)
         >> step("drift_gate", "diff")(planned) >> step("transform", "transform")(planned)
         >> publish(planned))
    return dag

