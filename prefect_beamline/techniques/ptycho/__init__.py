"""Ptychography: ePIE / rPIE reconstruction of object and probe, checkpointed."""

from prefect_beamline.techniques import Benchmark, TechniqueSpec

SPEC = TechniqueSpec(
    name="ptycho",
    title="Ptychography: ePIE / rPIE reconstruction of object and probe",
    # ISPyB has no experimentType for ptychography: this project's own value.
    experiment_types=(("Ptychography", "default"),),
    benchmarks={
        "ptycho": Benchmark(
            "benchmarks.ptycho",
            "one ePIE iteration (1000 x 256² patterns): Cython vs numpy vs Pty-Chi",
        ),
    },
)
