"""MX: per-image spot finding, resolution, grid-scan X-ray centring (rotation, grid scan)."""

from prefect_beamline.techniques import Benchmark, TechniqueSpec

SPEC = TechniqueSpec(
    name="mx",
    title="MX rotation and grid scan: spot finding, resolution, X-ray centre",
    experiment_types=(("OSC", "rotation"), ("Mesh", "gridscan")),
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
