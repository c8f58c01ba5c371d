"""A scientist's rerun of every technique, in the real Prefect UI and from the CLI.

Each technique's `tests/techniques/<t>/rerun_case.py` announces a collection with the
DAQ's own settings. Its automatic run finishes; then, in Debian's chromium (headless,
driven by Playwright; no browser download), the Prefect UI's run form, opened filled in
with the collection's latest values (`prefect-beamline rerun --form`), must show the
DAQ's values; one field is changed and submitted. The new run must be named for the
collection and its job, its LIMS job manual, changed in exactly that field, every DAQ
value intact. A CLI rerun changing another field must keep the browser's change too
(it starts from the latest job). One stack (the session's), one browser, all techniques.

Chromium is required where PREFECT_BEAMLINE_TEST_BROWSER=1 (CI installs it, .ci/run);
elsewhere the browser test is skipped when /usr/bin/chromium is missing.
"""

from __future__ import annotations

import importlib
import io
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from prefect_beamline.demo import post_event
from prefect_beamline.lims import ProcessingJobSummary
from prefect_beamline.runs import FlowRunInfo, read_flow_run, wait_for_state
from prefect_beamline.stack import LocalStack, cli
from prefect_beamline.techniques import registry
from tests.e2e.helpers import RUN_TIMEOUT_S, completed_run, next_collection_id
from tests.helpers import eventually

pytestmark = pytest.mark.e2e
CHROMIUM = Path("/usr/bin/chromium")
BROWSER_EXPECTED = "PREFECT_BEAMLINE_TEST_BROWSER"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Screenshots for the docs: PREFECT_BEAMLINE_SCREENSHOTS=docs writes them to docs/images.
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "images"
TECHNIQUES = sorted(registry())


def case(name: str) -> ModuleType:
    return importlib.import_module(f"tests.techniques.{name}.rerun_case")


