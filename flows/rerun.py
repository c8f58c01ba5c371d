"""What a rerun means, shared by every technique flow: the run form, the parameters a run
uses, who started it, and the run's name.

- **The form.** A technique's settings model derives from `ScienceParameters`: the
  Prefect UI shows its fields directly (no "Model / None" switch, no `null` type), each
  with its description and units, blank meaning "the collection's latest value". The
  flow's internal parameters (`Announcement`, `TriggeredBy`, `LimsBlock`) are left out of
  the form: automations and the CLI pass them, nobody types them.
- **The parameters.** An automatic run uses the DAQ's announced values over the
  defaults; any other run starts from what the collection's latest job of the same
  deployment used and changes only what it names (`choose_parameters`). The LIMS keeps
  the effective values and, apart, what the rerun changed.
- **Who.** A run is automatic only when Prefect recorded it as created by an automation
  (`created_by`); `triggered_by` can name a person (CLI), never make a run automatic.
- **The name.** `<technique>-dc<collection>-job<job>`, e.g. `mx-dc42-job3`.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Generic, TypeVar
from uuid import UUID

from prefect.runtime import flow_run
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

from prefect_beamline.events import CollectionEvent
from prefect_beamline.lims import Lims

AUTOMATION = "automation"
# Who started a run that names nobody: the Prefect UI (or a bare API call). Prefect's open
# source server records no user for a flow run; it records `created_by` only for runs its
# automations create.
PREFECT_UI = "prefect-ui"


def _form_fields(schema: dict[str, Any], model: type[BaseModel]) -> None:
    """Each field as one plain input: the non-null type, no default filled in (blank
    keeps the collection's latest value; the default is named in the description)."""
    for prop in schema.get("properties", {}).values():
        branches = [branch for branch in prop.pop("anyOf", []) if branch.get("type") != "null"]
        if branches:
            prop.update(branches[0])
        if "default" in prop:
            default = prop.pop("default")
            shown = "empty" if default is None else json.dumps(default)
            prop["description"] = (
                f"{prop.get('description', '').rstrip('.')}. Default {shown}; "
                "blank: the collection's latest value."
            )


class ScienceParameters(BaseModel):
    """A technique's settings: what the DAQ may announce and a scientist may change.

    Science only (extra="forbid"): where chunks run is the Compute block's business.
    """

    model_config = ConfigDict(extra="forbid", json_schema_extra=_form_fields)


# The default of a flow's `parameters`: no change. The form starts with every field blank
# (an object, not the null of `Model | None` that the UI shows as a type switch).
NO_CHANGES: Any = {}
# The flow parameters nobody types: left out of the UI's run form.
Announcement = SkipJsonSchema[CollectionEvent | None]
TriggeredBy = SkipJsonSchema[str]
LimsBlock = SkipJsonSchema[str | None]
CollectionId = Annotated[
    int, Field(ge=0, description="The data collection (LIMS dataCollectionId)")
]

ParametersT = TypeVar("ParametersT", bound=BaseModel)


@dataclass(frozen=True)
class Chosen(Generic[ParametersT]):
    """The parameters a run uses, and where they came from.

    `changed` holds only the values this run set that differ from its base: the DAQ's
    announcement for an automatic run, else the collection's latest job (`based_on_job`).
    """

    effective: ParametersT
    changed: dict[str, Any] = field(default_factory=dict)
    based_on_job: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def values(self) -> dict[str, Any]:
        """Effective values as the LIMS and `inputs.json` record them."""
        return {**self.effective.model_dump(mode="json"), **self.extra}


def choose_parameters(
    model: type[ParametersT],
    lims: Lims,
    collection_id: int,
    recipe: str,
    announced: CollectionEvent | None,
    requested: BaseModel | Mapping[str, Any] | None,
    *,
    automatic: bool,
    same: Mapping[str, Any] | None = None,
) -> Chosen[ParametersT]:
    """This run's parameters: its base, with only what it names changed.

    The base of an automatic run is the DAQ's announcement; of any other run, what the
    collection's latest job of `recipe` used (whose `same` values match, e.g. the same
    movie), else the announcement it carries, else the defaults.
    """
    base: dict[str, Any] = dict(announced.processing_parameters) if announced else {}
    based_on_job = None
    if not automatic:
        latest = latest_job_parameters(lims, collection_id, recipe, same or {})
        if latest is not None:
            based_on_job, stored = latest
            base = {key: value for key, value in stored.items() if key in model.model_fields}
    before = model.model_validate(base).model_dump(mode="json")
    if isinstance(requested, BaseModel):
        asked = requested.model_dump(mode="json", exclude_unset=True)
    else:
        asked = dict(requested or {})
    effective = model.model_validate({**base, **asked})
    after = effective.model_dump(mode="json")
    changed = {key: after[key] for key in asked if after.get(key) != before.get(key)}
    return Chosen(effective, changed, based_on_job)


def latest_job_parameters(
    lims: Lims, collection_id: int, recipe: str, same: Mapping[str, Any]
) -> tuple[int, dict[str, Any]] | None:
    """(job id, parameters) of the collection's latest job of `recipe` matching `same`."""
    for job in reversed(lims.jobs_for_collection(collection_id)):
        if job.recipe == recipe and all(job.parameters.get(k) == v for k, v in same.items()):
            return job.processing_job_id, job.parameters
    return None


def run_created_by_automation() -> str | None:
    """The automation Prefect recorded as this flow run's creator, else None.

    Prefect's server sets `created_by` (type AUTOMATION) on runs its automations create;
    the UI, the CLI and plain API calls leave it empty.
    """
    from prefect.client.orchestration import get_client

    run_id = flow_run.get_id()
    if not run_id:
        return None
    with get_client(sync_client=True) as client:
        created_by = client.read_flow_run(UUID(str(run_id))).created_by
    if created_by is None or created_by.type != "AUTOMATION":
        return None
    return created_by.display_value or str(created_by.id)


@dataclass(frozen=True)
class Trigger:
    """Who or what started a run: `automatic` only for a run Prefect's automation made."""

    automatic: bool
    who: str
    event_id: str | None = None
    ignored: str | None = None


def describe_run_trigger(triggered_by: str, automation: str | None) -> Trigger:
    """Automatic runs: created by an automation and passing "automation:<event id>".

    A run not created by an automation is manual whatever `triggered_by` says (a copied
    run's parameters, a typo, a script): its claim is kept in `ignored` for the log.
    """
    if triggered_by.startswith(f"{AUTOMATION}:"):
        if automation is not None:
            event_id = triggered_by.removeprefix(f"{AUTOMATION}:") or None
            return Trigger(True, triggered_by, event_id)
        return Trigger(False, PREFECT_UI, ignored=triggered_by)
    if automation is not None:
        return Trigger(False, f"{AUTOMATION}:{automation}")
    return Trigger(False, triggered_by or PREFECT_UI)


def technique_of(flow_name: str) -> str:
    """`mx` of `mx-processing`, `em` of `em-movie`: the run name's prefix."""
    return flow_name.split("-")[0]


def run_name(flow_name: str, collection_id: object, job_id: int | None = None) -> str:
    """`mx-dc42-job3` (`mx-dc42` until the job is recorded)."""
    name = f"{technique_of(flow_name)}-dc{collection_id}"
    return name if job_id is None else f"{name}-job{job_id}"


def starting_run_name() -> str:
    """Prefect's `flow_run_name` of every technique flow: `<technique>-dc<collection>`."""
    return run_name(str(flow_run.get_flow_name() or "run"), flow_run.parameters["collection_id"])


def rename_run(name: str) -> None:
    """Give this flow run its final name (`mx-dc42-job3`) once the job is recorded."""
    from prefect.client.orchestration import get_client

    run_id = flow_run.get_id()
    if run_id:
        with get_client(sync_client=True) as client:
            client.update_flow_run(UUID(str(run_id)), name=name)


def ui_base_url() -> str | None:
    """The Prefect UI's address (PREFECT_UI_URL, else the API's without /api)."""
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

    ui = PREFECT_UI_URL.value() or ""
    api = PREFECT_API_URL.value() or ""
    return str(ui or api.removesuffix("/api")) or None


def flow_run_url(ui_url: str | None, run_id: str) -> str | None:
    return f"{ui_url}/runs/flow-run/{run_id}" if ui_url else None


def rerun_form_url(
    ui_url: str, deployment_id: str, collection_id: int, values: Mapping[str, Any]
) -> str:
    """The UI's custom-run form of a deployment, filled in with these values (Prefect's
    form reads them from its `parameters` query)."""
    parameters = {"collection_id": collection_id, "parameters": dict(values)}
    query = urllib.parse.quote(urllib.parse.quote(json.dumps(parameters), safe=""), safe="")
    return f"{ui_url}/deployments/deployment/{deployment_id}/run?parameters={query}"
