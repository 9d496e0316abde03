"""Validating submitted data against a form's JSON Schema, with errors that name the field."""

from __future__ import annotations

from typing import Any

import jsonschema

from engine.errors import InvalidInput


def validate_form(schema: dict[str, Any], data: Any, what: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise InvalidInput(f"{what} must be a JSON object", {"fields": {"": ["must be an object"]}})
    validator = _validator(schema)
    errors: dict[str, list[str]] = {}
    for error in sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path)):
        field = ".".join(str(p) for p in error.absolute_path) or _missing_field(error) or ""
        errors.setdefault(field, []).append(_message(error, schema))
    if errors:
        raise InvalidInput(f"{what} is invalid: " + "; ".join(f"{k or '(form)'}: {v[0]}" for k, v in errors.items()),
                           {"fields": errors})
    return data


_FORMAT_CHECKER = jsonschema.FormatChecker()
_VALIDATORS: dict[int, tuple[dict[str, Any], jsonschema.Draft202012Validator]] = {}


def _validator(schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    """Validators are reused per schema object; deployed forms are immutable and cached with their model."""
    cached = _VALIDATORS.get(id(schema))
    if cached is None or cached[0] is not schema:
        cached = (schema, jsonschema.Draft202012Validator(schema, format_checker=_FORMAT_CHECKER))
        _VALIDATORS[id(schema)] = cached
    return cached[1]


def _missing_field(error: jsonschema.ValidationError) -> str | None:
    if error.validator == "required":
        return str(error.message).split("'")[1]
    return None


def _message(error: jsonschema.ValidationError, schema: dict[str, Any]) -> str:
    if error.validator == "required":
        return "is required"
    if error.validator == "exclusiveMinimum":
        return f"must be greater than {error.validator_value}"
    if error.validator == "type":
        return f"must be of type {error.validator_value}"
    return error.message
