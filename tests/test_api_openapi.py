"""The OpenAPI document tells the truth: the error body, the errors each operation can meet, the
Idempotency-Key header, the start forms of the deployed processes, /health, and a page to read it."""

import json
from pathlib import Path

import jsonschema
import pytest
import schemathesis
from swagger_ui_bundle import swagger_ui_path

from api.openapi import openapi30
from engine.db import transaction
from engine.history import Actor
from engine.services.deployments import deploy
from tests.conftest import PROCESSES

SPEC = "/api/v1/openapi.json"
METHODS = {"get", "post", "put", "patch", "delete"}


@pytest.fixture
def spec(app):
    return app.test_client().get(SPEC).json


def operations(spec):
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield path, method, operation


def resolve(spec, node):
    while "$ref" in node:
        section, name = node["$ref"].split("/")[-2:]
        node = spec["components"][section][name]
    return node


def error_schema(spec, path, method, status):
    response = resolve(spec, spec["paths"][path][method]["responses"][status])
    return response["content"]["application/json"]["schema"]


def test_the_document_is_valid_openapi_3_0(app):
    text = app.test_client().get(SPEC).get_data(as_text=True)
    spec = json.loads(text)
    assert spec["openapi"] == "3.0.3"
    schemathesis.openapi.from_dict(spec).validate()  # against the OpenAPI 3.0 meta-schema
    assert "$schema" not in text  # no JSON Schema 2020-12 leaked in from the forms


def test_every_documented_error_is_the_body_the_api_sends(spec, as_user):
    documented = 0
    for path, method, operation in operations(spec):
        for status in operation["responses"]:
            if status == "default" or int(status) >= 400:
                assert error_schema(spec, path, method, status) == {"$ref": "#/components/schemas/ApiError"}, \
                    (method, path, status)
                documented += 1
    assert documented > 35 * 3
    real = as_user("suxiaoyun").get("/api/v1/instances/nope").json  # one real error, against the document
    jsonschema.Draft4Validator({**spec, "$ref": "#/components/schemas/ApiError"}).validate(real)
    body = spec["components"]["schemas"]["ApiErrorBody"]
    assert set(body["required"]) == {"code", "message", "details"}


def test_errors_are_documented_where_they_happen(spec):
    for path, method, operation in operations(spec):
        statuses = set(operation["responses"])
        if path != "/api/v1/health":
            assert "401" in statuses, (method, path)
        if "application/json" in operation.get("requestBody", {}).get("content", {}):
            assert {"400", "413", "415", "422"} <= statuses, (method, path)
        if "{" in path:
            assert "404" in statuses, (method, path)
        if path.startswith(("/api/v1/outbox", "/api/v1/event-subscriptions")):
            assert "403" in statuses, (method, path)  # administrators only
    assert "413" in spec["paths"]["/api/v1/definitions"]["post"]["responses"]
    urge = resolve(spec, spec["paths"]["/api/v1/instances/{instance_id}/urge"]["post"]["responses"]["429"])
    assert "Retry-After" in urge["headers"]
    complete = spec["paths"]["/api/v1/tasks/{task_id}/complete"]["post"]["responses"]
    assert {"403", "404", "409"} <= set(complete)


CHECKS = {("post", "/api/v1/definitions/validate")}  # POSTs that change nothing (a body too big for a GET)


def test_idempotency_key_is_a_header_of_every_command(spec):
    parameter = spec["components"]["parameters"]["IdempotencyKey"]
    assert parameter["in"] == "header" and parameter["name"] == "Idempotency-Key"
    for path, method, operation in operations(spec):
        refs = {p.get("$ref") for p in operation.get("parameters", [])}
        has_key = "#/components/parameters/IdempotencyKey" in refs
        mutation = method in ("post", "put", "delete") and (method, path) not in CHECKS
        assert has_key == mutation, (method, path)  # every mutation is a command


