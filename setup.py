"""Build the Cython kernels of ext/ (the rest of the metadata is in pyproject.toml)."""

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy
from Cython.Build import cythonize
from setuptools import Extension, find_packages, setup
from setuptools.command.build_py import build_py

OPENMP = ["-fopenmp"]
# Every `ext/_<family>.pyx` is one extension module `prefect_beamline.ext._<family>`.
KERNELS = sorted(path.stem for path in Path("ext").glob("_*.pyx"))
# C headers a kernel includes (`cdef extern from`), all in ext/include/: a change to one
# rebuilds the modules. Shared Cython types and helpers are in ext/_shared.pxd (cimported;
# cythonize tracks it).
HEADERS = sorted(str(path) for path in Path("ext/include").glob("*.h"))

# Flags of one kernel family beyond the common ones. ePIE's modulus pass vectorises only
# when sqrtf need not set errno and a select need not keep FP exceptions (neither
# changes a result; `#pragma GCC optimize` does not reach target_clones copies).
EXTRA_FLAGS = {"_epie": ["-fno-math-errno", "-fno-trapping-math"]}

# Top-level folders installed as subpackages of prefect_beamline (pyproject.toml's
# `package-dir` maps each one).
MAPPED_FOLDERS = ("flows", "blocks", "ext")


def discover_packages() -> list[str]:
    """Every package of the tree, found rather than listed, so a new folder (a technique,
    a subpackage of flows/) can't be left out of the wheel: prefect_beamline and its
    subpackages, and each mapped folder with its own as `prefect_beamline.<folder>...`."""
    packages = find_packages(include=["prefect_beamline", "prefect_beamline.*"])
    for folder in MAPPED_FOLDERS:
        packages.append(f"prefect_beamline.{folder}")
        packages += [f"prefect_beamline.{folder}.{name}" for name in find_packages(folder)]
    return packages


def load_about() -> ModuleType:
    """prefect_beamline/about.py by its path (the package's dependencies are not in the
    build environment); it knows how to ask git for the commit."""
    spec = importlib.util.spec_from_file_location("_about", "prefect_beamline/about.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildPyWithCommit(build_py):
    """Also writes prefect_beamline/COMMIT into the wheel, for `prefect-beamline --version`."""

    def run(self) -> None:
        super().run()
        commit = load_about().checkout_commit(Path.cwd())
        if commit and not getattr(self, "editable_mode", False):
            Path(self.build_lib, "prefect_beamline", "COMMIT").write_text(commit + "\n")


extensions = [
    Extension(
        f"prefect_beamline.ext.{name}",
        [f"ext/{name}.pyx"],
        depends=HEADERS,
        include_dirs=[numpy.get_include(), "ext/include"],
        extra_compile_args=["-O3", "-ffp-contract=off", *OPENMP, *EXTRA_FLAGS.get(name, [])],
        extra_link_args=OPENMP,
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
    for name in KERNELS
]

setup(
    cmdclass={"build_py": BuildPyWithCommit},
    packages=discover_packages(),
    ext_modules=cythonize(extensions, language_level=3, include_path=["ext"]),
)
