"""The one job lifecycle every technique flow shares: LIMS job, job folder, events.

    @technique_flow("mx-processing")
    def process_mx(collection_id, parameters=None, collection=None, triggered_by="", ...):
        job = open_job(collection_id, collection, parameters, triggered_by=...,
                       program=..., model=MXParameters)  # job.settings(MXParameters)
        with job.failure_recorded():
            ...the technique's tasks...
            return job.finish(summary, message="...", files=files)

Whatever started the run (automation, UI, CLI, Python), it leaves the same records,
differing only in `triggered_by`.
"""

from __future__ import annotations

import functools
import inspect
import json
import shlex
import textwrap
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from prefect import Flow, Task, flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.client.schemas.objects import State, TaskRun
from prefect.events import emit_event
from prefect.runtime import flow_run
from prefect.states import Completed
from prefect.tasks import exponential_backoff
from pydantic import BaseModel, ValidationError

from prefect_beamline.data_roots import require_data_files, resolve_under_roots
from prefect_beamline.events import (
    COMPLETED_EVENT,
    FAILED_EVENT,
    LABEL_BEAMLINE,
    LABEL_EXPERIMENT_TYPE,
    LABEL_TECHNIQUE,
    LABEL_VISIT,
    CollectionEvent,
)
from prefect_beamline.flows.rerun import (
    Chosen,
    Trigger,
    choose_parameters,
    describe_run_trigger,
    flow_run_url,
    rename_run,
    rerun_form_url,
    run_created_by_automation,
    run_name,
    starting_run_name,
    ui_base_url,
)
from prefect_beamline.formats.errors import DataFileError
from prefect_beamline.lims import CollectionDescription, EventAlreadyProcessed, Lims
from prefect_beamline.metrics import count_run_states
from prefect_beamline.provenance import PROVENANCE_FILE, code_identity, job_provenance, lims_summary
from prefect_beamline.settings import get_settings
from prefect_beamline.tracing import configure_tracing, job_trace_id

# Every flow-run process (forked by `serve`, started by a worker) traces as configured.
configure_tracing("prefect-beamline-flows")

# Bad input never gets better by retrying: fail fast and name it.
BAD_INPUT_ERRORS: tuple[type[BaseException], ...] = (
    DataFileError,
    ValidationError,
    ValueError,
    KeyError,
    FileNotFoundError,
)
INFRASTRUCTURE_RETRIES = 3
INFRASTRUCTURE_BACKOFF = exponential_backoff(backoff_factor=2)
ParametersT = TypeVar("ParametersT", bound=BaseModel)
# The final state of a run whose event already has its job (see `run_once_per_event`).
ALREADY_PROCESSED = "AlreadyProcessed"


def retry_unless_bad_input(task: Task[..., Any], task_run: TaskRun, state: State) -> bool:
    """Retry I/O and infrastructure failures; give up at once on bad input."""
    error = state.result(raise_on_failure=False)
    if isinstance(error, BAD_INPUT_ERRORS):
        return False
    return isinstance(error, Exception)


def infrastructure_retries() -> dict[str, Any]:
    """The retry policy of tasks that touch files, databases or the network."""
    return {
        "retries": INFRASTRUCTURE_RETRIES,
        "retry_delay_seconds": INFRASTRUCTURE_BACKOFF,
        "retry_jitter_factor": 0.5,
        "retry_condition_fn": retry_unless_bad_input,
    }


def open_lims(lims_block: str | None) -> Lims:
    """The LIMS named by a LIMS Database block, or the one in the environment settings."""
    if lims_block:
        from prefect_beamline.blocks.lims import LimsDatabase

        block = LimsDatabase.load(lims_block)
        assert isinstance(block, LimsDatabase)
        return block.get_lims()
    return Lims.from_settings()


