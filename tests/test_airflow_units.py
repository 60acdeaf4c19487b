"""deploy/airflow's pieces in each Airflow's own environment, and the Kubernetes variants.

- ``run_zscore``'s mapping of every kind of exit, the settings' precedence, the plans'
  doctests; every command line a plan builds is one that zscore's command line accepts.
- ``zscore_k8s.py`` (no Kubernetes cluster here): the pods that ``KubernetesPodOperator``
  would create for the daily steps, and the ``DaskJob`` of a training-set run, validated
  against the PodSpec and DaskJob schemas of the pinned Dask operator CRDs (the validators
  of test_deploy.py); the pod tasks' templates render to the plan's argument lists; a
  DaskJob's name is new for every try and fits the operator's ``<name>-scheduler``; the
  exit code read from a finished pod maps as zscore's exit codes do.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from airflow_env import VERSIONS, Airflow
from test_deploy import (  # noqa: F401 - fixtures used by name
    DNS_LABEL,
    K8S_FILES,
    crds,
    k8s_errors,
    load_all,
    messages,
    pod_spec,
    wheel,
)

pytestmark = pytest.mark.timeout(1200)
JOB = Path(__file__).resolve().parents[1] / "deploy" / "k8s" / "job.yaml"

UNITS = r"""
import doctest, json, os, signal, sys
sys.path.insert(0, os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
import zscore_airflow as af, zscore_patterns as dags, zscore_k8s as kube
from kubernetes.client import ApiClient, models as k8s

out = {"doctest": doctest.testmod(dags).failed + doctest.testmod(af).failed}

def outcome(cmd):
    try:
        af.run_zscore(cmd, grace=5)
        return "ok"
    except Exception as exc:
        return [type(exc).__name__, str(exc)]

for code in (0, 1, 2, 3, 130, 143):
    out[str(code)] = outcome([sys.executable, "-c", "import sys; print('working', "
                              f"file=sys.stderr); print('zscore: error: boom', file="
                              f"sys.stderr); print('last line'); sys.exit({code})"])
out["signal"] = outcome([sys.executable, "-c", "import os; os.kill(os.getpid(), 9)"])
out["missing"] = outcome(["/nonexistent/zscore", "fit"])

variables = {"root": "s3://bucket/z/", "window_days": "7", "exclude": "", "max_shift": "9"}
s = af.resolve_settings(dags.DAILY_SETTINGS, {"max_shift": 0.25,
                        "scheduler": "tcp://10.0.0.1:8786"}, variables.get)
out["settings"] = s
production = {"artifact": {"path": "s3://bucket/z/training_sets/a/stats.json"}}
out["plans"] = [dags.daily_plan("2026-03-01", s, production),
                dags.training_plan("2026-03-01", af.resolve_settings(
                    dags.TRAINING_SETTINGS, {}, variables.get)),
                dags.training_plan("2026-01-31", af.resolve_settings(
                    dags.TRAINING_SETTINGS, {"workers": 2}, lambda name: None))]
try:
    af.resolve_settings(dags.TRAINING_SETTINGS, {}, {"window_days": "a week"}.get)
except Exception as exc:
    out["bad_variable"] = [type(exc).__name__, str(exc)]

# An interrupted task (execution_timeout raises in the task) stops the zscore it runs.
class Interrupted(BaseException):
    pass

def interrupt(signum, frame):
    raise Interrupted

signal.signal(signal.SIGALRM, interrupt)
pidfile = sys.argv[1]
signal.setitimer(signal.ITIMER_REAL, 1.0)
try:
    af.run_zscore([sys.executable, "-c", "import os, time; open(%r, 'w').write(str("
                   "os.getpid())); time.sleep(120)" % pidfile], grace=5)
except Interrupted:
    try:
        os.kill(int(open(pidfile).read()), 0)
        out["interrupted"] = "zscore still runs"
    except ProcessLookupError:
        out["interrupted"] = "zscore stopped"

# ---- Kubernetes: the objects the variants would send to the API server
daily = out["plans"][0]
pods = {}
for key in ("fit_day", "diff", "transform"):
    pod = kube.pod_operator(key, daily[key][1:]).build_pod_request_obj()
    pods[key] = ApiClient().sanitize_for_serialization(pod)
out["pods"] = pods
from zscore_k8s import daily_pods
env = daily_pods.get_template_env()
plan = daily
class XCom:  # stands in for the XCom store: returns the plan task's value
    def xcom_pull(self, task_ids):
        assert task_ids == "plan"
        return plan
rendered = {}
for t in daily_pods.tasks:
    if isinstance(t, kube.ZscorePodOperator):
        rendered[t.task_id] = t.render_template(t.arguments, {"ti": XCom()}, env)
out["rendered"] = rendered
build = out["plans"][2]["build"]
names = [kube.job_name("2026-01-31") for _ in range(3)]
out["daskjob"] = kube.daskjob_object(names[0], build[1:])
out["job_names"] = names

def finished(rc):
    return k8s.V1Pod(status=k8s.V1PodStatus(phase="Failed", container_statuses=[
        k8s.V1ContainerStatus(name="base", image="zscore:0.1.0", image_id="", ready=False,
                              restart_count=0, state=k8s.V1ContainerState(
                                  terminated=k8s.V1ContainerStateTerminated(exit_code=rc)))]))

mapped = {}
for rc in (1, 2, 3, 137):
    try:
        af.outcome(kube.exit_code(finished(rc), "base"), "zscore pod p", "failed")
    except Exception as exc:
        mapped[rc] = type(exc).__name__
out["pod_exit"] = mapped
out["running"] = kube.exit_code(k8s.V1Pod(status=k8s.V1PodStatus(phase="Running")), "base")

# ---- deploy/k8s/job.yaml against the batch/v1 Job model of the Kubernetes client
import copy, yaml

def strict(data, kind, at):
    # Unknown fields at any depth (the API server's strict field validation rejects them).
    if kind.startswith("list["):
        return [e for i, x in enumerate(data) for e in strict(x, kind[5:-1], f"{at}[{i}]")]
    if kind.startswith("dict("):
        inner = kind[kind.index(",") + 1:-1].strip()
        return [e for k, x in data.items() for e in strict(x, inner, f"{at}.{k}")]
    cls = getattr(k8s, kind, None)
    if cls is None:
        return []
    if not isinstance(data, dict):
        return [f"{at}: expected an object"]
    names = {v: k for k, v in cls.attribute_map.items()}
    errors = []
    for key, value in data.items():
        if key not in names:
            errors.append(f"{at}.{key}: unknown field")
        else:
            errors += strict(value, cls.openapi_types[names[key]], f"{at}.{key}")
    return errors

def job_errors(job):
    errors = strict(job, "V1Job", "job")
    try:  # required fields and types, as the client checks them
        ApiClient()._ApiClient__deserialize(job, "V1Job")
    except Exception as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
    return errors

job = yaml.safe_load(open(sys.argv[2]))
out["job"], out["job_errors"] = job, job_errors(job)
broken = copy.deepcopy(job)
rule = broken["spec"]["podFailurePolicy"]["rules"][0]
rule["onExitCode"] = rule.pop("onExitCodes")
out["broken_job_errors"] = job_errors(broken)
missing = copy.deepcopy(job)
del missing["spec"]["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"]
out["missing_job_errors"] = job_errors(missing)
print(json.dumps(out))
"""


@pytest.fixture(scope="module", params=sorted(VERSIONS))
def units(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
          ) -> dict[str, Any]:
    home = tmp_path_factory.mktemp(f"airflow-units-{request.param}")
    # A kubeconfig naming an unreachable API server: building a pod reads the config and
    # never connects.
    kubeconfig = home / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "none",
        "clusters": [{"name": "none", "cluster": {"server": "https://127.0.0.1:9"}}],
        "users": [{"name": "none", "user": {"token": "unused"}}],
        "contexts": [{"name": "none", "context": {"cluster": "none", "user": "none"}}]}))
    # No metadata database: building DAGs, operators and plans reads none.
    af = Airflow(request.param, home, {}, env={"KUBECONFIG": str(kubeconfig)})
    log = home / "units.log"
    af.python(UNITS, str(home / "pid"), str(JOB), log=log)
    return json.loads(log.read_text().splitlines()[-1])  # type: ignore[no-any-return]


def test_exit_codes_map_to_fail_or_retry(units: dict[str, Any]) -> None:
    assert units["doctest"] == 0
    assert units["0"] == "ok"
    fail, retry = "AirflowFailException", "AirflowException"
    # The error line of zscore, not its last line, names the cause.
    assert units["2"][0] == fail
    assert units["2"][1].endswith(" -c exited 2 (bad input or data; not retried): "
                                  "zscore: error: boom")
    assert units["3"][0] == fail and "(drift past the limits; not retried)" in units["3"][1]
    assert units["1"][0] == retry and "(infrastructure; retried while" in units["1"][1]
    for killed in ("130", "143", "signal"):
        assert units[killed][0] == retry and "(killed; retried while" in units[killed][1]
    assert units["signal"][1].split(" (")[0].endswith("exited -9")
    assert units["missing"][0] == fail and "zscore_executable" in units["missing"][1]
    assert units["interrupted"] == "zscore stopped"
    assert units["pod_exit"] == {"1": retry, "2": fail, "3": fail, "137": retry}
    assert units["running"] is None


def test_settings_and_plans(units: dict[str, Any]) -> None:
    s = units["settings"]
    assert (s["input"], s["stats_dir"]) == ("s3://bucket/z/validation",
                                            "s3://bucket/z/daily_stats")
    assert s["max_shift"] == 0.25 and s["exclude"] == "" and s["partition_key"] == "day"
    daily, training, default = units["plans"]
    assert daily["fit_day"] == ["zscore", "fit", "s3://bucket/z/validation/day=2026-03-01",
                                "--stats", "s3://bucket/z/daily_stats/2026-03-01.json",
                                "--scheduler", "tcp://10.0.0.1:8786"]
    assert daily["wait_for"] == "s3://bucket/z/validation/day=2026-03-01/_SUCCESS"
    assert training["filters"] == ["day >= 2026-02-22", "day < 2026-03-01"]
    assert training["manifest"] == "s3://bucket/z/training_sets/2026-03-01/training_set.json"
    assert "--workers" in default["build"]
    assert units["bad_variable"] == ["AirflowFailException", "Variable zscore_window_days is "
                                     "'a week', expected integer: fit and normalize this many "
                                     "days before the logical date"]
    # Every command line the DAGs can build is one that zscore's command line accepts.
    from pipeline.cli import cli

    for plan in (daily, training, default):
        for step in ("fit_day", "diff", "transform", "build"):
            if step in plan:
                cli.commands[plan[step][1]].make_context(plan[step][1], plan[step][2:])


def test_pods_of_the_daily_variant_match_the_pod_schema(
        units: dict[str, Any], pod_spec: Any) -> None:  # noqa: F811 - a fixture
    daily = units["plans"][0]
    for key, pod in units["pods"].items():
        assert messages(pod_spec, pod["spec"], f"{key}.spec") == []
        assert DNS_LABEL.fullmatch(pod["metadata"]["name"]), pod["metadata"]["name"]
        (container,) = pod["spec"]["containers"]
        assert container["args"] == daily[key][1:] and not container["command"]
        assert container["image"] == "zscore:0.1.0"
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        assert pod["spec"]["serviceAccountName"] == "default"
        assert container["envFrom"] == [{"secretRef": {"name": "zscore-s3"}}]
        assert pod["spec"]["restartPolicy"] == "Never"
        limits = container["resources"]["limits"]
        assert container["resources"]["requests"] == limits
    # In the DAG the arguments are templates that render to the plan's lists.
    assert units["rendered"] == {"fit_day": daily["fit_day"][1:],
                                 "drift_gate": daily["diff"][1:],
                                 "transform": daily["transform"][1:]}


def test_the_daskjob_variant_matches_the_operator_crd(
        units: dict[str, Any], crds: Any, pod_spec: Any) -> None:  # noqa: F811 - fixtures
    job = units["daskjob"]
    assert k8s_errors(job, crds, pod_spec) == []
    names = units["job_names"]
    assert len(set(names)) == len(names), "a new name for every try"
    assert job["metadata"]["name"] == names[0] and len(names[0]) <= 63 - len("-scheduler")
    assert job["spec"]["job"]["spec"]["containers"][0]["args"] == units["plans"][2]["build"][1:]
    assert f'"tcp://{names[0]}-scheduler:8786"' in \
        job["spec"]["job"]["spec"]["initContainers"][0]["command"][-1]
    # The same cluster as the hand-written manifest, but for the names and the command.
    (static,) = load_all(next(p for p in K8S_FILES if p.name == "daskjob.yaml"))
    for role in ("scheduler", "worker"):
        ours = job["spec"]["cluster"]["spec"][role]["spec"]["containers"][0]
        theirs = static["spec"]["cluster"]["spec"][role]["spec"]["containers"][0]
        for key in ("image", "command", "args", "resources", "securityContext", "envFrom"):
            assert ours.get(key) == theirs.get(key), (role, key)
    assert job["spec"]["cluster"]["spec"]["scheduler"]["service"]["selector"][
        "dask.org/cluster-name"] == names[0]


def test_the_k8s_variants_are_documented() -> None:
    text = (Path(__file__).resolve().parents[1] / "docs" / "airflow.md").read_text()
    for name in ("zscore_daily_pods", "zscore_training_set_daskjob", "ZSCORE_K8S_IMAGE",
                 "ZSCORE_K8S_SERVICE_ACCOUNT", "ZSCORE_AIRFLOW_WAIT_TIMEOUT"):
        assert name in text, f"docs/airflow.md does not mention {name}"


def test_the_job_manifest_fails_fast_on_bad_input_and_retries_infrastructure(
        units: dict[str, Any]) -> None:
    assert units["job_errors"] == []
    assert any("onExitCode: unknown field" in e for e in units["broken_job_errors"]), \
        units["broken_job_errors"]
    assert any("values" in e for e in units["missing_job_errors"]), units["missing_job_errors"]
    job = units["job"]
    assert "name" not in job["metadata"], "a fixed name must be deleted before a rerun"
    assert job["metadata"]["generateName"].endswith("-")
    spec = job["spec"]
    assert spec["template"]["spec"]["restartPolicy"] == "Never"  # required by the policy
    containers = {c["name"] for c in spec["template"]["spec"]["containers"]}
    # Allowed values, from the Kubernetes API reference (PodFailurePolicyRule): the client's
    # model does not check enums.
    fail = [r for r in spec["podFailurePolicy"]["rules"] if r["action"] == "FailJob"]
    assert all(r["action"] in ("FailJob", "FailIndex", "Ignore", "Count")
               for r in spec["podFailurePolicy"]["rules"])
    assert [(r["onExitCodes"]["containerName"], r["onExitCodes"]["operator"],
             sorted(r["onExitCodes"]["values"])) for r in fail] == [("job", "In", [2, 3])]
    assert fail[0]["onExitCodes"]["containerName"] in containers
    # Exit 1 matches no rule: it counts against backoffLimit, which allows retries.
    assert spec["backoffLimit"] >= 1
    assert not any(1 in r.get("onExitCodes", {}).get("values", [])
                   for r in spec["podFailurePolicy"]["rules"])
