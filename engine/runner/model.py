"""Turning a deployment's files into runnable process models.

A `ProcessModel` is everything the runner needs to execute one deployed version: the parsed
SpiffWorkflow specs, the finflow properties of each node and the forms. Parsing costs milliseconds, so
models are cached per version id; versions are immutable, which makes the cache safe in every process.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jsonschema
from lxml import etree
from SpiffWorkflow.bpmn.parser.BpmnParser import BpmnValidator
from SpiffWorkflow.bpmn.parser.ValidationException import ValidationException
from SpiffWorkflow.exceptions import SpiffWorkflowException
from SpiffWorkflow.spiff.parser.process import SpiffBpmnParser

from engine.errors import DeploymentInvalid
from engine.org.assignment import AssignmentError, parse_assignment
from engine.runner.script_engine import RestrictedCodeError, compile_expression, compile_script

BPMN_NS = "http://www.omg.org/spec/BPMN/20100524/MODEL"
SPIFF_NS = "http://spiffworkflow.org/bpmn/schema/1.0/core"
NS = {"bpmn": BPMN_NS, "spiffworkflow": SPIFF_NS}
DEFAULT_ACTIONS = ("approve", "reject")
EMPTY_FORM: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}
KNOWN_ACTIONS = {"approve", "reject", "submit"}
MODES = ("any", "all", "sequence")

# Hostile uploads: no entity expansion, no DTD or network fetches, bounded trees.
_SAFE_XML = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False,
                            remove_comments=False)


@dataclass(frozen=True)
class NodeInfo:
    id: str
    name: str
    kind: str  # the BPMN element's local name: userTask, exclusiveGateway, ...
    properties: dict[str, str] = field(default_factory=dict)

    @property
    def assignment(self) -> str | None:
        return self.properties.get("finflow.assignee")

    @property
    def form_key(self) -> str | None:
        return self.properties.get("finflow.form")

    @property
    def mode(self) -> str:
        """any (或签, one candidate decides), all (会签, everyone approves), sequence (依次)."""
        return self.properties.get("finflow.mode", "any")

    @property
    def on_empty(self) -> str:
        """When nobody can be assigned: fail (default), skip, role:<role> to hand the task to a role, or
        assign:<expression> (e.g. assign:manager(starter)) to hand it to whoever that expression names."""
        return self.properties.get("finflow.on_empty", "fail")

    @property
    def is_approval(self) -> bool:
        """A node where someone approves (a submit-only step such as 申请人修改 is not)."""
        return self.kind == "userTask" and "approve" in self.actions

    @property
    def allow_starter(self) -> bool:
        """Segregation of duties is the default: the applicant never approves their own request here
        unless the node says so (finflow.allow_starter=true)."""
        return self.properties.get("finflow.allow_starter", "false").lower() == "true"

    @property
    def distinct(self) -> bool:
        """finflow.distinct=true: whoever approved another node of this request may not approve this one
        (e.g. 部门负责人 then 财务经理 must be two people); the opposite of finflow.dedupe."""
        return self.properties.get("finflow.distinct", "false").lower() == "true"

    @property
    def dedupe(self) -> bool:
        """Auto-approve when the approver of the previous node is a candidate here (去重)."""
        return self.properties.get("finflow.dedupe", "false").lower() == "true"

    @property
    def cc(self) -> str | None:
        """An assignment expression of people copied (抄送) when the node is reached."""
        return self.properties.get("finflow.cc")

    @property
    def timeout_action(self) -> str | None:
        """On a boundary timer: approve, reject (auto-decide the task) or role:<role> (escalate to a role)."""
        return self.properties.get("finflow.timeout_action")

    @property
    def actions(self) -> tuple[str, ...]:
        raw = self.properties.get("finflow.actions")
        return tuple(a.strip() for a in raw.split(",")) if raw else DEFAULT_ACTIONS


@dataclass(frozen=True)
class FlowInfo:
    id: str
    name: str
    condition: str | None


@dataclass
class ProcessModel:
    key: str
    name: str
    spec: Any
    subprocess_specs: dict[str, Any]
    nodes: dict[str, NodeInfo]
    forms: dict[str, dict[str, Any]]
    start_form: str | None
    flows: dict[tuple[str, str], FlowInfo] = field(default_factory=dict)  # (source, target) -> flow
    version_id: int | None = None

    def form(self, key: str | None) -> dict[str, Any]:
        return self.forms.get(key or "", EMPTY_FORM)


@dataclass
class ParsedBundle:
    models: list[ProcessModel]
    files_by_model: dict[str, dict[str, str]]  # process key -> the files that version needs


def parse_xml(text: str, filename: str):
    try:
        return etree.fromstring(text.encode("utf-8"), _SAFE_XML)
    except etree.XMLSyntaxError as exc:
        raise DeploymentInvalid(f"{filename} is not well-formed XML: {exc.msg}",
                                {"file": filename, "line": exc.lineno}) from exc


def parse_bundle(files: dict[str, str]) -> ParsedBundle:
    """Validate and parse BPMN, DMN and form files deployed together; raise `DeploymentInvalid`."""
    bpmn = {n: parse_xml(t, n) for n, t in files.items() if n.endswith(".bpmn")}
    dmn = {n: parse_xml(t, n) for n, t in files.items() if n.endswith(".dmn")}
    forms = {_form_key(n): _load_form(n, t) for n, t in files.items() if n.endswith(".json")}
    unknown = [n for n in files if not n.endswith((".bpmn", ".dmn", ".json"))]
    if unknown:
        raise DeploymentInvalid("Only .bpmn, .dmn and .json (form) files can be deployed",
                                {"files": unknown})
    if not bpmn:
        raise DeploymentInvalid("A deployment needs at least one .bpmn file", {"files": sorted(files)})

    parser = SpiffBpmnParser(validator=BpmnValidator())
    with _validation_errors():
        for name, root in dmn.items():
            parser.add_dmn_xml(root, filename=name)
        for name, root in bpmn.items():
            parser.add_bpmn_xml(root, filename=name)

    models, files_by_model = [], {}
    for name, root in bpmn.items():
        for process in root.iterfind("bpmn:process", NS):
            if process.get("isExecutable", "true") == "false":
                continue
            model = _build_model(parser, process, forms, name)
            models.append(model)
            files_by_model[model.key] = _files_needed(model, name, files, dmn)
    return ParsedBundle(models, files_by_model)


def _build_model(parser, process, forms, filename) -> ProcessModel:
    key = process.get("id")
    with _validation_errors():
        spec = parser.get_spec(key)
        subprocess_specs = parser.get_subprocess_specs(key)
    nodes = _node_infos(process)
    start_forms = [n.form_key for n in nodes.values() if n.kind == "startEvent" and n.form_key]
    model = ProcessModel(key=key, name=process.get("name") or key, spec=spec,
                         subprocess_specs=subprocess_specs, nodes=nodes,
                         forms={}, start_form=start_forms[0] if start_forms else None,
                         flows=_flows(process))
    _check_nodes(model, forms, filename)
    model.forms = {k: forms[k] for k in _form_keys(model)}
    _check_code(process, filename)
    return model


def _node_infos(process) -> dict[str, NodeInfo]:
    infos = {}
    for element in process.iter():
        if not isinstance(element.tag, str) or element.get("id") is None:
            continue
        props = {p.get("name"): p.get("value", "") for p in
                 element.iterfind("bpmn:extensionElements/spiffworkflow:properties/spiffworkflow:property", NS)}
        for attribute in ("attachedToRef", "cancelActivity"):
            if element.get(attribute) is not None:
                props[attribute] = element.get(attribute)
        if element.find("bpmn:timerEventDefinition", NS) is not None:
            props["timer"] = "true"
        called = element.find("bpmn:extensionElements/spiffworkflow:calledDecisionId", NS)
        if called is not None:
            props["calledDecisionId"] = (called.text or "").strip()
        infos[element.get("id")] = NodeInfo(element.get("id"), element.get("name") or element.get("id"),
                                            etree.QName(element).localname, props)
    return infos


def _flows(process) -> dict[tuple[str, str], FlowInfo]:
    flows = {}
    for flow in process.iter(f"{{{BPMN_NS}}}sequenceFlow"):
        cond = flow.find("bpmn:conditionExpression", NS)
        flows[(flow.get("sourceRef"), flow.get("targetRef"))] = FlowInfo(
            flow.get("id"), flow.get("name") or "", (cond.text or "").strip() if cond is not None else None)
    return flows


def _check_nodes(model: ProcessModel, forms: dict[str, Any], filename: str) -> None:
    if model.start_form and model.start_form not in forms:
        raise _node_error(filename, model.key, f"start form '{model.start_form}' is not in the deployment")
    for node in model.nodes.values():
        if node.kind != "userTask":
            continue
        if not node.assignment:
            raise _node_error(filename, node.id, "user task has no finflow.assignee property")
        try:
            parse_assignment(node.assignment)
        except AssignmentError as exc:
            raise _node_error(filename, node.id, str(exc)) from exc
        if not node.form_key or node.form_key not in forms:
            raise _node_error(filename, node.id, f"form '{node.form_key}' is not in the deployment")
        if node.mode not in MODES:
            raise _node_error(filename, node.id, f"finflow.mode '{node.mode}' is not one of {', '.join(MODES)}")
        if not (node.on_empty in ("fail", "skip") or node.on_empty.startswith(("role:", "assign:"))):
            raise _node_error(filename, node.id,
                              f"finflow.on_empty '{node.on_empty}': use fail, skip, role:<role> or assign:<expression>")
        if node.on_empty.startswith("assign:"):
            try:
                parse_assignment(node.on_empty.removeprefix("assign:"))
            except AssignmentError as exc:
                raise _node_error(filename, node.id, f"finflow.on_empty: {exc}") from exc
        if node.cc:
            try:
                parse_assignment(node.cc)
            except AssignmentError as exc:
                raise _node_error(filename, node.id, f"finflow.cc: {exc}") from exc
        bad = set(node.actions) - KNOWN_ACTIONS
        if bad:
            raise _node_error(filename, node.id, f"unknown actions {sorted(bad)}; use approve, reject, submit")


def _check_code(process, filename: str) -> None:
    """Compile every condition and script now, so a designer learns of a bad one at deploy time."""
    for flow in process.iterfind(".//bpmn:sequenceFlow", NS):
        cond = flow.find("bpmn:conditionExpression", NS)
        if cond is not None and (cond.text or "").strip():
            _compile_or_fail(compile_expression, cond.text, filename, flow.get("id"))
    scripts = [*process.iterfind(".//bpmn:scriptTask/bpmn:script", NS),
               *process.iterfind(".//spiffworkflow:preScript", NS),
               *process.iterfind(".//spiffworkflow:postScript", NS)]
    for script in scripts:
        owner = next((e for e in script.iterancestors() if e.get("id")), None)
        _compile_or_fail(compile_script, script.text or "", filename, owner.get("id") if owner is not None else "?")


def _compile_or_fail(compile_fn, source: str, filename: str, element_id: str) -> None:
    try:
        compile_fn(source)
    except (RestrictedCodeError, SyntaxError) as exc:
        raise _node_error(filename, element_id, f"expression refused: {exc}") from exc


def _node_error(filename: str, element_id: str, reason: str) -> DeploymentInvalid:
    return DeploymentInvalid(f"{element_id}: {reason}", {"file": filename, "element_id": element_id,
                                                         "reason": reason})


def _form_keys(model: ProcessModel) -> set[str]:
    keys = {n.form_key for n in model.nodes.values() if n.form_key}
    return keys | ({model.start_form} if model.start_form else set())


def _form_key(filename: str) -> str:
    return filename.rsplit("/", 1)[-1].removesuffix(".json")


def _load_form(filename: str, text: str) -> dict[str, Any]:
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DeploymentInvalid(f"{filename} is not valid JSON: {exc.msg}",
                                {"file": filename, "line": exc.lineno}) from exc
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise DeploymentInvalid(f"{filename} is not a valid JSON Schema: {exc.message}",
                                {"file": filename, "path": list(exc.path)}) from exc
    if schema.get("type") != "object":
        raise DeploymentInvalid(f"{filename}: a form schema must have type 'object'", {"file": filename})
    return schema


def _files_needed(model: ProcessModel, bpmn_name: str, files: dict[str, str], dmn: dict) -> dict[str, str]:
    needed = {bpmn_name: files[bpmn_name]}
    decisions = {n.properties.get("calledDecisionId") for n in model.nodes.values() if n.kind == "businessRuleTask"}
    for name, root in dmn.items():
        ids = {d.get("id") for d in root.iter() if isinstance(d.tag, str) and etree.QName(d).localname == "decision"}
        if ids & decisions:
            needed[name] = files[name]
    for key in _form_keys(model):
        name = next(n for n in files if n.endswith(".json") and _form_key(n) == key)
        needed[name] = files[name]
    return needed


class _validation_errors:
    """Turn SpiffWorkflow's parse errors into `DeploymentInvalid` naming file, element and line."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is None or not isinstance(exc, SpiffWorkflowException | etree.LxmlError):
            return False
        details = {"reason": str(exc).split("\n")[0]}
        if isinstance(exc, ValidationException):
            details.update(file=exc.file_name or None, element_id=exc.id or None,
                           line=exc.line_number or None)
        where = details.get("element_id") or details.get("file") or "deployment"
        raise DeploymentInvalid(f"{where}: {details['reason']}", details) from exc


_MODELS: dict[tuple[int, str], ProcessModel] = {}


def model_for_version(version_id: int, content_hash: str, files: Callable[[], dict[str, str]]) -> ProcessModel:
    """The runnable model of a deployed version, parsed once per process (versions never change)."""
    key = (version_id, content_hash)
    model = _MODELS.get(key)
    if model is None:
        model = parse_bundle(files()).models[0]
        model.version_id = version_id
        _MODELS[key] = model
    return model
