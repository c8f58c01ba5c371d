"""The gateway's OpenAPI document is whole (every reference resolves, so /docs and schema
tools read the request bodies), and the app keeps to it: schemathesis sends bodies built
from it (valid and invalid) and finds no 5xx and no answer the document does not describe.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.schemas import BaseSchema
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from prefect_beamline.events import LIMS_INTEGER_MAX
from prefect_beamline.settings import BeamlineSettings
from tests.gateway.test_app import TOKEN, make_app, make_settings

POST_PATHS = ("/api/v1/collections", "/api/v1/zocalo", "/api/v1/bluesky")


def references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from references(value)
    elif isinstance(node, list):
        for value in node:
            yield from references(value)


def resolve(document: dict[str, Any], reference: str) -> Any:
    """The node a local JSON pointer (`#/components/schemas/X`) names in the document."""
    assert reference.startswith("#/"), reference
    node: Any = document
    for part in reference[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"{reference} does not resolve"
        node = node[part]
    return node


@pytest.fixture
def app(tmp_path: Path) -> FastAPI:
    return make_app(make_settings(tmp_path))


def test_every_reference_in_the_document_resolves(app: FastAPI) -> None:
    document = TestClient(app).get("/openapi.json").json()
    for reference in set(references(document)):
        resolve(document, reference)
    bodies = {
        path: document["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        for path in POST_PATHS
    }
    grid = bodies["/api/v1/collections"]["schema"]["properties"]["grid"]
    (grid_scan,) = (option for option in grid["anyOf"] if option.get("type") == "object")
    assert {"steps_x", "steps_y", "dx_um", "dy_um"} <= set(grid_scan["properties"])
    zocalo = bodies["/api/v1/zocalo"]["schema"]["properties"]["parameters"]
    assert zocalo["properties"]["ispyb_dcid"]["maximum"] == LIMS_INTEGER_MAX


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    """The gateway without its lifespan: schemathesis calls it on loops of its own, and
    the drainer is not what is under test here."""
    settings: BeamlineSettings = make_settings(tmp_path_factory.mktemp("gateway"))
    return make_app(settings)


OPERATIONS = [("POST", path) for path in POST_PATHS] + [
    ("GET", "/health"),
    ("GET", "/api/v1/outbox"),
]
EXAMPLES_PER_OPERATION = 15  # x 5 operations x 2 modes: about 150 requests, a few seconds


@pytest.fixture(scope="module")
def gateway_schema(gateway: FastAPI) -> BaseSchema:
    return schemathesis.openapi.from_asgi("/openapi.json", gateway)


@pytest.mark.parametrize(
    ("method", "path", "mode"),
    [(method, path, GenerationMode.POSITIVE) for method, path in OPERATIONS]
    + [(method, path, GenerationMode.NEGATIVE) for method, path in OPERATIONS if path != "/health"],
)
def test_the_gateway_keeps_to_its_openapi_document(
    gateway_schema: BaseSchema, method: str, path: str, mode: GenerationMode
) -> None:
    (operation,) = (
        result.ok()
        for result in gateway_schema.get_all_operations()
        if (result.ok().method.upper(), result.ok().path) == (method, path)
    )

    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    @hypothesis.settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    def answers_as_documented(case: Case) -> None:
        case.call_and_validate(
            headers={"Authorization": f"Bearer {TOKEN}"},
            checks=[
                not_a_server_error,
                status_code_conformance,
                content_type_conformance,
                response_schema_conformance,
            ],
        )

    answers_as_documented()
