"""Budget lines (预算): totals, what is used and reserved, what is left, and the ledger behind them."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from api.context import authenticated
from api.openapi import errors
from api.parsing import Blueprint
from engine.services import budgets

blp = Blueprint("budgets", __name__, description="Budget lines, their encumbrance and ledger")

MONEY = {"as_string": True, "places": 2}


class BudgetListArgsSchema(Schema):
    year = fields.Integer(validate=validate.Range(min=2000, max=2999))
    department = fields.String(validate=validate.Length(max=64))


class BudgetSchema(Schema):
    line = fields.String()
    name = fields.String()
    department_id = fields.String()
    cost_center = fields.String(allow_none=True)
    year = fields.Integer()
    amount = fields.Decimal(**MONEY, metadata={"description": "the budget (预算总额)"})
    used = fields.Decimal(**MONEY, metadata={"description": "spent (已使用)"})
    reserved = fields.Decimal(**MONEY, metadata={"description": "held by requests in flight (已占用)"})
    available = fields.Decimal(**MONEY, metadata={"description": "amount − used − reserved (可用)"})
    usage_ratio = fields.Method("_ratio", metadata={"description": "(used + reserved) / amount, 4 places"})
    expense_account = fields.String()
    expense_account_name = fields.String()

    def _ratio(self, budget) -> str | None:
        return f"{(budget.used + budget.reserved) / budget.amount:.4f}" if budget.amount else None


class BudgetEntrySchema(Schema):
    id = fields.Integer()
    kind = fields.String(metadata={"description": "opening | adjust | reserve | release | consume"})
    instance_id = fields.String(allow_none=True)
    amount_delta = fields.Decimal(**MONEY)
    used_delta = fields.Decimal(**MONEY)
    reserved_delta = fields.Decimal(**MONEY)
    available_after = fields.Decimal(**MONEY)
    actor_id = fields.String(allow_none=True)
    reason = fields.String()
    created_at = fields.DateTime()


class BudgetListSchema(Schema):
    items = fields.List(fields.Nested(BudgetSchema))


class BudgetDetailSchema(BudgetSchema):
    ledger = fields.List(fields.Nested(BudgetEntrySchema), metadata={"description": "newest first, up to 200"})


@blp.route("/budgets")
@blp.arguments(BudgetListArgsSchema, location="query")
@blp.response(200, BudgetListSchema)
@authenticated
def list_budgets(args, session, user):
    """The budget lines the caller may see, with used, reserved and available amounts."""
    return {"items": budgets.list_budgets(session, user, args.get("year"), args.get("department"))}


@blp.route("/budgets/<key(64):line>")
@blp.response(200, BudgetDetailSchema)
@errors(blp, {403: "A line of another department", 404: "No such budget line"})
@authenticated
def get_budget(line, session, user):
    """One budget line with its ledger: every reservation, release and consumption, who and why."""
    budget = budgets.get_budget(session, user, line)
    budget.ledger = budgets.ledger(session, line)  # read-only transaction: a plain attribute for the schema
    return budget
