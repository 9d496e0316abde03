"""Hostile and unusual HTTP input: every one is a 4xx in the API's error shape, nothing half-written.

Each test is one way a request reached a 500 (or a misleading answer) before: JSON numbers and their
non-finite tokens, nesting and size, integers and NUL bytes in paths and queries, the order of checks,
content types and 405s (the client address recorded in history: tests/test_api.py). They run on SQLite and
PostgreSQL.
"""

import io
import json
from decimal import Decimal

import pytest

from tests.helpers import claim

START = "/api/v1/instances"


def raw_start(client, amount: str, content_type="application/json"):
    """POST /instances with the amount spliced into the JSON text as written (no Python float on the way)."""
    body = json.dumps({"process_key": "reimbursement", "data": claim(amount="AMOUNT")}).replace('"AMOUNT"', amount)
    return client.post(START, data=body, content_type=content_type)


def nothing_started(as_user) -> bool:
    return as_user("fengli").get(START).json["meta"]["total"] == 0  # fengli the auditor sees every instance


def start_task(as_user):
    return as_user("suxiaoyun").post(START, json={"process_key": "reimbursement", "data": claim()}).json


# -- 1. JSON numbers ---------------------------------------------------------------------------------

def test_fractional_amounts_are_exact_decimals_end_to_end(as_user):
    # a float cannot hold this: 5000000000000000.05 is 5000000000000000.0 as a double
    response = raw_start(as_user("suxiaoyun"), "5000000000000000.05")
    assert response.status_code == 201, response.json
    assert response.json["amount"] == "5000000000000000.05" and response.json["data"]["amount"] == "5000000000000000.05"


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e400", "-1E+400"])
def test_non_finite_numbers_are_422_naming_the_field_and_stored_nowhere(as_user, token):
    response = raw_start(as_user("suxiaoyun"), token)
    assert response.status_code == 422, response.json
    fields = response.json["error"]["details"]["fields"]
    assert {"amount", "invoices.0.amount"} <= set(fields)  # named as the start form names them
    assert nothing_started(as_user)


def test_responses_are_strict_json(app):
    with app.app_context():
        assert app.json.dumps({"amount": Decimal("12.30")}) == '{"amount": "12.30"}'
        with pytest.raises(ValueError):
            app.json.dumps({"ratio": float("nan")})  # a bug to see, never a NaN token a client cannot parse


# -- 2. depth and size -------------------------------------------------------------------------------

def test_deep_nesting_is_400_naming_the_limit(as_user):
    client = as_user("suxiaoyun")
    for depth in (65, 5000):
        body = '{"process_key": "reimbursement", "data": {"x": ' + "[" * (depth - 2) + "]" * (depth - 2) + "}}"
        response = client.post(START, data=body, content_type="application/json")
        assert response.status_code == 400, depth
        assert response.json["error"]["code"] == "invalid_json" and response.json["error"]["details"]["max_depth"] == 64
        assert "64" in response.json["error"]["message"]
    allowed = '{"process_key": "reimbursement", "data": {"x": ' + "[" * 62 + "]" * 62 + "}}"
    response = client.post(START, data=allowed, content_type="application/json")
    assert response.status_code == 422 and response.json["error"]["code"] == "invalid_input"  # parsed, then refused


def test_json_bodies_above_one_mib_are_413_and_uploads_keep_five(as_user):
    body = json.dumps({"process_key": "reimbursement", "data": {**claim(), "reason": "x" * (1024 * 1024)}})
    response = as_user("suxiaoyun").post(START, data=body, content_type="application/json")
    assert response.status_code == 413 and response.json["error"]["code"] == "payload_too_large"
    assert response.json["error"]["details"]["max_bytes"] == 1024 * 1024

    designer = as_user("luyao")
    big_file = {"files": [(io.BytesIO(b"<x/>" + b" " * (3 * 1024 * 1024)), "big.bpmn")]}
    within = designer.post("/api/v1/definitions", data=big_file, content_type="multipart/form-data")
    assert within.status_code == 422 and within.json["error"]["details"]["file"] == "big.bpmn"  # read, then refused
    too_big = {"files": [(io.BytesIO(b" " * (6 * 1024 * 1024)), "huge.bpmn")]}
    response = designer.post("/api/v1/definitions", data=too_big, content_type="multipart/form-data")
    assert response.status_code == 413 and response.json["error"]["details"]["max_bytes"] == 5 * 1024 * 1024


# -- 3. integers in paths and queries ------------------------------------------------------------------

HUGE = "9" * 30


@pytest.mark.parametrize(("method", "path"), [
    ("post", f"/api/v1/notifications/{HUGE}/read"),
    ("get", f"/api/v1/outbox/{HUGE}"),
    ("post", f"/api/v1/outbox/{HUGE}/retry"),
    ("get", f"/api/v1/definitions/reimbursement/versions/{HUGE}/bpmn"),
    ("get", "/api/v1/definitions/reimbursement/versions/2147483648/bpmn"),
    ("post", f"/api/v1/event-subscriptions/any/deliveries/{HUGE}/retry"),
    ("get", "/api/v1/outbox/0"),
])
def test_ids_that_cannot_exist_are_404(as_user, method, path):
    response = getattr(as_user("zhangwei"), method)(path)
    assert response.status_code == 404 and response.json["error"]["code"] == "not_found"