@dataclass(frozen=True)
class Job:
    """One processing job: its collection, LIMS ids, recipe and results folder.

    Handed from task to task; `recipe` is the deployment that runs it, so the saved
    rerun command (`command.txt`) names a real deployment.
    """

    collection: CollectionDescription
    processing_job_id: int
    program_id: int
    recipe: str
    results_dir: Path
    lims_block: str | None = None
    # The effective settings (the technique model's fields, JSON values) it runs with.
    parameters: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def data_collection_id(self) -> int:
        return self.collection.collection_id

    def settings(self, model: type[ParametersT]) -> ParametersT:
        """The effective parameters as the technique's model."""
        return model.model_validate(
            {key: value for key, value in self.parameters.items() if key in model.model_fields}
        )

    def lims(self) -> Lims:
        """The LIMS this job is recorded in."""
        return open_lims(self.lims_block)

    @contextmanager
    def failure_recorded(self, what: str = "") -> Iterator[None]:
        """On any error inside: mark the job failed in the LIMS with the message (prefixed
        with `what`, e.g. the movie), emit `beamline.processing.failed`, and re-raise."""
        try:
            yield
        except Exception as error:
            message = f"{what}: {error}" if what else str(error)
            close_processing_job(self, (), success=False, message=message, event={"error": message})
            raise

    def finish(
        self,
        summary: Mapping[str, Any],
        message: str,
        files: Sequence[tuple[Path, str]] = (),
    ) -> dict[str, Any]:
        """Register the result files (path, ISPyB fileType; most important first), mark
        the job successful, publish the completion event; the run's result.

        Call it inside `failure_recorded`, so a LIMS that stays down fails the job.
        """
        result = {
            **summary,
            "results_dir": str(self.results_dir),
            "processing_job_id": self.processing_job_id,
        }
        publish_job_card(self, message)
        close_processing_job(self, files, success=True, message=message, event=result)
        get_run_logger().info("%s; results in %s", message, self.results_dir)
        return result


def publish_job_card(job: Job, message: str) -> None:
    """A markdown artifact on the run: its LIMS job, results folder, and the run form
    filled in with this job's parameters (to rerun the collection changing one)."""
    from prefect.runtime import deployment

    lines = [
        f"# dc{job.data_collection_id} job {job.processing_job_id}: {message}",
        "",
        f"- Results folder: `{job.results_dir}`",
        f"- LIMS: ProcessingJob {job.processing_job_id} ({job.recipe}), "
        f"AutoProcProgram {job.program_id}",
        f"- Rerun command: `{(job.results_dir / 'command.txt').name}` in the folder",
    ]
    ui_url = ui_base_url()
    if ui_url and deployment.id:
        form = rerun_form_url(ui_url, str(deployment.id), job.data_collection_id, job.parameters)
        lines.append(f"- [Rerun this collection with these values, changing any]({form})")
    create_markdown_artifact("\n".join(lines), description=f"Job {job.processing_job_id}")


@task(**infrastructure_retries())
def load_collection(
    collection_id: int, announced: CollectionEvent | None, lims_block: str | None
) -> CollectionDescription:
    """Record the announced collection in the LIMS (if any), then read it back.

    Manual reruns name only the collection id; the LIMS row is then the source.
    """
    lims = open_lims(lims_block)
    lims.create_schema()
    if announced is not None:
        if announced.collection_id != collection_id:
            raise ValueError(
                f"collection_id {collection_id} does not match the announced event's "
                f"collection_id {announced.collection_id}"
            )
        lims.record_data_collection(announced)
    description = lims.get_collection(collection_id)
    if description is None:
        raise ValueError(
            f"data collection {collection_id} is not in the LIMS; announce it through the "
            "gateway first or record it with the DAQ"
        )
    return description


