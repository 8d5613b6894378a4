"""Check deploy/k8s offline: every object against its schema, then what ties them together.

- Kubernetes' own kinds against the schemas kubernetes-validate ships, strict (an
  unknown field fails), for the oldest Kubernetes these manifests support and the
  newest the package knows.
- KEDA's kinds against the CRD schemas vendored in deploy/k8s/schemas/, made strict
  the same way, with their metadata checked as Kubernetes' ObjectMeta.
- Then what no schema sees: kustomization.yaml lists every manifest and names every
  image; each ConfigMap, Secret and key a pod reads exists; selectors select; each
  ScaledObject scales a worker Deployment on that worker's task queue, named as
  factq names it; each pod's grace period outlasts FACTQ_SHUTDOWN_GRACE_S.

Nothing is downloaded. Prints each problem and exits 1 if there is any.
Run: .venv/bin/python scripts/validate-k8s.py [DIRECTORY, default deploy/k8s]
"""

from __future__ import annotations

import importlib.resources
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import jsonschema
import kubernetes_validate
import yaml
from referencing import Registry, Resource

from factq.broker import QueueNames
from factq.settings import Settings

ROOT: Final = Path(__file__).resolve().parent.parent
K8S: Final = ROOT / "deploy" / "k8s"
OLDEST_KUBERNETES: Final = "1.30"
OBJECT_META: Final = (
    "https://kubernetes.io/api/_definitions.json"
    "#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
)
# Schema keywords whose value is a map of schemas, one schema, or a list of them.
SCHEMA_MAPS: Final = ("properties", "patternProperties", "$defs", "definitions")
SCHEMA_ONE: Final = ("items", "additionalProperties", "not")
SCHEMA_LIST: Final = ("allOf", "anyOf", "oneOf")

Object = dict[str, Any]


def main(argv: list[str]) -> int:
    directory = Path(argv[0]).resolve() if argv else K8S
    shown = directory.relative_to(ROOT) if directory.is_relative_to(ROOT) else directory
    try:
        kustomization, objects = _load(directory)
    except yaml.YAMLError as exc:
        print(f"{shown}: not YAML: {exc}", file=sys.stderr)
        return 1
    schemas = directory / "schemas"
    problems = [
        f"{_name(file, obj)}: {error}"
        for file, obj in objects
        for error in _schema_errors(obj, schemas)
    ]
    # The references are followed only through objects of the right shape.
    if not problems:
        problems += [*_check_kustomization(kustomization, objects), *_check_references(objects)]
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"{shown}: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    files = len({file for file, _ in objects})
    print(
        f"{shown}: {len(objects)} objects in {files} files valid (Kubernetes "
        f"{OLDEST_KUBERNETES} and {_newest_kubernetes()}, strict; KEDA's vendored CRD schemas), "
        "references resolve"
    )
    return 0


def _load(directory: Path) -> tuple[Object, list[tuple[str, Object]]]:
    kustomization: Object = {}
    objects = []
    for path in sorted(directory.glob("*.yaml")):
        with path.open(encoding="utf-8") as file:
            documents = [doc for doc in yaml.safe_load_all(file) if doc is not None]
        if path.name == "kustomization.yaml":
            kustomization = documents[0]
            continue
        objects += [(path.name, doc) for doc in documents]
    return kustomization, objects


def _name(file: str, obj: Any) -> str:
    if not _is_object(obj):
        return file
    return f"{file}: {obj['kind']}/{obj['metadata']['name']}"


def _is_object(obj: Any) -> bool:
    return (
        isinstance(obj, dict)
        and isinstance(obj.get("metadata"), dict)
        and all(isinstance(obj.get(key), str) for key in ("apiVersion", "kind"))
        and isinstance(obj["metadata"].get("name"), str)
    )


# ---- kustomization.yaml ----


def _check_kustomization(kustomization: Object, objects: list[tuple[str, Object]]) -> Iterator[str]:
    listed = set(kustomization.get("resources", []))
    # An example is for copying, never applied as it is.
    manifests = {file for file, _ in objects if not file.endswith(".example.yaml")}
    for file in sorted(manifests - listed):
        yield f"kustomization.yaml: {file} is not in resources"
    for file in sorted(listed - manifests):
        yield f"kustomization.yaml: resource {file} does not exist (or holds no object)"
    images = {image["name"] for image in kustomization.get("images", [])}
    for file, obj in objects:
        for container in _containers(obj):
            if container["image"] not in images:
                yield f"{_name(file, obj)}: image {container['image']} is not in its images"


# ---- schemas ----


