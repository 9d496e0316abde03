"""Errors the engine raises for callers to show; each carries an HTTP-style status and a stable code.

The API turns them into `{"error": {"code", "message", "details"}}`; the CLI prints them.
"""

from __future__ import annotations

from typing import Any


class FinflowError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, details: dict[str, Any] | None = None, *, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.details = details or {}
        if code:
            self.code = code


class InvalidInput(FinflowError):
    status = 422
    code = "invalid_input"


class DeploymentInvalid(FinflowError):
    status = 422
    code = "deployment_invalid"


class Unauthorized(FinflowError):
    status = 401
    code = "unauthorized"


class Forbidden(FinflowError):
    status = 403
    code = "forbidden"


class NotFound(FinflowError):
    status = 404
    code = "not_found"


class Conflict(FinflowError):
    status = 409
    code = "conflict"


class TooManyRequests(FinflowError):
    status = 429
    code = "too_many_requests"

    def __init__(self, message: str, retry_after: int, details: dict[str, Any] | None = None):
        super().__init__(message, {**(details or {}), "retry_after": retry_after})
        self.retry_after = retry_after
