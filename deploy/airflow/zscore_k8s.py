"""# zscore's DAGs on Kubernetes (needs apache-airflow-providers-cncf-kubernetes)

The same two patterns as `zscore_dags.py`, with zscore running in the Kubernetes cluster
instead of the Airflow worker:

- **`zscore_daily_pods`**: each zscore command of the daily pattern (`fit_day`,
  `drift_gate`, `transform`) in its own pod (`KubernetesPodOperator`), on the embedded
  local cluster of that pod (or `--scheduler`, the setting `scheduler`).
- **`zscore_training_set_daskjob`**: the training set's `zscore run` as a `DaskJob`
  created for the run, with a generated name (`zscore-<day>-<random>`), on a Dask cluster
  that the Dask operator creates for it; the DaskJob is deleted when the task ends,
  whatever the outcome, and a retry creates a new one.

Exit codes keep their meaning: the runner's exit code (read from the pod's status) fails
the task without retry for 2 and 3, and retries it for 1 and anything else.

The pod settings are read when the file is parsed, from the environment of the process
that parses DAGs: `ZSCORE_K8S_IMAGE` (zscore:0.1.0), `ZSCORE_K8S_NAMESPACE` (zscore),
`ZSCORE_K8S_SERVICE_ACCOUNT` (default: the namespace's; name one bound to a cloud role
with IRSA or Workload Identity), `ZSCORE_K8S_SECRET` (zscore-s3, static keys loaded with
`envFrom`; empty with a service account's role), `ZSCORE_K8S_WORKERS` (4),
`ZSCORE_K8S_WORKER_MEMORY` (4Gi) and `ZSCORE_K8S_JOB_TIMEOUT` (6 h, seconds).
"""

from __future__ import annotations

import os
import secrets
import time
from typing import Any

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from kubernetes.client import models as k8s
from zscore_airflow import AirflowException, log, outcome, task
from zscore_patterns import daily_dag, training_set_dag

IMAGE = os.environ.get("ZSCORE_K8S_IMAGE", "zscore:0.1.0")
NAMESPACE = os.environ.get("ZSCORE_K8S_NAMESPACE", "zscore")
SERVICE_ACCOUNT = os.environ.get("ZSCORE_K8S_SERVICE_ACCOUNT", "default")
SECRET = os.environ.get("ZSCORE_K8S_SECRET", "zscore-s3")
WORKERS = int(os.environ.get("ZSCORE_K8S_WORKERS", "4"))
WORKER_MEMORY = os.environ.get("ZSCORE_K8S_WORKER_MEMORY", "4Gi")
JOB_TIMEOUT = float(os.environ.get("ZSCORE_K8S_JOB_TIMEOUT", str(6 * 3600)))
UID = 10001  # the image's user (deploy/Dockerfile)

POD_SECURITY = {"runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID,
                "seccompProfile": {"type": "RuntimeDefault"}}
CONTAINER_SECURITY = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def _resources(cpu: str, memory: str) -> dict[str, Any]:
    # requests == limits: Guaranteed QoS, the last pods to be evicted.
    return {"requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": cpu, "memory": memory}}


def _env_from() -> list[dict[str, Any]]:
    return [{"secretRef": {"name": SECRET}}] if SECRET else []


def exit_code(pod: Any, container: str) -> int | None:
    """The exit code of ``container`` in a finished ``V1Pod`` (``None``: not terminated)."""
    for status in (pod.status.container_statuses or []) if pod and pod.status else []:
        if status.name == container and status.state and status.state.terminated:
            return int(status.state.terminated.exit_code)
    return None


