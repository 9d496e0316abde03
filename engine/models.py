"""The persistent model: org, deployed process versions, instances, projected tasks and history.

History is append-only and numbered per instance (`seq`), so timelines are index-only reads and a hash
chain can later be laid over it without rewriting rows.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from engine import clock
from engine.db import Base
from engine.finance.money import CENT, to_money


class UtcDateTime(TypeDecorator):
    """Timestamps are stored in UTC and always read back timezone-aware (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Money(TypeDecorator):
    """An exact amount, NUMERIC(18, 2). SQLite has no exact decimal type (it stores NUMERIC as a float
    when the digits do not fit an integer), so there the column holds whole cents as an integer."""

    impl = Numeric(18, 2)
    cache_ok = True

    def load_dialect_impl(self, dialect):
        if dialect.name == "sqlite":
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(Numeric(18, 2, asdecimal=True))

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        amount = to_money(value)
        return int(amount * 100) if dialect.name == "sqlite" else amount

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if dialect.name == "sqlite":
            return (Decimal(int(value)) / 100).quantize(CENT)
        return Decimal(value).quantize(CENT)


class Role(Base):
    __tablename__ = "roles"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))


class Department(Base):
    __tablename__ = "departments"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("departments.id"), index=True)
    head_id: Mapped[str | None] = mapped_column(String(64))


class User(Base):
    __tablename__ = "users"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    department_id: Mapped[str] = mapped_column(ForeignKey("departments.id"), index=True)
    manager_id: Mapped[str | None] = mapped_column(String(64))
    title: Mapped[str | None] = mapped_column(String(128))
    mobile: Mapped[str | None] = mapped_column(String(32))
    email: Mapped[str | None] = mapped_column(String(128))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    password_hash: Mapped[str | None] = mapped_column(String(255))  # argon2id; None: no password login
    totp_secret: Mapped[str | None] = mapped_column(String(255))  # sealed (engine.crypto, "totp"); None: no TOTP
    totp_confirmed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)  # None: enrolment not confirmed
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)  # last accepted timestep: a code works once
    roles: Mapped[list[UserRole]] = relationship(cascade="all, delete-orphan")  # loaded when asked for

    @property
    def role_ids(self) -> set[str]:
        return {r.role_id for r in self.roles}


class RoleScope(Base):
    """How far a role sees: per process key ("*" for any), one of own, department, department_tree, all."""

    __tablename__ = "role_scopes"
    role_id: Mapped[str] = mapped_column(ForeignKey("roles.id"), primary_key=True)
    process_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    scope: Mapped[str] = mapped_column(String(16))


class UserRole(Base):
    __tablename__ = "user_roles"
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), primary_key=True)
    role_id: Mapped[str] = mapped_column(ForeignKey("roles.id"), primary_key=True, index=True)


class Group(Base):
    __tablename__ = "groups"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))


class GroupMember(Base):
    __tablename__ = "group_members"
    group_id: Mapped[str] = mapped_column(ForeignKey("groups.id"), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), primary_key=True)


