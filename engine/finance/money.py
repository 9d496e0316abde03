"""Money is `Decimal` with two places from the request body to the database; a float never carries it.

The bounds are those of the columns that store amounts, NUMERIC(18, 2): anything outside them is refused
where it enters, never rounded or truncated on the way in.
"""

from __future__ import annotations

import math
from decimal import Decimal, InvalidOperation
from typing import Any

CENT = Decimal("0.01")
MAX_AMOUNT = Decimal("9999999999999999.99")  # 16 digits before the point: NUMERIC(18, 2)


class MoneyError(ValueError):
    """A value that is not an amount of money finflow can hold exactly; the message says why."""


def to_money(value: Any) -> Decimal:
    """The exact amount `value` stands for, or MoneyError: no rounding, no float, no NaN."""
    if isinstance(value, bool) or value is None:
        raise MoneyError("must be a number")
    if isinstance(value, float):
        raise MoneyError("must be an exact decimal number, not a float")
    try:
        amount = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except InvalidOperation:
        raise MoneyError("must be a number") from None
    if not amount.is_finite():
        raise MoneyError("must be a finite number")
    if abs(amount) > MAX_AMOUNT:
        raise MoneyError(f"must be at most {MAX_AMOUNT}")
    if amount != amount.quantize(CENT, rounding="ROUND_DOWN"):
        raise MoneyError("must have at most 2 decimal places")
    return amount.quantize(CENT)


def is_finite_number(value: Any) -> bool:
    """False for NaN and ±Infinity (float or Decimal), True for everything else: every comparison with NaN
    is false, so such a value must be refused before any rule compares with it."""
    if isinstance(value, Decimal):
        return value.is_finite()
    return not isinstance(value, float) or math.isfinite(value)


def fmt(amount: Decimal) -> str:
    """A display amount with thousands separators, as finance people read it: 12,345.60."""
    return f"{amount:,.2f}"


def yuan(value: Any) -> str:
    """An amount as approvers read it on a card or a page, ¥12,800.00; anything not a number as it is."""
    try:
        return f"¥{fmt(Decimal(str(value)))}"
    except (InvalidOperation, ValueError):
        return str(value)
