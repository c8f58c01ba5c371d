"""A Zocalo/dodal beamline on the session's stack, with the field's own packages.

- dodal's `ZocaloTrigger` sends to RabbitMQ -> `prefect-beamline zocalo-bridge` -> outbox ->
  automation -> grid-scan flow run -> LIMS rows -> X-ray centre on RabbitMQ, read by
  dodal's own `ZocaloResults` device, and by HTTP from the gateway.
- `zocalo.go -r <deployment> <dcid>` (python-zocalo's command) asks for a manual run;
  the bridge killed (SIGKILL) between its outbox commit and its ack loses nothing and
  runs nothing twice; typing `zocalo.go` again is a new run.
- A Bluesky RunEngine with ophyd's simulated detector posts its documents to the
  gateway; its start has no data collection id: the gateway creates the collection and
  the stop runs it to completion.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pika
import pytest
from sqlalchemy import update

from prefect_beamline.events import CollectionEvent, CollectionEventKind, GridScan
from prefect_beamline.gateway.outbox import Outbox
from prefect_beamline.lims import Lims
from prefect_beamline.lims.schema import DataCollection, DataCollectionGroup
from prefect_beamline.runs import flow_runs_for_collection
from prefect_beamline.stack import LocalStack, ManagedProcess, cli, start_process
from prefect_beamline.techniques.mx.synth import write_mx_collection
from prefect_beamline.zocalo.bridge import ACK_DELAY_VARIABLE
from prefect_beamline.zocalo.transport import ensure_queue
from tests.conftest import ZOCALO_E2E_BEAMLINE
from tests.e2e.helpers import completed_run, next_collection_id
from tests.rabbit import RESULTS_ENVIRONMENT, TRIGGER_ENVIRONMENT, amqp_url

pytestmark = pytest.mark.e2e
GRIDSCAN = "mx-processing/mx-gridscan"
ROTATION = "mx-processing/mx-rotation"
RECIPE_QUEUE = "processing_recipe"
VISIT = "cm40607-5"


class Bridges:
    """`prefect-beamline zocalo-bridge` processes of this module, on the session vhost."""

    def __init__(self, stack: LocalStack, vhost: str, logs: Path) -> None:
        self.stack, self.vhost, self.logs = stack, vhost, logs
        self.running: ManagedProcess | None = None

    def start(self, **env: str) -> ManagedProcess:
        environment = dict(self.stack.env)
        environment["PREFECT_BEAMLINE_ZOCALO_RABBITMQ_URL"] = amqp_url(self.vhost)
        environment.update(env)
        ensure_queue(amqp_url(self.vhost), RECIPE_QUEUE)  # as the facility's broker has it
        process = start_process("zocalo-bridge", cli("zocalo-bridge"), environment, self.logs)
        wait_until(lambda: consumers(self.vhost) == 1, 90, process.log_tail)
        return process

    def steady(self) -> ManagedProcess:
        """A bridge without fault injection, started once."""
        if self.running is None or self.running.process.poll() is not None:
            self.running = self.start()
        return self.running


@pytest.fixture(scope="module")
def bridges(
    stack: LocalStack, rabbit_vhost: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Bridges]:
    managed = Bridges(stack, rabbit_vhost, tmp_path_factory.mktemp("bridge-logs"))
    yield managed
    if managed.running is not None:
        managed.running.stop()


@pytest.fixture(autouse=True)
def zocalo_environment(zocalo_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """dodal and zocalo.go read the site configuration named by ZOCALO_CONFIG."""
    monkeypatch.setenv("ZOCALO_CONFIG", str(zocalo_config))
    monkeypatch.setenv("ZOCALO_GO_USER", "i03-scientist")


def consumers(vhost: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url(vhost)))
    try:
        return int(
            connection.channel().queue_declare(RECIPE_QUEUE, passive=True).method.consumer_count
        )
    except pika.exceptions.ChannelClosedByBroker:
        return 0
    finally:
        if connection.is_open:
            connection.close()


def queue_depth(vhost: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url(vhost)))
    try:
        declared = connection.channel().queue_declare(RECIPE_QUEUE, passive=True)
        return int(declared.method.message_count)
    finally:
        connection.close()


def wait_until(condition: Callable[[], Any], timeout_s: float, why: Callable[[], str] = str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if found := condition():
            return found
        time.sleep(0.1)
    raise TimeoutError(f"condition not met in {timeout_s} s\n{why()}")


def record_as_hyperion(
    lims: Lims, master: Path, collection_id: int, ispyb_type: str, grid: GridScan | None
) -> None:
    """The DataCollection as the DAQ's ISPyB callback writes it before triggering Zocalo."""
    event = CollectionEvent(
        event_id=f"hyperion-{collection_id}",
        kind=CollectionEventKind.started,
        technique="mx",
        experiment_type="gridscan" if grid else "rotation",
        beamline=ZOCALO_E2E_BEAMLINE,
        visit=VISIT,
        collection_id=collection_id,
        data_files=[str(master)],
        grid=grid,
    )
    lims.record_data_collection(event)
    with lims.transaction(write=True) as session:
        group_id = session.get_one(DataCollection, collection_id).dataCollectionGroupId
        session.execute(
            update(DataCollectionGroup)
            .where(DataCollectionGroup.dataCollectionGroupId == group_id)
            .values(experimentType=ispyb_type)
        )


