"""Synthetic data of the field with known truth, for the demo, tests and benchmarks."""

from prefect_beamline.synth.em import SyntheticMovie, SyntheticSession, write_em_session
from prefect_beamline.synth.mx import SyntheticCollection, SyntheticSpot, write_mx_collection

__all__ = [
    "SyntheticCollection",
    "SyntheticMovie",
    "SyntheticSession",
    "SyntheticSpot",
    "write_em_session",
    "write_mx_collection",
]
