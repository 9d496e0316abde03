"""An instance's summary (title, amount) as lists and detail pages show it, read from its data."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from engine.finance.money import MoneyError, to_money

TITLE_FIELDS = ("title", "reason", "purpose", "payee")


def title_of(data: dict[str, Any]) -> str | None:
    for key in TITLE_FIELDS:
        if isinstance(data.get(key), str) and data[key].strip():
            return data[key][:255]
    return None


def amount_of(data: dict[str, Any]) -> Decimal | None:
    try:
        return to_money(data["amount"]) if data.get("amount") is not None else None
    except MoneyError:
        return None
