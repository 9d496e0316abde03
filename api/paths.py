"""URL converters for path ids: a value that cannot name a row is a 404 at routing, before any query.

Without them a huge number overflows SQLite's 64-bit integers (OverflowError, a 500), and a NUL byte or
a string longer than the column makes PostgreSQL refuse the query (a 500). Row ids are 32-bit
`Integer` columns, so `<rowid:...>` accepts 1 to 2^31-1 written in ASCII digits; string keys
`<key(N):...>` accept 1 to N characters without control characters.

The OpenAPI document shows the same bounds (`register_in_spec`).
"""

from __future__ import annotations

from flask import Flask
from flask_smorest import Api
from werkzeug.routing import BaseConverter, Map, ValidationError

MAX_ROW_ID = 2**31 - 1  # SQL INTEGER on PostgreSQL; ids on SQLite never get near it either


class RowIdConverter(BaseConverter):
    """A positive row id that fits the Integer column."""

    regex = r"[0-9]{1,10}"
    part_isolating = True

    def to_python(self, value: str) -> int:
        number = int(value)
        if not 1 <= number <= MAX_ROW_ID:
            raise ValidationError()
        return number

    def to_url(self, value: int) -> str:
        return str(value)


class KeyConverter(BaseConverter):
    """A string id of at most `maxlength` characters (the column's length), with no control characters."""

    part_isolating = True

    def __init__(self, url_map: Map, maxlength: int = 64) -> None:
        super().__init__(url_map)
        self.maxlength = maxlength
        self.regex = rf"[^/\x00-\x1f\x7f]{{1,{maxlength}}}"


def register(app: Flask) -> None:
    app.url_map.converters["rowid"] = RowIdConverter
    app.url_map.converters["key"] = KeyConverter


def register_in_spec(api: Api) -> None:
    api.register_converter(RowIdConverter, lambda c: {"type": "integer", "minimum": 1, "maximum": MAX_ROW_ID})
    api.register_converter(KeyConverter, lambda c: {"type": "string", "minLength": 1, "maxLength": c.maxlength,
                                                    "pattern": r"^[^/\x00-\x1f\x7f]+$"})
