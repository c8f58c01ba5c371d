"""Synthetic data of the field with known truth, for the demo, tests and benchmarks."""

from prefect_beamline.synth.mx import SyntheticCollection, SyntheticSpot, write_mx_collection

__all__ = ["SyntheticCollection", "SyntheticSpot", "write_mx_collection"]
