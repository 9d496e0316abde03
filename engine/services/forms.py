"""Validating submitted data against a form's JSON Schema, with errors that name the field.

Every channel (REST, WeCom card, OA callback, the web page) submits through here, so one set of rules
holds everywhere. Fields marked `"x-money": true` come back as exact two-place Decimals; a number that is
not finite (NaN, Infinity) is refused wherever it appears, before any rule compares with it — a
comparison with NaN is false, and a false comparison must never skip an approval.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

import jsonschema
from jsonschema import validators

from engine.errors import InvalidInput
from engine.finance.money import MAX_AMOUNT, MoneyError, is_finite_number, to_money, yuan

Errors = dict[str, list[str]]


def validate_form(schema: dict[str, Any], data: Any, what: str) -> dict[str, Any]:
    """`data` checked against `schema`, with its money fields as Decimals; InvalidInput naming each field."""
    if not isinstance(data, dict):
        raise InvalidInput(f"{what} must be a JSON object", {"fields": {"": ["must be an object"]}})
    errors: Errors = {}
    _find_non_finite(data, (), errors)
    if not errors:
        for error in sorted(_validator(schema).iter_errors(data), key=lambda e: list(e.absolute_path)):
            field = field_name(error.absolute_path) or _missing_field(error) or ""
            errors.setdefault(field, []).append(_message(error))
    normalized = _money_fields(schema, data, (), errors) if not errors else data
    raise_if_invalid(errors, what)
    return normalized


def raise_if_invalid(errors: Errors, what: str) -> None:
    if errors:
        raise InvalidInput(f"{what} is invalid: " + "; ".join(f"{k or '(form)'}: {v[0]}" for k, v in errors.items()),
                           {"fields": errors})


def field_name(path) -> str:
    return ".".join(str(p) for p in path)


def _find_non_finite(value: Any, path: tuple, errors: Errors) -> None:
    if not is_finite_number(value):
        errors.setdefault(field_name(path), []).append("must be a finite number (NaN and Infinity are not numbers)")
    elif isinstance(value, dict):
        for key, item in value.items():
            _find_non_finite(item, (*path, key), errors)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _find_non_finite(item, (*path, index), errors)


def _money_fields(schema: dict[str, Any], value: Any, path: tuple, errors: Errors) -> Any:
    """A copy of `value` with every `x-money` field an exact Decimal (errors collected, not raised)."""
    if schema.get("x-money") and value is not None:
        try:
            return to_money(value)
        except MoneyError as exc:
            errors.setdefault(field_name(path), []).append(str(exc))
            return value
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        return {k: _money_fields(properties.get(k, {}), v, (*path, k), errors) for k, v in value.items()}
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_money_fields(schema["items"], v, (*path, i), errors) for i, v in enumerate(value)]
    return value


def _multiple_of(validator, divisor, instance, schema):
    """jsonschema's multipleOf, exact for Decimals (0.01 as a float is not a hundredth) and never raising."""
    if not validator.is_type(instance, "number"):
        return
    try:
        remainder = Decimal(str(instance)) % Decimal(str(divisor))
    except InvalidOperation:
        yield jsonschema.ValidationError(f"{instance} is too large")
        return
    if remainder != 0:
        yield jsonschema.ValidationError(f"{instance} is not a multiple of {divisor}")


_FormValidator = validators.extend(jsonschema.Draft202012Validator, {"multipleOf": _multiple_of})
_FORMAT_CHECKER = jsonschema.FormatChecker()
_VALIDATORS: dict[int, tuple[dict[str, Any], Any]] = {}


def _validator(schema: dict[str, Any]):
    """Validators are reused per schema object; deployed forms are immutable and cached with their model."""
    cached = _VALIDATORS.get(id(schema))
    if cached is None or cached[0] is not schema:
        cached = (schema, _FormValidator(schema, format_checker=_FORMAT_CHECKER))
        _VALIDATORS[id(schema)] = cached
    return cached[1]


def _missing_field(error: jsonschema.ValidationError) -> str | None:
    if error.validator == "required":
        return str(error.message).split("'")[1]
    return None


def _message(error: jsonschema.ValidationError) -> str:
    if error.validator == "required":
        return "is required"
    if error.validator == "exclusiveMinimum":
        return f"must be greater than {error.validator_value}"
    if error.validator == "maximum":  # a money bound read as a float (1e+16) is NUMERIC(18, 2)'s limit
        return f"must be at most {MAX_AMOUNT if error.schema.get('x-money') else error.validator_value}"
    if error.validator == "multipleOf":
        return f"must be a multiple of {error.validator_value} (at most 2 decimal places)"
    if error.validator == "type":
        return f"must be of type {error.validator_value}"
    return error.message


# -- showing a form's values to approvers (WeCom cards, the approver page) ------------------------------


def mask(value: Any) -> str:
    """An x-sensitive value (account, ID number) with only its first and last four characters: 6222 **** **** 1234."""
    text = re.sub(r"\s+", "", str(value))
    if len(text) <= 8:
        return text[:1] + "*" * max(0, len(text) - 1)
    return f"{text[:4]} **** **** {text[-4:]}"


def shown_fields(schema: dict[str, Any], data: dict[str, Any], names: list[str] | None = None) -> list[tuple[str, str]]:
    """(label, text) of the fields approvers see: `names` in that order, else those marked x-card; empty and
    structured values left out, x-sensitive masked, x-money as ¥…."""
    properties = schema.get("properties", {})
    chosen = names if names is not None else [n for n, p in properties.items() if p.get("x-card")]
    shown = []
    for name in chosen:
        spec, value = properties.get(name, {}), data.get(name)
        if value in (None, "") or isinstance(value, dict | list):
            continue
        text = mask(value) if spec.get("x-sensitive") else yuan(value) if spec.get("x-money") else str(value)
        shown.append((str(spec.get("title") or name), text))
    return shown
