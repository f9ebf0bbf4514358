"""The OpenAPI document says what the API really answers (api/openapi.py): every error with the
`{"error": {...}}` envelope, the errors each kind of operation can answer, working examples."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest

from shared.notifications.schemas import TriggerRequest


@pytest.fixture()
def document(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200
    return response.json()


def _operations(document):
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            yield path, method, operation


def test_every_error_has_the_envelope_the_api_answers(document, client, tenant):
    text = json.dumps(document)
    assert "HTTPValidationError" not in text and "ValidationError" not in document["components"]
    assert '"#/components/schemas/ValidationError"' not in text
    envelope = document["components"]["schemas"]["Error"]
    checked = 0
    for path, _, operation in _operations(document):
        for status, response in operation["responses"].items():
            if status[0] in "45":
                [schema] = response["content"].values()
                expected = "BridgeError" if path == "/api/novu" else "Error"
                assert schema["schema"] == {"$ref": f"#/components/schemas/{expected}"}
                checked += 1
    assert checked > 50
    # and it is the shape of real answers
    for answer in (
        client.get("/api/notifications/1", headers=tenant.headers),  # 404
        client.get("/api/notifications?limit=0", headers=tenant.headers),  # 422
        client.get("/api/notifications"),  # 401
        client.post("/api/trigger", content=b"{", headers=tenant.headers),  # 400
    ):
        assert answer.status_code >= 400
        jsonschema.validate(answer.json(), envelope)


def test_each_operation_lists_the_errors_it_can_answer(document):
    trigger = document["paths"]["/api/trigger"]["post"]["responses"]
    assert {"400", "401", "413", "422", "429", "503"} <= set(trigger)
    for path, _, operation in _operations(document):
        responses = set(operation["responses"])
        if path.startswith("/api/") and not path.startswith(("/api/novu", "/api/operator/")):
            assert {"401", "429", "503"} <= responses, path
        if "requestBody" in operation and path != "/api/novu":
            assert {"400", "413", "422"} <= responses, path
        if "{" in path:
            assert "404" in responses, path
    bridge = document["paths"]["/api/novu"]["post"]["responses"]
    assert "401" in bridge and "422" not in bridge


def test_the_trigger_examples_are_valid_triggers(document, client, tenant):
    for path in ("/api/trigger", "/api/trigger/bulk"):
        body = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        assert body["examples"]
        for example in body["examples"].values():
            events = example["value"].get("events", [example["value"]])
            for event in events:
                TriggerRequest.model_validate(event)
    example = document["paths"]["/api/trigger"]["post"]["requestBody"]["content"][
        "application/json"
    ]["examples"]["user-signup"]["value"]
    answer = client.post("/api/trigger", json=example, headers=tenant.headers)
    assert answer.status_code == 202, answer.text


def test_no_description_is_an_implementation_note(document):
    for path, method, operation in _operations(document):
        description = operation.get("description", "")
        assert "docs/" not in description and ".py" not in description, (path, method)
    for name, schema in document["components"]["schemas"].items():
        description = schema.get("description", "")
        # a model's docstring that only names its route is a note for us, not for callers
        assert not re.match(r"(GET|POST|PATCH|DELETE) /api\S*\.", description), name
        assert ".py" not in description and "docs/" not in description, name
