"""The deployment files (deploy/, docs/deploy.md) against what they will be given to.

No container engine or Kubernetes cluster runs here, so most checks are static, but
against the real contracts:

- ``deploy/k8s``: ``DaskJob`` and ``DaskCluster`` specs against the openAPIV3Schema of the
  CRDs that the pinned dask-kubernetes wheel ships, closed the way the API server's strict
  field validation (kubectl's default) closes them; a ``batch/v1`` Job's pod template
  against the same PodSpec schema.
- ``deploy/compose.yaml``: against the Compose Specification's JSON schema, as vendored by
  the pinned check-jsonschema wheel.
- Every command in the manifests, compose.yaml, the Dockerfile and docs/deploy.md is parsed
  by the click command it will run (``zscore ...``, ``dask scheduler``, ``dask worker``).
- The files agree with each other: image, uid, memory limits, addresses, the Secret.
- The TLS recipe of docs/deploy.md runs: a ``dask scheduler`` started with the documented
  options, and zscore's client configured by nothing but the documented variables.

The wheels are fetched once with ``pip download`` (pinned version and sha256) into
pytest's cache directory; a failed download fails the tests. Each kind of check is also
shown to reject a broken input.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import click
import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S_FILES = sorted((DEPLOY / "k8s").glob("*.y*ml"))
COMPOSE = DEPLOY / "compose.yaml"
DOCS = ROOT / "docs" / "deploy.md"

IMAGE = "zscore:0.1.0"  # one image for client, scheduler and workers, everywhere
SECRET = "zscore-s3"

# (distribution, version, sha256 of its wheel): the schemas' provenance.
DASK_KUBERNETES = ("dask-kubernetes", "2026.3.0",
                   "5cf138e03cb1851063b82b74e9fd4679251238e3867fcae1e3682aada6410728")
CHECK_JSONSCHEMA = ("check-jsonschema", "0.39.0",
                    "14ce5c94871c551268ea948ffe21e9f1464dc48fb20bf9a4c13deeaaf756cf9b")
CRD_DIR = "dask_kubernetes/operator/deployment/helm/dask-kubernetes-operator/crds/"
COMPOSE_SCHEMA = "check_jsonschema/builtin_schemas/vendor/compose-spec.json"

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C loader: 8x faster on CRDs
DNS_LABEL = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")


def load_all(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.load_all(path.read_text(), Loader=_Loader) if d is not None]


# ------------------------------------------------------------------ schemas
def _wheel(cache: Path, name: str, version: str, sha256: str) -> Path:
    """The pinned wheel, downloaded on first use; fails (never skips) when it cannot be had."""
    dest = cache / f"{name}-{version}"
    found = sorted(dest.glob("*.whl"))
    if not found:
        dest.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--disable-pip-version-check", "--quiet", "--dest", tmp, f"{name}=={version}"]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            except subprocess.TimeoutExpired:
                pytest.fail(f"pip download {name}=={version} took over 300 s")
            got = sorted(Path(tmp).glob("*.whl"))
            if proc.returncode or len(got) != 1:
                pytest.fail(f"cannot download {name}=={version}, which provides schemas for "
                            f"tests/test_deploy.py: pip exited {proc.returncode}: "
                            f"{' '.join(proc.stderr.split())[-600:]}")
            found = [dest / got[0].name]
            os.replace(got[0], found[0])
    digest = hashlib.sha256(found[0].read_bytes()).hexdigest()
    if digest != sha256:
        found[0].unlink()
        pytest.fail(f"{found[0].name} has sha256 {digest}, expected {sha256}; the pin in "
                    "tests/test_deploy.py names another file (deleted; it is fetched again)")
    return found[0]


@pytest.fixture(scope="session")
def wheel(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[Callable[[tuple[str, str, str]], zipfile.ZipFile]]:
    # pytest's cache directory (.pytest_cache, git-ignored) keeps them across runs.
    cache = (Path(pytestconfig.cache.mkdir("zscore-deploy-wheels"))
             if getattr(pytestconfig, "cache", None)
             else tmp_path_factory.mktemp("wheels"))
    opened: dict[tuple[str, str, str], zipfile.ZipFile] = {}

    def get(pin: tuple[str, str, str]) -> zipfile.ZipFile:
        if pin not in opened:
            opened[pin] = zipfile.ZipFile(_wheel(cache, *pin))
        return opened[pin]

    yield get
    for z in opened.values():
        z.close()


def closed(schema: dict[str, Any]) -> dict[str, Any]:
    """A Kubernetes structural (OpenAPI v3) schema as JSON Schema, closed as the API server is.

    With strict field validation the API server rejects a field that the schema does not
    declare (unless ``x-kubernetes-preserve-unknown-fields``), where JSON Schema would allow
    it; so every object with ``properties`` gets ``additionalProperties: false``.
    ``nullable`` becomes a ``"null"`` type. A quantity or int-or-string field is declared
    ``type: string``: the API server rejects a YAML number there (``cpu: 1``), and so do we.
    """
    out = {k: v for k, v in schema.items() if not k.startswith("x-kubernetes-")
           and k not in ("nullable", "description")}
    if "properties" in schema:
        out["properties"] = {k: closed(v) for k, v in schema["properties"].items()}
        if ("additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
    if isinstance(schema.get("additionalProperties"), dict):
        out["additionalProperties"] = closed(schema["additionalProperties"])
    if "items" in schema:
        out["items"] = closed(schema["items"])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in schema:
            out[key] = [closed(s) for s in schema[key]]
    if schema.get("nullable") and "type" in schema:
        out["type"] = [schema["type"], "null"]
    return out


@dataclass(frozen=True)
class Crd:
    api_version: str
    spec: jsonschema.protocols.Validator


def _validator(schema: dict[str, Any]) -> jsonschema.protocols.Validator:
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


@pytest.fixture(scope="session")
def crds(wheel: Any) -> dict[str, Crd]:
    """Kind -> served apiVersion and a validator of ``.spec``, for each CRD in the wheel."""
    z = wheel(DASK_KUBERNETES)
    out = {}
    for name in z.namelist():
        if name.startswith(CRD_DIR) and name.endswith(".yaml"):
            crd = yaml.load(z.read(name), Loader=_Loader)
            for version in crd["spec"]["versions"]:
                if version["served"]:
                    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
                    out[crd["spec"]["names"]["kind"]] = Crd(
                        f"{crd['spec']['group']}/{version['name']}", _validator(closed(spec)))
    assert {"DaskJob", "DaskCluster"} <= set(out), f"CRDs found in the wheel: {sorted(out)}"
    return out


@pytest.fixture(scope="session")
def pod_spec(crds: dict[str, Crd]) -> jsonschema.protocols.Validator:
    """The core/v1 PodSpec schema that the DaskJob CRD embeds for its runner pod."""
    schema = crds["DaskJob"].spec.schema["properties"]["job"]["properties"]["spec"]
    return _validator(schema)


@pytest.fixture(scope="session")
def compose_schema(wheel: Any) -> jsonschema.protocols.Validator:
    schema = json.loads(wheel(CHECK_JSONSCHEMA).read(COMPOSE_SCHEMA))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def messages(validator: jsonschema.protocols.Validator, instance: Any, at: str) -> list[str]:
    """Every error, with those under a failed ``anyOf`` / ``oneOf`` spelled out."""
    def flat(e: jsonschema.ValidationError) -> Iterator[jsonschema.ValidationError]:
        yield e
        for sub in e.context or []:
            yield from flat(sub)

    return [f"{at}.{'.'.join(map(str, e.absolute_path))}: {e.message}"
            for top in validator.iter_errors(instance) for e in flat(top)]


def k8s_errors(obj: dict[str, Any], crds: dict[str, Crd],
               pod_spec: jsonschema.protocols.Validator) -> list[str]:
    """What the API server would reject in one object (by schema, for the kinds used here)."""
    kind, meta = obj.get("kind"), obj.get("metadata", {})
    name = meta.get("name", "")
    if "generateName" in meta and "name" not in meta:
        # The API server appends 5 characters to it; a Job's pods add more.
        prefix = meta["generateName"]
        errors = ([] if prefix.endswith("-") and DNS_LABEL.fullmatch(prefix + "x" * 5)
                  else [f"metadata.generateName {prefix!r} is not a DNS label prefix"])
        name = prefix + "x" * 5
    else:
        errors = [] if DNS_LABEL.fullmatch(name) else [
            f"metadata.name {name!r} is not a DNS label"]
    if kind in crds:
        if obj.get("apiVersion") != crds[kind].api_version:
            errors.append(f"apiVersion {obj.get('apiVersion')!r}, the CRD serves "
                          f"{crds[kind].api_version!r}")
        if not DNS_LABEL.fullmatch(f"{name}-scheduler"):  # the operator's Service name
            errors.append(f"{name}-scheduler is too long for a Service name")
        extra = set(obj) - {"apiVersion", "kind", "metadata", "spec"}
        errors += [f"unknown top-level field {k!r}" for k in sorted(extra)]
        errors += messages(crds[kind].spec, obj.get("spec"), "spec")
    elif kind == "Job":
        if obj.get("apiVersion") != "batch/v1":
            errors.append(f"Job apiVersion {obj.get('apiVersion')!r}, expected 'batch/v1'")
        pod = obj.get("spec", {}).get("template", {}).get("spec")
        if pod is None:
            return [*errors, "spec.template.spec is required"]
        if pod.get("restartPolicy") not in ("Never", "OnFailure"):
            errors.append("a Job's restartPolicy must be Never or OnFailure")
        errors += messages(pod_spec, pod, "spec.template.spec")
    else:
        errors.append(f"no schema for kind {kind!r}: teach tests/test_deploy.py about it")
    return errors


# --------------------------------------------------------------- the files
@dataclass(frozen=True)
class Container:
    where: str  # file and container, for messages
    role: str  # job, scheduler, worker
    spec: dict[str, Any]
    pod: dict[str, Any]


def pods(obj: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    spec = obj["spec"]
    if obj["kind"] == "DaskJob":
        yield "job", spec["job"]["spec"]
        spec = spec["cluster"]["spec"]
    if obj["kind"] in ("DaskJob", "DaskCluster"):
        yield "scheduler", spec["scheduler"]["spec"]
        yield "worker", spec["worker"]["spec"]
    if obj["kind"] == "Job":
        yield "job", spec["template"]["spec"]


def k8s_containers() -> list[Container]:
    return [Container(f"{path.name}:{c['name']}", role, c, pod)
            for path in K8S_FILES for obj in load_all(path) for role, pod in pods(obj)
            for c in [*pod.get("initContainers", []), *pod["containers"]]]


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    out, buf = [], ""
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        instr, _, rest = (buf + line).strip().partition(" ")
        out.append((instr.upper(), rest.strip()))
        buf = ""
    return out


def docker_exec(name: str) -> list[str]:
    values = [json.loads(rest) for instr, rest in dockerfile() if instr == name]
    assert values, f"deploy/Dockerfile has no {name} (use the JSON form)"
    return values[-1]


def interpolate(text: str) -> str:
    """Compose's ``${VAR:-default}`` with the defaults (what a bare ``up`` runs)."""
    return re.sub(r"\$\{\w+(?::?[-?]([^}]*))?\}", lambda m: m.group(1) or "", text)


