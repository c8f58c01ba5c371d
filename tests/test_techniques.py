"""The technique registry: every technique is found through its entry point, complete."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from prefect.flows import load_flow_from_entrypoint
from prefect.utilities.callables import parameter_schema
from pydantic import ValidationError

from prefect_beamline.deployments import deployments_of, find_prefect_yaml, read_deployment_specs
from prefect_beamline.events import CollectionEvent
from prefect_beamline.lims.schema import (
    Base,
    ispyb_experiment_type,
    technique_for_experiment_type,
)
from prefect_beamline.techniques import registry, technique

REPOSITORY = Path(__file__).resolve().parent.parent
TECHNIQUES = sorted(registry())


def test_the_techniques_of_this_release_register_through_entry_points() -> None:
    assert {"em", "mx", "ptycho", "tomo"} <= set(TECHNIQUES)


@pytest.mark.parametrize("name", TECHNIQUES)
def test_each_technique_has_its_folder_flow_module_and_deployments(name: str) -> None:
    assert (REPOSITORY / "prefect_beamline" / "techniques" / name / "__init__.py").is_file()
    assert (REPOSITORY / "flows" / f"{name}.py").is_file()
    deployments = deployments_of(name)
    assert deployments, f"prefect.yaml has no deployment of prefect_beamline.flows.{name}"
    assert all(deployment.name.startswith(f"{name}-") for deployment in deployments)


def test_every_deployment_belongs_to_a_technique() -> None:
    owned = {d.name for name in TECHNIQUES for d in deployments_of(name)}
    assert {d.name for d in read_deployment_specs(find_prefect_yaml())} == owned


@pytest.mark.parametrize("name", TECHNIQUES)
def test_each_technique_module_the_spec_names_imports(name: str) -> None:
    spec = technique(name)
    demo = spec.module("demo")
    assert callable(demo.run_demo) and callable(demo.print_report)
    assert spec.module("synth").__name__.endswith(f"{name}.synth")
    records = spec.module("records")
    own_tables = {
        mapper.class_.__tablename__
        for mapper in Base.registry.mappers
        if mapper.class_.__module__ == records.__name__
    }
    assert own_tables, f"{records.__name__} declares no LIMS table"


@pytest.mark.parametrize("name", TECHNIQUES)
def test_each_experiment_type_maps_to_ispyb_and_back(name: str) -> None:
    for ispyb, experiment in technique(name).experiment_types:
        assert technique_for_experiment_type(ispyb) == (name, experiment)
        written = ispyb_experiment_type(name, experiment)
        assert technique_for_experiment_type(written) == (name, experiment)


def test_no_ispyb_experiment_type_is_claimed_twice() -> None:
    claimed = [ispyb for spec in registry().values() for ispyb, _ in spec.experiment_types]
    assert len(claimed) == len(set(claimed))


def test_an_event_of_an_unknown_technique_is_refused_naming_the_installed_ones() -> None:
    with pytest.raises(ValidationError, match=f"available: {', '.join(TECHNIQUES)}"):
        CollectionEvent(
            event_id="x-1",
            kind="finished",
            technique="xps",
            beamline="i03",
            visit="mx1-1",
            collection_id=1,
            data_files=["/data/x.h5"],
        )


def test_unknown_technique_lookup_names_the_installed_ones() -> None:
    with pytest.raises(LookupError, match=f"available: {', '.join(TECHNIQUES)}"):
        technique("xps")


def test_every_technique_has_an_entry_point_line() -> None:
    project = tomllib.loads((REPOSITORY / "pyproject.toml").read_text())
    points = project["project"]["entry-points"]["prefect_beamline.techniques"]
    assert points == {name: f"prefect_beamline.techniques.{name}:SPEC" for name in TECHNIQUES}


@pytest.mark.parametrize(
    "deployment", read_deployment_specs(find_prefect_yaml()), ids=lambda spec: spec.name
)
def test_every_flow_parameter_is_described_in_the_run_form(deployment: Any) -> None:
    """The UI's run form shows each parameter's description, the science fields directly
    (no "Model / None" switch, no null type, no default that would overwrite the
    collection's values), and nothing internal a person could type into."""
    flow = load_flow_from_entrypoint(deployment.entrypoint)
    schema = parameter_schema(flow).model_dump()
    properties = schema["properties"]
    assert "collection_id" in properties
    assert not {"collection", "triggered_by", "lims_block"} & set(properties)
    undocumented = [name for name, field in properties.items() if not field.get("description")]
    assert not undocumented, f"{deployment.entrypoint}: no description for {undocumented}"
    for definition in schema["definitions"].values():
        for name, field in definition.get("properties", {}).items():
            assert field.get("description"), f"{name} has no description"
            assert "anyOf" not in field and "default" not in field, (name, field)
    if "parameters" in properties:
        assert set(properties["parameters"]) - {"default"} >= {"$ref"}, properties["parameters"]
