"""How request arguments are read: the project's JSON (api/jsonio.py) for bodies, and the refusals that
must happen before a value reaches the engine or the database.

Every resource blueprint is an `api.parsing.Blueprint`, so its `@blp.arguments` go through
`FinflowParser`:
- a body is parsed by `jsonio.loads` (Decimal numbers, nesting bounded: 400 `invalid_json` naming the limit);
- a body that is not JSON on a JSON route is 415 `unsupported_media_type` (not "missing fields"); a POST
  without a body stays fine and reads as `{}`;
- NUL characters and non-finite numbers in a body, and NUL in query values, are 422 naming the field.
"""

from __future__ import annotations

from typing import Any

import flask
import flask_smorest
from marshmallow import Schema
from webargs import core
from webargs.flaskparser import FlaskParser, is_json_request
from werkzeug.exceptions import UnsupportedMediaType

from api import jsonio
from api.schemas import FORM
from engine.errors import FinflowError, InvalidInput


class FinflowParser(FlaskParser):
    def _raw_load_json(self, req: flask.Request) -> Any:
        data = req.get_data(cache=True)
        if not data:
            return core.missing
        if not is_json_request(req):
            sent = req.mimetype or "a body without Content-Type"
            raise UnsupportedMediaType(f"This operation takes an application/json body, not {sent}")
        try:
            body = jsonio.loads(data)
        except jsonio.JSONTooDeep as exc:
            raise FinflowError(f"Request body is not accepted: {exc}", {"max_depth": jsonio.MAX_DEPTH},
                               code="invalid_json") from None
        return body

    def load_json(self, req: flask.Request, schema: Schema) -> Any:
        body = super().load_json(req, schema)
        if body is not core.missing:
            forms = frozenset(name for name, field in schema.fields.items() if field.metadata.get(FORM))
            jsonio.refuse_unstorable(body, forms)
        return body

    def load_querystring(self, req: flask.Request, schema: Schema) -> Any:
        bad = sorted({name for name, value in req.args.items(multi=True) if "\x00" in name + value})
        if bad:
            names = [name.replace("\x00", "\\u0000") for name in bad]
            raise InvalidInput(f"Query parameter {', '.join(names)} must not contain the NUL character",
                               {"fields": {name: ["must not contain the NUL character"] for name in names}})
        return super().load_querystring(req, schema)


class Blueprint(flask_smorest.Blueprint):
    """flask-smorest's Blueprint reading arguments with FinflowParser."""

    ARGUMENTS_PARSER = FinflowParser()