def argv_k8s(c: dict[str, Any]) -> list[str]:
    if "command" in c:
        return [*c["command"], *c.get("args", [])]
    return [*docker_exec("ENTRYPOINT"), *c.get("args", docker_exec("CMD"))]


def argv_compose(service: dict[str, Any]) -> list[str]:
    entry = service.get("entrypoint")
    if entry is None:
        return [*docker_exec("ENTRYPOINT"), *service.get("command", docker_exec("CMD"))]
    return [*entry, *service.get("command", [])]


def doc_commands(section: str = "") -> list[list[str]]:
    """Shell lines of the code blocks in docs/deploy.md (from ``section`` on), split."""
    text = DOCS.read_text()
    if section:
        text = text[text.index(section):]
    lines = []
    for block in re.findall(r"```(?:sh|bash|console)?\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                lines.append(words)
    return lines


def all_commands() -> list[tuple[str, list[str]]]:
    out = [(c.where, argv_k8s(c.spec)) for c in k8s_containers()]
    compose = yaml.load(interpolate(COMPOSE.read_text()), Loader=_Loader)
    out += [(f"compose.yaml:{name}", argv_compose(s)) for name, s in compose["services"].items()]
    out.append(("Dockerfile", [*docker_exec("ENTRYPOINT"), *docker_exec("CMD")]))
    for i, words in enumerate(doc_commands()):
        if words[:2] == ["docker", "run"]:
            entry = words[words.index("--entrypoint") + 1] if "--entrypoint" in words else None
            rest = words[words.index(IMAGE) + 1:]
            out.append((f"deploy.md:{i}", [entry, *rest] if entry else ["zscore", *rest]))
        elif words[0] in ("zscore", "dask"):
            out.append((f"deploy.md:{i}", words))
    return out


# -------------------------------------------------------------- the CLIs
def _options(cmd: click.Command) -> dict[str, click.Option]:
    return {o: p for p in cmd.params if isinstance(p, click.Option)
            for o in (*p.opts, *p.secondary_opts)}


def unknown_options(cmd: click.Command, name: str, args: list[str]) -> list[str]:
    """Options that ``cmd`` does not declare (``dask worker`` would pass them on silently)."""
    opts, errors, i = _options(cmd), [], 0
    while i < len(args):
        token, i = args[i], i + 1
        if token == "--":
            break
        if not token.startswith("-") or token == "-":
            continue
        option = opts.get(token.split("=", 1)[0])
        if option is None:
            errors.append(f"{name}: no such option {token.split('=', 1)[0]}")
        elif "=" not in token and not option.is_flag and not option.count:
            i += 1  # its value
    return errors


def command_errors(argv: list[str]) -> list[str]:
    """Why ``argv`` would not even start; [] when its program accepts every option and value."""
    from pipeline.cli import cli

    prog, *args = argv
    if prog == "zscore":
        group_options = set(_options(cli)) | set(cli.context_settings["help_option_names"])
        if len(args) == 1 and args[0] in group_options:
            return []
        if not args or args[0] not in cli.commands:
            return [f"zscore has no command {args[:1]}; it has {sorted(cli.commands)}"]
        cmd, name = cli.commands[args[0]], f"zscore {args[0]}"
    elif prog == "dask" and args[:1] in (["scheduler"], ["worker"]):
        cmd = {ep.name: ep for ep in entry_points(group="dask_cli")}[args[0]].load()
        name = f"dask {args[0]}"
    elif prog == "python" and args[:1] == ["-c"] and len(args) == 2:
        compile(args[1], "<python -c>", "exec")
        return []
    else:
        return [f"unexpected program {argv[:2]}"]
    errors = unknown_options(cmd, name, args[1:])
    if not errors:
        # Files named in examples (TLS certificates) need not exist here: stand in an
        # existing one, so that the other values are still converted.
        opts, args = _options(cmd), list(args)
        for i, token in enumerate(args[:-1]):
            kind = getattr(opts.get(token), "type", None)
            if isinstance(kind, click.Path) and kind.exists and not os.path.exists(args[i + 1]):
                args[i + 1] = __file__
        try:
            cmd.make_context(name, args[1:])  # converts every value, runs nothing
        except click.ClickException as exc:
            errors.append(f"{name}: {exc.format_message()}")
    return errors


def option(argv: list[str], name: str) -> str:
    assert argv.count(name) == 1, f"{name} should appear once in {argv}"
    return argv[argv.index(name) + 1]


def without(argv: list[str], name: str) -> list[str]:
    i = argv.index(name)
    return argv[:i] + argv[i + 2:]


# ------------------------------------------------------------------- tests
@pytest.mark.parametrize("path", K8S_FILES, ids=lambda p: p.name)
def test_k8s_manifests_match_the_operator_crds(path: Path, crds: dict[str, Crd],
                                               pod_spec: Any) -> None:
    objs = load_all(path)
    assert objs, f"{path} holds no object"
    for obj in objs:
        assert k8s_errors(obj, crds, pod_spec) == []


def _worker(obj: dict[str, Any]) -> dict[str, Any]:
    spec = obj["spec"]["cluster"]["spec"] if obj["kind"] == "DaskJob" else obj["spec"]
    return spec["worker"]


MUTATIONS: dict[str, tuple[str, Callable[[dict[str, Any]], None], str]] = {
    "replicas as a string": ("daskjob.yaml", lambda o: _worker(o).update(replicas="4"),
                             "'4' is not of type 'integer'"),
    "cpu as a number": ("daskcluster.yaml", lambda o: _worker(o)["spec"]["containers"][0]
                        ["resources"]["limits"].update(cpu=1), "1 is not of type 'string'"),
    "misspelled field": ("daskjob.yaml", lambda o: o["spec"]["job"]["spec"]["containers"][0]
                         .update(resource=o["spec"]["job"]["spec"]["containers"][0]
                                 .pop("resources")), "('resource' was unexpected)"),
    "missing Service": ("daskcluster.yaml", lambda o: o["spec"]["scheduler"].pop("service"),
                        "'service' is a required property"),
    "args as a string": ("job.yaml", lambda o: o["spec"]["template"]["spec"]["containers"][0]
                         .update(args="run in out"), "'run in out' is not of type 'array'"),
    "unknown kind": ("job.yaml", lambda o: o.update(kind="CronJob"), "no schema for kind"),
}


@pytest.mark.parametrize("case", MUTATIONS)
def test_k8s_validation_rejects_broken_manifests(case: str, crds: dict[str, Crd],
                                                 pod_spec: Any) -> None:
    file, mutate, expected = MUTATIONS[case]
    obj = copy.deepcopy(load_all(DEPLOY / "k8s" / file)[0])
    assert k8s_errors(obj, crds, pod_spec) == []
    mutate(obj)
    errors = k8s_errors(obj, crds, pod_spec)
    assert any(expected in e for e in errors), errors


def _quantity(text: str) -> float:
    """A Kubernetes quantity (4Gi, 500M, 1.5) in plain units."""
    m = re.fullmatch(r"([0-9.]+)(Ki|Mi|Gi|Ti|k|M|G|T)?", text)
    assert m, f"not a quantity: {text!r}"
    scale = {None: 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
             "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}[m.group(2)]
    return float(m.group(1)) * scale


def test_k8s_files_agree_with_each_other_and_the_image() -> None:
    from dask.utils import parse_bytes

    uid = docker_exec_user()
    objs = {o["metadata"].get("name") or o["metadata"]["generateName"]: o
            for p in K8S_FILES for o in load_all(p)}
    containers = k8s_containers()
    assert {c.role for c in containers} == {"job", "scheduler", "worker"}
    for c in containers:
        assert c.spec["image"] == IMAGE, f"{c.where}: every role must run the same image"
        assert c.pod["securityContext"]["runAsNonRoot"] is True, c.where
        assert c.pod["securityContext"]["runAsUser"] == uid, f"{c.where}: the image's uid"
        for env in c.spec.get("env", []):
            assert not ("value" in env and re.search("KEY|SECRET|TOKEN|PASSWORD", env["name"])), \
                f"{c.where}: {env['name']} inline; use the Secret {SECRET}"
        argv = argv_k8s(c.spec)
        if c.role == "worker":
            limits, requests = c.spec["resources"]["limits"], c.spec["resources"]["requests"]
            assert option(argv, "--nthreads") == "1", f"{c.where}: one task per worker"
            assert parse_bytes(option(argv, "--memory-limit")) == _quantity(limits["memory"]), \
                f"{c.where}: --memory-limit must equal the container's memory limit"
            assert requests["memory"] == limits["memory"], c.where
        if c.role in ("job", "worker") and c.spec["name"] != "wait-for-scheduler":
            refs = [e["secretRef"]["name"] for e in c.spec.get("envFrom", []) if "secretRef" in e]
            assert refs == [SECRET], f"{c.where}: the data's credentials come from {SECRET}"
    for name, obj in objs.items():
        if obj["kind"] not in ("DaskJob", "DaskCluster"):
            continue
        cluster = obj["spec"]["cluster"]["spec"] if obj["kind"] == "DaskJob" else obj["spec"]
        service = cluster["scheduler"]["service"]
        # The operator names the cluster of a DaskJob after the job.
        assert service["selector"] == {"dask.org/cluster-name": name,
                                       "dask.org/component": "scheduler"}, name
        (scheduler,) = cluster["scheduler"]["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in scheduler["ports"]}
        assert {p["targetPort"] for p in service["ports"]} <= set(ports), name
        assert ports["tcp-comm"] == int(option(argv_k8s(scheduler), "--port")), name
        probe = scheduler["readinessProbe"]["httpGet"]
        assert probe["port"] in ports and probe["path"] == "/health", name
    job = objs["zscore-train"]
    runner = argv_k8s(job["spec"]["job"]["spec"]["containers"][0])
    assert "--scheduler" not in runner, "the operator sets DASK_SCHEDULER_ADDRESS for the runner"
    (wait,) = job["spec"]["job"]["spec"]["initContainers"]
    assert f'"tcp://{job["metadata"]["name"]}-scheduler:8786"' in wait["command"][-1]
    on_cluster = argv_k8s(objs["zscore-train-on-cluster-"]["spec"]["template"]["spec"]
                          ["containers"][0])
    assert option(on_cluster, "--scheduler") == "tcp://zscore-scheduler:8786"
    assert objs["zscore"]["kind"] == "DaskCluster"
    assert without(on_cluster, "--scheduler") == runner, "both Kubernetes jobs run one command"


def test_compose_matches_the_compose_spec(compose_schema: Any) -> None:
    doc = yaml.load(COMPOSE.read_text(), Loader=_Loader)
    assert messages(compose_schema, doc, "compose") == []


@pytest.mark.parametrize("mutate, expected", [
    (lambda d: d["services"]["worker"].update(replica=2), "('replica' was unexpected)"),
    (lambda d: d["services"]["job"]["depends_on"]["scheduler"].update(condition="healthy"),
     "'healthy' is not one of"),
    (lambda d: d["services"]["worker"]["deploy"].update(replicas=[2]), "is not of type"),
], ids=["misspelled field", "bad enum", "wrong type"])
def test_compose_validation_rejects_broken_files(compose_schema: Any, mutate: Any,
                                                 expected: str) -> None:
    doc = yaml.load(COMPOSE.read_text(), Loader=_Loader)
    mutate(doc)
    errors = messages(compose_schema, doc, "compose")
    assert any(expected in e for e in errors), errors


def test_compose_mirrors_the_kubernetes_job() -> None:
    from dask.utils import parse_bytes

    doc = yaml.load(interpolate(COMPOSE.read_text()), Loader=_Loader)
    services = doc["services"]
    assert set(services) == {"scheduler", "worker", "job"}
    for name, s in services.items():
        assert s["image"] == IMAGE, name
        assert (COMPOSE.parent / s["build"]["context"] / s["build"]["dockerfile"]).resolve() \
            == DEPLOY / "Dockerfile", name
        for env in s.get("environment", []):
            assert isinstance(env, str) and "=" not in env, \
                f"compose.yaml:{name}: pass credentials through by name, not {env!r}"
    port = option(argv_compose(services["scheduler"]), "--port")
    worker, job = argv_compose(services["worker"]), argv_compose(services["job"])
    assert worker[2] == option(job, "--scheduler") == f"tcp://scheduler:{port}"
    assert option(worker, "--nthreads") == "1"
    assert parse_bytes(option(worker, "--memory-limit")) == \
        parse_bytes(services["worker"]["deploy"]["resources"]["limits"]["memory"])
    assert services["worker"]["deploy"]["replicas"] == 2
    daskjob = next(o for p in K8S_FILES for o in load_all(p) if o["kind"] == "DaskJob")
    assert without(job, "--scheduler") == argv_k8s(daskjob["spec"]["job"]["spec"]
                                                    ["containers"][0])


def docker_exec_user() -> int:
    (user,) = [rest for instr, rest in dockerfile() if instr == "USER"]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"USER {user}: a numeric, non-root uid"
    return int(uid)


def test_dockerfile_builds_the_cli_from_the_constraints() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    steps = dockerfile()
    # Pinned by digest: the same base bytes for every build, whatever the tag does since.
    assert steps[0][0] == "FROM"
    assert re.fullmatch(r"python:3\.11-slim@sha256:[0-9a-f]{64}", steps[0][1]), steps[0][1]
    assert docker_exec("ENTRYPOINT") == ["zscore"] and "zscore" in project["scripts"]
    assert docker_exec_user() == 10001
    for instr, rest in steps:
        if instr == "COPY":
            *sources, _ = rest.split()
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: not in the build context"
    pip = image_pip_install()
    assert option(pip, "-c") == "constraints.txt" and "-e" not in pip
    extras = image_extras()
    # Every runtime extra (all but the developers' ones): object stores, lineage.
    runtime = set(project["optional-dependencies"]) - {"test", "dev", "bench"}
    assert {"s3", "gcs"} <= extras and extras == runtime, (extras, runtime)


def image_pip_install() -> list[str]:
    (install,) = [shlex.split(rest) for instr, rest in dockerfile()
                  if instr == "RUN" and "pip install" in rest]
    return install[install.index("pip"):install.index("&&")]


def image_extras() -> set[str]:
    found = [re.fullmatch(r"\.\[(.+)\]", a) for a in image_pip_install()]
    return {e for m in found if m for e in m.group(1).split(",")}


def _imports(path: Path) -> set[str]:
    """Top-level modules ``path`` imports, but for optional ones (a ``try`` with a fallback)."""
    import ast

    def modules(nodes: Any) -> set[str]:
        names = {a.name for n in nodes if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in nodes
                  if isinstance(n, ast.ImportFrom) and n.module and not n.level}
        return {n.split(".")[0] for n in names}

    tree = ast.parse(path.read_text())
    optional: set[str] = set()
    for node in ast.walk(tree):
        caught = {t.id for h in getattr(node, "handlers", []) for t in (
            h.type.elts if isinstance(h.type, ast.Tuple) else [h.type])
            if isinstance(t, ast.Name)}
        if isinstance(node, ast.Try) and caught & {"ImportError", "ModuleNotFoundError",
                                                   "Exception"}:
            optional |= modules([n for b in node.body for n in ast.walk(b)])
    return modules(list(ast.walk(tree))) - optional


def test_the_image_installs_everything_zscore_imports() -> None:
    """Whatever module the report (or any feature) needs is in the image, whatever it is called.

    Every third-party module imported anywhere in ``pipeline/`` (at the top or inside a
    function, as the report's drawing code is) must come from a core dependency or an
    extra the Dockerfile installs.
    """
    from importlib.metadata import packages_distributions

    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [*project["dependencies"], *(r for e in image_extras()
                                         for r in project["optional-dependencies"][e])]
    installed = {Requirement(r).name.lower().replace("_", "-") for r in reqs}
    dists = packages_distributions()
    modules = set().union(*(_imports(p) for p in (ROOT / "pipeline").glob("*.py")))
    missing = []
    for module in sorted(modules - set(sys.stdlib_module_names) - {"pipeline", "__future__"}):
        names = {d.lower().replace("_", "-") for d in dists.get(module, [])}
        if not names & installed:
            missing.append(f"{module} (from {sorted(names) or 'no installed distribution'})")
    assert missing == [], f"pipeline imports modules the image does not install: {missing}"
    report = _imports(ROOT / "pipeline" / "report.py")
    assert report, "pipeline/report.py imports nothing?"


COMMANDS = all_commands()


@pytest.mark.parametrize("argv", [c[1] for c in COMMANDS], ids=[c[0] for c in COMMANDS])
def test_commands_use_options_that_exist(argv: list[str]) -> None:
    assert command_errors(argv) == []


def test_every_kind_of_command_is_checked() -> None:
    checked = {tuple(argv[:2]) if argv[0] == "dask" else (argv[0],) for _, argv in COMMANDS}
    assert {("zscore",), ("dask", "scheduler"), ("dask", "worker")} <= checked
    assert any(where.startswith("deploy.md") for where, _ in COMMANDS)


def test_docs_install_the_operator_that_the_manifests_are_checked_against() -> None:
    (helm,) = [w for w in doc_commands() if w[:2] == ["helm", "install"]]
    assert helm[-1] == "dask-kubernetes-operator"
    assert option(helm, "--version") == DASK_KUBERNETES[1]


@pytest.mark.parametrize("argv, expected", [
    (["zscore", "run", "in", "out", "--exlude", "id"], "no such option --exlude"),
    (["zscore", "run", "in"], "Missing argument 'OUTPUT'"),
    (["zscore", "fit", "in", "--stats", "s.json", "--ddof", "2"], "not in the range"),
    (["zscore", "deploy"], "zscore has no command"),
    (["dask", "worker", "tcp://s:8786", "--nthread", "1"], "no such option --nthread"),
    (["dask", "worker", "tcp://s:8786", "--nthreads", "one"], "'one' is not a valid integer"),
])
def test_command_check_rejects_bad_commands(argv: list[str], expected: str) -> None:
    errors = command_errors(argv)
    assert any(expected in e for e in errors), errors


def test_tls_recipe_in_the_docs_connects_zscore(tmp_path: Path) -> None:
    import dask
    from distributed import Security

    lines = doc_commands("### TLS")
    scheduler = next(w for w in lines if w[:2] == ["dask", "scheduler"])
    env = dict(w[1].split("=", 1) for w in lines if w[0] == "export")
    zscore = next(w for w in lines if w[0] == "zscore")
    assert option(zscore, "--scheduler").startswith("tls://")
    def keys(tree: dict[str, Any], prefix: str = "") -> Iterator[str]:
        for k, v in tree.items():
            yield from keys(v, f"{prefix}{k}.") if isinstance(v, dict) else [prefix + k]

    absent = object()
    for key in keys(dask.config.collect(paths=[], env=env)):
        assert dask.config.get(key, absent) is not absent, f"{key}: no such Dask setting"
    # One self-signed certificate serves as the CA and as every role's certificate.
    sec = Security.temporary()

    def local(value: str) -> str:
        if not value.endswith(".pem"):
            return value
        path = tmp_path / Path(value).name
        path.write_text(sec.tls_scheduler_key if "key" in path.name else sec.tls_ca_file)
        return str(path)

    env = {k: local(v) for k, v in env.items()}
    scheduler = [local(w) for w in scheduler]
    with socket.socket() as sock:  # a free port, so that the client can start meanwhile
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    scheduler[scheduler.index("--port") + 1] = str(port)
    address = f"tls://127.0.0.1:{port}"
    dask_bin = Path(sys.executable).with_name("dask")
    argv = [str(dask_bin), *scheduler[1:], "--host", "tls://127.0.0.1",
            "--dashboard-address", "127.0.0.1:0"]
    client = ("import sys\nfrom pipeline.cluster import connect\n"
              "with connect(sys.argv[1]) as s:\n    print(s.client.scheduler.address)\n")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DASK_")}
    log = tmp_path / "scheduler.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        # zscore's client keeps trying to connect for 20 s while the scheduler starts.
        run = subprocess.run([sys.executable, "-c", client, address], env={**clean, **env},
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, (f"{run.stderr[-1500:]}\nscheduler log:\n"
                                     f"{log.read_text()[-1500:]}")
        assert run.stdout.strip() == address
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
