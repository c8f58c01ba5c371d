"""Serial crystallography: hit finding (peakfinder8), azimuthal integration, CrystFEL-ready hits."""

from prefect_beamline.techniques import Benchmark, TechniqueSpec

SPEC = TechniqueSpec(
    name="ssx",
    title="Serial crystallography: hit finding, hit rate, radial profiles, CXI hits for CrystFEL",
    experiment_types=(
        ("SSX-Jet", "jet"),
        ("SSX-Chip", "chip"),
        ("Serial Jet", "jet"),
        ("Serial Fixed", "chip"),
    ),
    benchmarks={
        "ssx": Benchmark(
            "benchmarks.ssx",
            "hit finder and azimuthal integrator on 4M and 16M frames vs pyFAI, the numpy "
            "reference and a memory pass",
        ),
    },
)
