"""Grid-scan X-ray centring results on RabbitMQ, in the shape dodal's `ZocaloResults` reads.

dodal subscribes to its channel (`xrc.i03` by default) with `workflows.recipe.
wrap_subscribe`: each message carries the header `workflows-recipe: True` and a wrapped
recipe whose current step's `parameters` hold `dcid`, `dcgid` (and `gpu`, true for GPU
results, which dodal ignores unless it compares both); the payload is `{"results":
[XrcResult, ...]}`, each with `centre_of_mass`, `max_voxel`, `max_count`, `n_voxels`,
`total_count` and `bounding_box` in grid units. dodal sorts the crystals by
`max_count` and subtracts 0.5 from `centre_of_mass`: a centre at grid point (i, j) is
sent as (i + 0.5, j + 0.5, 0.5). Grids here are 2-D, so z is the single layer 0.

The MX flow calls `publish_configured` at the end of a grid scan when
its beamline is in `zocalo_xrc_beamlines`; the live path can call `publish_xrc_results` directly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypedDict

from prefect_beamline.techniques.mx.analysis import GridResult
from prefect_beamline.zocalo.transport import ensure_queue, pika_transport

if TYPE_CHECKING:
    from prefect_beamline.lims import Lims

SERVICE_NAME = "prefect-beamline X-ray centring"


class XrcResult(TypedDict):
    """One crystal, as dodal's `XrcResult` declares it (grid units)."""

    centre_of_mass: list[float]
    max_voxel: list[int]
    max_count: int
    n_voxels: int
    total_count: int
    bounding_box: list[list[int]]
    sample_id: int | None


def xrc_result(result: GridResult) -> XrcResult:
    """Our grid result in Zocalo's shape: voxel centres at +0.5, box max exclusive."""
    max_x = result.max_voxel_x if result.max_voxel_x is not None else round(result.x)
    max_y = result.max_voxel_y if result.max_voxel_y is not None else round(result.y)
    return {
        "centre_of_mass": [result.x + 0.5, result.y + 0.5, 0.5],
        "max_voxel": [int(max_x), int(max_y), 0],
        "max_count": round(result.max_count),
        "n_voxels": int(result.n_voxels if result.n_voxels is not None else 1),
        "total_count": round(
            result.total_count if result.total_count is not None else result.max_count
        ),
        "bounding_box": [
            [int(result.box_min_x), int(result.box_min_y), 0],
            [int(result.box_max_x) + 1, int(result.box_max_y) + 1, 1],
        ],
        "sample_id": None,
    }


def xrc_recipe(queue: str, dcid: int, dcgid: int, results: list[XrcResult]) -> dict[str, Any]:
    """A one-step recipe delivering `results` to `queue`, for `RecipeWrapper.start`."""
    return {
        "1": {
            "service": SERVICE_NAME,
            "queue": queue,
            "parameters": {"dcid": dcid, "dcgid": dcgid, "gpu": False},
        },
        "start": [[1, {"results": list(results)}]],
    }


def publish_xrc_results(
    url: str, queue: str, dcid: int, dcgid: int, results: list[XrcResult]
) -> None:
    """Send one results message to `queue` at the RabbitMQ `url` (no crystal: `[]`)."""
    from workflows.recipe import RecipeWrapper

    ensure_queue(url, queue)
    transport = pika_transport(url)
    transport.connect()
    try:
        RecipeWrapper(recipe=xrc_recipe(queue, dcid, dcgid, results), transport=transport).start()
    finally:
        transport.disconnect()


def publish_configured(
    lims: Lims, beamline: str, dcid: int, result: GridResult | None
) -> str | None:
    """Publish one grid scan's result when its beamline is in `zocalo_xrc_beamlines`;
    the queue it went to, or None."""
    from prefect_beamline.lims.schema import DataCollection
    from prefect_beamline.settings import get_settings

    settings = get_settings()
    if beamline not in settings.zocalo_xrc_beamlines:
        return None
    with lims.transaction(write=False) as session:
        dcgid = session.get_one(DataCollection, dcid).dataCollectionGroupId
    queue = settings.zocalo_xrc_queue.format(beamline=beamline)
    found = [xrc_result(result)] if result is not None and result.status == "success" else []
    publish_xrc_results(settings.zocalo_rabbitmq_url.get_secret_value(), queue, dcid, dcgid, found)
    return queue


def live_centre_hook(job: Any) -> Callable[[GridResult | None, Sequence[Any]], None]:
    """The live path's centre hook (entry point `prefect_beamline.centre_hooks`): the
    centre on RabbitMQ for dodal the moment the last image's result is in, for the
    beamlines in `zocalo_xrc_beamlines` (others: nothing)."""

    def publish(centre: GridResult | None, images: Sequence[Any]) -> None:
        publish_configured(job.lims(), job.collection.beamline, job.data_collection_id, centre)

    return publish
