"""A restricted script environment for BPMN conditions, scripts, DMN cells and service parameters.

Process designers write Python expressions, but they must never reach the host: code is compiled by
RestrictedPython (no imports, no names or attributes starting with `_`), runs with a small whitelist of
builtins (no `open`, `eval`, `exec`, `__import__`), and every attribute and item access goes through
guards. Compiled code is cached by source text because gateways evaluate the same few expressions for
every instance.

Nor may designers' code hold a worker: every evaluation has a time limit, a step limit and a size limit
(engine/runner/limits.py, `ScriptLimits`). The compiler adds a checkpoint `_step_()` to every loop
iteration, comprehension item, function call, exception handler and `finally` block. A checkpoint past a
limit raises, and keeps raising, so code that catches the error cannot carry on (and an evaluation that
swallowed it fails all the same). Checkpoints are plain calls: straight-line code pays nothing, and no
tracer is installed (`sys.settrace` switches itself off when its callback raises, which a script could
exploit by catching the error). What one C call can allocate is bounded before it runs: `*`, `**`, `<<`,
`+`, `%`, f-strings, starred displays, slice assignment, `range`, `pow`, `sum` and the string, bytes, list
and int methods that grow their result refuse results above `max_size`, and every value an evaluation
returns or leaves in the task data is measured the way it would be stored.
"""

from __future__ import annotations

import ast
import json
import math
import operator
import re
import time
from collections.abc import Callable, Iterable
from datetime import date, datetime, timedelta
from decimal import Decimal
from functools import lru_cache, partial
from itertools import chain
from typing import Any

from RestrictedPython import RestrictingNodeTransformer, compile_restricted_eval, compile_restricted_exec
from RestrictedPython.Guards import (
    full_write_guard,
    guarded_iter_unpack_sequence,
    guarded_unpack_sequence,
    safe_builtins,
    safer_getattr,
)
from RestrictedPython.PrintCollector import PrintCollector
from RestrictedPython.transformer import copy_locations
from SpiffWorkflow.bpmn.exceptions import WorkflowTaskException
from SpiffWorkflow.bpmn.script_engine import PythonScriptEngine
from SpiffWorkflow.bpmn.script_engine.python_environment import BasePythonScriptEngineEnvironment

from engine.finance.money import is_finite_number
from engine.runner.limits import CommandBudget, ScriptLimitExceeded, ScriptLimits, current_budget


class RestrictedCodeError(SyntaxError):
    """Source that RestrictedPython refuses to compile; the message names the offending construct."""


_EXTRA_BUILTINS: dict[str, Any] = {
    name: __builtins__[name] if isinstance(__builtins__, dict) else getattr(__builtins__, name)
    for name in ("all", "any", "dict", "enumerate", "filter", "list", "map", "max", "min", "reversed",
                 "set", "sorted", "frozenset")
}
_SEQUENCES = (str, bytes, bytearray, list, tuple)
_TEXT = (str, bytes, bytearray)
_SCALARS = frozenset({bool, int, float, Decimal, type(None), date, datetime, timedelta})
_NUMBERS = frozenset({int, float, Decimal})  # `+` on these cannot grow beyond its operands
# About 4,200 digits: below Python's limit for int <-> str (4,300 digits), so every integer a script builds
# can be written to the task data (as JSON), and division and str() of it stay fast (they are quadratic).
MAX_INT_BITS = 14_000
MAX_MODPOW_BITS = 4096  # pow(a, b, m) costs bits(b) multiplications of bits(m)-sized numbers
# Exceptions that stop a thread or a process (past every `except Exception`): a script may not raise them.
_STOPPING = frozenset({"SystemExit", "KeyboardInterrupt", "GeneratorExit"})


# -- checkpoints ------------------------------------------------------------------------------------