def zocalo_go(*args: str) -> None:
    """python-zocalo's own `zocalo.go`, as a scientist types it."""
    command = [str(Path(sys.executable).parent / "zocalo.go"), "-e", TRIGGER_ENVIRONMENT, *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, env=os.environ)
    assert done.returncode == 0, done.stdout + done.stderr


def test_bridge_killed_before_its_ack_loses_nothing_and_runs_nothing_twice(
    stack: LocalStack, bridges: Bridges, tmp_path: Path, rabbit_vhost: str
) -> None:
    if bridges.running is not None:  # the fault-injected bridge must get the message
        bridges.running.stop()
    collection_id = next_collection_id()
    synthetic = write_mx_collection(tmp_path / "data", name="xtal_z", n_images=4, seed=6)
    record_as_hyperion(stack.lims, synthetic.master_file, collection_id, "SAD", None)
    outbox = Outbox(stack.env["PREFECT_BEAMLINE_OUTBOX_URL"])

    def requests() -> list[str]:
        prefix = f"zocalo-go-{collection_id}-"
        return [row.event_id for row in outbox.list() if row.event_id.startswith(prefix)]

    def runs() -> list[str]:
        return [run.id for run in flow_runs_for_collection(stack.api_url, ROTATION, collection_id)]

    doomed = bridges.start(**{ACK_DELAY_VARIABLE: "120"})
    zocalo_go("-r", "mx-rotation", str(collection_id))
    wait_until(lambda: requests() and runs(), 60, doomed.log_tail)  # stored, run created
    os.kill(doomed.process.pid, signal.SIGKILL)  # ... and not acked
    doomed.process.wait(30)
    assert queue_depth(rabbit_vhost) == 1  # RabbitMQ holds it for redelivery

    bridges.steady()
    wait_until(lambda: queue_depth(rabbit_vhost) == 0, 60, bridges.steady().log_tail)
    assert len(requests()) == 1 and len(runs()) == 1
    steady = bridges.steady()  # recognised as the same message:
    wait_until(lambda: f"zocalo-go-{collection_id}" in steady.log_tail(400)
               and "duplicate" in steady.log_tail(400), 30, steady.log_tail)  # fmt: skip
    completed_run(stack, ROTATION, collection_id)
    (job,) = stack.lims.jobs_for_collection(collection_id)
    assert not job.automatic and job.triggered_by.startswith(f"zocalo.go:{getpass.getuser()}@")

    zocalo_go("-r", "mx-rotation", str(collection_id))  # typed again: a new request
    wait_until(lambda: len(runs()) == 2, 60, bridges.steady().log_tail)
    assert len(requests()) == 2


