"""Build the Cython kernels of ext/ (the rest of the metadata is in pyproject.toml)."""

from pathlib import Path

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

OPENMP = ["-fopenmp"]
# Every `ext/_<family>.pyx` is one extension module `prefect_beamline.ext._<family>`.
KERNELS = sorted(path.stem for path in Path("ext").glob("_*.pyx"))
# C headers a kernel includes (`cdef extern from`), all in ext/include/: a change to one
# rebuilds the modules. Shared Cython types and helpers are in ext/_shared.pxd (cimported;
# cythonize tracks it).
HEADERS = sorted(str(path) for path in Path("ext/include").glob("*.h"))

extensions = [
    Extension(
        f"prefect_beamline.ext.{name}",
        [f"ext/{name}.pyx"],
        depends=HEADERS,
        include_dirs=[numpy.get_include(), "ext/include"],
        extra_compile_args=["-O3", "-ffp-contract=off", *OPENMP],
        extra_link_args=OPENMP,
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
    for name in KERNELS
]

setup(ext_modules=cythonize(extensions, language_level=3, include_path=["ext"]))
