"""`GET /api/v1/collections/{collection_id}/results`: a collection's results, for the DAQ.

Read from the LIMS, so it answers for any job, whoever started it: the collection as
the LIMS holds it and each processing job with its state, result files and, where the
technique's records module offers `results_summary(lims, program_id)`, its results (for
MX: totals and the X-ray centre, also in dodal's `XrcResult` shape). The DAQ's token.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

from fastapi import FastAPI, Path, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from prefect_beamline.events import LIMS_INTEGER_MAX
from prefect_beamline.gateway.auth import AuthError, Forbidden, GatewayAccess
from prefect_beamline.lims import Lims

logger = logging.getLogger("prefect_beamline.gateway")


def collection_results(lims: Lims, collection_id: int) -> dict[str, Any] | None:
    """The collection and its jobs with their results; None for an unknown collection."""
    from prefect_beamline.techniques import registry

    collection = lims.get_collection(collection_id)
    if collection is None:
        return None
    records = registry()[collection.technique].module("records")
    summarize = getattr(records, "results_summary", None)
    jobs = []
    for job in lims.jobs_for_collection(collection_id):
        shown = job.as_dict()
        if summarize is not None and job.program_id is not None:
            shown["results"] = summarize(lims, job.program_id)
        jobs.append(shown)
    return {"collection": asdict(collection), "jobs": jobs}


def add_results_endpoint(app: FastAPI, *, access: GatewayAccess, lims: Lims) -> None:
    @app.get(
        "/api/v1/collections/{collection_id}/results",
        summary="A collection's processing jobs and results, from the LIMS (DAQ token)",
        responses={
            401: {"description": "Token missing or wrong"},
            404: {"description": "Unknown collection"},
            503: {"description": "LIMS unavailable; retry"},
        },
    )
    async def results(
        request: Request,
        collection_id: int = Path(ge=1, le=LIMS_INTEGER_MAX, description="dataCollectionId"),
    ) -> JSONResponse:
        try:
            access.check_daq(request.headers.get("authorization"))
        except Forbidden as error:
            return JSONResponse({"detail": str(error)}, status_code=403)
        except AuthError as error:
            return JSONResponse(
                {"detail": str(error)}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
            )
        try:
            found = await run_in_threadpool(collection_results, lims, collection_id)
        except ValueError as error:  # a LIMS row that describes no processable collection
            return JSONResponse({"detail": f"data collection {collection_id}: {error}"}, 422)
        except Exception as error:
            logger.exception("LIMS read of data collection %s failed", collection_id)
            return JSONResponse(
                {"detail": f"LIMS read of data collection {collection_id} failed; retry: "
                 f"{error.__class__.__name__}"},
                status_code=503,
            )  # fmt: skip
        if found is None:
            return JSONResponse(
                {"detail": f"data collection {collection_id} is not in the LIMS"}, 404
            )
        return JSONResponse(_jsonable(found))


def _jsonable(value: Any) -> Any:
    """datetimes as ISO 8601; tuples as lists."""
    import json

    return json.loads(
        json.dumps(value, default=lambda v: v.isoformat() if hasattr(v, "isoformat") else str(v))
    )
