"""Every error leaves the API as `{"error": {"code", "message", "details"}}` with a fitting status."""

from __future__ import annotations

import logging

from flask import Flask, jsonify, request
from sqlalchemy.orm.exc import StaleDataError
from werkzeug.exceptions import HTTPException

from engine.crypto import SecretKeyError
from engine.errors import FinflowError, TooManyRequests

log = logging.getLogger("finflow.api")

_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 409: "conflict", 413: "payload_too_large",
               415: "unsupported_media_type", 422: "invalid_input", 429: "too_many_requests"}


def error_response(status: int, code: str, message: str, details: dict | None = None):
    response = jsonify({"error": {"code": code, "message": message, "details": details or {}}})
    response.status_code = status
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(FinflowError)
    def _finflow(exc: FinflowError):
        response = error_response(exc.status, exc.code, exc.message, exc.details)
        if isinstance(exc, TooManyRequests):
            response.headers["Retry-After"] = str(exc.retry_after)
        return response

    @app.errorhandler(SecretKeyError)
    def _secret_key(exc: SecretKeyError):  # the server's key is wrong: say so, never cryptography's traceback
        log.error("secret key: %s", exc)
        return error_response(500, "secret_key_error", str(exc), {"setting": "FINFLOW_SECRET_KEY"})

    @app.errorhandler(StaleDataError)
    def _stale(exc):
        return error_response(409, "concurrent_update", "流程实例已被其他操作修改，请刷新后重试")

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        response = _http_error(exc)
        for name, value in exc.get_headers():  # e.g. Allow on a 405
            if name.lower() != "content-type":
                response.headers[name] = value
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error")
        return error_response(500, "internal_error", "服务器内部错误，请联系管理员")


def _http_error(exc: HTTPException):
    """werkzeug's and webargs' errors in our shape; webargs' field messages become details.fields."""
    status = exc.code or 500
    data = getattr(exc, "data", None) or {}
    messages = data.get("messages")
    if messages:  # webargs validation: {"json": {"field": ["msg"]}} -> fields
        fields = {}
        for location in messages.values():
            fields.update(location if isinstance(location, dict) else {"": location})
        if status == 400:
            return error_response(400, "invalid_json", "Request body is not valid JSON", {"fields": fields})
        if "_schema" in fields and any("Invalid input type" in m for m in fields["_schema"]):
            return error_response(400, "invalid_json", "Request body must be a JSON object", {"fields": fields})
        summary = "; ".join(f"{k}: {v[0] if isinstance(v, list) else v}" for k, v in fields.items())
        return error_response(422, "invalid_input", f"Invalid request: {summary}", {"fields": fields})
    if status == 413:
        limit = request.max_content_length
        return error_response(413, "payload_too_large", f"Request body is larger than {limit} bytes",
                              {"max_bytes": limit})
    message = exc.description or exc.name
    if status == 400 and "json" in (message or "").lower():
        return error_response(400, "invalid_json", "Request body is not valid JSON", {})
    return error_response(status, _HTTP_CODES.get(status, "http_error"), message)
