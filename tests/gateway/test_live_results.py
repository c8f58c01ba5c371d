"""The gateway's live results stream: publish with the operator token, follow as SSE."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from tests.gateway.test_app import OPERATOR_TOKEN, TOKEN

OPERATOR = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
DAQ = {"Authorization": f"Bearer {TOKEN}"}


def sse_messages(text: str) -> list[tuple[int, str, dict[str, object]]]:
    """(id, event, data) of each server-sent event in `text`."""
    found = []
    for block in text.strip().split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if not line.startswith(":")
        )
        found.append((int(fields["id"]), fields["event"], json.loads(fields["data"])))
    return found


def test_daq_follows_every_published_result_then_the_end(client: TestClient) -> None:
    images = [{"type": "image", "image_number": n, "n_spots": n} for n in (1, 2, 3)]
    assert (
        client.post("/api/v1/live/7/results", json=images[:2], headers=OPERATOR).status_code == 202
    )
    assert (
        client.post("/api/v1/live/7/results", json=images[2:], headers=OPERATOR).status_code == 202
    )
    client.post("/api/v1/live/7/results", json=[{"type": "end"}], headers=OPERATOR)
    response = client.get("/api/v1/live/7/stream", headers=DAQ)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    messages = sse_messages(response.text)
    assert [event for _, event, _ in messages] == ["image", "image", "image", "end"]
    assert [data.get("image_number") for _, _, data in messages[:3]] == [1, 2, 3]
    assert [sequence for sequence, _, _ in messages] == [1, 2, 3, 4]


def test_a_reconnecting_client_resumes_after_its_last_event_id(client: TestClient) -> None:
    batch = [{"type": "image", "image_number": n} for n in range(1, 6)] + [{"type": "end"}]
    client.post("/api/v1/live/8/results", json=batch, headers=OPERATOR)
    response = client.get("/api/v1/live/8/stream", headers={**DAQ, "Last-Event-ID": "3"})
    assert [data.get("image_number") for _, _, data in sse_messages(response.text)] == [4, 5, None]


def test_following_needs_a_token_and_publishing_the_operator_token(client: TestClient) -> None:
    assert client.get("/api/v1/live/9/stream").status_code == 401
    assert client.post("/api/v1/live/9/results", json=[], headers=DAQ).status_code == 403
    assert client.post("/api/v1/live/9/results", json=[]).status_code in (401, 403)


def test_malformed_results_are_refused_naming_the_types(client: TestClient) -> None:
    response = client.post("/api/v1/live/10/results", json=[{"type": "x"}], headers=OPERATOR)
    assert response.status_code == 422
    assert "image" in response.json()["detail"]
