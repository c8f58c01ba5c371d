"""Data collections as the LIMS holds them: visits, sessions, groups, grids, files.

Visits: an ISPyB visit is `<proposalCode><proposalNumber>-<visit_number>`, e.g.
"mx12345-1" -> Proposal ("mx", "12345"), BLSession visit_number 1. A visit that does not
parse so (other facilities' conventions, e.g. "IH-MX-2532") is stored whole as the
proposalCode with an empty proposalNumber and visit_number 0, and reads back unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from sqlalchemy import select
from sqlalchemy.orm import Session

from prefect_beamline.events import GridScan
from prefect_beamline.lims.schema import (
    PATH_LENGTH,
    BLSession,
    DataCollection,
    GridInfo,
    Proposal,
)
from prefect_beamline.lims.transaction import check_length, first_or_add, first_row, now

_VISIT = re.compile(r"^([A-Za-z]+)(\d+)-(0|[1-9]\d*)$")
_TEMPLATE_STEM = re.compile(r"^(.*?)(?:_master|_#+)?$")


@dataclass(frozen=True)
class CollectionDescription:
    """What the flows need to know about a data collection, read from the LIMS."""

    collection_id: int
    beamline: str
    visit: str
    technique: str
    experiment_type: str
    data_files: list[str]
    image_range: tuple[int, int] | None
    grid: GridScan | None


def split_visit(visit: str) -> tuple[str, str, int]:
    """ISPyB visit "mx12345-1" -> ("mx", "12345", 1); anything else -> (visit, "", 0)."""
    match = _VISIT.match(visit)
    if match is None:
        return visit, "", 0
    return match.group(1), match.group(2), int(match.group(3))


def join_visit(proposal_code: str, proposal_number: str, visit_number: int) -> str:
    """The inverse of `split_visit`."""
    if not proposal_number:
        return proposal_code
    return f"{proposal_code}{proposal_number}-{visit_number}"


def upsert_session(
    session: Session, visit: str, code: str, number: str, visit_number: int, beamline: str
) -> int:
    """sessionId of the visit, creating its Proposal and BLSession when new."""
    proposal_id = session.scalar(
        select(Proposal.proposalId).filter_by(proposalCode=code, proposalNumber=number)
    )
    if proposal_id is None:
        proposal = Proposal(proposalCode=code, proposalNumber=number)
        session.add(proposal)
        session.flush()
        proposal_id = proposal.proposalId
    blsession = session.scalar(
        select(BLSession).filter_by(proposalId=proposal_id, visit_number=visit_number)
    )
    if blsession is None:
        blsession = BLSession(
            proposalId=proposal_id, visit_number=visit_number, beamLineName=beamline
        )
        session.add(blsession)
        session.flush()
    elif blsession.beamLineName is None:
        blsession.beamLineName = beamline
    elif blsession.beamLineName.casefold() != beamline.casefold():
        raise ValueError(
            f"visit {visit!r} is on beamline {blsession.beamLineName!r} in the LIMS "
            f"(BLSession {blsession.sessionId}), but the event names beamline {beamline!r}"
        )
    return blsession.sessionId


def upsert_grid(session: Session, collection: DataCollection, grid: GridScan) -> None:
    row = first_or_add(session, GridInfo, {"dataCollectionId": collection.dataCollectionId})
    row.dataCollectionGroupId = collection.dataCollectionGroupId
    row.steps_x, row.steps_y = grid.steps_x, grid.steps_y
    row.dx_mm, row.dy_mm = grid.dx_um / 1000.0, grid.dy_um / 1000.0
    row.snaked = grid.snaked
    row.orientation = "horizontal"
    row.recordTimeStamp = now()


def read_grid(session: Session, collection: DataCollection) -> GridScan | None:
    """The collection's GridInfo (or, as older ISPyB has it, its group's)."""
    row = first_row(session, GridInfo, {"dataCollectionId": collection.dataCollectionId})
    if row is None:  # the group's own GridInfo (filter_by renders None as IS NULL)
        group_id = collection.dataCollectionGroupId
        row = first_row(
            session, GridInfo, {"dataCollectionGroupId": group_id, "dataCollectionId": None}
        )
    if row is None or None in (row.steps_x, row.steps_y, row.dx_mm, row.dy_mm):
        return None
    assert row.steps_x is not None and row.steps_y is not None
    assert row.dx_mm is not None and row.dy_mm is not None
    return GridScan(
        steps_x=round(row.steps_x),
        steps_y=round(row.steps_y),
        dx_um=round(row.dx_mm * 1000.0, 6),
        dy_um=round(row.dy_mm * 1000.0, 6),
        snaked=bool(row.snaked),
    )


def split_data_file(data_file: str) -> tuple[str, str]:
    """(imageDirectory ending in '/', fileTemplate) of a data file path."""
    path = PurePosixPath(data_file)
    directory = str(path.parent).rstrip("/") + "/"
    check_length(directory, PATH_LENGTH, "DataCollection.imageDirectory")
    check_length(path.name, PATH_LENGTH, "DataCollection.fileTemplate")
    return directory, path.name


def prefix_and_suffix(file_template: str) -> tuple[str | None, str | None]:
    """ISPyB's imagePrefix and imageSuffix: "xtal_1_master.h5" -> ("xtal_1", "h5")."""
    stem, dot, suffix = file_template.rpartition(".")
    if not dot:
        stem, suffix = file_template, ""
    match = _TEMPLATE_STEM.match(stem)
    prefix = match.group(1) if match else stem
    return (prefix if 0 < len(prefix) <= 45 else None), (suffix if 0 < len(suffix) <= 45 else None)