@task(**infrastructure_retries())
def record_processing_job(
    collection: CollectionDescription,
    *,
    recipe: str,
    chosen: Chosen[Any],
    trigger: Trigger,
    lims_block: str | None,
    program: str,
    traceparent: str | None = None,
) -> Job | EventAlreadyProcessed:
    """Write the ProcessingJob and a running AutoProcProgram (idempotent per flow run),
    its job folder (inputs, provenance, rerun command), and name the run for it.

    The program row names package, version, recipe and `program` (the method, as a
    scientist would cite it), as ISPyB's processingPrograms does for autoPROC or DIALS.

    An automatic run whose event already has a job of another flow run gets that
    answer back (returned, not raised: the task did its work, it found the first job).
    """
    lims = open_lims(lims_block)
    run_id = str(flow_run.get_id() or "local")
    flow_name = str(flow_run.get_flow_name() or recipe)
    run_url = flow_run_url(ui_base_url(), run_id) if flow_run.get_id() else None
    values = chosen.values()
    provenance = job_provenance(collection.data_files, values)
    record: dict[str, Any] = {
        "rerun.changed": chosen.changed,
        "rerun.based_on_job": chosen.based_on_job,
        "prefect.flow_run_url": run_url,
        **{f"provenance.{key}": value for key, value in lims_summary(provenance).items()},
    }
    try:
        job_id = lims.record_processing_job(
            data_collection_id=collection.collection_id,
            recipe=recipe,
            display_name=run_name(flow_name, collection.collection_id, None) + "-job{job}",
            automatic=trigger.automatic,
            triggered_by=trigger.who,
            parameters=values,
            run_key=run_id,
            trigger_event=trigger.event_id if trigger.automatic else None,
            trace_id=job_trace_id(traceparent),
            record=record,
        )
    except EventAlreadyProcessed as first:
        return first
    name = run_name(flow_name, collection.collection_id, job_id)
    if flow_run.get_id():
        rename_run(name)
    command = rerun_command(
        collection.collection_id,
        recipe,
        chosen.effective.model_dump(mode="json"),
    )
    program_id = lims.start_program(
        processing_job_id=job_id,
        programs=f"{code_identity()['package']} {code_identity()['version']} {recipe}: {program}",
        command_line=command,
        environment=f"prefect flow run {name} ({run_id})",
    )
    results_dir = results_directory(collection, recipe, job_id)
    inputs = {
        "parameters": values,
        "changed": chosen.changed,
        "based_on_job": chosen.based_on_job,
        "triggered_by": trigger.who,
        "automatic": trigger.automatic,
        "flow_run_id": run_id,
        "flow_run_name": name,
        "flow_run_url": run_url,
    }
    write_job_folder(results_dir, inputs, command, provenance)
    settings = chosen.effective.model_dump(mode="json")
    job = Job(collection, job_id, program_id, recipe, results_dir, lims_block, settings)
    logger = get_run_logger()
    logger.info(
        "%s job %d of dc%d (%s, %s): results in %s",
        recipe,
        job_id,
        collection.collection_id,
        "automatic" if trigger.automatic else "manual",
        trigger.who,
        results_dir,
    )
    if trigger.ignored:
        logger.warning(
            "triggered_by=%r ignored: Prefect did not create this run from an automation, "
            "so it is recorded as manual",
            trigger.ignored,
        )
    if chosen.based_on_job is not None:
        logger.info(
            "parameters of job %d, changed: %s", chosen.based_on_job, chosen.changed or "nothing"
        )
    return job


def rerun_command(collection_id: int, recipe: str, parameters: Mapping[str, Any]) -> str:
    """The CLI command that reruns this job: its deployment on its collection with every
    effective parameter spelled out, so it reproduces the job whatever ran since."""
    settings = [
        f"--set {shlex.quote(f'{key}={json.dumps(value)}')}" for key, value in parameters.items()
    ]
    return " ".join([f"prefect-beamline rerun {collection_id} --deployment {recipe}", *settings])


def require_results_under_roots(results_dir: Path) -> None:
    """The results folder lies under a data root, symlinks resolved (OutsideDataRoots)."""
    resolve_under_roots(results_dir, get_settings().data_roots, what="results folder")


def results_directory(collection: CollectionDescription, recipe: str, job_id: int) -> Path:
    """`<data folder>/processing/<recipe>/dc<id>-job<id>`: beside the data, one per job."""
    data_folder = Path(collection.data_files[0]).parent
    return data_folder / "processing" / recipe / f"dc{collection.collection_id}-job{job_id}"


def write_job_folder(
    results_dir: Path, inputs: Mapping[str, Any], command: str, provenance: Mapping[str, Any]
) -> None:
    """Leave inputs, provenance and the rerun command beside the results, readable
    without a server."""
    require_results_under_roots(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "inputs.json").write_text(json.dumps(inputs, indent=2, default=str))
    (results_dir / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2, default=str))
    (results_dir / "command.txt").write_text(command + "\n")


