"""Synthetic data of the field with known truth, for the demo, tests and benchmarks."""

from prefect_beamline.synth.em import SyntheticMovie, SyntheticSession, write_em_session
from prefect_beamline.synth.mx import SyntheticCollection, SyntheticSpot, write_mx_collection
from prefect_beamline.synth.ptycho import SyntheticScan, write_ptycho_scan
from prefect_beamline.synth.tomo import SyntheticTomoScan, phantom_sinogram, write_tomo_scan

__all__ = [
    "SyntheticCollection",
    "SyntheticMovie",
    "SyntheticScan",
    "SyntheticSession",
    "SyntheticSpot",
    "SyntheticTomoScan",
    "phantom_sinogram",
    "write_em_session",
    "write_mx_collection",
    "write_ptycho_scan",
    "write_tomo_scan",
]