class ApiToken(Base):
    """A bearer token; only its SHA-256 is stored, so a database leak does not leak credentials."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(128), default="")
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)  # operations allowed; ["*"]: all the roles allow
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_used_ip: Mapped[str | None] = mapped_column(String(64))
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    revoked_by: Mapped[str | None] = mapped_column(String(64))

    @property
    def status(self) -> str:
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if self.expires_at is not None and self.expires_at <= clock.now() else "active"


class ProcessDefinition(Base):
    __tablename__ = "process_definitions"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    latest_version: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ProcessVersion(Base):
    """An immutable deployed version: the exact files (BPMN, DMN, forms) a process key runs on."""

    __tablename__ = "process_versions"
    __table_args__ = (
        UniqueConstraint("process_key", "version"),
        UniqueConstraint("process_key", "content_hash"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    process_key: Mapped[str] = mapped_column(ForeignKey("process_definitions.key"))
    version: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(128))
    content_hash: Mapped[str] = mapped_column(String(64))
    bpmn_file: Mapped[str] = mapped_column(String(255))
    files: Mapped[dict[str, str]] = mapped_column(JSON)
    deployed_by: Mapped[str | None] = mapped_column(String(64))
    deployed_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Instance(Base):
    __tablename__ = "instances"
    __table_args__ = (
        Index("ix_instances_process_status", "process_key", "status"),
        Index("ix_instances_started_at", "started_at"),
        Index("ix_instances_version_status", "version_id", "status"),  # per-version statistics
        # lists newest first within one arm of the data scope (engine.services.queries): the applicant's
        # own, a department's, one status; each page is a short backward range scan, whatever the table's size
        Index("ix_instances_starter_started", "starter_id", "started_at"),
        Index("ix_instances_department_started", "department_id", "started_at"),
        Index("ix_instances_status_started", "status", "started_at"),
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    process_key: Mapped[str] = mapped_column(String(64))
    version_id: Mapped[int] = mapped_column(ForeignKey("process_versions.id"))
    business_key: Mapped[str | None] = mapped_column(String(128), index=True)
    starter_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    department_id: Mapped[str | None] = mapped_column(String(64))  # the starter's, when started
    status: Mapped[str] = mapped_column(String(16))  # running | completed | withdrawn | cancelled | failed
    outcome: Mapped[str | None] = mapped_column(String(16))  # approved | rejected
    title: Mapped[str | None] = mapped_column(String(255))
    amount: Mapped[Decimal | None] = mapped_column(Money)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(Text)
    lock_version: Mapped[int] = mapped_column(Integer, default=1)
    last_seq: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    chain_head: Mapped[str | None] = mapped_column(String(64))  # hash of the last history event (engine.audit)
    archived_at: Mapped[datetime | None] = mapped_column(UtcDateTime)  # history moved to history_archive

    __mapper_args__ = {"version_id_col": lock_version}


class Task(Base):
    """A human task projected out of the workflow state, so it can be queried without loading it.

    One BPMN user task (a SpiffWorkflow task, `spiff_task_id`) may be worked by several rows: one per
    signer in a countersign (会签) or sequence (依次), plus rows for added signers (加签) or for the
    applicant when a task is returned to them. Rows of one activation of the node share `activation`.
    """

    __tablename__ = "tasks"
    __table_args__ = (Index("ix_tasks_status_created", "status", "created_at"),  # to-do lists: open rows only
                      Index("ix_tasks_assignee_completed", "assignee_id", "completed_at"))  # 已办, newest first
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    spiff_task_id: Mapped[str] = mapped_column(String(36), index=True)
    activation: Mapped[str] = mapped_column(String(32), index=True)
    kind: Mapped[str] = mapped_column(String(16), default="approval")  # approval | add_sign | resubmit
    mode: Mapped[str] = mapped_column(String(16), default="any")  # any 或签 | all 会签 | sequence 依次
    position: Mapped[int] = mapped_column(Integer, default=0)  # order within the activation
    owner_id: Mapped[str | None] = mapped_column(String(64))  # who delegated (委派) the task
    delegate_id: Mapped[str | None] = mapped_column(String(64))
    delegation: Mapped[str | None] = mapped_column(String(16))  # pending | resolved
    sign_before: Mapped[bool] = mapped_column(Boolean, default=False)  # an add_sign row ahead of the approver
    pending_after: Mapped[list[str]] = mapped_column(JSON, default=list)  # add-signers after this approver
    form_data: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    instance_id: Mapped[str] = mapped_column(ForeignKey("instances.id"), index=True)
    process_key: Mapped[str] = mapped_column(String(64))
    node_id: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))  # ready | waiting | completed | cancelled
    assignment: Mapped[str] = mapped_column(String(255))
    candidates: Mapped[list[str]] = mapped_column(JSON)
    form_key: Mapped[str] = mapped_column(String(128))
    actions: Mapped[list[str]] = mapped_column(JSON)
    assignee_id: Mapped[str | None] = mapped_column(String(64))
    action: Mapped[str | None] = mapped_column(String(16))
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    due_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


    @property
    def overdue(self) -> bool:
        return self.status in ("ready", "waiting") and self.due_at is not None and self.due_at < clock.now()


class TaskCandidate(Base):
    __tablename__ = "task_candidates"
    # a user's tasks as an index-only scan: the instances they were asked about, without the heap
    __table_args__ = (Index("ix_task_candidates_user_task", "user_id", "task_id"),)
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id"), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(64), primary_key=True)


class HistoryColumns:
    """What one history event says, shared by the live table and its archive (the same row either way)."""

    type: Mapped[str] = mapped_column(String(48))
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    actor_id: Mapped[str | None] = mapped_column(String(64))
    channel: Mapped[str | None] = mapped_column(String(16))
    client_ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(255))
    task_id: Mapped[str | None] = mapped_column(String(36))
    node_id: Mapped[str | None] = mapped_column(String(128))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    hash: Mapped[str] = mapped_column(String(64))


class HistoryEvent(HistoryColumns, Base):
    """Append-only: nothing in finflow updates or deletes these rows (archiving moves them, see
    HistoryArchive). `hash` chains each row to the previous one of its instance (engine.audit.chain)."""

    __tablename__ = "history_events"
    __table_args__ = (UniqueConstraint("instance_id", "seq"), Index("ix_history_events_at", "at"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    instance_id: Mapped[str] = mapped_column(ForeignKey("instances.id"))
    seq: Mapped[int] = mapped_column(Integer)


class HistoryArchive(HistoryColumns, Base):
    """History of archived instances (engine.audit.archive), moved out of `history_events` row for row:
    same columns and hashes, so the live table stays small and the chains and day anchors still verify.
    (instance_id, seq) is the key, as it is unique in `history_events`; `id` keeps the live row's id but is
    not a key here, since SQLite may hand a deleted row's id to a new live row."""

    __tablename__ = "history_archive"
    __table_args__ = (Index("ix_history_archive_at", "at"),)
    id: Mapped[int] = mapped_column(Integer)
    instance_id: Mapped[str] = mapped_column(ForeignKey("instances.id"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)


class AuditAnchor(Base):
    """One day's digest (Asia/Shanghai days) over every history event hash of the day, chained to the
    previous day's: catches a rewritten instance chain, and is small enough to copy off-site."""

    __tablename__ = "audit_anchors"
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    events: Mapped[int] = mapped_column(Integer)
    digest: Mapped[str] = mapped_column(String(64))
    previous: Mapped[str] = mapped_column(String(64))
    computed_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Timer(Base):
    """A BPMN timer an instance waits on: the durable schedule behind rq's delayed jobs and the sweep.

    `due_at` is when the diagram says the timer is due; `fire_at` is when finflow fires it, later than
    `due_at` for reminders that fall in quiet hours.
    """

    __tablename__ = "timers"
    __table_args__ = (Index("ix_timers_status_fire_at", "status", "fire_at"),
                      UniqueConstraint("spiff_task_id", "due_at"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    instance_id: Mapped[str] = mapped_column(ForeignKey("instances.id"), index=True)
    spiff_task_id: Mapped[str] = mapped_column(String(36))
    node_id: Mapped[str] = mapped_column(String(128))
    attached_to: Mapped[str | None] = mapped_column(String(128))  # the user task of a boundary timer
    interrupting: Mapped[bool] = mapped_column(Boolean, default=False)
    due_at: Mapped[datetime] = mapped_column(UtcDateTime)
    fire_at: Mapped[datetime] = mapped_column(UtcDateTime)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | fired | cancelled
    fired_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class InstanceCc(Base):
    """抄送: people who may read an instance and are told about it, but cannot act."""

    __tablename__ = "instance_cc"
    instance_id: Mapped[str] = mapped_column(ForeignKey("instances.id"), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)
    added_by: Mapped[str | None] = mapped_column(String(64))
    node_id: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class IdempotencyRecord(Base):
    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("user_id", "key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    response: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Budget(Base):
    """A budget line. `used` and `reserved` are running totals of its ledger (BudgetEntry), kept on the
    row so the check-and-reserve reads and locks one row; `finflow budget check` proves they agree."""

    __tablename__ = "budgets"
    line: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    department_id: Mapped[str] = mapped_column(ForeignKey("departments.id"))
    cost_center: Mapped[str | None] = mapped_column(String(64))
    year: Mapped[int] = mapped_column(Integer)
    amount: Mapped[Decimal] = mapped_column(Money)
    used: Mapped[Decimal] = mapped_column(Money)
    reserved: Mapped[Decimal] = mapped_column(Money, default=Decimal("0.00"))
    expense_account: Mapped[str] = mapped_column(String(16))
    expense_account_name: Mapped[str] = mapped_column(String(64))

    @property
    def available(self) -> Decimal:
        return self.amount - self.used - self.reserved


class BudgetEntry(Base):
    """One change of a budget line (预算台账), append-only: who, which instance, how much, why.

    The deltas say what the change did to the line's totals; summed per line they are the totals.
    kinds: opening (the line's starting figures), adjust (the budget amount changed), reserve (占用),
    release (释放), consume (核销: a reservation becomes spending).
    """

    __tablename__ = "budget_entries"
    __table_args__ = (Index("ix_budget_entries_line_id", "line", "id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    line: Mapped[str] = mapped_column(ForeignKey("budgets.line"))
    kind: Mapped[str] = mapped_column(String(16))
    instance_id: Mapped[str | None] = mapped_column(String(36), index=True)
    amount_delta: Mapped[Decimal] = mapped_column(Money, default=Decimal("0.00"))
    used_delta: Mapped[Decimal] = mapped_column(Money, default=Decimal("0.00"))
    reserved_delta: Mapped[Decimal] = mapped_column(Money, default=Decimal("0.00"))
    available_after: Mapped[Decimal] = mapped_column(Money)
    actor_id: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class InvoiceClaim(Base):
    """An invoice backing a claim. The primary key is the invoice itself, so two running or approved
    claims can never hold one invoice, whatever races: the database refuses the second insert."""

    __tablename__ = "invoice_claims"
    invoice_key: Mapped[str] = mapped_column(String(64), primary_key=True)  # code:number or 全电 number
    instance_id: Mapped[str] = mapped_column(ForeignKey("instances.id"), index=True)
    amount: Mapped[Decimal] = mapped_column(Money)
    invoice_date: Mapped[date] = mapped_column(Date)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Voucher(Base):
    """记账凭证 generated when a payment is executed; lines are balanced debit/credit entries."""

    __tablename__ = "vouchers"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    instance_id: Mapped[str] = mapped_column(ForeignKey("instances.id"), index=True)
    voucher_date: Mapped[date] = mapped_column(Date)
    summary: Mapped[str] = mapped_column(String(255))
    lines: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    total: Mapped[Decimal] = mapped_column(Money)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class WebSession(Base):
    """A browser's login (the approver page opened from WeCom; the web pages later). Only the SHA-256 of
    the cookie's value is stored, as for API tokens."""

    __tablename__ = "web_sessions"
    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    channel: Mapped[str] = mapped_column(String(16))  # how the user logged in: wecom | password | ...
    csrf_token: Mapped[str] = mapped_column(String(64))
    client_ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class LoginState(Base):
    """An OAuth2 login under way: the `state` sent to the identity provider, bound to the browser that
    started it (the hash of a cookie), used at most once."""

    __tablename__ = "login_states"
    state: Mapped[str] = mapped_column(String(64), primary_key=True)
    browser_hash: Mapped[str] = mapped_column(String(64))
    next_url: Mapped[str] = mapped_column(String(512))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class LoginAttempt(Base):
    """One password login tried: the record of failures (who, from where) and what rate limiting counts."""

    __tablename__ = "login_attempts"
    __table_args__ = (Index("ix_login_attempts_login_at", "login", "at"),
                      Index("ix_login_attempts_client_ip_at", "client_ip", "at"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    login: Mapped[str] = mapped_column(String(64))  # the user id typed, known or not
    client_ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(255))
    succeeded: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str | None] = mapped_column(String(32))  # wrong_password | unknown_user | inactive | limited
    at: Mapped[datetime] = mapped_column(UtcDateTime)


class SecurityEvent(Base):
    """The security log, append-only like history: who was granted or lost what, who viewed or exported
    which instances, failed second factors. Not tied to one instance, so not in `history_events`."""

    __tablename__ = "security_events"
    __table_args__ = (Index("ix_security_events_kind_at", "kind", "at"),
                      Index("ix_security_events_subject", "subject_type", "subject_id"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(48))  # token.issued, role.granted, instance.viewed, ...
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    actor_id: Mapped[str | None] = mapped_column(String(64))
    channel: Mapped[str | None] = mapped_column(String(16))
    client_ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(255))
    subject_type: Mapped[str | None] = mapped_column(String(32))  # user | token | role | instance | export
    subject_id: Mapped[str | None] = mapped_column(String(128))
    details: Mapped[dict[str, Any]] = mapped_column(JSON)


class SecondFactorAttempt(Base):
    """One TOTP code checked (engine.services.second_factor): what the rate limit counts. The security log
    has the same attempts with their reasons; this table stays small and indexed for the count."""

    __tablename__ = "second_factor_attempts"
    __table_args__ = (Index("ix_second_factor_attempts_user_at", "user_id", "at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    succeeded: Mapped[bool] = mapped_column(Boolean)
    purpose: Mapped[str] = mapped_column(String(32))  # approve | field_change | confirm | disable
    client_ip: Mapped[str | None] = mapped_column(String(64))


# -- per-version statistics rollups (engine.services.rollups) ---------------------------------------------

class StatisticsWatermark(Base):
    """How far the statistics rollups have folded the history (engine.services.rollups): every history id
    up to `folded_to` is in the rollups, except those in `gaps` (ids not visible when the fold passed them:
    a transaction still open, or rolled back), which later folds look at again. `epoch` grows with every
    fold, so a reader can tell that it read the rollups and this row from one state."""

    __tablename__ = "statistics_watermark"
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    folded_to: Mapped[int] = mapped_column(BigInteger, default=0)
    gaps: Mapped[list[list[Any]]] = mapped_column(JSON, default=list)  # [first id, last id, seen at, xmax]
    epoch: Mapped[int] = mapped_column(BigInteger, default=0)
    events: Mapped[int] = mapped_column(BigInteger, default=0)  # history rows folded in all
    folded_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class NodeRollup(Base):
    """One node of one version, added up over the folded history: instances that reached it, passes
    through it, its decided and rejected tasks and the sum of their durations (the average's numerator)."""

    __tablename__ = "node_rollups"
    version_id: Mapped[int] = mapped_column(ForeignKey("process_versions.id"), primary_key=True)
    node_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    instances: Mapped[int] = mapped_column(BigInteger, default=0)
    tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    decided: Mapped[int] = mapped_column(BigInteger, default=0)
    rejected: Mapped[int] = mapped_column(BigInteger, default=0)
    seconds: Mapped[float] = mapped_column(Float, default=0.0)  # sum of the decided tasks' durations


class NodeDurationBucket(Base):
    """How many decided tasks of a node took a duration in one logarithmic bucket (the p90's histogram,
    engine.services.rollups.bucket_of)."""

    __tablename__ = "node_duration_buckets"
    version_id: Mapped[int] = mapped_column(ForeignKey("process_versions.id"), primary_key=True)
    node_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    bucket: Mapped[int] = mapped_column(Integer, primary_key=True)
    tasks: Mapped[int] = mapped_column(BigInteger, default=0)


class FlowRollup(Base):
    """How often the gateway decisions of a version took a sequence flow, over the folded history."""

    __tablename__ = "flow_rollups"
    version_id: Mapped[int] = mapped_column(ForeignKey("process_versions.id"), primary_key=True)
    flow_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    taken: Mapped[int] = mapped_column(BigInteger, default=0)


# the folds read archived history by id as they read the live table (engine.services.rollups)
Index("ix_history_archive_id", HistoryArchive.__table__.c.id)