def test_start_forms_are_the_deployed_ones_in_openapi_3_0(spec):
    body = spec["paths"]["/api/v1/instances"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    variants = {ref["$ref"].rsplit("/", 1)[1]: resolve(spec, ref) for ref in body["oneOf"]}
    keys = {v["properties"]["process_key"]["enum"][0] for v in variants.values()}
    assert keys == {"reimbursement", "payment", "contract"} and body["discriminator"]["propertyName"] == "process_key"
    claim = variants["StartInstance_reimbursement"]
    assert set(claim["required"]) == {"process_key", "data"} and claim["additionalProperties"] is False
    data = claim["properties"]["data"]
    assert set(data["required"]) == {"category", "amount", "reason", "invoices"}
    assert data["properties"]["amount"]["minimum"] == 0 and data["properties"]["amount"]["exclusiveMinimum"] is True
    assert data["properties"]["invoices"]["items"]["properties"]["date"]["format"] == "date"


def test_a_new_deployment_is_in_the_next_document(app):
    form = json.loads((PROCESSES / "forms" / "reimbursement_apply.json").read_text(encoding="utf-8"))
    form["properties"]["project_code"] = {"type": "string", "title": "项目编号", "const": "P-1"}
    files = {p.name: p.read_text(encoding="utf-8") for p in [*PROCESSES.glob("*.bpmn"), *PROCESSES.glob("*.dmn"),
                                                             *Path(PROCESSES, "forms").glob("*.json")]}
    files["reimbursement_apply.json"] = json.dumps(form, ensure_ascii=False)
    with transaction() as session:
        deploy(session, files, Actor(None, "cli"))
    spec = app.test_client().get(SPEC).json
    claim = spec["components"]["schemas"]["StartInstance_reimbursement"]
    assert claim["title"].endswith("(reimbursement v2)")
    assert claim["properties"]["data"]["properties"]["project_code"]["enum"] == ["P-1"]


def test_json_schema_2020_12_becomes_openapi_3_0():
    converted = openapi30({
        "$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object", "required": [],
        "properties": {
            "amount": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 100, "x-card": True},
            "floor": {"type": "integer", "minimum": 5, "exclusiveMinimum": 3},
            "note": {"type": ["string", "null"], "examples": ["a", "b"]},
            "either": {"type": ["string", "integer"]},
            "kind": {"const": "fixed"},
            "pair": {"type": "array", "prefixItems": [{"type": "string"}], "items": False},
        },
        "additionalProperties": {"type": "string", "$comment": "dropped"},
    })
    assert converted == {
        "type": "object",
        "properties": {
            "amount": {"type": "number", "x-card": True, "minimum": 0, "exclusiveMinimum": True,
                       "maximum": 100, "exclusiveMaximum": True},
            "floor": {"type": "integer", "minimum": 5},
            "note": {"type": "string", "nullable": True, "example": "a"},
            "either": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
            "kind": {"enum": ["fixed"]},
            "pair": {"type": "array", "items": {"not": {}}},
        },
        "additionalProperties": {"type": "string"},
    }


def test_health_and_amounts_are_documented_as_sent(spec, app):
    health = resolve(spec, error_schema(spec, "/api/v1/health", "get", "200"))
    assert set(health["required"]) == {"status", "database"} and "security" in spec["paths"]["/api/v1/health"]["get"]
    assert app.test_client().get("/api/v1/health").json == {"status": "ok", "database": "ok"}
    amount = spec["components"]["schemas"]["Instance"]["properties"]["amount"]
    assert amount["type"] == "string" and amount["nullable"] is True  # "1200.00", never a JSON number


def test_the_api_page_is_served_from_the_installed_package(app):
    client = app.test_client()
    page = client.get("/api/v1/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert "http://" not in html and "https://" not in html  # no CDN
    assert SPEC in html
    for asset in ("swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "swagger-ui.css"):
        assert f"/api/v1/docs/assets/{asset}" in html
        served = client.get(f"/api/v1/docs/assets/{asset}")
        assert served.status_code == 200 and served.data == (swagger_ui_path / asset).read_bytes()
    assert client.get("/api/v1/docs/assets/../../conftest.py").status_code == 404
