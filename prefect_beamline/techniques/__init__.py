"""The technique registry: every technique is a package here that exposes one `SPEC`.

A technique registers itself as an entry point in the group `prefect_beamline.techniques`
(`mx = "prefect_beamline.techniques.mx:SPEC"` in pyproject.toml), the way python-zocalo
registers its services; the CLI, demos, benchmarks, the LIMS schema and the gateway's
validation enumerate techniques from here. Nothing in shared code lists them by name.

A spec names its modules as strings, imported only when used, so `prefect-beamline
--help` or the gateway never import numpy-heavy analysis code.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from types import ModuleType

ENTRY_POINT_GROUP = "prefect_beamline.techniques"


@dataclass(frozen=True)
class Benchmark:
    """A benchmark module (`run(quick) -> dict`, `report(dict) -> str`) and what it measures."""

    module: str
    description: str


@dataclass(frozen=True)
class TechniqueSpec:
    """What the rest of the system needs to know about one technique.

    The technique's package holds, by convention, the modules `records` (its LIMS
    tables and writes), `demo` (`run_demo(workdir, **options) -> dict`, `print_report`)
    and `synth` (synthetic data with known truth); `module(which)` imports one. Its
    deployments are those of `prefect.yaml` whose entrypoint is in its flow module
    `prefect_beamline.flows.<name>` (`deployments.deployments_of`).

    Attributes:
        name: the short word used everywhere (modules, flows `<name>-processing`,
            deployments, labels, docs, test folders).
        title: a line for people, e.g. in `prefect-beamline techniques`.
        experiment_types: ISPyB DataCollectionGroup.experimentType -> this technique's
            experiment_type; the first entry for an experiment_type is the one written,
            the others are accepted when reading a database another program wrote.
        benchmarks: benchmark name -> module and description.
        cli: optional `module:function` that adds subcommands to the CLI's subparsers.
        package: the technique's package; default `prefect_beamline.techniques.<name>`
            (a technique shipped in another distribution names its own).
    """

    name: str
    title: str
    experiment_types: tuple[tuple[str, str], ...]
    benchmarks: dict[str, Benchmark] = field(default_factory=dict)
    cli: str | None = None
    package: str = ""

    def module(self, which: str) -> ModuleType:
        """Import the technique's module `which` ("records", "demo", "synth", ...)."""
        package = self.package or f"{__name__}.{self.name}"
        return importlib.import_module(f"{package}.{which}")


@functools.cache
def registry() -> dict[str, TechniqueSpec]:
    """Every installed technique by name, from the entry points."""
    found: dict[str, TechniqueSpec] = {}
    for point in entry_points(group=ENTRY_POINT_GROUP):
        spec = point.load()
        if not isinstance(spec, TechniqueSpec):
            raise TypeError(f"entry point {point.name} = {point.value} is not a TechniqueSpec")
        if spec.name != point.name:
            raise ValueError(f"entry point {point.name!r} names technique {spec.name!r}")
        found[spec.name] = spec
    if not found:
        raise LookupError(
            f"no techniques registered in entry-point group {ENTRY_POINT_GROUP!r}: "
            "is prefect-beamline installed (pip install -e .)?"
        )
    return dict(sorted(found.items()))


def technique(name: str) -> TechniqueSpec:
    """The spec of one technique; LookupError names the installed ones."""
    techniques = registry()
    if name not in techniques:
        raise LookupError(f"unknown technique {name!r}; available: {', '.join(techniques)}")
    return techniques[name]


def technique_names() -> tuple[str, ...]:
    return tuple(registry())


def import_records() -> None:
    """Import every technique's LIMS tables, so the metadata holds them all."""
    for spec in registry().values():
        spec.module("records")