# ------------------------------------------------------------------ one pod per command
class ZscorePodOperator(KubernetesPodOperator):
    """A pod running the zscore image; its exit code decides whether Airflow retries."""

    def cleanup(self, pod: Any, remote_pod: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().cleanup(pod, remote_pod, *args, **kwargs)
        except Exception as exc:
            rc = exit_code(remote_pod, self.base_container_name)
            if rc is None:
                raise
            outcome(rc, f"zscore pod {pod.metadata.name}", str(exc).splitlines()[0][:300])
            raise


def pod_operator(task_id: str, arguments: Any, **kwargs: Any) -> ZscorePodOperator:
    """The pod for one zscore command; ``arguments`` follow the image's ``zscore`` entrypoint."""
    return ZscorePodOperator(
        task_id=task_id, name=f"zscore-{task_id.replace('_', '-')}", namespace=NAMESPACE,
        image=IMAGE, arguments=arguments, service_account_name=SERVICE_ACCOUNT,
        env_from=[k8s.V1EnvFromSource(secret_ref=k8s.V1SecretEnvSource(name=SECRET))]
        if SECRET else None,
        container_resources=k8s.V1ResourceRequirements(**_resources("2", "8Gi")),
        security_context=k8s.V1PodSecurityContext(
            run_as_non_root=True, run_as_user=UID, run_as_group=UID,
            seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault")),
        container_security_context=k8s.V1SecurityContext(
            allow_privilege_escalation=False, capabilities=k8s.V1Capabilities(drop=["ALL"])),
        labels={"app.kubernetes.io/name": "zscore"}, get_logs=True,
        on_finish_action="delete_pod", **kwargs)


def pod_step(task_id: str, key: str) -> Any:
    def wire(planned: Any) -> Any:
        # Rendered as a list (the DAG renders templates as native objects); [1:] drops the
        # executable, which is the image's entrypoint.
        op = pod_operator(task_id, f"{{{{ ti.xcom_pull(task_ids='plan')['{key}'][1:] }}}}")
        planned >> op
        return op

    return wire


# ------------------------------------------------------------------ one DaskJob per run
def job_name(ds: str) -> str:
    """``zscore-<day>-<6 hex>``: unique per try, short enough for ``<name>-scheduler``."""
    return f"zscore-{ds.replace('-', '')}-{secrets.token_hex(3)}"


def _pod(containers: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"securityContext": POD_SECURITY, "serviceAccountName": SERVICE_ACCOUNT,
            "containers": containers, **extra}


def _container(name: str, command: list[str] | None, args: list[str], cpu: str,
               memory: str, **extra: Any) -> dict[str, Any]:
    c = {"name": name, "image": IMAGE, "imagePullPolicy": "IfNotPresent", "args": args,
         "resources": _resources(cpu, memory), "securityContext": CONTAINER_SECURITY, **extra}
    return {"command": command, **c} if command else c


def daskjob_object(name: str, args: list[str]) -> dict[str, Any]:
    """The DaskJob for ``zscore <args>``: its runner, scheduler and workers (daskjob.yaml)."""
    scheduler_port = {"port": "http-dashboard", "path": "/health"}
    wait = _container("wait-for-scheduler", ["python", "-c",
                      f'from distributed import Client\nClient("tcp://{name}-scheduler:8786",'
                      ' timeout=600).close()\n'], [], "100m", "256Mi")
    scheduler = _container(
        "scheduler", ["dask", "scheduler"], ["--port", "8786", "--dashboard-address", ":8787"],
        "1", "1Gi", ports=[{"name": "tcp-comm", "containerPort": 8786, "protocol": "TCP"},
                           {"name": "http-dashboard", "containerPort": 8787, "protocol": "TCP"}],
        readinessProbe={"httpGet": scheduler_port, "initialDelaySeconds": 5,
                        "periodSeconds": 10},
        livenessProbe={"httpGet": scheduler_port, "initialDelaySeconds": 15,
                       "periodSeconds": 20})
    worker = _container("worker", ["dask", "worker"],
                        ["--name", "$(DASK_WORKER_NAME)", "--nthreads", "1",
                         "--memory-limit", WORKER_MEMORY.replace("i", "iB")],
                        "1", WORKER_MEMORY, envFrom=_env_from())
    runner = _container("job", None, args, "1", "2Gi", envFrom=_env_from())
    service = {"type": "ClusterIP",
               "selector": {"dask.org/cluster-name": name, "dask.org/component": "scheduler"},
               "ports": [{"name": p, "protocol": "TCP", "port": n, "targetPort": p}
                         for p, n in (("tcp-comm", 8786), ("http-dashboard", 8787))]}
    return {
        "apiVersion": "kubernetes.dask.org/v1", "kind": "DaskJob",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "zscore"}},
        "spec": {
            "job": {"spec": _pod([runner], restartPolicy="Never", initContainers=[wait])},
            "cluster": {"spec": {
                "scheduler": {"spec": _pod([scheduler]), "service": service},
                "worker": {"replicas": WORKERS, "spec": _pod([worker])}}},
        },
    }


def run_daskjob(args: list[str], ds: str, *, poll: float = 10.0) -> None:
    """Create a DaskJob for ``zscore <args>``, wait for it, map its exit code, delete it."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    crd = ("kubernetes.dask.org", "v1", NAMESPACE, "daskjobs")
    api, core = client.CustomObjectsApi(), client.CoreV1Api()
    name = job_name(ds)
    api.create_namespaced_custom_object(*crd, daskjob_object(name, args))
    log.info("created DaskJob %s/%s", NAMESPACE, name)
    try:
        deadline, state = time.monotonic() + JOB_TIMEOUT, None
        while state not in ("Successful", "Failed"):
            if time.monotonic() > deadline:
                raise AirflowException(f"DaskJob {name} did not finish in {JOB_TIMEOUT:.0f} s")
            time.sleep(poll)
            state = api.get_namespaced_custom_object(*crd, name).get("status", {}).get(
                "jobStatus")
        runner = f"{name}-runner"
        for line in core.read_namespaced_pod_log(runner, NAMESPACE, container="job"
                                                 ).splitlines():
            log.info("%s", line)
        rc = 0 if state == "Successful" else exit_code(
            core.read_namespaced_pod(runner, NAMESPACE), "job")
        outcome(1 if rc is None else rc, f"zscore DaskJob {name}", f"DaskJob {state}")
    finally:
        client.CustomObjectsApi().delete_namespaced_custom_object(
            *crd, name, body=client.V1DeleteOptions(propagation_policy="Foreground"))
        log.info("deleted DaskJob %s/%s", NAMESPACE, name)


def daskjob_step(task_id: str, key: str) -> Any:
    @task(task_id=task_id)
    def step(plan: dict[str, Any], **context: Any) -> None:
        run_daskjob(plan[key][1:], context["ds"])

    return step


daily_pods = daily_dag("zscore_daily_pods", pod_step, render_template_as_native_obj=True)
training_set_daskjob = training_set_dag("zscore_training_set_daskjob", daskjob_step)