@pytest.mark.parametrize("path", ["/api/v1/instances", "/api/v1/tasks", "/api/v1/notifications", "/api/v1/outbox",
                                  "/api/v1/event-subscriptions/any/deliveries"])
def test_pages_beyond_the_maximum_are_422_naming_page(as_user, path):
    for page in (HUGE, "100001"):
        response = as_user("zhangwei").get(f"{path}?page={page}")
        assert response.status_code == 422 and "page" in response.json["error"]["details"]["fields"], response.json
    assert as_user("zhangwei").get(f"{START}?page=100000").json["items"] == []


def test_dates_no_time_zone_can_compare_are_422(as_user):
    client = as_user("suxiaoyun")
    for query in ("started_from=0001-01-01T00:00:00%2B08:00", "started_to=9999-12-31T23:59:59-08:00",
                  "started_from=0001-01-01T00:00:00"):
        response = client.get(f"{START}?{query}")
        field = query.split("=")[0]
        assert response.status_code == 422 and field in response.json["error"]["details"]["fields"], query


# -- 4. NUL bytes and over-long ids ----------------------------------------------------------------------

@pytest.mark.parametrize(("method", "path"), [
    ("post", "/api/v1/tasks/%00%ff/complete"),
    ("get", "/api/v1/tasks/%00"),
    ("get", "/api/v1/instances/a%00b"),
    ("get", "/api/v1/instances/" + "x" * 37),
    ("get", "/api/v1/definitions/" + "k" * 65),
    ("post", "/api/v1/event-subscriptions/%00/pause"),
])
def test_path_ids_with_nul_or_longer_than_the_column_are_404(as_user, method, path):
    response = getattr(as_user("zhangwei"), method)(path, json={"action": "approve"} if method == "post" else None)
    assert response.status_code == 404 and response.json["error"]["code"] == "not_found"


def test_nul_in_query_values_is_422_naming_the_parameter(as_user):
    response = as_user("suxiaoyun").get("/api/v1/tasks?instance_id=a%00b")
    assert response.status_code == 422 and response.json["error"]["details"]["fields"] == {
        "instance_id": ["must not contain the NUL character"]}


@pytest.mark.parametrize(("path_of", "body", "field"), [
    ("complete", {"action": "approve", "comment": "同意\x00"}, "comment"),
    ("complete", {"action": "approve", "form_data": {"opinion": "\x00"}}, "opinion"),
    ("transfer", {"to": "huangmin", "reason": "\x00出差"}, "reason"),
    ("withdraw", {"reason": "填错了\x00"}, "reason"),
    ("start", {"process_key": "reimbursement", "data": {**claim(), "reason": "a\x00"}}, "reason"),
    ("start", {"process_key": "reimbursement", "data": {**claim(), "k\x00": 1}}, "k\\u0000"),
    ("start", {"process_key": "reimbursement\x00", "data": claim()}, "process_key"),
])
def test_nul_in_stored_json_strings_is_422_naming_the_field(as_user, path_of, body, field):
    started = start_task(as_user)
    path = {"complete": f"/api/v1/tasks/{started['current_tasks'][0]['id']}/complete",
            "transfer": f"/api/v1/tasks/{started['current_tasks'][0]['id']}/transfer",
            "withdraw": f"{START}/{started['id']}/withdraw", "start": START}[path_of]
    actor = as_user("suxiaoyun" if path_of in ("withdraw", "start") else "guoxin")
    response = actor.post(path, json=body)
    assert response.status_code == 422, response.json
    assert field in response.json["error"]["details"]["fields"]
    assert as_user("guoxin").get(f"{START}/{started['id']}").json["current_tasks"][0]["status"] == "ready"


def test_idempotency_keys_with_control_characters_are_422(as_user):
    response = as_user("suxiaoyun").post(START, json={"process_key": "reimbursement", "data": claim()},
                                         headers={"Idempotency-Key": "bx\x01"})
    assert response.status_code == 422 and "Idempotency-Key" in response.json["error"]["details"]["fields"]
    assert nothing_started(as_user)


# -- 5. and 6. token first, then the content type --------------------------------------------------------

def test_no_token_is_401_whatever_the_body(app):
    client = app.test_client()
    for data, content_type in (("{not json", "application/json"), ('{"a": 1}', "text/plain"),
                               ("[" * 5000, "application/json")):
        response = client.post(START, data=data, content_type=content_type)
        assert response.status_code == 401 and response.json["error"]["code"] == "unauthorized", data[:10]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_a_json_body_sent_as_another_type_is_415(as_user, content_type):
    body = json.dumps({"process_key": "reimbursement", "data": claim()})
    headers = {} if content_type is None else {"Content-Type": content_type}
    response = as_user("suxiaoyun").post(START, data=body, headers=headers)
    assert response.status_code == 415 and response.json["error"]["code"] == "unsupported_media_type"
    assert nothing_started(as_user)


def test_bodiless_posts_stay_fine(as_user):
    started = start_task(as_user)
    response = as_user("suxiaoyun").post(f"{START}/{started['id']}/withdraw")
    assert response.status_code == 200 and response.json["status"] == "withdrawn"


# -- 7. 405 ---------------------------------------------------------------------------------------------

def test_405_names_the_allowed_methods(as_user):
    response = as_user("suxiaoyun").delete(START)
    assert response.status_code == 405 and response.json["error"]["code"] == "method_not_allowed"
    assert {"GET", "POST"} <= {m.strip() for m in response.headers["Allow"].split(",")}