@task(**infrastructure_retries())
def close_processing_job(
    job: Job,
    files: Sequence[tuple[Path, str]],
    *,
    success: bool,
    message: str,
    event: Mapping[str, Any],
) -> None:
    """Register the result files as AutoProcProgramAttachments, end the job's
    AutoProcProgram (successful or failed, with a message for people), then emit
    `beamline.processing.completed` (or `.failed`) with `event` for downstream flows.

    One task, so the end of a job costs the server one task run (issue 17), and the
    event follows only a job the LIMS has closed. Attaching is idempotent per file, so a
    retry after a LIMS outage repeats nothing. The first file is the most important;
    ISPyB ranks higher numbers as more important.
    """
    lims = job.lims()
    for index, (path, file_type) in enumerate(files):
        lims.add_attachment(job.program_id, path, file_type, importance_rank=len(files) - index)
    lims.finish_program(job.program_id, success=success, message=message)
    publish_processing_event(job.collection, job, event, success=success)


def collection_resource(collection: CollectionDescription) -> dict[str, str]:
    """The Prefect resource of a collection, labelled like the gateway's events."""
    return {
        "prefect.resource.id": f"beamline.collection.{collection.collection_id}",
        LABEL_TECHNIQUE: collection.technique,
        LABEL_EXPERIMENT_TYPE: collection.experiment_type,
        LABEL_BEAMLINE: collection.beamline,
        LABEL_VISIT: collection.visit,
    }


def publish_processing_event(
    collection: CollectionDescription,
    job: Job,
    summary: Mapping[str, Any],
    *,
    success: bool = True,
) -> None:
    """Emit `beamline.processing.completed` (or `.failed`) for downstream flows."""
    related = [
        {
            "prefect.resource.id": f"beamline.processing-job.{job.processing_job_id}",
            "prefect.resource.role": "processing-job",
        }
    ]
    run_id = flow_run.get_id()
    if run_id:
        related.append(
            {
                "prefect.resource.id": f"prefect.flow-run.{run_id}",
                "prefect.resource.role": "flow-run",
            }
        )
    emit_event(
        event=COMPLETED_EVENT if success else FAILED_EVENT,
        resource=collection_resource(collection),
        related=related,
        payload={
            "processing_job_id": job.processing_job_id,
            "results_dir": str(job.results_dir),
            "summary": dict(summary),
        },
    )


CHUNK_CACHE_EXPIRATION = timedelta(days=14)


def current_recipe(collection: CollectionDescription) -> str:
    """The deployment this flow run belongs to: the recipe of its job.

    Runs started by a deployment (automation, UI, CLI) name it; a flow called directly
    (tests, scripts) takes the deployment of `prefect.yaml` that serves this flow for
    the collection's technique and experiment type, so `command.txt` always names one
    that exists.
    """
    from prefect.context import FlowRunContext
    from prefect.runtime import deployment

    if deployment.name:
        return str(deployment.name)
    from prefect_beamline.deployments import deployment_for_flow

    context = FlowRunContext.get()
    if context is None or context.flow is None:
        raise RuntimeError("open_job must be called inside a flow run")
    function = context.flow.fn
    entrypoint = f"{function.__module__}:{function.__name__}"
    return deployment_for_flow(entrypoint, collection.technique, collection.experiment_type)