class _Meter:
    """One evaluation's budget. Once past a limit, every further checkpoint raises the same error."""

    __slots__ = ("remaining", "deadline", "exceeded", "_limits", "_budget")

    def __init__(self, limits: ScriptLimits, budget: CommandBudget | None):
        self.remaining = limits.max_steps
        self.deadline = time.monotonic() + limits.timeout
        self._limits, self._budget = limits, None
        if budget is not None and budget.deadline < self.deadline:
            self.deadline, self._budget = budget.deadline, budget
        self.exceeded: ScriptLimitExceeded | None = None

    def step(self) -> bool:
        """The checkpoint restricted code calls; True so it can sit in a comprehension's conditions."""
        self.remaining -= 1
        if self.remaining < 0 or time.monotonic() > self.deadline:
            self._exceed()
        return True

    def _exceed(self) -> None:
        if self.exceeded is None:
            if self.remaining < 0:
                message = f"脚本超出步数限制（{self._limits.max_steps} 步：循环、推导式元素与函数调用）"
            elif self._budget is not None:
                message = f"脚本运行时流程单次处理超出时间限制（{self._budget.limits.max_seconds:g} 秒）"
            else:
                message = f"脚本超出运行时间限制（{self._limits.timeout:g} 秒）"
            self.exceeded = ScriptLimitExceeded(message)
        raise self.exceeded

    def run(self, runner: Callable[[Any, dict[str, Any]], Any], code: Any, scope: dict[str, Any]) -> Any:
        """Run restricted code; a limit it hit wins over whatever it raised or returned afterwards."""
        try:
            result = runner(code, scope)
        except Exception:
            if self.exceeded is not None:
                raise self.exceeded from None
            raise
        except BaseException as exc:
            if type(exc) is BaseException:  # raised by the script: it must fail the instance, not the thread
                raise RuntimeError(f"BaseException: {exc}") from exc
            raise
        if self.exceeded is not None:
            raise self.exceeded
        return result


# -- compilation ------------------------------------------------------------------------------------


def _call(name: str, args: list[ast.expr], location: ast.AST) -> ast.Call:
    node = ast.Call(func=ast.Name(name, ast.Load()), args=args, keywords=[])
    copy_locations(node, location)
    return node


def _checkpoint(location: ast.AST) -> ast.Expr:
    node = ast.Expr(_call("_step_", [], location))
    copy_locations(node, location)
    return node


def _is_slice_store(node: ast.AST) -> bool:
    return isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Slice) and isinstance(node.ctx, ast.Store)


_BINOP_GUARDS = {ast.Add: "_add_", ast.Mult: "_mul_", ast.Pow: "_pow_", ast.LShift: "_lshift_", ast.Mod: "_mod_"}


