"""MX: per-image spot finding, resolution, grid-scan X-ray centring (rotation, grid scan)."""

from prefect_beamline.techniques import Benchmark, TechniqueSpec

SPEC = TechniqueSpec(
    name="mx",
    title="MX rotation and grid scan: spot finding, resolution, X-ray centre",
    # Every ISPyB DataCollectionGroup.experimentType of MX (docs/zocalo.md has the table);
    # the first per experiment_type is the one written. Hyperion writes SAD and Mesh3D.
    experiment_types=(
        ("OSC", "rotation"),
        ("Mesh", "gridscan"),
        ("SAD", "rotation"),
        ("SAD - Inverse Beam", "rotation"),
        ("MAD", "rotation"),
        ("MAD - Inverse Beam", "rotation"),
        ("Collect - Multiwedge", "rotation"),
        ("Helical", "rotation"),
        ("Multi-positional", "rotation"),
        ("Standard", "rotation"),
        ("Characterization", "rotation"),
        ("Screening", "rotation"),
        ("Metal ID", "rotation"),
        ("Mesh3D", "gridscan"),
        ("Still", "still"),
        ("Time Resolved", "time_resolved"),
        ("Diamond Anvil High Pressure", "high_pressure"),
        ("Burn", "burn"),
        ("Dehydration", "dehydration"),
    ),
    benchmarks={
        "spotfind": Benchmark(
            "benchmarks.spotfind",
            "Cython dispersion spot finder vs numpy/scipy reference and a memory pass",
        ),
        "live": Benchmark(
            "benchmarks.live",
            "live per-image path on a 16 Mpixel Eiger over Stream V2: frames/s/core, "
            "path/kernel, latency, grid centre; bslz4 decoder vs bitshuffle and h5py",
        ),
    },
)
