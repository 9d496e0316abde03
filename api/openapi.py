"""The OpenAPI document, made to tell the truth about every operation, and the page to read it.

- One error schema: every documented error is `ApiErrorSchema`, the body api/errors.py really sends
  (also flask-smorest's own 422 for arguments and its `default` response).
- Errors an operation can meet because of how the API works are added to every operation they apply to
  (`ErrorDocsPlugin`): 401 where a token is needed, 400/413/415 where a JSON body is read, 413 for uploads,
  404 where a path names a row, 422 and the `Idempotency-Key` header where a command honours it. Errors
  of an operation's own rules (403, 404, 409, 429 …) are declared at the route with `errors()`.
- `POST /instances` documents each deployed process's start form as a `oneOf` keyed by `process_key`,
  generated from the latest deployed versions whenever the document is served, and converted from
  JSON Schema 2020-12 (the forms' dialect) to OpenAPI 3.0's schema objects (`openapi30`).
- Swagger UI at /api/v1/docs, served from the installed `swagger-ui-bundle` package (no CDN).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import flask
from apispec import BasePlugin
from flask_smorest import Api
from marshmallow import fields as ma_fields
from swagger_ui_bundle import swagger_ui_path

from api.context import IDEMPOTENCY_KEY_PATTERN, MAX_KEY_LENGTH
from api.schemas import ApiErrorSchema
from engine.db import transaction
from engine.services import deployments

PREFIX = "/api/v1"
DOCS_PATH = "docs"
ASSETS_URL = f"{PREFIX}/{DOCS_PATH}/assets/"
START_PATH = f"{PREFIX}/instances"

# status -> (component name, description); the texts say when the API answers so
ERROR_RESPONSES: dict[int, tuple[str, str]] = {
    400: ("InvalidJson", "The body is not valid JSON, or nests deeper than the limit (code `invalid_json`)"),
    401: ("Unauthorized", "No bearer token, an unknown token, or the token's user is inactive"),
    403: ("Forbidden", "The caller may not do this"),
    404: ("NotFound", "No such resource (or not the caller's)"),
    409: ("Conflict", "The resource's state does not allow this now"),
    413: ("PayloadTooLarge", "The body is larger than 1 MiB (uploads: 5 MiB)"),
    415: ("UnsupportedMediaType", "The body is not `application/json`"),
    422: ("InvalidInput", "A field, parameter or header is invalid; `details.fields` names each one"),
    429: ("TooManyRequests", "Too soon to do this again; see `Retry-After`"),
}
IDEMPOTENCY_KEY = "IdempotencyKey"
IDEMPOTENCY_KEY_PARAMETER = {
    "description": "Retrying a call with the same key returns the first response (header "
                   "`Idempotent-Replay: true`) without acting again; the same key with another body is a 422.",
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH, "pattern": IDEMPOTENCY_KEY_PATTERN},
    "required": False,
}


class FinflowApi(Api):
    """flask-smorest's Api with our error schema everywhere and start forms filled in when served."""

    ERROR_SCHEMA = ApiErrorSchema

    def _openapi_json(self):
        document = copy.deepcopy(self.spec.to_dict())
        add_links(document)
        with transaction(readonly=True) as session:
            add_start_forms(document, _start_forms(session))
        return flask.current_app.response_class(flask.json.dumps(document, indent=2), mimetype="application/json")


def setup(app: flask.Flask) -> FinflowApi:
    """The Api for `app`, with the error components, the Idempotency-Key parameter and the docs page."""
    app.config.update(OPENAPI_SWAGGER_UI_PATH=DOCS_PATH, OPENAPI_SWAGGER_UI_URL=ASSETS_URL,
                      OPENAPI_SWAGGER_UI_CONFIG={"persistAuthorization": True})
    api = FinflowApi(app, spec_kwargs={"info": {"description": "finflow finance approval BPM API"},
                                       "extra_plugins": [ErrorDocsPlugin(app)]})
    api.ma_plugin.converter.add_attribute_function(_decimal_as_string)
    api.spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    api.spec.options["security"] = [{"bearer": []}]
    for name, description in ERROR_RESPONSES.values():
        api.spec.components.response(name, {"description": description,
                                            "content": {"application/json": {"schema": ApiErrorSchema}}})
    api.spec.components.parameter(IDEMPOTENCY_KEY, "header", {"name": "Idempotency-Key",
                                                              **IDEMPOTENCY_KEY_PARAMETER})
    app.register_blueprint(_assets)
    return api


def _decimal_as_string(converter, field: ma_fields.Field, **kwargs: Any) -> dict[str, Any]:
    """apispec documents every Decimal field as a number; one dumped `as_string` is a string (amounts)."""
    if isinstance(field, ma_fields.Decimal) and field.as_string:
        return {"type": "string", "format": "decimal"}
    return {}


