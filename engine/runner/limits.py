"""Bounds on the work a diagram or a script can make one command do.

Without them a process that loops forever (or calls itself through a call activity) keeps a worker at
full CPU and holds the instance's row lock (on SQLite the database's write lock) until the process is
killed. So every command gets a budget of engine steps (BPMN tasks run) and of wall time, checked after
each task SpiffWorkflow runs; past it the instance fails with the node where it stopped, and the
command's transaction commits as usual, so the caller gets an answer and the lock is released.

Scripts and expressions have their own, smaller bounds per evaluation (time, steps, size; enforced in
engine/runner/script_engine.py). An evaluation that runs while a command's budget is open also stops at
the command's deadline, so many slow evaluations in one command cannot add up past it.

Defaults can be changed with environment variables, read when used (like engine/outbox/policy.py), so
operators and tests can set them without a restart of anything but the process reading them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from SpiffWorkflow.exceptions import SpiffWorkflowException


class LimitExceeded(SpiffWorkflowException):
    """A bound was reached. A SpiffWorkflow exception, so SpiffWorkflow passes it through unwrapped (adding
    where it happened as notes) and the instance's error keeps this type and message."""

    def __str__(self) -> str:
        return ". ".join([str(self.args[0]), *self.notes])


class ScriptLimitExceeded(LimitExceeded):
    """A script or expression ran too long, took too many steps or tried to build too large a value."""


class EngineLimitExceeded(LimitExceeded):
    """One command ran more engine steps, or longer, than allowed: the diagram most likely loops."""

    def __init__(self, message: str, node_id: str | None):
        super().__init__(message)
        self.node_id = node_id


def _setting(name: str, raw: str | None, default: float, cast: type) -> Any:
    if raw is None or not raw.strip():
        return cast(default)
    try:
        value = cast(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(f"{name} must be a positive {cast.__name__}, got {raw!r}")
    return value


@dataclass(frozen=True)
class ScriptLimits:
    """Per evaluation of one script or expression."""

    timeout: float = 1.0  # seconds of wall time
    max_steps: int = 1_000_000  # loop iterations, comprehension items and function calls
    max_size: int = 1_000_000  # items, characters or bytes of one value an operation builds

    @classmethod
    def from_env(cls) -> ScriptLimits:
        env = os.environ.get
        return _script_limits(env("FINFLOW_SCRIPT_TIMEOUT"), env("FINFLOW_SCRIPT_MAX_STEPS"),
                              env("FINFLOW_SCRIPT_MAX_SIZE"))


@lru_cache(maxsize=16)
def _script_limits(timeout: str | None, steps: str | None, size: str | None) -> ScriptLimits:
    """Parsed once per distinct setting: evaluations are frequent and must stay cheap."""
    return ScriptLimits(timeout=_setting("FINFLOW_SCRIPT_TIMEOUT", timeout, ScriptLimits.timeout, float),
                        max_steps=_setting("FINFLOW_SCRIPT_MAX_STEPS", steps, ScriptLimits.max_steps, int),
                        max_size=_setting("FINFLOW_SCRIPT_MAX_SIZE", size, ScriptLimits.max_size, int))


@dataclass(frozen=True)
class CommandLimits:
    """Per command (one start, one approval, one timer firing ...) on one instance."""

    max_steps: int = 2000  # BPMN tasks the engine runs (gateways, scripts, events, auto-approvals)
    max_seconds: float = 10.0  # wall time of the engine's work

    @classmethod
    def from_env(cls) -> CommandLimits:
        env = os.environ.get
        return cls(max_steps=_setting("FINFLOW_MAX_ENGINE_STEPS", env("FINFLOW_MAX_ENGINE_STEPS"),
                                      cls.max_steps, int),
                   max_seconds=_setting("FINFLOW_MAX_COMMAND_SECONDS", env("FINFLOW_MAX_COMMAND_SECONDS"),
                                        cls.max_seconds, float))


# SpiffWorkflow's task iterator (SpiffWorkflow.util.task.TaskIterator, max_depth=1000) does not look below
# 1000 levels of a workflow's task tree: a task down there is never run, and the workflow then counts as
# completed. Every pass of a loop adds levels, so a loop that runs long enough would end an instance as
# "completed" without reaching an end event; it fails with the reason instead, with a margin for the
# levels a step adds before the next look.
MAX_TASK_DEPTH = 950
_DEPTH_CHECK_EVERY = 16


class CommandBudget:
    """The engine work one command may still do; `spend` is SpiffWorkflow's `did_complete_task` callback.

    The settings are read once per command: its evaluations of scripts and expressions find theirs here
    (`current_budget`), which keeps an evaluation cheap.
    """

    def __init__(self, limits: CommandLimits | None = None, script_limits: ScriptLimits | None = None):
        self.limits = limits or CommandLimits.from_env()
        self.script_limits = script_limits or ScriptLimits.from_env()
        self.steps = 0
        self.deadline = time.monotonic() + self.limits.max_seconds

    def spend(self, task: Any = None) -> None:
        """Count one step (the task just run, if any) and stop the command once past a bound."""
        self.steps += 1
        if self.steps > self.limits.max_steps:
            raise _runaway(f"流程单次处理超出步数限制（{self.limits.max_steps} 步）", task)
        if time.monotonic() > self.deadline:
            raise _runaway(f"流程单次处理超出时间限制（{self.limits.max_seconds:g} 秒）", task)
        # A step deepens the task tree by a level or two, so a look at each command's start (depth adds up
        # over commands) and then every few steps is enough.
        if task is not None and self.steps % _DEPTH_CHECK_EVERY == 1 and task.depth > MAX_TASK_DEPTH:
            raise _runaway(f"流程循环次数过多（任务树超过 {MAX_TASK_DEPTH} 层）", task)

    @contextmanager
    def running(self) -> Iterator[None]:
        """While the engine runs: evaluations of scripts and expressions also stop at this deadline."""
        token = _CURRENT.set(self)
        try:
            yield
        finally:
            _CURRENT.reset(token)


_CURRENT: ContextVar[CommandBudget | None] = ContextVar("finflow_command_budget", default=None)


def current_budget() -> CommandBudget | None:
    """The budget of the command whose engine work runs now in this thread, if any."""
    return _CURRENT.get()


def _runaway(limit: str, task: Any) -> EngineLimitExceeded:
    return EngineLimitExceeded(f"{limit}{_where(task)}，请检查流程是否有不会结束的循环或自我调用", _node_id(task))


def _node_id(task: Any) -> str | None:
    return getattr(getattr(task, "task_spec", None), "bpmn_id", None)


def _where(task: Any) -> str:
    node_id = _node_id(task)
    if node_id is None:
        return ""
    name = getattr(task.task_spec, "bpmn_name", None) or node_id
    return f"，停在「{name}」（{node_id}）"