def _schema_errors(obj: Object, schemas: Path) -> list[str]:
    if not _is_object(obj):
        return ["not a Kubernetes object (apiVersion, kind and metadata.name)"]
    api_version, kind = obj["apiVersion"], obj["kind"]
    if api_version.startswith("keda.sh/"):
        return _keda_errors(obj, api_version, kind, schemas)
    errors: list[str] = []
    for version in (OLDEST_KUBERNETES, _newest_kubernetes()):
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            error = f"{_where(exc)}: {exc.message}"
            if not any(error in seen for seen in errors):
                errors.append(f"Kubernetes {version}: {error}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            errors.append(exc.message)
    return errors


def _newest_kubernetes() -> str:
    newest: str = kubernetes_validate.latest_version()
    return newest.removesuffix(".0")


def _keda_errors(obj: Object, api_version: str, kind: str, schemas: Path) -> list[str]:
    version = api_version.removeprefix("keda.sh/")
    path = schemas / f"{kind.lower()}-keda-{version}.json"
    if not path.is_file():
        return [f"no vendored schema for {api_version} {kind} ({path})"]
    schema = _strict(json.loads(path.read_text(encoding="utf-8")))
    # The CRD leaves metadata to the API server: check it as Kubernetes does.
    schema["properties"]["metadata"] = {"$ref": OBJECT_META}
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema, registry=_kubernetes_definitions())
    return [f"{_where(error)}: {error.message}" for error in validator.iter_errors(obj)]


def _strict(schema: Any) -> Any:
    """The schema, refusing unknown fields where Kubernetes would prune them: in every
    object with `properties` not marked to keep unknown fields (as kubernetes-validate's
    strict schemas do)."""
    if not isinstance(schema, dict):
        return schema
    strict = dict(schema)
    for key in SCHEMA_MAPS:
        if isinstance(schema.get(key), dict):
            strict[key] = {name: _strict(sub) for name, sub in schema[key].items()}
    for key in SCHEMA_ONE:
        if key in schema:
            strict[key] = _strict(schema[key])
    for key in SCHEMA_LIST:
        if key in schema:
            strict[key] = [_strict(sub) for sub in schema[key]]
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        strict["additionalProperties"] = False
    return strict


def _kubernetes_definitions() -> Registry:
    """Kubernetes' shared definitions (ObjectMeta among them), as kubernetes-validate ships."""
    path = (
        importlib.resources.files("kubernetes_validate")
        / "kubernetes-json-schema"
        / f"v{OLDEST_KUBERNETES}.0-local-strict"
        / "_definitions.json"
    )
    definitions = Resource.from_contents(json.loads(path.read_text(encoding="utf-8")))
    registry: Registry = definitions @ Registry()
    return registry


def _where(error: jsonschema.ValidationError) -> str:
    where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error.path)
    return where.lstrip(".") or "(top)"


# ---- references between objects ----


def _check_references(objects: list[tuple[str, Object]]) -> Iterator[str]:
    by_kind: dict[str, dict[str, Object]] = {}
    for _, obj in objects:
        by_kind.setdefault(obj["kind"], {})[obj["metadata"]["name"]] = obj
    deployments = by_kind.get("Deployment", {})
    for file, obj in objects:
        name = _name(file, obj)
        kind = obj["kind"]
        if kind == "Deployment":
            yield from (f"{name}: {error}" for error in _deployment_errors(obj, by_kind))
        elif kind in ("Service", "PodDisruptionBudget"):
            selector = obj["spec"]["selector"]
            labels = selector if kind == "Service" else selector.get("matchLabels", {})
            if not any(_selects(labels, deployment) for deployment in deployments.values()):
                yield f"{name}: its selector {labels} selects no Deployment's pods"
        elif kind == "ScaledObject":
            yield from (f"{name}: {error}" for error in _scaled_object_errors(obj, by_kind))
        elif kind == "TriggerAuthentication":
            for ref in obj["spec"].get("secretTargetRef", []):
                yield from (f"{name}: {error}" for error in _key_errors(by_kind, "Secret", ref))
    yield from _coverage_errors(by_kind)


def _coverage_errors(by_kind: dict[str, dict[str, Object]]) -> Iterator[str]:
    """Every Deployment has a disruption budget, and every worker a ScaledObject."""
    budgets = by_kind.get("PodDisruptionBudget", {}).values()
    scalers = by_kind.get("ScaledObject", {}).values()
    for deployment_name, deployment in by_kind.get("Deployment", {}).items():
        if not any(_selects(b["spec"]["selector"]["matchLabels"], deployment) for b in budgets):
            yield f"Deployment/{deployment_name}: no PodDisruptionBudget selects its pods"
        if _worker_task(deployment, by_kind) is not None and not any(
            s["spec"]["scaleTargetRef"]["name"] == deployment_name for s in scalers
        ):
            yield f"Deployment/{deployment_name}: a worker with no ScaledObject"


