"""What of an instance's data a viewer may read in clear: fields a form marks `x-sensitive` (bank
account, ID number, salary-like amounts) are masked (`6222 **** **** 1234`) for anyone outside the
permitted roles — in API answers, history, lists and exports alike.

Permitted: the applicant (they typed it), and users holding a role the field lists in
`x-sensitive-roles`, else one of FINFLOW_SENSITIVE_ROLES (default finance, cashier, cfo). Channels that
leave finflow (WeCom cards, notifications, events out) always mask, whoever reads them.
A sensitive field named `amount` masks the instance's amount too (the summary column is read from it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from engine.models import Instance, User
from engine.services.deployments import model_for
from engine.services.forms import mask

DEFAULT_ROLES = frozenset({"finance", "cashier", "cfo"})
AMOUNT_FIELD = "amount"


def sensitive_fields(schema: Any) -> dict[str, frozenset[str]]:
    """Properties marked `x-sensitive: true` at any depth of a JSON Schema → the roles that may read them
    (empty: the default roles)."""
    found: dict[str, frozenset[str]] = {}
    if isinstance(schema, dict):
        for name, prop in (schema.get("properties") or {}).items():
            if isinstance(prop, dict) and prop.get("x-sensitive") is True:
                found[name] = frozenset(prop.get("x-sensitive-roles") or ())
            if isinstance(prop, dict):
                found.update(sensitive_fields(prop))
        found.update(sensitive_fields(schema.get("items")))
    return found


def default_roles() -> frozenset[str]:
    raw = os.environ.get("FINFLOW_SENSITIVE_ROLES")
    return DEFAULT_ROLES if raw is None else frozenset(r.strip() for r in raw.split(",") if r.strip())


@dataclass(frozen=True)
class Disclosure:
    """The masking one viewer gets on one instance: `hidden` names the fields they see masked."""

    hidden: frozenset[str]

    @property
    def hides_amount(self) -> bool:
        return AMOUNT_FIELD in self.hidden

    def data(self, value: Any) -> Any:
        """`value` (a form's data, a history payload) with hidden fields masked at any depth."""
        if not self.hidden:
            return value
        if isinstance(value, dict):
            return {k: (mask(v) if k in self.hidden and v not in (None, "") and not isinstance(v, dict | list)
                        else self.data(v)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.data(item) for item in value]
        return value

    def amount(self, value: Any) -> Any:
        return mask(value) if self.hides_amount and value is not None else value


CLEAR = Disclosure(frozenset())


def for_viewer(session: Session, viewer: User | None, instance: Instance) -> Disclosure:
    """What `viewer` (None: a channel leaving finflow) sees masked on `instance`."""
    fields = version_sensitive_fields(session, instance.version_id)
    if not fields:
        return CLEAR
    if viewer is not None and viewer.id == instance.starter_id:
        return CLEAR
    roles = viewer.role_ids if viewer is not None else set()
    defaults = default_roles()
    return Disclosure(frozenset(name for name, allowed in fields.items() if not roles & (allowed or defaults)))


def version_sensitive_fields(session: Session, version_id: int) -> dict[str, frozenset[str]]:
    model = model_for(session, version_id)
    found: dict[str, frozenset[str]] = {}
    for form in model.forms.values():
        found.update(sensitive_fields(form))
    return found
