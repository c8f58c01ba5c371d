"""The LIMS: an ISPyB-compatible subset (`schema`) and its one idempotent writer (`Lims`)."""

from prefect_beamline.lims.tomogram import TomogramRecord
from prefect_beamline.lims.writer import (
    CollectionDescription,
    CTFResult,
    EMMovieResult,
    GridResult,
    ImageQuality,
    Lims,
    MotionResult,
    MovieRecord,
    ProcessingJobSummary,
    PtychoResult,
)

__all__ = [
    "CTFResult",
    "CollectionDescription",
    "EMMovieResult",
    "GridResult",
    "ImageQuality",
    "Lims",
    "MotionResult",
    "MovieRecord",
    "ProcessingJobSummary",
    "PtychoResult",
    "TomogramRecord",
]