def test_dodal_grid_scan_runs_and_dodal_reads_the_x_ray_centre(
    stack: LocalStack, bridges: Bridges, tmp_path: Path
) -> None:
    from dodal.devices.zocalo import ZocaloResults, ZocaloStartInfo, ZocaloTrigger

    bridges.steady()
    collection_id = next_collection_id()
    grid = GridScan(steps_x=4, steps_y=3, dx_um=20, dy_um=20, snaked=True)
    synthetic = write_mx_collection(tmp_path / "data", name="grid_z", grid=grid, seed=5)
    record_as_hyperion(stack.lims, synthetic.master_file, collection_id, "Mesh3D", grid)

    async def run_as_hyperion() -> tuple[Any, Any, Any]:
        results = ZocaloResults(
            name="zocalo",
            zocalo_environment=RESULTS_ENVIRONMENT,
            channel=f"xrc.{ZOCALO_E2E_BEAMLINE}",
            timeout_s=180,
        )
        ensure_queue(amqp_url("/"), results.channel)  # as the facility's broker has it
        await results.connect()
        await results.stage()  # subscribes to the results queue, as a plan does first
        trigger = ZocaloTrigger(TRIGGER_ENVIRONMENT)
        trigger.run_start(ZocaloStartInfo(collection_id, None, 0, grid.steps_x * grid.steps_y, 0))
        trigger.run_end(collection_id)
        try:
            await results.trigger()  # waits for the results message
            return (
                await results.centre_of_mass.get_value(),
                await results.ispyb_dcid.get_value(),
                await results.max_voxel.get_value(),
            )
        finally:
            await results.unstage()

    centres, dcid, max_voxels = asyncio.run(run_as_hyperion())

    completed_run(stack, GRIDSCAN, collection_id)
    assert dcid == collection_id
    true_x, true_y = synthetic.grid_centre_true or (0.0, 0.0)
    assert abs(centres[0][0] - 0.5 - true_x) < 0.75 and abs(centres[0][1] - 0.5 - true_y) < 0.75
    (job,) = stack.lims.jobs_for_collection(collection_id)
    assert job.automatic and job.triggered_by == f"automation:zocalo-{collection_id}-end"
    answer = httpx.get(
        f"{stack.gateway_url}/api/v1/collections/{collection_id}/results",
        headers={"Authorization": f"Bearer {stack.gateway_token}"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    (shown,) = answer.json()["jobs"]
    (published,) = shown["results"]["zocalo_xrc"]
    assert published["max_voxel"] == max_voxels[0].tolist()
    assert published["centre_of_mass"] == centres[0].tolist()


def test_bluesky_run_engine_without_a_dcid_runs_to_completion(
    stack: LocalStack, tmp_path: Path
) -> None:
    from bluesky import RunEngine
    from bluesky.plans import count
    from ophyd.sim import det

    synthetic = write_mx_collection(tmp_path / "data", name="thau_1", n_images=4, seed=7)
    answers: list[httpx.Response] = []

    def post_document(name: str, doc: dict[str, Any]) -> None:
        """The DAQ's callback: every document to the gateway."""
        answers.append(
            httpx.post(
                f"{stack.gateway_url}/api/v1/bluesky",
                json={"name": name, "doc": doc},
                headers={"Authorization": f"Bearer {stack.gateway_token}"},
                timeout=10,
            )
        )

    engine = RunEngine({})
    engine.subscribe(post_document)
    metadata = {
        "experiment_type": "SAD",
        "beamline": "i03",
        "visit": "cm40607-6",
        "data_file": str(synthetic.master_file),
        "num_images": 4,
        "processing": {"images_per_chunk": 4},
    }
    engine(count([det], num=2), **metadata)

    assert all(answer.status_code in (200, 202) for answer in answers), [a.text for a in answers]
    start, *_, stop = answers
    collection_id = start.json()["collection_id"]
    assert stop.json()["collection_id"] == collection_id
    completed_run(stack, ROTATION, collection_id)
    collection = stack.lims.get_collection(collection_id)
    assert collection is not None and collection.data_files == [str(synthetic.master_file)]
    (job,) = stack.lims.jobs_for_collection(collection_id)
    assert job.program_status == "success"