class LimitingTransformer(RestrictingNodeTransformer):
    """RestrictedPython's policy, plus checkpoints and size guards (the names it adds start with `_`, so
    designers' code can neither define nor shadow them)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._slice_target: ast.AST | None = None

    # steps
    def visit_While(self, node: ast.While) -> Any:
        node = super().visit_While(node)
        node.body.insert(0, _checkpoint(node))
        return node

    def visit_For(self, node: ast.For) -> Any:
        node = super().visit_For(node)
        node.body.insert(0, _checkpoint(node))
        return node

    def visit_comprehension(self, node: ast.comprehension) -> Any:
        node = super().visit_comprehension(node)
        node.ifs.insert(0, _call("_step_", [], node.iter))
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> Any:
        node = super().visit_FunctionDef(node)
        node.body.insert(0, _checkpoint(node))
        return node

    def visit_Lambda(self, node: ast.Lambda) -> Any:
        node = super().visit_Lambda(node)
        node.body = ast.BoolOp(op=ast.And(), values=[_call("_step_", [], node), node.body])
        copy_locations(node.body, node)
        return node

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> Any:
        node = super().visit_ExceptHandler(node)
        node.body.insert(0, _checkpoint(node))
        return node

    def visit_Try(self, node: ast.Try) -> Any:
        node = super().visit_Try(node)
        if node.finalbody:
            node.finalbody.insert(0, _checkpoint(node.finalbody[0]))
        return node

    # sizes
    def visit_BinOp(self, node: ast.BinOp) -> Any:
        node = super().visit_BinOp(node)
        guard = _BINOP_GUARDS.get(type(node.op))
        return _call(guard, [node.left, node.right], node) if guard else node

    def visit_JoinedStr(self, node: ast.JoinedStr) -> Any:
        node = super().visit_JoinedStr(node)
        parts = [self._formatted(value) if isinstance(value, ast.FormattedValue) else value for value in node.values]
        return _call("_fstring_", parts, node)

    @staticmethod
    def _formatted(node: ast.FormattedValue) -> ast.Call:
        spec = node.format_spec if node.format_spec is not None else ast.Constant("")
        return _call("_format_", [node.value, spec, ast.Constant(node.conversion)], node)

    def visit_List(self, node: ast.List) -> Any:
        return self._display(super().visit_List(node), "list")

    def visit_Tuple(self, node: ast.Tuple) -> Any:
        return self._display(super().visit_Tuple(node), "tuple")

    @staticmethod
    def _display(node: Any, kind: str) -> Any:
        """`[*a, *b]` builds from its parts in one C call: guard it like `a + b`."""
        if not isinstance(node.ctx, ast.Load) or not any(isinstance(e, ast.Starred) for e in node.elts):
            return node
        parts = [e.value if isinstance(e, ast.Starred) else ast.Tuple([e], ast.Load()) for e in node.elts]
        return _call("_display_", [ast.Constant(kind), *parts], node)

    def visit_Assign(self, node: ast.Assign) -> Any:
        if len(node.targets) != 1 or not _is_slice_store(node.targets[0]):
            return super().visit_Assign(node)
        self._slice_target = node.targets[0]
        node = super().visit_Assign(node)
        target = node.targets[0]  # now `_write_(x)[a:b:c]`
        statement = ast.Expr(_call("_setslice_", [target.value, target.slice, node.value], node))
        copy_locations(statement, node)
        return statement

    def visit_Subscript(self, node: ast.Subscript) -> Any:
        if _is_slice_store(node) and node is not self._slice_target:
            self.error(node, "Slice assignment is only allowed as a statement of its own: x[a:b] = value")
        return super().visit_Subscript(node)


@lru_cache(maxsize=4096)
def compile_expression(source: str):
    result = compile_restricted_eval(source.strip(), policy=LimitingTransformer)
    if result.errors:
        raise RestrictedCodeError("; ".join(result.errors))
    return result.code


@lru_cache(maxsize=1024)
def compile_script(source: str):
    _refuse_imports(source)
    result = compile_restricted_exec(source, policy=LimitingTransformer)
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


# -- size guards ------------------------------------------------------------------------------------

_PERCENT = re.compile(
    r"%(?:\((?P<key>[^)]*)\))?[-#0 +]*(?P<width>\*|\d+)?(?:\.(?P<precision>\*|\d+))?[hlL]?(?P<type>.)", re.S)
_FORMAT_SPEC = re.compile(r"(?:.?[<>=^])?[-+ ]?z?#?0?(?P<width>\d*)[_,]?(?:\.(?P<precision>\d+))?[a-zA-Z%]?", re.S)


def _index(value: Any) -> int | None:
    try:
        return operator.index(value)
    except TypeError:
        return None


class Sandbox:
    """The globals restricted code runs with under one `ScriptLimits` setting (built once per setting)."""

    def __init__(self, limits: ScriptLimits):
        self.max_size = limits.max_size
        builtins = {**{name: value for name, value in safe_builtins.items() if name not in _STOPPING},
                    **_EXTRA_BUILTINS, "range": self.bounded_range, "pow": self.pow, "sum": self.bounded_sum}
        self.public = {"Decimal": Decimal, "date": date, "datetime": datetime, "timedelta": timedelta}
        inplace = {"+=": self.add, "-=": operator.sub, "*=": self.mul, "/=": operator.truediv,
                   "//=": operator.floordiv, "%=": self.mod, "**=": self.pow, "<<=": self.lshift,
                   ">>=": operator.rshift, "&=": operator.and_, "|=": operator.or_, "^=": operator.xor}
        self.guards = {
            "__builtins__": builtins,
            "_getattr_": self.guarded_getattr,
            "_getitem_": operator.getitem,
            "_getiter_": iter,
            "_iter_unpack_sequence_": guarded_iter_unpack_sequence,
            "_unpack_sequence_": guarded_unpack_sequence,
            "_write_": full_write_guard,
            "_inplacevar_": lambda op, x, y: inplace[op](x, y),
            "_print_": PrintCollector,
            "_add_": self.add, "_mul_": self.mul, "_pow_": self.pow, "_lshift_": self.lshift, "_mod_": self.mod,
            "_fstring_": self.fstring, "_format_": self.format_value, "_display_": self.display,
            "_setslice_": self.setslice,
        }
        self.hidden = frozenset({*self.public, *self.guards, "_step_"})
        self._methods: dict[str, tuple[tuple[type, ...], Callable[..., Any]]] = {
            "ljust": (_TEXT, self._padded), "rjust": (_TEXT, self._padded), "center": (_TEXT, self._padded),
            "zfill": (_TEXT, self._padded), "expandtabs": (_TEXT, self._expandtabs),
            "replace": (_TEXT, self._replace), "join": (_TEXT, self._join), "translate": ((str,), self._translate),
            "extend": ((list,), self._extend), "to_bytes": ((int,), self._to_bytes),
        }

    def scope(self, meter: _Meter, external: dict[str, Any] | None, context: dict[str, Any]) -> dict[str, Any]:
        """Task data over the public names; the guards last, so no data key can replace one."""
        return {**self.public, **(external or {}), **context, **self.guards, "_step_": meter.step}

    # limits
    def require(self, size: int, what: str) -> None:
        if size > self.max_size:
            raise ScriptLimitExceeded(
                f"脚本超出大小限制（{self.max_size}）：{what} 的结果将有 {_count(size)} 个元素或字符")

    @staticmethod
    def require_bits(bits: float, what: str) -> None:
        if bits > MAX_INT_BITS:
            raise ScriptLimitExceeded(f"脚本超出大小限制：{what}超过 {MAX_INT_BITS} 位的整数")

    def measure(self, values: Iterable[Any], what: str) -> None:
        """Count items and characters of values as JSON would write them (shared parts count every time they
        appear, a value containing itself never ends), stopping as soon as the count passes the limit."""
        total, pending = 0, list(values)
        while pending:
            item = pending.pop()
            kind = type(item)
            if kind is str or kind is bytes:
                total += len(item)
            elif kind is dict:
                total += len(item)
                pending.extend(item.values())
            elif kind in (list, tuple, set, frozenset):
                total += len(item)
                pending.extend(item)
            elif kind is int:
                self.require_bits(item.bit_length(), f"{what}中有")
                total += 1
            else:
                total += 1
            if total > self.max_size:
                raise ScriptLimitExceeded(
                    f"脚本超出大小限制（{self.max_size}）：{what}超过 {self.max_size} 个元素或字符")

    # operators
    def add(self, a: Any, b: Any) -> Any:
        if type(a) in _NUMBERS:
            return a + b
        if isinstance(a, _SEQUENCES) and isinstance(b, _SEQUENCES):
            self.require(len(a) + len(b), "+")
        return a + b

    def mul(self, a: Any, b: Any) -> Any:
        if isinstance(a, int) and isinstance(b, int):
            self.require_bits(a.bit_length() + b.bit_length(), "* 的结果")
        elif isinstance(a, _SEQUENCES) and isinstance(b, int):
            self.require(len(a) * b, "*")
        elif isinstance(b, _SEQUENCES) and isinstance(a, int):
            self.require(len(b) * a, "*")
        return a * b

    def pow(self, base: Any, exponent: Any, mod: Any = None) -> Any:
        """`**` and the builtin `pow`."""
        if isinstance(base, int) and isinstance(exponent, int):
            if mod is not None:
                if max(base.bit_length(), exponent.bit_length(), _bits(mod)) > MAX_MODPOW_BITS:
                    raise ScriptLimitExceeded(f"脚本超出大小限制：pow(a, b, m) 的参数超过 {MAX_MODPOW_BITS} 位")
            elif exponent > 1 and abs(base) > 1:
                self.require_bits(exponent if exponent > MAX_INT_BITS else exponent * math.log2(abs(base)),
                                  "** 的结果")
        return pow(base, exponent) if mod is None else pow(base, exponent, mod)

    def lshift(self, a: Any, b: Any) -> Any:
        if isinstance(a, int) and isinstance(b, int) and a and b > 0:
            self.require_bits(a.bit_length() + b, "<< 的结果")
        return a << b

    def mod(self, a: Any, b: Any) -> Any:
        if isinstance(a, _TEXT):
            self.require(_percent_size(a, b), "%")
        return a % b

    def fstring(self, *parts: str) -> str:
        self.require(sum(map(len, parts)), "f-string")
        return "".join(parts)

    def format_value(self, value: Any, spec: str, conversion: int) -> str:
        """One `{value!conversion:spec}` of an f-string; the spec's width and precision are bounded."""
        if conversion != -1:
            value = _CONVERSIONS[conversion](value)
        if spec:
            match = _FORMAT_SPEC.fullmatch(spec)
            if match:
                self.require(int(match["width"] or 0) + int(match["precision"] or 0), "f-string")
        return format(value, spec)

    def display(self, kind: str, *parts: Iterable[Any]) -> list | tuple:
        """`[*a, *b]` and `(*a, *b)`."""
        items = [p if isinstance(p, list | tuple | str) else list(p) for p in parts]
        self.require(sum(map(len, items)), "*")
        flat = list(chain.from_iterable(items))
        return flat if kind == "list" else tuple(flat)

    def setslice(self, target: Any, key: slice, value: Any) -> None:
        """`x[a:b] = value` (`target` is already `_write_(x)`)."""
        if isinstance(target, list):
            if not isinstance(value, _SEQUENCES):
                value = list(value)
            removed = len(range(*key.indices(len(target))))
            self.require(len(target) - removed + len(value), "切片赋值")
        target[key] = value

    # builtins
    def bounded_range(self, *args: Any) -> range:
        result = range(*args)
        try:
            size = len(result)
        except OverflowError:  # more items than a machine integer can count
            size = self.max_size + 1
        self.require(size, "range")
        return result

    def bounded_sum(self, iterable: Iterable[Any], /, start: Any = 0) -> Any:
        """`sum(lists, [])` concatenates: every addition is checked like `+`."""
        if not isinstance(start, list | tuple):
            return sum(iterable, start)
        total = start
        for item in iterable:
            total = self.add(total, item)
        return total

    # methods that grow their result
    def guarded_getattr(self, obj: Any, name: str, default: Any = None) -> Any:
        value = safer_getattr(obj, name, default)
        owners, guard = self._methods.get(name, ((), None))
        if guard is None or not callable(value):
            return value
        if isinstance(obj, type):
            if not issubclass(obj, owners):
                return value
            return lambda self_, *args, **kwargs: guard(partial(value, self_), self_, *args, **kwargs)
        return partial(guard, value, obj) if isinstance(obj, owners) else value

    def _padded(self, method: Callable[..., Any], text: Any, width: Any = 0, *args: Any) -> Any:
        size = _index(width)
        if size is not None:
            self.require(size, "ljust/rjust/center/zfill")
        return method(width, *args)

    def _expandtabs(self, method: Callable[..., Any], text: Any, tabsize: Any = 8) -> Any:
        size = _index(tabsize)
        if size is not None:
            tab = "\t" if isinstance(text, str) else b"\t"
            self.require(len(text) + text.count(tab) * max(size, 0), "expandtabs")
        return method(tabsize)

    def _replace(self, method: Callable[..., Any], text: Any, old: Any, new: Any, count: Any = -1) -> Any:
        if isinstance(old, _TEXT) and isinstance(new, _TEXT):
            found = len(text) + 1 if not old else text.count(old)
            limit = _index(count)
            if limit is not None and limit >= 0:
                found = min(found, limit)
            self.require(len(text) + found * max(len(new) - len(old), 0), "replace")
        return method(old, new, count)

    def _join(self, method: Callable[..., Any], separator: Any, iterable: Iterable[Any]) -> Any:
        items = list(iterable)
        self.require(sum(len(i) for i in items if isinstance(i, _TEXT)) + len(separator) * max(len(items) - 1, 0),
                     "join")
        return method(items)

    def _translate(self, method: Callable[..., Any], text: Any, table: Any) -> Any:
        if isinstance(table, dict):
            longest = max((len(v) for v in table.values() if isinstance(v, str)), default=1)
            self.require(len(text) * longest, "translate")
        return method(table)

    def _extend(self, method: Callable[..., Any], target: Any, iterable: Iterable[Any]) -> Any:
        items = iterable if isinstance(iterable, _SEQUENCES) else list(iterable)
        self.require(len(target) + len(items), "extend")
        return method(items)

    def _to_bytes(self, method: Callable[..., Any], number: Any, *args: Any, **kwargs: Any) -> Any:
        length = _index(args[0] if args else kwargs.get("length", 1))
        if length is not None:
            self.require(length, "to_bytes")
        return method(*args, **kwargs)


