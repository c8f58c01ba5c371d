"""What tests in every folder build: a DAQ's announcement of a collection, a synthetic MX
collection with the frames its writer produced, a task's cache key."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from prefect import Task
from pydantic import BaseModel

from prefect_beamline.events import CollectionEvent, CollectionEventKind, GridScan
from prefect_beamline.techniques.mx.synth import SyntheticCollection, write_mx_collection

Model = TypeVar("Model", bound=BaseModel)

DC = 42
MASTER = "/data/i03/mx12345-3/xtal_1_master.h5"
# Where each technique's test collections are taken: beamline, visit, first data file.
SITES = {
    "mx": ("i03", "mx12345-3", MASTER),
    "tomo": ("i13", "mg12345-1", "/data/i13/mg12345-1/tomo_1.nxs"),
    "em": ("m02", "bi23047-1", "/data/m02/bi23047-1/FoilHole_1_Data_0001.mrc"),
    "ptycho": ("i14", "cm12345-1", "/data/i14/cm12345-1/scan_1.h5"),
    "ssx": ("i24", "mx23456-1", "/data/i24/mx23456-1/jet_1_master.h5"),
}


def collection_event(
    collection_id: int = DC,
    *,
    technique: str = "mx",
    kind: CollectionEventKind = CollectionEventKind.finished,
    grid: GridScan | None = None,
    experiment_type: str | None = None,
    beamline: str | None = None,
    visit: str | None = None,
    data_file: str | None = None,
    processing_parameters: Mapping[str, object] | None = None,
) -> CollectionEvent:
    """The announcement of a collection at its technique's site (SITES) unless told
    otherwise; an MX one is a rotation of 3600 images, or a grid scan given `grid`."""
    site_beamline, site_visit, site_file = SITES[technique]
    mx = technique == "mx"
    return CollectionEvent(
        event_id=f"evt-{collection_id}-{kind.value}",
        kind=kind,
        technique=technique,
        experiment_type=experiment_type
        or (("gridscan" if grid else "rotation") if mx else "default"),
        beamline=beamline or site_beamline,
        visit=visit or site_visit,
        collection_id=collection_id,
        data_files=[data_file or site_file],
        image_range=(1, 3600) if mx and grid is None else None,
        grid=grid,
        processing_parameters=dict(processing_parameters or {}),
    )


def mx_collection_with_frames(
    folder: Path, **options: Any
) -> tuple[SyntheticCollection, np.ndarray]:
    """`write_mx_collection(folder, **options)` and the frames it wrote, image 1 first."""
    frames: dict[int, np.ndarray] = {}
    collection = write_mx_collection(
        folder, on_frame=lambda number, frame: frames.__setitem__(number, frame.copy()), **options
    )
    return collection, np.stack([frames[number] for number in sorted(frames)])


def cache_key(task: Task[..., Any], inputs: Mapping[str, Any]) -> str | None:
    """The key Prefect stores `task`'s result under for these inputs (its cache policy's)."""
    policy = task.cache_policy
    assert policy is not None and not isinstance(policy, type)
    return policy.compute_key(None, dict(inputs), {})


def eventually(check: Callable[[], Any], what: str, timeout_s: float, poll_s: float = 0.2) -> Any:
    """The first truthy result of `check`, polled until `timeout_s`; else fail naming
    `what`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(poll_s)
    raise AssertionError(f"not seen within {timeout_s:.0f} s: {what}")


def automatic_run_parameters(
    model: type[Model], announced: CollectionEvent | None, requested: BaseModel | None
) -> Model:
    """The parameters an automatic run uses (`flows.rerun.choose_parameters`): the DAQ's
    announcement, with what the run was given on top; no LIMS lookup is made for it."""
    from prefect_beamline.flows.rerun import choose_parameters
    from prefect_beamline.lims import Lims

    chosen = choose_parameters(
        model, Lims("sqlite://"), 0, "any", announced, requested, automatic=True
    )
    return chosen.effective


class Recorder:
    """A live results stream stand-in that keeps what it is sent, in order."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def publish(self, message: dict[str, Any]) -> None:
        with self.lock:
            self.messages.append(message)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        with self.lock:
            return [message for message in self.messages if message["type"] == kind]

    def close(self) -> None:
        pass