def open_job(
    collection_id: int,
    announced: CollectionEvent | None,
    parameters: BaseModel | Mapping[str, Any] | None,
    *,
    triggered_by: str,
    lims_block: str | None,
    program: str,
    model: type[BaseModel] | None = None,
    data_file: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Job:
    """Record the collection and this run's ProcessingJob with a running program.

    Every flow opens its job here, whatever started it, so automatic and manual runs
    leave the same rows. With `model` (the technique's ScienceParameters), `parameters`
    are what this run asks to change (`flows.rerun.choose_parameters`); `job.settings`
    gives the effective ones. Without, `parameters` are recorded as given. `data_file`
    narrows the collection to one file (a movie); `extra` values (the movie) are
    recorded with the parameters and pick the latest job to start from.

    Data files outside PREFECT_BEAMLINE_DATA_ROOTS, or missing, fail the run here, before
    the LIMS or any folder is written.
    """
    roots = get_settings().data_roots
    announced_files = [*(announced.data_files if announced else []), *filter(None, [data_file])]
    require_data_files(announced_files, roots, must_exist=True)
    collection = load_collection(collection_id, announced, lims_block)
    if data_file is not None:
        collection = replace(collection, data_files=[data_file])
    require_data_files(collection.data_files, roots, must_exist=True)  # a rerun's LIMS row
    recipe = current_recipe(collection)
    require_results_under_roots(results_directory(collection, recipe, 0).parent)
    trigger = describe_run_trigger(triggered_by, run_created_by_automation())
    chosen: Chosen[Any]
    if model is not None:
        chosen = choose_parameters(
            model,
            open_lims(lims_block),
            collection_id,
            recipe,
            announced,
            parameters,
            automatic=trigger.automatic,
            same=extra,
        )
        chosen = replace(chosen, extra=dict(extra or {}))
    else:
        values = (
            parameters.model_dump() if isinstance(parameters, BaseModel) else dict(parameters or {})
        )
        chosen = Chosen(_AsGiven(), extra=values)
    job = record_processing_job(
        collection,
        recipe=recipe,
        chosen=chosen,
        trigger=trigger,
        lims_block=lims_block,
        program=program,
        traceparent=announced.traceparent if announced else None,
    )
    if isinstance(job, EventAlreadyProcessed):
        raise job  # ends the run as AlreadyProcessed (`run_once_per_event`)
    return job


class _AsGiven(BaseModel):
    """No science model: the parameters are recorded as the flow gives them."""


def run_once_per_event(function: Callable[..., Any]) -> Callable[..., Any]:
    """End a flow run whose event already has its job as Completed "AlreadyProcessed".

    A requeued or redelivered event, or two automations racing, may start a second run
    for one event: it stops at `open_job` before writing anything, and says in the UI
    which job and flow run processed the event.
    """

    # Prefect builds the parameter model from the annotations in the wrapper's module
    # (this one): resolve them here, while the flow module's names are at hand.
    function.__annotations__ = typing.get_type_hints(function, include_extras=True)

    @functools.wraps(function)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except EventAlreadyProcessed as first:
            message = f"{first}: nothing done"
            create_markdown_artifact(
                f"**Already processed.** The DAQ event `{first.event_id}` was processed "
                f"by {first.recipe} job {first.processing_job_id} in flow run "
                f"`{first.run_key}`. This run wrote no job and no results.",
                description="Already processed",
            )
            return Completed(name=ALREADY_PROCESSED, message=message)

    return run


# The parameters every technique flow takes, documented once: Prefect shows these
# descriptions in the deployment's run form.
FLOW_ARGUMENTS = """Args:
    collection_id: the data collection (LIMS dataCollectionId); a rerun needs only this.
    parameters: this technique's settings; a field left blank keeps the value the
        collection's latest run used (the DAQ's, unless a rerun changed it).
    collection: the DAQ's announcement (automations pass it; hidden from the form).
    triggered_by: who ran it (the CLI passes "cli:USER"; hidden from the form). A run is
        automatic only if a Prefect automation created it.
    lims_block: name of a LIMS Database block; empty: PREFECT_BEAMLINE_LIMS_URL.
"""


def technique_flow(
    name: str, *, more_arguments: str = ""
) -> Callable[[Callable[..., Any]], Flow[..., Any]]:
    """`@flow(name=..., log_prints=True)` with the shared arguments' documentation; runs
    are named `<technique>-dc<collection>` (then `-job<id>` once the job is recorded).

    `more_arguments` documents a flow's own extra parameters in the same style
    (`name: text`, continuation lines indented).
    """
    extra = textwrap.indent(textwrap.dedent(more_arguments).strip("\n"), " " * 4)

    def decorate(function: Callable[..., Any]) -> Flow[..., Any]:
        summary = inspect.cleandoc(function.__doc__ or "")
        function.__doc__ = f"{summary}\n\n{FLOW_ARGUMENTS}{extra}"
        decorated = flow(name=name, log_prints=True, flow_run_name=starting_run_name)
        return count_run_states(decorated(run_once_per_event(function)))

    return decorate