def _deployment_errors(deployment: Object, by_kind: dict[str, dict[str, Object]]) -> Iterator[str]:
    pod = deployment["spec"]["template"]["spec"]
    grace_period = pod.get("terminationGracePeriodSeconds", 30)
    for container in pod["containers"]:
        for source in container.get("envFrom", []):
            for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                ref = source.get(key)
                if ref and not ref.get("optional") and ref["name"] not in by_kind.get(kind, {}):
                    yield f"envFrom names {kind} {ref['name']}, which is not here"
        for variable in container.get("env", []):
            source = variable.get("valueFrom", {})
            for kind, key in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                if key in source:
                    yield from _key_errors(by_kind, kind, source[key])
        # The pod must outlive the drain: a preStop hook's sleep comes out of the
        # same grace period, before SIGTERM.
        grace_s = float(
            _setting(container, by_kind, "FACTQ_SHUTDOWN_GRACE_S")
            or Settings.model_fields["shutdown_grace_s"].default
        )
        pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {})
        command = pre_stop.get("command", [])
        sleep_s = float(command[1]) if len(command) == 2 and command[0] == "sleep" else 0.0
        if grace_period <= grace_s + sleep_s:
            yield (
                f"terminationGracePeriodSeconds {grace_period} must exceed "
                f"FACTQ_SHUTDOWN_GRACE_S ({grace_s:g}) plus the preStop sleep ({sleep_s:g})"
            )


def _scaled_object_errors(scaled: Object, by_kind: dict[str, dict[str, Object]]) -> Iterator[str]:
    target = scaled["spec"]["scaleTargetRef"]
    deployment = by_kind.get("Deployment", {}).get(target["name"])
    if target.get("kind", "Deployment") != "Deployment" or deployment is None:
        yield f"scaleTargetRef names no Deployment here ({target})"
        return
    task = _worker_task(deployment, by_kind)
    if task is None or "," in task or not task:
        yield f"Deployment/{target['name']} is not a worker of one task (--tasks T): {task!r}"
        return
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    namespace = (
        _setting(container, by_kind, "FACTQ_NAMESPACE")
        or Settings.model_fields["namespace"].default
    )
    queue = QueueNames(namespace).task_queue(task)
    for trigger in scaled["spec"]["triggers"]:
        if trigger["type"] != "rabbitmq":
            continue
        if trigger["metadata"].get("queueName") != queue:
            yield (
                f"its rabbitmq trigger watches {trigger['metadata'].get('queueName')!r}, "
                f"but {target['name']} serves {queue!r}"
            )
        auth = trigger.get("authenticationRef")
        if auth and auth["name"] not in by_kind.get(auth.get("kind", "TriggerAuthentication"), {}):
            yield f"authenticationRef names {auth['name']}, which is not here"


def _key_errors(by_kind: dict[str, dict[str, Object]], kind: str, ref: Object) -> Iterator[str]:
    if ref.get("optional"):
        return
    obj = by_kind.get(kind, {}).get(ref["name"])
    if obj is None:
        yield f"{kind} {ref['name']} is not here"
    elif ref["key"] not in {**obj.get("data", {}), **obj.get("stringData", {})}:
        yield f"{kind} {ref['name']} has no key {ref['key']}"


def _setting(container: Object, by_kind: dict[str, dict[str, Object]], name: str) -> str | None:
    """A FACTQ_* variable's value as the container gets it: its own env, else a ConfigMap's."""
    for variable in container.get("env", []):
        if variable["name"] == name and "value" in variable:
            return str(variable["value"])
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            data = by_kind.get("ConfigMap", {}).get(source["configMapRef"]["name"], {})
            if name in data.get("data", {}):
                return str(data["data"][name])
    return None


def _worker_task(deployment: Object, by_kind: dict[str, dict[str, Object]]) -> str | None:
    """The tasks a `factq worker` Deployment serves, as `--tasks` or FACTQ_WORKER_TASKS
    give them ("" for every task); None for a Deployment of something else."""
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    args = container.get("args", [])
    if args[:1] != ["worker"]:
        return None
    if "--tasks" in args[:-1]:
        return str(args[args.index("--tasks") + 1])
    return _setting(container, by_kind, "FACTQ_WORKER_TASKS") or ""


def _containers(obj: Object) -> list[Object]:
    if obj.get("kind") != "Deployment":
        return []
    containers: list[Object] = obj["spec"]["template"]["spec"]["containers"]
    return containers


def _selects(labels: dict[str, str], deployment: Object) -> bool:
    pod_labels = deployment["spec"]["template"]["metadata"].get("labels", {})
    return bool(labels) and all(pod_labels.get(key) == value for key, value in labels.items())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
