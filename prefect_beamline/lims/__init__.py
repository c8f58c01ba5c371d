"""The LIMS: an ISPyB-compatible subset (schema.py) and its one idempotent writer."""

from prefect_beamline.lims.writer import (
    CollectionDescription,
    GridResult,
    ImageQuality,
    Lims,
    ProcessingJobSummary,
)

__all__ = ["CollectionDescription", "GridResult", "ImageQuality", "Lims", "ProcessingJobSummary"]
