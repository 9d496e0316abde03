"""Request and response schemas (marshmallow); they also generate the OpenAPI document."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from marshmallow import Schema, ValidationError, fields, validate

FORM = "form"  # field metadata: the value is a form's data, whose fields errors name as the form does
PROCESS_KEY = validate.Regexp(r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$", error="must be a process key like 'payment'")


class StrictSchema(Schema):
    """Unknown fields are an error, so a misspelt field is reported instead of silently ignored."""


class ApiErrorBodySchema(Schema):
    code = fields.String(required=True, metadata={"description": "stable, e.g. not_found, invalid_input"})
    message = fields.String(required=True, metadata={"description": "for people (Chinese where users read it)"})
    details = fields.Dict(required=True, metadata={"description": "e.g. fields: {name: [reasons]} on a 422"})


class ApiErrorSchema(Schema):
    error = fields.Nested(ApiErrorBodySchema, required=True)


class HealthSchema(Schema):
    status = fields.String(required=True, metadata={"description": "ok: the API answers"})
    database = fields.String(required=True, metadata={"description": "ok: the database answered a query"})


MAX_PAGE = 100_000  # bounds the SQL OFFSET (a huge one overflows SQLite's integers); no one pages further


class PageArgsSchema(StrictSchema):
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=MAX_PAGE))
    per_page = fields.Integer(load_default=20, validate=validate.Range(min=1, max=200))


class PageMetaSchema(Schema):
    total = fields.Integer()
    page = fields.Integer()
    per_page = fields.Integer()
    total_estimated = fields.Boolean(metadata={"description": "true: `total` is a lower bound (counting stops at "
                                                              "10,000, or at the page asked for) or an estimate"})


# -- definitions ------------------------------------------------------------------------------------

class VersionSchema(Schema):
    id = fields.Integer()
    process_key = fields.String()
    version = fields.Integer()
    name = fields.String()
    content_hash = fields.String()
    bpmn_file = fields.String()
    deployed_by = fields.String(allow_none=True)
    deployed_at = fields.DateTime()


class DefinitionSchema(Schema):
    key = fields.String()
    name = fields.String()
    latest_version = fields.Integer()
    created_at = fields.DateTime()


class DefinitionDetailSchema(DefinitionSchema):
    versions = fields.List(fields.Nested(VersionSchema))


class DeployedSchema(Schema):
    process_key = fields.String()
    version = fields.Integer()
    version_id = fields.Integer()
    created = fields.Boolean(metadata={"description": "false when identical content was already deployed"})


class DeployWarningSchema(Schema):
    file = fields.String(metadata={"description": "the uploaded file the warning is about"})
    message = fields.String(metadata={"description": "what was not deployed and why, e.g. \"decision "
                                                     "'x' is not used by any process; not deployed\""})


class DeployResultSchema(Schema):
    deployed = fields.List(fields.Nested(DeployedSchema))
    warnings = fields.List(fields.Nested(DeployWarningSchema), metadata={
        "description": "files or parts of files that were accepted but not deployed: decisions and forms no "
                       "process uses, processes that are not executable; empty when everything was deployed"})


class ValidatedProcessSchema(Schema):
    process_key = fields.String()
    name = fields.String()


class ValidateResultSchema(Schema):
    processes = fields.List(fields.Nested(ValidatedProcessSchema), metadata={
        "description": "the executable processes the files define (what deploying them would version)"})
    warnings = fields.List(fields.Nested(DeployWarningSchema))


# -- instances and tasks ----------------------------------------------------------------------------

class TaskSchema(Schema):
    id = fields.String()
    spiff_task_id = fields.String(metadata={"description": "the BPMN task this row works on"})
    kind = fields.String(metadata={"description": "approval | add_sign (加签) | resubmit (申请人修改)"})
    mode = fields.String(metadata={"description": "any 或签 | all 会签 | sequence 依次"})
    owner_id = fields.String(allow_none=True, metadata={"description": "who delegated (委派) the task"})
    delegate_id = fields.String(allow_none=True)
    delegation = fields.String(allow_none=True, metadata={"description": "pending | resolved"})
    pending_after = fields.List(fields.String(), metadata={"description": "signers added after this approver"})
    instance_id = fields.String()
    process_key = fields.String()
    node_id = fields.String()
    name = fields.String()
    status = fields.String()
    assignment = fields.String()
    candidates = fields.List(fields.String())
    form_key = fields.String()
    actions = fields.List(fields.String())
    assignee_id = fields.String(allow_none=True)
    action = fields.String(allow_none=True)
    comment = fields.String(allow_none=True)
    created_at = fields.DateTime()
    due_at = fields.DateTime(allow_none=True)
    overdue = fields.Boolean(metadata={"description": "open and past its due time"})
    completed_at = fields.DateTime(allow_none=True)


class InstanceSchema(Schema):
    id = fields.String()
    process_key = fields.String()
    version_id = fields.Integer()
    business_key = fields.String(allow_none=True)
    starter_id = fields.String()
    status = fields.String(metadata={"description": "running | completed | withdrawn | cancelled | failed"})
    outcome = fields.String(allow_none=True, metadata={"description": "approved | rejected when completed"})
    title = fields.String(allow_none=True)
    amount = fields.Decimal(allow_none=True, as_string=True,
                            metadata={"description": "null when the caller may not see it (masked_fields)"})
    masked_fields = fields.List(fields.String(), metadata={
        "description": "x-sensitive fields shown masked (6222 **** **** 1234) to this caller"})
    error = fields.Dict(allow_none=True)
    started_at = fields.DateTime()
    updated_at = fields.DateTime()
    ended_at = fields.DateTime(allow_none=True)


class OATwinSchema(Schema):
    request_id = fields.String(allow_none=True, metadata={"description": "the OA request (E9 requestid)"})
    workflow_id = fields.String()
    node = fields.String(allow_none=True, metadata={"description": "OA's current node, as OA last said"})
    node_name = fields.String(allow_none=True)
    oa_state = fields.String(allow_none=True, metadata={"description": "open | archived | withdrawn"})
    expected_node = fields.String(allow_none=True, metadata={"description": "where finflow's open tasks map"})
    sync_state = fields.String(metadata={"description": "pending | synced | retrying | mismatch | failed | closed"})
    last_error = fields.String(allow_none=True)
    synced_at = fields.DateTime(allow_none=True)
    open_submissions = fields.Integer(metadata={"description": "calls on the twin not (yet) made"})


class IntegrationsSchema(Schema):
    oa = fields.Nested(OATwinSchema, allow_none=True)


class InstanceDetailSchema(InstanceSchema):
    data = fields.Dict()
    current_tasks = fields.List(fields.Nested(TaskSchema))
    integrations = fields.Nested(IntegrationsSchema, metadata={"description": "the instance's twins in other "
                                                                              "systems (OA)"})


class InstancePageSchema(Schema):
    items = fields.List(fields.Nested(InstanceSchema))
    meta = fields.Nested(PageMetaSchema)


class StartInstanceSchema(StrictSchema):
    process_key = fields.String(required=True, validate=PROCESS_KEY)
    business_key = fields.String(validate=validate.Length(min=1, max=128))
    data = fields.Dict(required=True, metadata={"description": "the start form's fields", FORM: True})


def in_calendar(moment: datetime) -> None:
    """A time zone moves a moment by less than a day, so one between these dates can always be compared
    in UTC, as the database does; 0001-01-01T00:00+08:00 would overflow the calendar (a 500)."""
    if not date(1, 1, 2) <= moment.date() <= date(9999, 12, 30):
        raise ValidationError("must be between 0001-01-02 and 9999-12-30")


def _search_amount(value: Decimal) -> None:
    """A search bound in yuan (a plain function: apispec would print Range's bounds as strings)."""
    if not Decimal(0) <= value <= Decimal(10) ** 15:
        raise ValidationError("must be between 0 and 10^15")


class InstanceSearchArgsSchema(PageArgsSchema):
    process_key = fields.String(validate=PROCESS_KEY)
    status = fields.String(validate=validate.OneOf(["running", "completed", "withdrawn", "cancelled", "failed"]))
    business_key = fields.String()
    starter = fields.String()
    started_from = fields.DateTime(validate=in_calendar)
    started_to = fields.DateTime(validate=in_calendar)
    approver = fields.String(validate=validate.Length(max=64), metadata={"description": "a user asked to act on it"})
    amount_min = fields.Decimal(as_string=True, allow_nan=False, validate=_search_amount,
                                metadata={"description": "yuan, 0 to 10^15; instances with at least this amount"})
    amount_max = fields.Decimal(as_string=True, allow_nan=False, validate=_search_amount,
                                metadata={"description": "yuan, 0 to 10^15; instances with at most this amount"})


class ReasonSchema(StrictSchema):
    reason = fields.String(validate=validate.Length(max=2000), load_default=None, allow_none=True)


class TaskListArgsSchema(PageArgsSchema):
    mine = fields.Boolean(load_default=False, metadata={
        "description": "the caller's to-do list: open tasks they are a candidate for (with `status`, that status)"})
    instance_id = fields.String()
    status = fields.String(validate=validate.OneOf(["ready", "waiting", "completed", "cancelled"]))
    overdue = fields.Boolean(load_default=False, metadata={"description": "only open tasks past their due time"})


class TaskPageSchema(Schema):
    items = fields.List(fields.Nested(TaskSchema))
    meta = fields.Nested(PageMetaSchema)


class TaskDetailSchema(TaskSchema):
    form = fields.Dict(metadata={"description": "JSON Schema of the fields the approver sees and may fill"})
    instance = fields.Nested(InstanceDetailSchema)
    requires_second_factor = fields.Boolean(metadata={
        "description": "approving needs the caller's TOTP code in X-Finflow-OTP (the amount is above the "
                       "threshold); changing a form field marked x-second-factor needs it too"})


class CompleteTaskSchema(StrictSchema):
    action = fields.String(required=True, validate=validate.OneOf(["approve", "reject", "submit"]))
    comment = fields.String(validate=validate.Length(max=2000), load_default=None, allow_none=True)
    form_data = fields.Dict(load_default=dict, metadata={FORM: True})


class CompletedSchema(Schema):
    task = fields.Nested(TaskSchema)
    instance = fields.Nested(InstanceDetailSchema)


class HistoryEventSchema(Schema):
    seq = fields.Integer()
    type = fields.String()
    at = fields.DateTime()
    actor_id = fields.String(allow_none=True)
    channel = fields.String(allow_none=True)
    client_ip = fields.String(allow_none=True)
    user_agent = fields.String(allow_none=True)
    task_id = fields.String(allow_none=True)
    node_id = fields.String(allow_none=True)
    payload = fields.Dict()


class HistorySchema(Schema):
    instance_id = fields.String()
    events = fields.List(fields.Nested(HistoryEventSchema))


class UserSchema(Schema):
    id = fields.String()
    name = fields.String()
    department_id = fields.String()
    manager_id = fields.String(allow_none=True)
    title = fields.String(allow_none=True)
    roles = fields.List(fields.String())
    active = fields.Boolean()


# -- approval operations ----------------------------------------------------------------------------

USER_ID = validate.Length(min=1, max=64)


class TransferSchema(StrictSchema):
    to = fields.String(required=True, validate=USER_ID, metadata={"description": "user id of the new approver"})
    reason = fields.String(validate=validate.Length(max=2000), load_default=None, allow_none=True)


class AddSignersSchema(StrictSchema):
    users = fields.List(fields.String(validate=USER_ID), required=True, validate=validate.Length(min=1, max=20))
    position = fields.String(required=True, validate=validate.OneOf(["before", "after"]),
                             metadata={"description": "before (前加签) or after (后加签) the current approver"})
    reason = fields.String(validate=validate.Length(max=2000), load_default=None, allow_none=True)


class ReturnSchema(StrictSchema):
    to = fields.String(required=True, validate=validate.Length(min=1, max=128),
                       metadata={"description": "a node id the instance passed, or 'applicant'"})
    reason = fields.String(validate=validate.Length(max=2000), load_default=None, allow_none=True)


class UrgeSchema(StrictSchema):
    message = fields.String(validate=validate.Length(max=500), load_default=None, allow_none=True)


class UrgedSchema(Schema):
    urged = fields.List(fields.Nested(TaskSchema))


class CcSchema(StrictSchema):
    users = fields.List(fields.String(validate=USER_ID), required=True, validate=validate.Length(min=1, max=50))
    note = fields.String(validate=validate.Length(max=500), load_default=None, allow_none=True)


class CcResultSchema(Schema):
    added = fields.List(fields.String())
