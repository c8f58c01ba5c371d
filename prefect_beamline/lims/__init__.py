"""The LIMS: an ISPyB-compatible subset (`schema`) and its one idempotent writer (`Lims`)."""

from prefect_beamline.lims.tomogram import TomogramRecord
from prefect_beamline.lims.writer import (
    CollectionDescription,
    GridResult,
    ImageQuality,
    Lims,
    ProcessingJobSummary,
    PtychoResult,
)

__all__ = [
    "CollectionDescription",
    "GridResult",
    "ImageQuality",
    "Lims",
    "ProcessingJobSummary",
    "PtychoResult",
    "TomogramRecord",
]
