"""A restricted script environment for BPMN conditions, scripts, DMN cells and service parameters.

Process designers write Python expressions, but they must never reach the host: code is compiled by
RestrictedPython (no imports, no names or attributes starting with `_`), runs with a small whitelist of
builtins (no `open`, `eval`, `exec`, `__import__`), and every attribute and item access goes through
guards. Compiled code is cached by source text because gateways evaluate the same few expressions for
every instance.
"""

from __future__ import annotations

import ast
import json
import operator
from collections.abc import Callable
from datetime import date, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any

from RestrictedPython import compile_restricted_eval, compile_restricted_exec
from RestrictedPython.Guards import (
    full_write_guard,
    guarded_iter_unpack_sequence,
    guarded_unpack_sequence,
    safe_builtins,
    safer_getattr,
)
from RestrictedPython.PrintCollector import PrintCollector
from SpiffWorkflow.bpmn.exceptions import WorkflowTaskException
from SpiffWorkflow.bpmn.script_engine import PythonScriptEngine
from SpiffWorkflow.bpmn.script_engine.python_environment import BasePythonScriptEngineEnvironment


class RestrictedCodeError(SyntaxError):
    """Source that RestrictedPython refuses to compile; the message names the offending construct."""


_INPLACE_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "+=": operator.add, "-=": operator.sub, "*=": operator.mul, "/=": operator.truediv,
    "//=": operator.floordiv, "%=": operator.mod, "**=": operator.pow,
}

_EXTRA_BUILTINS: dict[str, Any] = {
    name: __builtins__[name] if isinstance(__builtins__, dict) else getattr(__builtins__, name)
    for name in ("all", "any", "dict", "enumerate", "filter", "list", "map", "max", "min", "reversed",
                 "set", "sum", "frozenset")
}


def _base_globals() -> dict[str, Any]:
    builtins = {**safe_builtins, **_EXTRA_BUILTINS}
    return {
        "__builtins__": builtins,
        "_getattr_": safer_getattr,
        "_getitem_": operator.getitem,
        "_getiter_": iter,
        "_iter_unpack_sequence_": guarded_iter_unpack_sequence,
        "_unpack_sequence_": guarded_unpack_sequence,
        "_write_": full_write_guard,
        "_inplacevar_": lambda op, x, y: _INPLACE_OPERATORS[op](x, y),
        "_print_": PrintCollector,
        "Decimal": Decimal,
        "date": date,
        "datetime": datetime,
        "timedelta": timedelta,
    }


_GLOBALS = _base_globals()


@lru_cache(maxsize=4096)
def compile_expression(source: str):
    result = compile_restricted_eval(source.strip())
    if result.errors:
        raise RestrictedCodeError("; ".join(result.errors))
    return result.code


@lru_cache(maxsize=1024)
def compile_script(source: str):
    _refuse_imports(source)
    result = compile_restricted_exec(source)
    if result.errors:
        raise RestrictedCodeError("; ".join(result.errors))
    return result.code


def _refuse_imports(source: str) -> None:
    """RestrictedPython only fails imports when they run; refuse them when the process is deployed."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return  # compile_restricted reports syntax errors with their line
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            raise RestrictedCodeError(f"Line {node.lineno}: import statements are not allowed in scripts")


class RestrictedEnvironment(BasePythonScriptEngineEnvironment):
    """Evaluates against task data; scripts may only change task data, never the environment."""

    def __init__(self, services: Callable[[str, dict[str, Any]], Any]):
        super().__init__(_GLOBALS)
        self._services = services

    def evaluate(self, expression, context, external_context=None):
        scope = {**_GLOBALS, **(external_context or {}), **context}
        return eval(compile_expression(expression), scope)  # noqa: S307 - restricted bytecode

    def execute(self, script, context, external_context=None):
        scope = {**_GLOBALS, **(external_context or {}), **context}
        exec(compile_script(script), scope)  # noqa: S102 - restricted bytecode
        for key in [k for k in context if k not in scope]:
            del context[key]
        hidden = set(_GLOBALS) | set(external_context or {})
        for key, value in scope.items():
            if key in hidden or key.startswith("_") or callable(value):
                continue
            context[key] = value
        return True

    def call_service(self, context, operation_name, operation_params):
        params = {name: spec["value"] for name, spec in operation_params.items()}
        return json.dumps(self._services(operation_name, params), ensure_ascii=False, default=str)


class FinflowScriptEngine(PythonScriptEngine):
    """SpiffWorkflow's script engine on the restricted environment, with service errors attributed."""

    def validate(self, expression):
        compile_expression(expression)

    def call_service(self, task, **kwargs):
        try:
            return self.environment.call_service(task.data, **kwargs)
        except WorkflowTaskException:
            raise
        except Exception as exc:  # a failing operator fails the instance, never the server
            raise WorkflowTaskException(f"{type(exc).__name__}: {exc}", task=task, exception=exc) from exc
