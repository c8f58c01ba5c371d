"""Tomography: flat/dark normalisation, ring removal, centre of rotation, FBP to a volume."""

from prefect_beamline.techniques import Benchmark, TechniqueSpec

SPEC = TechniqueSpec(
    name="tomo",
    title="Tomography: NXtomo / Data Exchange scan to a reconstructed NeXus volume",
    # ISPyB spells tomography 'tomo'; 'Tomo' is accepted when reading.
    experiment_types=(("tomo", "default"), ("Tomo", "default")),
    benchmarks={
        "tomo": Benchmark(
            "benchmarks.tomo",
            "gridrec (Fourier) and FBP vs scikit-image iradon and algotom/astra, NRMSE vs phantom",
        ),
        "tomo_preprocess": Benchmark(
            "benchmarks.tomo_preprocess",
            "flat/dark minus-log and ring filter vs numpy references, memory pass",
        ),
        "backproject": Benchmark(
            "benchmarks.backproject",
            "the back projector alone vs the numpy (np.interp) reference, memory pass",
        ),
    },
)
