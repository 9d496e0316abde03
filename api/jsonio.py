"""JSON in and out of the API: exact numbers, bounded nesting, and never invalid JSON.

Money must not pass through binary floats, so every JSON number with a fraction or an exponent is read
as `decimal.Decimal` (integers stay `int`), and the `NaN`/`Infinity`/`-Infinity` tokens Python's parser
accepts become the matching Decimals, for the checks to refuse with a message naming the field instead
of the database refusing them later. Nesting is bounded before parsing: Python's parser recurses, and a
body nested a few thousand levels deep would otherwise end in a RecursionError.

Responses go out with Decimals as strings (Flask's `str()`), and with `allow_nan=False`: a non-finite
float is a server bug, never a `NaN` token that strict JSON clients cannot read.
"""

from __future__ import annotations

import json
import re
import sys
from decimal import Decimal
from itertools import accumulate
from typing import Any

from flask.json.provider import DefaultJSONProvider

from engine.errors import InvalidInput

MAX_DEPTH = 64
# RFC 8259 §6: numbers beyond IEEE 754 double range are not interoperable; every reader of stored JSON
# (the database's, SpiffWorkflow's, an integrator's) would turn them into infinities
MAX_NUMBER = Decimal(sys.float_info.max)
_CONSTANTS = {"NaN": Decimal("NaN"), "Infinity": Decimal("Infinity"), "-Infinity": Decimal("-Infinity")}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"?', re.DOTALL)  # an unclosed string runs to the end: linear
_BRACKET = re.compile(r"[\[\]{}]")


class JSONTooDeep(ValueError):
    """The body nests arrays/objects deeper than MAX_DEPTH; a ValueError so callers treat it as bad JSON."""

    def __init__(self) -> None:
        super().__init__(f"JSON nesting is deeper than {MAX_DEPTH} levels")


def loads(text: str | bytes) -> Any:
    """Parse a request body: Decimal for non-integers, depth checked first (JSONTooDeep)."""
    if isinstance(text, bytes | bytearray):
        text = text.decode("utf-8")
    if nesting_depth(text) > MAX_DEPTH:
        raise JSONTooDeep()
    return json.loads(text, parse_float=Decimal, parse_constant=_CONSTANTS.__getitem__)


def nesting_depth(text: str) -> int:
    """The deepest bracket nesting outside string literals (an upper bound for malformed text).

    Strings are blanked out by a regex and the brackets counted in C-speed passes, so a 1 MiB body
    costs milliseconds, not a Python loop per character."""
    brackets = _BRACKET.findall(_STRING.sub('""', text))
    return max(accumulate(1 if b in "[{" else -1 for b in brackets), default=0)


def refuse_unstorable(body: Any, forms: frozenset[str] = frozenset()) -> None:
    """Raise InvalidInput naming the field for values no store can keep: a NUL character in a string or
    key (PostgreSQL text cannot hold it) and non-finite numbers (NaN, ±Infinity).

    Fields inside the body fields named in `forms` are named as form validation names them (`amount`,
    `invoices.0.amount`), so a client sees one name for a field whichever check refused it."""
    problems: dict[str, list[str]] = {}
    if isinstance(body, dict) and forms:
        for key, item in body.items():
            _collect(item, "" if key in forms else key, problems)
    else:
        _collect(body, "", problems)
    if problems:
        summary = "; ".join(f"{field or '(body)'}: {messages[0]}" for field, messages in problems.items())
        raise InvalidInput(f"Invalid request: {summary}", {"fields": problems})


def _collect(value: Any, path: str, problems: dict[str, list[str]]) -> None:
    problem = _problem(value)
    if problem is not None:
        problems.setdefault(path, []).append(problem)
    elif isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                problems.setdefault(_join(path, key.replace("\x00", "\\u0000")), []).append(
                    "field names must not contain the NUL character")
            else:
                _collect(item, _join(path, key), problems)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _collect(item, _join(path, str(index)), problems)


def _problem(value: Any) -> str | None:
    if isinstance(value, str):
        return "must not contain the NUL character" if "\x00" in value else None
    if isinstance(value, Decimal) and not value.is_finite():
        return "must be a finite number"
    if isinstance(value, Decimal | int) and not isinstance(value, bool) and abs(value) > MAX_NUMBER:
        return f"must be within ±{float(MAX_NUMBER):.4g}"
    return None


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


class FinflowJSONProvider(DefaultJSONProvider):
    """`app.json`: Decimal-exact parsing (see the module docstring) and strict, non-ASCII-escaping output."""

    ensure_ascii = False
    sort_keys = False

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        kwargs.setdefault("allow_nan", False)
        return super().dumps(obj, **kwargs)

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return loads(s)
