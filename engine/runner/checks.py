"""Deploy-time checks: everything a designer can get wrong in a diagram is refused with file, element and line.

A deployment is checked before any version is stored, so a mistake surfaces as one 422 that names where
it is instead of as a failed instance, a hang or a 500 later. The checks here read the XML elements
(SpiffWorkflow's parser is lenient about finflow's own properties and vague about where its own errors
are); `problem` builds the error every check raises and `about_file` turns whatever a parser library
raises while reading a file into the same kind of error.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from lxml import etree
from referencing import Registry
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012
from SpiffWorkflow.bpmn.parser.ValidationException import ValidationException

from engine import operators
from engine.errors import DeploymentInvalid
from engine.org.assignment import AssignmentError, parse_assignment
from engine.runner.script_engine import compile_expression, compile_script

if TYPE_CHECKING:
    from engine.runner.model import NodeInfo

log = logging.getLogger("finflow.deploy")

BPMN_NS = "http://www.omg.org/spec/BPMN/20100524/MODEL"
SPIFF_NS = "http://spiffworkflow.org/bpmn/schema/1.0/core"
CAMUNDA_NS = "http://camunda.org/schema/1.0/bpmn"
NS = {"bpmn": BPMN_NS, "spiffworkflow": SPIFF_NS}
DMN_VERSIONS = {
    "http://www.omg.org/spec/DMN/20151101/dmn.xsd": "1.1",
    "http://www.omg.org/spec/DMN/20180521/MODEL/": "1.2",
    "https://www.omg.org/spec/DMN/20191111/MODEL/": "1.3",
}
KNOWN_ACTIONS = {"approve", "reject", "submit"}
MODES = ("any", "all", "sequence")


# -- the error every check raises -------------------------------------------------------------------

def problem(reason: str, file: str | None, element: Any = None, line: int | None = None,
            **extra: Any) -> DeploymentInvalid:
    """A 422 naming file, element id and line (taken from `element` when it is an XML element).

    The message leads with the element id, as designers search their modeler for it, and ends with
    where it is; `details` carries the same pieces for tools.
    """
    element_id = element
    if isinstance(element, etree._Element):
        element_id, line = element.get("id"), line or element.sourceline
    if element_id:
        where = ", ".join(p for p in (file, f"line {line}" if line else None) if p)
        message = f"{element_id}: {reason}" + (f" ({where})" if where else "")
    else:
        message = (f"{file}: {reason}" if file else reason) + (f" (line {line})" if line else "")
    return DeploymentInvalid(message, {"file": file, "element_id": element_id or None, "line": line or None,
                                       "reason": reason, **extra})


@contextmanager
def about_file(file: str, root: etree._Element | None = None) -> Iterator[None]:
    """Whatever a parser raises while reading `file` becomes a 422 naming that file.

    SpiffWorkflow reports most problems as `ValidationException`, often without the file or the line (its
    line numbers are read from an attribute lxml does not set), so both are completed from the file's own
    tree. Any other exception (an IndexError or KeyError deep in a parser, lxml, RecursionError) is a
    malformed file as far as the designer is concerned, and must never be a 500.
    """
    try:
        yield
    except DeploymentInvalid:
        raise
    except ValidationException as exc:
        reason = str(exc).split("\n")[0].strip().rstrip(".") + "."
        element = _element_by_id(root, exc.id) if exc.id else _element_at_line(root, exc.line_number or None, reason)
        raise problem(reason, exc.file_name or file, exc.id or None if element is None else element,
                      exc.line_number or None) from exc
    except etree.XPathEvalError as exc:
        declared = sorted(p for p in (root.nsmap if root is not None else {}) if p)
        raise problem(f"{exc} while reading the file: SpiffWorkflow expects the BPMN and DMN namespaces it "
                      f"knows (prefixes declared here: {', '.join(declared) or 'none'})", file) from exc
    except Exception as exc:  # noqa: BLE001 - a parser failing on a hostile file is the file's problem
        log.info("parser failed on %s", file, exc_info=True)
        first_line = (str(exc).splitlines() or [""])[0]
        raise problem(f"cannot be read ({type(exc).__name__}: {first_line})", file) from exc


def _element_by_id(root: etree._Element | None, element_id: str) -> etree._Element | None:
    if root is None:
        return None
    return next(iter(root.xpath("//*[@id=$id]", id=element_id)), None)


def _element_at_line(root: etree._Element | None, line: int | None, message: str) -> etree._Element | None:
    """The element an XSD error at `line` is about (the one its message names, when several share the line),
    or the closest element around it with an id."""
    if root is None or not line:
        return None
    at_line = [e for e in root.iter() if isinstance(e.tag, str) and e.sourceline == line]
    named = [e for e in at_line if f"'{e.tag}'" in message or f"'{etree.QName(e).localname}'" in message]
    at = (named or at_line or [None])[0]
    while at is not None and at.get("id") is None:
        at = at.getparent()
    return at


# -- DMN files --------------------------------------------------------------------------------------

def dmn_decision(file: str, root: etree._Element) -> etree._Element:
    """The decision of a DMN file, which must be one decision table in a DMN 1.1, 1.2 or 1.3 namespace.

    SpiffWorkflow indexes a DMN file by its first decision and refuses files with several, and it evaluates
    decision tables only; without these checks such files fail with an IndexError or a vague message.
    """
    name = etree.QName(root)
    if name.localname != "definitions" or name.namespace not in DMN_VERSIONS:
        tag = f"{root.prefix}:{name.localname}" if root.prefix else name.localname
        raise problem(f"<{tag}> is not DMN: its namespace is '{name.namespace or ''}' (prefix "
                      f"{root.prefix or 'none'}); finflow reads DMN 1.1, 1.2 and 1.3 <definitions>, e.g. "
                      "xmlns=\"https://www.omg.org/spec/DMN/20191111/MODEL/\"", file, line=root.sourceline,
                      prefix=root.prefix, namespace=name.namespace, supported=sorted(DMN_VERSIONS))
    namespace = name.namespace
    decisions = root.findall(f"{{{namespace}}}decision")
    if not decisions:
        raise problem(f"the file has no <decision> in the DMN namespace '{namespace}' of its <definitions>; "
                      "a .dmn file holds one decision table", file, line=root.sourceline)
    if len(decisions) > 1:
        raise problem(f"the file has {len(decisions)} decisions ({', '.join(d.get('id') or '?' for d in decisions)}); "
                      "finflow runs one decision per .dmn file: put each in its own file", file,
                      decisions[1])
    decision = decisions[0]
    if not decision.get("id"):
        raise problem("the decision has no id", file, line=decision.sourceline)
    tables = decision.findall(f"{{{namespace}}}decisionTable")
    if len(tables) != 1:
        raise problem("the decision is not a single decision table (finflow runs decision tables, "
                      "not literal expressions or other decision logic)", file, decision)
    for part in tables[0].iter(*(f"{{{namespace}}}{tag}" for tag in _IDENTIFIED)):
        if not part.get("id"):
            raise problem(f"<{etree.QName(part).localname}> has no id; SpiffWorkflow needs one on every "
                          f"{', '.join(_IDENTIFIED)} of a decision table", file, line=part.sourceline)
    return decision


# SpiffWorkflow reads attrib['id'] of each of these (a KeyError without it)
_IDENTIFIED = ("decisionTable", "input", "output", "rule", "inputEntry", "outputEntry")


# -- BPMN files -------------------------------------------------------------------------------------

def check_data_stores(file: str, root: etree._Element, implemented: Iterable[str]) -> None:
    """Data stores need a Python implementation registered with the parser; finflow has none."""
    available = set(implemented)
    for store in root.iter(f"{{{BPMN_NS}}}dataStore"):
        name = store.get("name")
        if name not in available:
            raise problem(f"data store '{name or ''}' has no implementation in finflow "
                          f"(available: {', '.join(sorted(available)) or 'none'}); keep process data in "
                          "variables or forms instead", file, store, data_store=name)


def check_process(file: str, process: etree._Element, nodes: Mapping[str, NodeInfo], forms: Mapping[str, Any],
                  decisions: Mapping[str, str]) -> None:
    """Every finflow rule one process must satisfy, checked before SpiffWorkflow builds its spec."""
    _check_user_tasks(file, process, nodes, forms)
    for container in (process, *process.iter(f"{{{BPMN_NS}}}subProcess")):
        _check_reaches_an_end(file, container)
    _check_service_tasks(file, process)
    _check_business_rules(file, process, decisions)
    _check_code(file, process)


def _check_reaches_an_end(file: str, container: etree._Element) -> None:
    """Every element the start can reach must be able to reach an end. A loop with no way out is never
    a process anyone means, and SpiffWorkflow, predicting the tasks ahead, would recurse without end on it
    when an instance is created."""
    outgoing: dict[str, set[str]] = {}
    for flow in container.iterfind("bpmn:sequenceFlow", NS):
        outgoing.setdefault(flow.get("sourceRef"), set()).add(flow.get("targetRef"))
    for boundary in container.iterfind("bpmn:boundaryEvent", NS):
        outgoing.setdefault(boundary.get("attachedToRef"), set()).add(boundary.get("id"))
    starts = [e.get("id") for e in container.iterfind("bpmn:startEvent", NS)]
    reachable = _closure(starts, outgoing)
    incoming: dict[str, set[str]] = {}
    for source, targets in outgoing.items():
        for target in targets:
            incoming.setdefault(target, set()).add(source)
    ends = [node for node in reachable if not outgoing.get(node)]  # end events, and implicit ends
    trapped = reachable - _closure(ends, incoming)
    if trapped:
        loop = sorted(n for n in trapped if n in _closure(outgoing.get(n, ()), outgoing)) or sorted(trapped)
        elements = sorted((_element(container, i) for i in loop),
                          key=lambda e: e.sourceline if isinstance(e, etree._Element) else 0)
        raise problem(f"no path from here to an end event: {', '.join(loop)} loop without a way out, so the "
                      "process could never finish", file, elements[0], loop=loop)


def _closure(seeds: Iterable[str], edges: Mapping[str, set[str]]) -> set[str]:
    seen, pending = set(), list(seeds)
    while pending:
        node = pending.pop()
        if node not in seen:
            seen.add(node)
            pending.extend(edges.get(node, ()))
    return seen


def _check_user_tasks(file: str, process: etree._Element, nodes: Mapping[str, NodeInfo],
                      forms: Mapping[str, Any]) -> None:
    for node in nodes.values():
        if node.kind == "startEvent" and node.form_key and node.form_key not in forms:
            raise problem(f"start form '{node.form_key}' is not in the deployment", file, _element(process, node.id))
        if node.kind == "userTask":
            reason = _user_task_problem(node, forms)
            if reason:
                raise problem(reason, file, _element(process, node.id))


def _user_task_problem(node: NodeInfo, forms: Mapping[str, Any]) -> str | None:
    if not node.assignment:
        return "user task has no finflow.assignee property"
    assigned_when_empty = node.on_empty.removeprefix("assign:") if node.on_empty.startswith("assign:") else None
    for label, expression in (("", node.assignment), ("finflow.cc: ", node.cc),
                              ("finflow.on_empty: ", assigned_when_empty)):
        try:
            if expression:
                parse_assignment(expression)
        except AssignmentError as exc:
            return f"{label}{exc}"
    if not node.form_key or node.form_key not in forms:
        return f"form '{node.form_key}' is not in the deployment"
    if node.mode not in MODES:
        return f"finflow.mode '{node.mode}' is not one of {', '.join(MODES)}"
    if not (node.on_empty in ("fail", "skip") or node.on_empty.startswith(("role:", "assign:"))):
        return f"finflow.on_empty '{node.on_empty}': use fail, skip, role:<role> or assign:<expression>"
    bad = set(node.actions) - KNOWN_ACTIONS
    if bad:
        return f"unknown actions {sorted(bad)}; use approve, reject, submit"
    return None


def _check_service_tasks(file: str, process: etree._Element) -> None:
    """A service task must name an operator finflow has, so it cannot fail at run time for that reason."""
    known = operators.known_operators()
    for task in process.iter(f"{{{BPMN_NS}}}serviceTask"):
        operator = task.find("bpmn:extensionElements/spiffworkflow:serviceTaskOperator", NS)
        if operator is None or not operator.get("id"):
            raise problem("service task has no <spiffworkflow:serviceTaskOperator id=\"...\">", file, task)
        name = operator.get("id")
        if name not in known:
            raise problem(f"unknown service operator '{name}' (finflow has: {', '.join(sorted(known))})", file, task,
                          operator=name)
        for parameter in operator.iterfind("spiffworkflow:parameters/spiffworkflow:parameter", NS):
            if parameter.get("value") is not None and not parameter.get("type"):
                raise problem(f"parameter '{parameter.get('id')}' of operator '{name}' has no type attribute "
                              "(str, number, ...)", file, task, operator=name)


def _check_business_rules(file: str, process: etree._Element, decisions: Mapping[str, str]) -> None:
    for task in process.iter(f"{{{BPMN_NS}}}businessRuleTask"):
        called = task.find("bpmn:extensionElements/spiffworkflow:calledDecisionId", NS)
        decision = (called.text or "").strip() if called is not None else ""
        camunda = task.get(f"{{{CAMUNDA_NS}}}decisionRef")
        if not decision and camunda:
            raise problem(f"the decision is named with camunda:decisionRef=\"{camunda}\", which finflow does not "
                          f"read: write <spiffworkflow:calledDecisionId>{camunda}</spiffworkflow:calledDecisionId> "
                          "in the task's extensionElements", file, task, decision=camunda)
        if not decision:
            raise problem("business rule task names no decision: add <spiffworkflow:calledDecisionId> in its "
                          "extensionElements", file, task)
        if decision not in decisions:
            raise problem(f"decision '{decision}' is in none of the deployed .dmn files (decisions deployed: "
                          f"{', '.join(sorted(decisions)) or 'none'})", file, task, decision=decision)


# Elements whose text SpiffWorkflow evaluates as an expression (timer values are Python string literals).
_EXPRESSIONS = ("bpmn:sequenceFlow/bpmn:conditionExpression", "bpmn:timerEventDefinition/bpmn:timeDuration",
                "bpmn:timerEventDefinition/bpmn:timeDate", "bpmn:timerEventDefinition/bpmn:timeCycle",
                "bpmn:conditionalEventDefinition/bpmn:condition", "bpmn:loopCardinality",
                "bpmn:completionCondition")


def _check_code(file: str, process: etree._Element) -> None:
    """Compile every expression, script and service parameter now, so a bad one is refused at deploy time."""
    for path in _EXPRESSIONS:
        for expression in process.iterfind(f".//{path}", NS):
            if (expression.text or "").strip():
                _compile_or_fail(compile_expression, expression.text, file, _owner(expression))
    scripts = [*process.iterfind(".//bpmn:scriptTask/bpmn:script", NS),
               *process.iterfind(".//spiffworkflow:preScript", NS),
               *process.iterfind(".//spiffworkflow:postScript", NS)]
    for script in scripts:
        _compile_or_fail(compile_script, script.text or "", file, _owner(script))
    for parameter in process.iterfind(".//spiffworkflow:serviceTaskOperator/spiffworkflow:parameters/"
                                      "spiffworkflow:parameter[@value]", NS):
        _compile_or_fail(compile_expression, parameter.get("value"), file, _owner(parameter.getparent()))


def _compile_or_fail(compile_fn, source: str, file: str, element: etree._Element) -> None:
    try:
        compile_fn(source)
    except Exception as exc:  # noqa: BLE001 - SyntaxError, RestrictedCodeError, but also ValueError, RecursionError
        raise problem(f"expression refused: {exc}", file, element) from exc


def _owner(element: etree._Element) -> etree._Element:
    """The closest BPMN element with an id that holds `element` (a script belongs to its task)."""
    return next((e for e in element.iterancestors() if e.get("id") and etree.QName(e).namespace == BPMN_NS),
                element)


def _element(process: etree._Element, element_id: str) -> etree._Element | str:
    found = next(iter(process.xpath(".//*[@id=$id]", id=element_id)), None)
    return element_id if found is None else found


# -- call activities --------------------------------------------------------------------------------

def call_sites(process: etree._Element) -> list[etree._Element]:
    return list(process.iter(f"{{{BPMN_NS}}}callActivity"))


def called_processes(key: str, calls: Mapping[str, list[tuple[str, etree._Element]]],
                     executable: Mapping[str, bool], files: Mapping[str, str], strict: bool = True) -> list[str]:
    """The processes a version of `key` runs: itself first, then every process it calls, directly or not.

    `calls` maps each process of the deployment to its call activities (called key, element); the call graph
    is walked without recursion, so a long chain of calls cannot exhaust the stack. When `strict` (at deploy),
    a call to a process that is not in the deployment or not executable, and a cycle (which would start
    subprocesses forever), are refused here, before SpiffWorkflow is asked for the specs; a version stored
    before these checks existed is loaded as it is, so its instances can still be withdrawn or cancelled.
    """
    order: list[str] = []
    done: set[str] = set()
    stack: list[tuple[str, Iterator[tuple[str, etree._Element]]]] = [(key, iter(calls[key]))]
    while stack:
        current, pending = stack[-1]
        for called, element in pending:
            if strict:
                _check_call(current, called, element, calls, executable, files)
            path = [p for p, _ in stack]
            if called in path and strict:
                cycle = [*path[path.index(called):], called]
                raise problem(f"recursive call activities: {' → '.join(cycle)}; a process must not call itself, "
                              "directly or through other call activities", files[current], element, cycle=cycle)
            if called in calls and called not in done and called not in path:
                stack.append((called, iter(calls[called])))
                break
        else:
            stack.pop()
            done.add(current)
            order.append(current)
    return order[::-1]


def _check_call(caller: str, called: str, element: etree._Element,
                calls: Mapping[str, list], executable: Mapping[str, bool], files: Mapping[str, str]) -> None:
    if not called:
        raise problem("call activity has no calledElement", files[caller], element, process=caller)
    if called not in calls:
        raise problem(f"call activity in process '{caller}' calls process '{called}', which is not in this "
                      f"deployment (processes: {', '.join(sorted(calls))}); deploy its .bpmn file together",
                      files[caller], element, process=caller, called_element=called)
    if not executable[called]:
        raise problem(f"call activity in process '{caller}' calls process '{called}', which is not executable "
                      "(isExecutable=\"false\")", files[caller], element, process=caller, called_element=called)


def merge_parts(parts: Iterable[tuple[str, str, Mapping[Any, Any]]], what: str, strict: bool = True) -> dict[Any, Any]:
    """Merge the nodes (or flows) of the processes one version runs, keyed as the runner looks them up.

    The runner finds a task's finflow properties by element id alone, so an id defined differently in two
    of the processes would give one of them the other's assignee, form or name: refused at deploy (`strict`),
    naming both; the first process wins for a version stored before this check.
    """
    merged: dict[Any, Any] = {}
    owners: dict[Any, tuple[str, str]] = {}
    for process, file, items in parts:
        for key, item in items.items():
            if strict and key in merged and merged[key] != item:
                other, other_file = owners[key]
                shown = key if isinstance(key, str) else " → ".join(key)
                raise problem(f"{what} '{shown}' is defined differently in process '{other}' ({other_file}) and "
                              f"process '{process}' ({file}), which one version runs together: give one of "
                              "them another id", file, shown, processes=[other, process], files=[other_file, file])
            merged.setdefault(key, item)
            owners.setdefault(key, (process, file))
    return merged


# -- forms ------------------------------------------------------------------------------------------

def check_form_refs(file: str, schema: dict[str, Any]) -> None:
    """A form must be self-contained: a `$ref` that does not resolve inside it would fail every start."""
    resource = DRAFT202012.create_resource(schema)
    resolver = Registry().with_resource("urn:finflow:form", resource).resolver("urn:finflow:form")
    for path, ref in _refs(schema, []):
        if not ref.startswith("#"):
            raise problem(f"$ref '{ref}' points outside the form; forms must be self-contained", file,
                          path=path)
        try:
            resolver.lookup(ref)
        except Unresolvable as exc:
            raise problem(f"$ref '{ref}' does not resolve inside the form", file, path=path) from exc


def _refs(value: Any, path: list[Any]) -> Iterator[tuple[list[Any], str]]:
    stack = [(value, path)]
    while stack:
        current, where = stack.pop()
        if isinstance(current, dict):
            for key, item in current.items():
                if key in ("$ref", "$dynamicRef") and isinstance(item, str):
                    yield [*where, key], item
                else:
                    stack.append((item, [*where, key]))
        elif isinstance(current, list):
            stack.extend((item, [*where, i]) for i, item in enumerate(current))