_CONVERSIONS: dict[int, Callable[[Any], str]] = {ord("s"): str, ord("r"): repr, ord("a"): ascii}


def _count(size: int) -> str:
    return str(size) if size < 10**18 else "超过 10^18"


def _bits(value: Any) -> int:
    return value.bit_length() if isinstance(value, int) else 0


def _percent_size(template: str | bytes | bytearray, args: Any) -> int:
    """How long `template % args` can get: the template, explicit widths and precisions, the text arguments."""
    text = template if isinstance(template, str) else bytes(template).decode("latin-1")
    positional = list(args) if isinstance(args, tuple) else [args]
    size, position = len(text), 0
    for match in _PERCENT.finditer(text):
        if match["type"] == "%":
            continue
        for field in (match["width"], match["precision"]):
            if field == "*":
                size += max(_index(positional[position]) or 0, 0) if position < len(positional) else 0
                position += 1
            elif field:
                size += int(field)
        if match["key"] is not None:
            argument = args.get(match["key"]) if isinstance(args, dict) else None
        else:
            argument = positional[position] if position < len(positional) else None
            position += 1
        size += len(argument) if isinstance(argument, _TEXT) else 32
    return size


@lru_cache(maxsize=16)
def sandbox_for(limits: ScriptLimits) -> Sandbox:
    return Sandbox(limits)


