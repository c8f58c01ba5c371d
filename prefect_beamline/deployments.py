"""Deployments and triggers as `prefect.yaml` declares them, for serving from one process.

`prefect deploy --all` reads the same file for a work-pool install; this module turns it
into RunnerDeployments so `prefect-beamline serve` needs no work pool or worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.events.schemas.deployment_triggers import DeploymentTriggerTypes
from prefect.flows import Flow, load_flow_from_entrypoint
from pydantic import TypeAdapter

_TRIGGERS: TypeAdapter[DeploymentTriggerTypes] = TypeAdapter(DeploymentTriggerTypes)
# The top-level prefect.yaml as the package carries it (a symlink in the checkout, a
# copy in an installed wheel), so every command works outside the checkout.
PACKAGED_PREFECT_YAML = Path(__file__).resolve().parent / "prefect.yaml"


@dataclass(frozen=True)
class DeploymentSpec:
    """One entry of `prefect.yaml`'s `deployments:` list, as we use it."""

    name: str
    entrypoint: str
    description: str
    tags: list[str]
    parameters: dict[str, Any]
    triggers: list[dict[str, Any]]
    concurrency_limit: int | None = None


def find_prefect_yaml(explicit: Path | None = None) -> Path:
    """The given file (which must exist), else ./prefect.yaml, else the package's own."""
    if explicit is not None:
        if not explicit.is_file():
            raise FileNotFoundError(f"prefect file {explicit} does not exist")
        return explicit
    local = Path.cwd() / "prefect.yaml"
    return local if local.is_file() else PACKAGED_PREFECT_YAML


def read_deployment_specs(path: Path) -> list[DeploymentSpec]:
    """Parse `prefect.yaml` into DeploymentSpecs, with a clear error naming bad entries."""
    document = yaml.safe_load(path.read_text()) or {}
    specs = []
    for index, entry in enumerate(document.get("deployments") or []):
        missing = [key for key in ("name", "entrypoint") if not entry.get(key)]
        if missing:
            raise ValueError(f"{path}: deployments[{index}] lacks {', '.join(missing)}")
        specs.append(
            DeploymentSpec(
                name=entry["name"],
                entrypoint=entry["entrypoint"],
                description=" ".join(str(entry.get("description") or "").split()),
                tags=list(entry.get("tags") or []),
                parameters=dict(entry.get("parameters") or {}),
                triggers=[dict(t) for t in entry.get("triggers") or []],
                concurrency_limit=entry.get("concurrency_limit"),
            )
        )
    return specs


def deployment_arguments(spec: DeploymentSpec) -> dict[str, Any]:
    """Keyword arguments of `Flow.to_deployment` / `Runner.add_flow` for one spec."""
    triggers: list[Any] = []
    for index, trigger in enumerate(spec.triggers, start=1):
        trigger = {"name": f"{spec.name}__automation_{index}", **trigger}
        triggers.append(_TRIGGERS.validate_python(trigger))
    return {
        "name": spec.name,
        "description": spec.description or None,
        "tags": spec.tags,
        "parameters": spec.parameters,
        "triggers": triggers,
        "concurrency_limit": spec.concurrency_limit,
        "entrypoint_type": EntrypointType.MODULE_PATH,
    }


def runner_deployment(spec: DeploymentSpec) -> RunnerDeployment:
    """A deployment `prefect.serve` can run, with the spec's triggers as automations."""
    flow: Flow[..., Any] = load_flow_from_entrypoint(spec.entrypoint)
    deployment = flow.to_deployment(**deployment_arguments(spec))
    assert isinstance(deployment, RunnerDeployment)
    return deployment


def selected_specs(path: Path | None = None, only: list[str] | None = None) -> list[DeploymentSpec]:
    """The specs of `prefect.yaml` (or those named in `only`, which must all exist)."""
    specs = read_deployment_specs(find_prefect_yaml(path))
    if only:
        unknown = set(only) - {spec.name for spec in specs}
        if unknown:
            raise ValueError(f"unknown deployment(s): {', '.join(sorted(unknown))}")
        specs = [spec for spec in specs if spec.name in only]
    return specs


def load_runner_deployments(
    path: Path | None = None, only: list[str] | None = None
) -> list[RunnerDeployment]:
    """Every deployment of `prefect.yaml` (or those named in `only`)."""
    return [runner_deployment(spec) for spec in selected_specs(path, only)]


def deployments_of(technique: str, path: Path | None = None) -> list[DeploymentSpec]:
    """The deployments of `prefect.yaml` that run a technique: those whose entrypoint is
    in its flow module, `prefect_beamline.flows.<technique>`."""
    module = f"prefect_beamline.flows.{technique}:"
    specs = read_deployment_specs(find_prefect_yaml(path))
    return [spec for spec in specs if spec.entrypoint.startswith(module)]


def deployment_for_collection(
    technique: str, experiment_type: str, path: Path | None = None
) -> str:
    """The deployment whose `finished` trigger matches a collection's labels.

    The triggers of `prefect.yaml` are the one routing table: a rerun goes to the
    deployment an automation would have started.
    """
    from prefect_beamline.events import LABEL_EXPERIMENT_TYPE, LABEL_TECHNIQUE

    for spec in read_deployment_specs(find_prefect_yaml(path)):
        for trigger in spec.triggers:
            match = trigger.get("match") or {}
            if match.get(LABEL_TECHNIQUE) != technique:
                continue
            if match.get(LABEL_EXPERIMENT_TYPE, experiment_type) in (experiment_type, "*"):
                return spec.name
    raise LookupError(
        f"no deployment in prefect.yaml is triggered by technique {technique!r} with "
        f"experiment_type {experiment_type!r}; pass --deployment"
    )


def deployment_for_flow(
    entrypoint: str, technique: str, experiment_type: str, path: Path | None = None
) -> str:
    """The deployment of `prefect.yaml` that runs flow `entrypoint` ("module:function")
    for a collection of this technique and experiment type."""
    from prefect_beamline.events import LABEL_EXPERIMENT_TYPE, LABEL_TECHNIQUE

    specs = [
        s for s in read_deployment_specs(find_prefect_yaml(path)) if s.entrypoint == entrypoint
    ]
    for spec in specs:
        for trigger in spec.triggers:
            match = trigger.get("match") or {}
            if match.get(LABEL_TECHNIQUE, technique) != technique:
                continue
            if match.get(LABEL_EXPERIMENT_TYPE, experiment_type) in (experiment_type, "*"):
                return spec.name
    if len(specs) == 1:
        return specs[0].name
    raise LookupError(
        f"no deployment in prefect.yaml runs {entrypoint} for technique {technique!r} with "
        f"experiment_type {experiment_type!r}"
    )
