"""Cryo-EM on the fly: per movie gain, motion correction, dose weighting, CTF."""

from prefect_beamline.techniques import Benchmark, TechniqueSpec

SPEC = TechniqueSpec(
    name="em",
    title="Cryo-EM on the fly: motion correction, dose weighting and CTF per movie",
    experiment_types=(("EM", "default"), ("single particle", "default")),
    benchmarks={
        "em": Benchmark(
            "benchmarks.em",
            "one cryo-EM movie (40 x 4096²) to micrograph + CTF, by step, vs a memory pass",
        ),
        "motioncor": Benchmark(
            "benchmarks.motioncor",
            "gain + sub-pixel shifted frame sum vs scipy.ndimage.shift, memory pass",
        ),
        "eer": Benchmark(
            "benchmarks.eer",
            "EER frames rendered into a 4K dose fraction vs imagecodecs, bitstream pass",
        ),
        "powerspec": Benchmark(
            "benchmarks.powerspec",
            "radial/elliptical power-spectrum average vs numpy bincount, memory pass",
        ),
    },
    cli="prefect_beamline.techniques.em.cli:add_commands",
)