def _prepare() -> tuple[Sandbox, _Meter]:
    """The running command's settings (read once per command), else the environment's."""
    budget = current_budget()
    limits = budget.script_limits if budget is not None else ScriptLimits.from_env()
    return sandbox_for(limits), _Meter(limits, budget)


class NonFiniteNumber(ValueError):
    """A script or expression made NaN or Infinity. Every comparison with NaN is false, so letting one into
    the data could silently skip a rule or an approval; the instance fails instead, naming the source."""


def _refuse_non_finite(values, source: str) -> None:
    pending = list(values)
    while pending:
        value = pending.pop()
        if not is_finite_number(value):
            raise NonFiniteNumber(f"{source} 产生了非有限数值 {value}（NaN/Infinity 不能参与比较或作为金额）")
        if isinstance(value, dict):
            pending.extend(value.values())
        elif isinstance(value, list | tuple | set | frozenset):
            pending.extend(value)


# -- SpiffWorkflow glue -----------------------------------------------------------------------------


class RestrictedEnvironment(BasePythonScriptEngineEnvironment):
    """Evaluates against task data; scripts may only change task data, never the environment."""

    def __init__(self, services: Callable[[str, dict[str, Any]], Any]):
        super().__init__(sandbox_for(ScriptLimits()).public)
        self._services = services

    def evaluate(self, expression, context, external_context=None):
        sandbox, meter = _prepare()
        result = meter.run(eval, compile_expression(expression), sandbox.scope(meter, external_context, context))
        if type(result) not in _SCALARS:
            sandbox.measure([result], "表达式的结果")
        _refuse_non_finite([result], expression)
        return result

    def execute(self, script, context, external_context=None):
        sandbox, meter = _prepare()
        scope = sandbox.scope(meter, external_context, context)
        meter.run(exec, compile_script(script), scope)
        hidden = sandbox.hidden | set(external_context or {})
        written = {key: value for key, value in scope.items()
                   if key not in hidden and not key.startswith("_") and not callable(value)}
        sandbox.measure(written.values(), "脚本写入的数据")
        _refuse_non_finite(written.values(), "script")
        for key in [k for k in context if k not in scope]:
            del context[key]
        context.update(written)
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