def errors(blp, described: dict[int, str]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Document the errors of a route's own rules, e.g. `@errors(blp, {403: "Not the starter"})`."""

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        for status, description in described.items():
            headers = {"Retry-After": {"schema": {"type": "integer"}}} if status == 429 else None
            view = blp.alt_response(status, schema=ApiErrorSchema, description=description, headers=headers)(view)
        return view

    return decorate


class ErrorDocsPlugin(BasePlugin):
    """Adds the errors every operation of a kind can meet (see the module docstring) to its responses."""

    def __init__(self, app: flask.Flask) -> None:
        super().__init__()
        self.app = app

    def operation_helper(self, path=None, operations=None, **kwargs) -> None:
        rule = kwargs.get("rule")
        view = self.app.view_functions.get(rule.endpoint) if rule is not None else None
        for operation in (operations or {}).values():
            statuses = _implied_errors(operation, view, has_path_params=bool(rule and rule.arguments))
            responses = operation.setdefault("responses", {})
            if responses.get(422) == "UNPROCESSABLE_ENTITY":  # flask-smorest's, for arguments: ours says more
                responses[422] = ERROR_RESPONSES[422][0]
            for status in statuses:
                if status not in responses and str(status) not in responses:
                    responses[status] = ERROR_RESPONSES[status][0]
            if getattr(view, "honours_idempotency_key", False):
                operation.setdefault("parameters", []).append(IDEMPOTENCY_KEY)


def _implied_errors(operation: dict[str, Any], view: Any, *, has_path_params: bool) -> list[int]:
    content = operation.get("requestBody", {}).get("content", {})
    statuses = []
    if getattr(view, "requires_token", False):
        statuses.append(401)
    if "application/json" in content:
        statuses += [400, 413, 415, 422]
    if "multipart/form-data" in content:
        statuses.append(413)
    if has_path_params:
        statuses.append(404)
    if getattr(view, "honours_idempotency_key", False):
        statuses.append(422)
    return sorted(set(statuses))


# -- links: where an id in a response is used next ---------------------------------------------

_INSTANCE = f"{PREFIX}/instances/{{instance_id}}"
_TASK = f"{PREFIX}/tasks/{{task_id}}"
_SUBSCRIPTION = f"{PREFIX}/event-subscriptions/{{subscription_id}}"
_INSTANCE_OPS = [("get", _INSTANCE), ("get", f"{_INSTANCE}/history"), ("post", f"{_INSTANCE}/withdraw"),
                 ("post", f"{_INSTANCE}/cancel"), ("post", f"{_INSTANCE}/urge"), ("post", f"{_INSTANCE}/cc")]
_TASK_OPS = [("get", _TASK)] + [("post", f"{_TASK}/{action}") for action in
                                ("complete", "transfer", "delegate", "add-signers", "return")]
_SUBSCRIPTION_OPS = [("get", _SUBSCRIPTION), ("post", f"{_SUBSCRIPTION}/pause"),
                     ("post", f"{_SUBSCRIPTION}/resume"), ("delete", _SUBSCRIPTION),
                     ("get", f"{_SUBSCRIPTION}/deliveries"), ("post", f"{_SUBSCRIPTION}/deliveries/retry-dead")]
# (operation, status) -> [(target operation, {parameter: runtime expression})]
LINKS: dict[tuple[str, str, int], list[tuple[str, str, dict[str, str]]]] = {
    ("post", START_PATH, 201): [(m, p, {"instance_id": "$response.body#/id"}) for m, p in _INSTANCE_OPS]
    + [(m, p, {"task_id": "$response.body#/current_tasks/0/id"}) for m, p in _TASK_OPS],
    ("get", START_PATH, 200): [(m, p, {"instance_id": "$response.body#/items/0/id"}) for m, p in _INSTANCE_OPS],
    ("get", f"{PREFIX}/tasks", 200): [(m, p, {"task_id": "$response.body#/items/0/id"}) for m, p in _TASK_OPS],
    ("get", f"{PREFIX}/notifications", 200): [("post", f"{PREFIX}/notifications/{{notification_id}}/read",
                                                {"notification_id": "$response.body#/items/0/id"})],
    ("get", f"{PREFIX}/outbox", 200): [(m, p, {"outbox_id": "$response.body#/items/0/id"}) for m, p in
                                        [("get", f"{PREFIX}/outbox/{{outbox_id}}"),
                                         ("post", f"{PREFIX}/outbox/{{outbox_id}}/retry")]],
    ("post", f"{PREFIX}/event-subscriptions", 201): [
        (m, p, {"subscription_id": "$response.body#/id"}) for m, p in _SUBSCRIPTION_OPS],
    ("get", f"{PREFIX}/definitions", 200): [("get", f"{PREFIX}/definitions/{{key}}", {"key": "$response.body#/0/key"})],
    ("get", f"{PREFIX}/definitions/{{key}}", 200): [
        ("get", f"{PREFIX}/definitions/{{key}}/versions/{{version}}/bpmn",
         {"key": "$response.body#/key", "version": "$response.body#/latest_version"})],
}


def add_links(document: dict[str, Any]) -> None:
    """OpenAPI links from the responses that return ids to the operations taking them (for readers and
    for stateful testing)."""
    for (method, path, status), targets in LINKS.items():
        response = document["paths"][path][method]["responses"][str(status)]
        response["links"] = {
            f"{target_method}{target.removeprefix(PREFIX)}".replace("/", "_").replace("{", "").replace("}", ""): {
                "operationRef": "#/paths/" + target.replace("~", "~0").replace("/", "~1") + f"/{target_method}",
                "parameters": parameters}
            for target_method, target, parameters in targets}


# -- start forms ------------------------------------------------------------------------------------

def _start_forms(session) -> dict[str, tuple[str, dict[str, Any]]]:
    """process key -> (display name, start form as JSON Schema 2020-12) of each latest deployed version."""
    forms = {}
    for definition in deployments.list_definitions(session):
        version = deployments.get_version(session, definition.key)
        model = deployments.model_for(session, version.id, version.content_hash)
        form = model.form(model.start_form) if model.start_form else {"type": "object"}
        forms[definition.key] = (f"{definition.name} ({definition.key} v{version.version})", form)
    return forms


def add_start_forms(document: dict[str, Any], forms: dict[str, tuple[str, dict[str, Any]]]) -> None:
    """Replace POST /instances' body by one variant per process: its key, business key and start form."""
    if not forms:
        return
    schemas = document["components"]["schemas"]
    generic = schemas["StartInstance"]
    mapping = {}
    for key, (title, form) in forms.items():
        name = f"StartInstance_{key}"
        variant = copy.deepcopy(generic)
        variant["title"] = title
        variant["properties"]["process_key"] = {"type": "string", "enum": [key]}
        variant["properties"]["data"] = openapi30(form)
        schemas[name] = variant
        mapping[key] = f"#/components/schemas/{name}"
    body = document["paths"][START_PATH]["post"]["requestBody"]["content"]["application/json"]
    body["schema"] = {"oneOf": [{"$ref": ref} for ref in mapping.values()],
                      "discriminator": {"propertyName": "process_key", "mapping": mapping}}


# -- JSON Schema 2020-12 -> OpenAPI 3.0 schema object ---------------------------------------------

_KEPT = {"title", "description", "type", "enum", "format", "default", "minimum", "maximum", "multipleOf",
         "minLength", "maxLength", "pattern", "minItems", "maxItems", "uniqueItems", "required",
         "minProperties", "maxProperties", "readOnly", "writeOnly", "deprecated", "nullable", "example"}
_SUBSCHEMA = {"items", "not"}
_SUBSCHEMA_LISTS = {"allOf", "anyOf", "oneOf"}


def openapi30(schema: Any) -> Any:
    """The OpenAPI 3.0 schema object closest to a JSON Schema 2020-12 schema.

    Rewritten: numeric `exclusiveMinimum`/`exclusiveMaximum` (-> `minimum` + `exclusiveMinimum: true`),
    `const` (-> one-value `enum`), `type` lists (-> `nullable` / `anyOf`), `examples` (-> `example`).
    Kept: the keywords both dialects share and `x-` extensions. Dropped: keywords 3.0 has no word for
    (`$schema`, `if`/`then`, `prefixItems` …), so the document may accept a little more than the engine,
    which validates with the form itself and answers 422 naming the field."""
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for word, value in schema.items():
        if word == "required" and not value:
            continue  # 3.0 wants at least one name
        if word in _KEPT or word.startswith("x-"):
            out[word] = copy.deepcopy(value)
        elif word == "properties":
            out[word] = {name: openapi30(sub) for name, sub in value.items()}
        elif word == "additionalProperties":
            out[word] = openapi30(value) if isinstance(value, dict) else value
        elif word in _SUBSCHEMA:
            out[word] = openapi30(value) if isinstance(value, dict) else ({} if value else {"not": {}})
        elif word in _SUBSCHEMA_LISTS:
            out[word] = [openapi30(sub) for sub in value]
        elif word == "const":
            out["enum"] = [copy.deepcopy(value)]
        elif word == "examples" and isinstance(value, list) and value:
            out["example"] = copy.deepcopy(value[0])
    _exclusive_bound(schema, out, "exclusiveMinimum", "minimum", max)
    _exclusive_bound(schema, out, "exclusiveMaximum", "maximum", min)
    _type_list(out)
    return out


def _exclusive_bound(source: dict[str, Any], out: dict[str, Any], word: str, bound: str, stricter) -> None:
    value = source.get(word)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return
    if bound in out and stricter(out[bound], value) == out[bound] and out[bound] != value:
        return  # the inclusive bound is already the stricter one
    out[bound] = value
    out[word] = True


def _type_list(out: dict[str, Any]) -> None:
    types = out.get("type")
    if not isinstance(types, list):
        return
    if "null" in types:
        out["nullable"] = True
    kinds = [t for t in types if t != "null"]
    if len(kinds) == 1:
        out["type"] = kinds[0]
    else:
        del out["type"]
        if kinds:
            out["anyOf"] = [{"type": kind} for kind in kinds]


_assets = flask.Blueprint("docs_assets", __name__)


@_assets.route(f"{ASSETS_URL}<path:filename>")
def swagger_ui_asset(filename: str):
    """Swagger UI's scripts and styles, from the installed package."""
    return flask.send_from_directory(swagger_ui_path, filename)
