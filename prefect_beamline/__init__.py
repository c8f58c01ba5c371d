"""prefect-beamline: automated data analysis for synchrotron and cryo-EM facilities."""

__version__ = "0.1.0"