@pytest.fixture(scope="module")
def announced(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    """Every technique's collection, announced at once; its automatic run completed."""
    collections = {}
    for name in TECHNIQUES:
        collection_id = next_collection_id()
        folder = tmp_path_factory.mktemp(f"rerun-{name}") / "data"
        post_event(stack, case(name).announcement(folder, collection_id))
        collections[name] = collection_id
    for name, collection_id in collections.items():
        completed_run(stack, case(name).DEPLOYMENT, collection_id)
    return collections


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One headless chromium page for every technique's test."""
    if not CHROMIUM.exists():
        if os.environ.get(BROWSER_EXPECTED) == "1":
            pytest.fail(f"{BROWSER_EXPECTED}=1 but {CHROMIUM} is missing: apt-get install chromium")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        yield browser.new_page(viewport={"width": 1000, "height": 900})
        browser.close()


def latest_job(stack: LocalStack, collection_id: int) -> ProcessingJobSummary:
    return stack.lims.jobs_for_collection(collection_id)[-1]


def new_finished_job(stack: LocalStack, collection_id: int, known: int) -> ProcessingJobSummary:
    """The collection's job after the `known` first ones, once its program has ended."""

    def finished() -> ProcessingJobSummary | None:
        jobs = stack.lims.jobs_for_collection(collection_id)
        if len(jobs) > known and jobs[known].program_status in ("success", "failed"):
            return jobs[known]
        return None

    return eventually(finished, f"job {known + 1} of dc{collection_id} finished", RUN_TIMEOUT_S)


def run_of(stack: LocalStack, job: ProcessingJobSummary) -> FlowRunInfo:
    """The job's flow run, found through the link its LIMS record holds."""
    url = job.record["prefect.flow_run_url"]
    assert url.startswith(f"{stack.ui_url}/runs/flow-run/")
    run_id = url.rsplit("/", 1)[-1]
    return wait_for_state(stack.api_url, run_id, {"COMPLETED"}, RUN_TIMEOUT_S)


def prefilled_form(stack: LocalStack, name: str, collection_id: int) -> str:
    done = subprocess.run(
        cli("rerun", str(collection_id), "--deployment", case(name).DEPLOYMENT, "--form"),
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def form_input(page: Any, title: str) -> Any:
    """The input of the form field titled `title` (the innermost labelled block)."""
    exact = re.compile(rf"^\s*{re.escape(title)}( \(Optional\))?\s*$")
    label = page.locator("label.p-label__label", has_text=exact)
    return page.locator(".p-label", has=label).last.locator("input").first


def check_rerun(
    stack: LocalStack,
    name: str,
    collection_id: int,
    job: ProcessingJobSummary,
    changed: dict[str, Any],
    base: dict[str, Any],
) -> None:
    """A manual job named for its collection, changed in exactly `changed`, with every
    other value of `base` (the DAQ's and earlier reruns') intact."""
    assert job.program_status == "success", job.program_message
    assert not job.automatic
    assert job.changed == changed
    assert {k: v for k, v in job.parameters.items() if k in base} == {**base, **changed}
    assert set(job.parameters) - set(base) <= {"movie"}  # cryo-EM: the job's movie
    assert job.record["rerun.based_on_job"] is not None
    run = run_of(stack, job)
    technique = case(name).DEPLOYMENT.split("-")[0]
    assert run.name == f"{technique}-dc{collection_id}-job{job.processing_job_id}"
    assert job.display_name == run.name


@pytest.mark.parametrize("name", TECHNIQUES)
def test_ui_rerun_shows_the_collections_values_and_changes_only_the_edited_field(
    name: str, stack: LocalStack, announced: dict[str, int], page: Any
) -> None:
    collection_id = announced[name]
    automatic = latest_job(stack, collection_id)
    assert automatic.automatic and automatic.changed == {}
    daq = case(name).DAQ
    assert {key: automatic.parameters[key] for key in daq} == daq
    base = {k: v for k, v in automatic.parameters.items() if k != "movie"}

    page.goto(prefilled_form(stack, name, collection_id))
    field, title, value = case(name).UI_CHANGE
    box = form_input(page, title)
    box.wait_for(timeout=30_000)
    for key, announced_value in daq.items():
        if isinstance(announced_value, int | float) and not isinstance(announced_value, bool):
            shown = form_input(page, key.replace("_", " ").title()).input_value()
            assert float(shown) == announced_value, (key, shown)
    screenshot(page, f"rerun-form-{name}.png")
    box.fill(str(value))
    known = len(stack.lims.jobs_for_collection(collection_id))
    page.locator("button[type=submit]").click()
    job = new_finished_job(stack, collection_id, known)
    check_rerun(stack, name, collection_id, job, {field: value}, base)
    page.goto(job.record["prefect.flow_run_url"])
    page.get_by_text(f"dc{collection_id}-job{job.processing_job_id}").first.wait_for(timeout=30_000)
    page.get_by_text("results in").first.wait_for(timeout=30_000)  # the run's own log
    screenshot(page, f"rerun-run-{name}.png")

    # From the CLI, another field: the browser's change stays (the latest job is the base).
    cli_field, cli_value = case(name).CLI_CHANGE
    known = len(stack.lims.jobs_for_collection(collection_id))
    done = subprocess.run(
        cli(
            "rerun",
            str(collection_id),
            "--set",
            f"{cli_field}={cli_value}",
            "--as",
            "dr-who",
            "--wait",
        ),
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    by_cli = new_finished_job(stack, collection_id, known)
    check_rerun(stack, name, collection_id, by_cli, {cli_field: cli_value}, {**base, field: value})
    assert by_cli.triggered_by == "cli:dr-who"


def screenshot(page: Any, name: str) -> None:
    """Into docs/images, as a 64-colour PNG (small), when asked to."""
    if os.environ.get("PREFECT_BEAMLINE_SCREENSHOTS") == "docs":
        from PIL import Image

        image = Image.open(io.BytesIO(page.screenshot(full_page=False)))
        image.convert("RGB").quantize(colors=64).save(SCREENSHOTS / name, optimize=True)


def test_a_run_claiming_an_automation_is_recorded_as_manual(
    stack: LocalStack, announced: dict[str, int]
) -> None:
    """`triggered_by: automation:...` sent by hand (API, a copied run) makes no
    automatic job and claims no DAQ event: only Prefect's automations create those."""
    collection_id = announced["mx"]
    known = len(stack.lims.jobs_for_collection(collection_id))
    deployment = httpx.get(
        f"{stack.api_url}/deployments/name/{case('mx').DEPLOYMENT}", timeout=10.0
    ).json()
    response = httpx.post(
        f"{stack.api_url}/deployments/{deployment['id']}/create_flow_run",
        json={"parameters": {"collection_id": collection_id, "triggered_by": "automation:forged"}},
        timeout=10.0,
    )
    assert response.status_code < 300, response.text
    job = new_finished_job(stack, collection_id, known)
    assert not job.automatic
    assert job.triggered_by == "prefect-ui"
    run = read_flow_run(stack.api_url, response.json()["id"])
    assert run.name.endswith(f"-job{job.processing_job_id}")
