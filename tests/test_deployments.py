"""prefect.yaml declares the deployments and triggers that `serve` and `prefect deploy` use."""

from __future__ import annotations

from pathlib import Path

import pytest

import prefect_beamline
from prefect_beamline.deployments import (
    find_prefect_yaml,
    load_runner_deployments,
    read_deployment_specs,
)
from prefect_beamline.events import CollectionEvent, CollectionEventKind
from prefect_beamline.runs import parse_assignment
from tests.helpers import collection_event

REPOSITORY = Path(__file__).resolve().parent.parent


def test_every_deployment_is_triggered_by_a_collection_event_of_the_gateway() -> None:
    specs = read_deployment_specs(REPOSITORY / "prefect.yaml")
    assert {s.name for s in specs} >= {"mx-rotation", "mx-gridscan"}
    gateway_events = {
        CollectionEvent.model_construct(kind=k).event_name for k in CollectionEventKind
    }
    for spec in specs:
        assert spec.triggers, spec.name
        for trigger in spec.triggers:
            assert trigger["expect"] and set(trigger["expect"]) <= gateway_events, spec.name
            # The flows' shared signature: a run needs at least the collection id.
            assert {"collection_id", "collection", "triggered_by"} <= set(
                trigger.get("parameters") or {}
            ), spec.name


def test_triggers_match_the_labels_the_gateway_emits() -> None:
    event = collection_event(7, experiment_type="gridscan").to_prefect_event()
    resource = event["resource"]
    matching = [
        spec.name
        for spec in read_deployment_specs(REPOSITORY / "prefect.yaml")
        if event["event"] in spec.triggers[0]["expect"]
        and all(
            value == "beamline.collection.*" or resource.get(label) == value
            for label, value in spec.triggers[0]["match"].items()
        )
    ]
    assert matching == ["mx-gridscan"]


def test_runner_deployments_carry_triggers_and_module_entrypoints() -> None:
    deployments = load_runner_deployments(REPOSITORY / "prefect.yaml")
    by_name = {d.name: d for d in deployments}
    rotation = by_name["mx-rotation"]
    assert rotation.entrypoint == "prefect_beamline.flows.mx.process_mx"  # module path
    assert len(rotation.triggers) == 1
    assert rotation.triggers[0].parameters is not None
    assert "collection_id" in rotation.triggers[0].parameters


def test_unknown_deployment_name_is_an_error_naming_it() -> None:
    with pytest.raises(ValueError, match="no-such"):
        load_runner_deployments(REPOSITORY / "prefect.yaml", only=["no-such"])


def test_outside_a_checkout_the_package_carries_prefect_yaml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    packaged = find_prefect_yaml()
    assert packaged.parent == Path(prefect_beamline.__file__).resolve().parent
    assert packaged.read_text() == (REPOSITORY / "prefect.yaml").read_text()


def test_a_prefect_file_that_is_not_there_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="elsewhere.yaml"):
        find_prefect_yaml(tmp_path / "elsewhere.yaml")


def test_a_deployment_without_entrypoint_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="lacks entrypoint"):
        bad = tmp_path / "prefect.yaml"
        bad.write_text("deployments:\n  - name: x\n")
        read_deployment_specs(bad)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sigma_strong=4.5", ("sigma_strong", 4.5)),
        ("dask_scheduler=tcp://h:8786", ("dask_scheduler", "tcp://h:8786")),
        ("x=null", ("x", None)),
    ],
)
def test_cli_assignments_parse_json_values(text: str, expected: tuple[str, object]) -> None:
    assert parse_assignment(text) == expected


def test_cli_assignment_without_equals_is_rejected() -> None:
    with pytest.raises(ValueError, match="key=value"):
        parse_assignment("sigma_strong")
