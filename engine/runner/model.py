"""Turning a deployment's files into runnable process models.

A `ProcessModel` is everything the runner needs to execute one deployed version: the parsed
SpiffWorkflow specs, the finflow properties of each node (of the process and of every process it calls)
and the forms. Parsing costs milliseconds, so models are cached per version id; versions are immutable,
which makes the cache safe in every process. What a deployment must satisfy is in `engine.runner.checks`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jsonschema
from lxml import etree
from SpiffWorkflow.bpmn.parser.BpmnParser import BpmnValidator
from SpiffWorkflow.dmn.parser.BpmnDmnParser import SCHEMAS as DMN_SCHEMAS
from SpiffWorkflow.spiff.parser.process import SpiffBpmnParser

from engine import channels
from engine.errors import DeploymentInvalid
from engine.runner import checks
from engine.runner.checks import BPMN_NS, NS

DEFAULT_ACTIONS = ("approve", "reject")
EMPTY_FORM: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}

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
    def chooses_flows(self) -> bool:
        """A gateway whose decision picks outgoing flows (recorded as `gateway.decision` with `taken`)."""
        return self.kind in ("exclusiveGateway", "inclusiveGateway")

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
    bpmn_file: str | None = None  # the file that defines the process (called processes may be in others)
    mappings: dict[str, dict[str, Any]] = field(default_factory=dict)  # channel -> its mapping (engine.channels)

    def form(self, key: str | None) -> dict[str, Any]:
        return self.forms.get(key or "", EMPTY_FORM)


@dataclass(frozen=True)
class DeployWarning:
    """Something in the upload that was not deployed, which the designer should know about."""
    file: str
    message: str


@dataclass
class ParsedBundle:
    models: list[ProcessModel]
    files_by_model: dict[str, dict[str, str]]  # process key -> the files that version needs
    warnings: list[DeployWarning] = field(default_factory=list)


def parse_xml(text: str, filename: str, *, doctype_allowed: bool = False):
    """The file's tree, never expanding an entity or loading a DTD (_SAFE_XML). An upload with a DOCTYPE
    is refused, whatever it declares: no modeler writes one, entities in a tree fail SpiffWorkflow's schema
    check with an obscure message, and a stored DOCTYPE would be an XXE waiting for a laxer parser. A
    version stored before this rule (`doctype_allowed`) is still read."""
    try:
        root = etree.fromstring(text.encode("utf-8"), _SAFE_XML)
    except etree.XMLSyntaxError as exc:
        if not doctype_allowed and "<!DOCTYPE" in text:  # e.g. an entity bomb lxml stopped expanding
            raise _doctype_refused(filename, exc.msg) from exc
        raise DeploymentInvalid(f"{filename} is not well-formed XML: {exc.msg}",
                                {"file": filename, "line": exc.lineno}) from exc
    if not doctype_allowed and root.getroottree().docinfo.doctype:
        raise _doctype_refused(filename)
    return root


def _doctype_refused(filename: str, parser_message: str | None = None) -> DeploymentInvalid:
    said = f" ({parser_message})" if parser_message else ""
    return DeploymentInvalid(f"{filename} has a DOCTYPE declaration: DTDs and entities are not allowed in BPMN and "
                             f"DMN files; remove the <!DOCTYPE …> part{said}", {"file": filename, "line": 1})


def parse_bundle(files: dict[str, str]) -> ParsedBundle:
    """Validate and parse BPMN, DMN and form files deployed together; raise `DeploymentInvalid`.

    Every executable process becomes a model, checked with all of finflow's deploy rules; files that
    deploy nothing are refused (a .bpmn file without an executable process) or reported as warnings
    (a decision or form no process uses).
    """
    bundle = _Bundle(files)
    models, files_by_model = [], {}
    for key in bundle.executable_keys():
        model, needed = bundle.model(key)
        models.append(model)
        files_by_model[key] = needed
    return ParsedBundle(models, files_by_model, bundle.warnings(models))


def load_model(files: dict[str, str], process_key: str) -> ProcessModel:
    """The model of one process of a stored version.

    finflow's own deploy rules are not applied again: a version stored before a rule existed must still
    load, or its running instances could not even be withdrawn or cancelled.
    """
    bundle = _Bundle(files, strict=False)
    if process_key not in bundle.processes:
        raise DeploymentInvalid(f"process '{process_key}' is not in the version's files",
                                {"process_key": process_key, "files": sorted(files)})
    return bundle.model(process_key)[0]


@dataclass
class _Process:
    """One <bpmn:process> of an uploaded file, with what finflow reads from it."""
    key: str
    file: str
    element: etree._Element
    executable: bool
    nodes: dict[str, NodeInfo]
    flows: dict[tuple[str, str], FlowInfo]
    calls: list[tuple[str, etree._Element]]  # (called process key, callActivity element)
    checked: bool = False


class _Bundle:
    """The files of one upload (or of one stored version), read and handed to SpiffWorkflow's parser.

    Reading is eager and per file, so every error names the file it comes from; a process's spec is built
    only when its model is asked for, so a multi-process file does not need the decisions and forms of
    processes a version does not run. `strict` applies finflow's deploy rules (an upload); without it the
    files are only read (a stored version).
    """

    def __init__(self, files: dict[str, str], strict: bool = True):
        unknown = [n for n in files if not n.endswith((".bpmn", ".dmn", ".json"))]
        if unknown:
            raise DeploymentInvalid("Only .bpmn, .dmn and .json (form) files can be deployed", {"files": unknown})
        if not any(n.endswith(".bpmn") for n in files):
            raise DeploymentInvalid("A deployment needs at least one .bpmn file", {"files": sorted(files)})
        self.files, self.strict = files, strict
        self.roots = {n: _read(n, functools.partial(parse_xml, t, n, doctype_allowed=not strict))
                      for n, t in files.items() if n.endswith((".bpmn", ".dmn"))}
        self.forms = {_form_key(n): _read(n, functools.partial(_load_form, n, t, strict))
                      for n, t in files.items() if n.endswith(".json") and channels.parse_name(n) is None}
        self.mappings = {n: _read(n, functools.partial(_load_mapping, n, t))
                         for n, t in files.items() if channels.parse_name(n) is not None}
        self.parser = SpiffBpmnParser(validator=BpmnValidator(), dmn_schemas=_dmn_schemas())
        self.decisions: dict[str, str] = {}  # decision id -> .dmn file
        self.processes: dict[str, _Process] = {}
        for name in sorted(n for n in self.roots if n.endswith(".dmn")):
            self._add_dmn(name)
        for name in sorted(n for n in self.roots if n.endswith(".bpmn")):
            self._add_bpmn(name)

    def _add_dmn(self, name: str) -> None:
        with checks.about_file(name, self.roots[name]):
            decision = checks.dmn_decision(name, self.roots[name])
            decision_id = decision.get("id")
            if decision_id in self.decisions:
                raise checks.problem(f"decision '{decision_id}' is also defined in {self.decisions[decision_id]}",
                                     name, decision, decision=decision_id)
            self.roots[name] = _with_dmn_prefix(self.roots[name])
            self.parser.add_dmn_xml(self.roots[name], filename=name)
            self.parser.dmn_parsers[decision_id].parse()  # now, so its errors name this file
            self.decisions[decision_id] = name

    def _add_bpmn(self, name: str) -> None:
        root = self.roots[name]
        with checks.about_file(name, root):
            for element in root.iterfind("bpmn:process", NS):
                key = element.get("id")
                if key in self.processes:
                    raise checks.problem(f"process '{key}' is also defined in {self.processes[key].file}",
                                         name, element)
                self.processes[key] = _Process(
                    key, name, element, element.get("isExecutable", "true") != "false", _node_infos(element),
                    _flows(element), [(c.get("calledElement") or "", c) for c in checks.call_sites(element)])
            checks.check_data_stores(name, root, self.parser.DATA_STORE_CLASSES)
            self.parser.add_bpmn_xml(root, filename=name)

    def executable_keys(self) -> list[str]:
        """Executable processes, by file name; a .bpmn file with none of them is refused."""
        for name, root in self.roots.items():
            if name.endswith(".bpmn") and not any(p.executable for p in self.processes.values() if p.file == name):
                raise checks.problem('the file has no executable process (a <bpmn:process> with isExecutable='
                                     '"true"), so nothing in it would be deployed', name, line=root.sourceline)
        return [p.key for p in self.processes.values() if p.executable]

    def model(self, key: str) -> tuple[ProcessModel, dict[str, str]]:
        """The model of one process with every process it calls, and the files its version needs."""
        calls = {k: p.calls for k, p in self.processes.items()}
        executable = {k: p.executable for k, p in self.processes.items()}
        file_of = {k: p.file for k, p in self.processes.items()}
        parts = [self.processes[k] for k in checks.called_processes(key, calls, executable, file_of, self.strict)]
        if self.strict:
            for part in parts:
                self._check(part)
        nodes = checks.merge_parts(((p.key, p.file, p.nodes) for p in parts), "element id", self.strict)
        flows = checks.merge_parts(((p.key, p.file, p.flows) for p in parts), "sequence flow", self.strict)
        for part in reversed(parts):  # each spec in its own file's context, callees first
            with checks.about_file(part.file, self.roots[part.file]):
                self.parser.get_spec(part.key)
        top = self.processes[key]
        with checks.about_file(top.file, self.roots[top.file]):
            spec, subprocess_specs = self.parser.get_spec(key), self.parser.get_subprocess_specs(key)
        start_forms = [n.form_key for n in top.nodes.values() if n.kind == "startEvent" and n.form_key]
        model = ProcessModel(key=key, name=top.element.get("name") or key, spec=spec,
                             subprocess_specs=subprocess_specs, nodes=nodes, forms={},
                             start_form=start_forms[0] if start_forms else None, flows=flows, bpmn_file=top.file)
        model.forms = {k: self.forms[k] for k in _form_keys(model) if k in self.forms}
        model.mappings = self._mappings_of(model)
        return model, self._files_needed(model, parts)

    def _mappings_of(self, model: ProcessModel) -> dict[str, dict[str, Any]]:
        """The process's channel mappings, each checked by its channel's adapter on a deploy."""
        found = {}
        for name, mapping in self.mappings.items():
            key, channel = channels.parse_name(name)
            if key != model.key:
                continue
            check = channels.checker(channel)
            if self.strict:
                if check is None:
                    raise checks.problem(f"no adapter maps channel '{channel}' (known: "
                                         f"{', '.join(channels.known()) or 'none'})", name)
                mapping = check(name, mapping, model)
            found[channel] = mapping
        return found

    def _check(self, part: _Process) -> None:
        if not part.checked:
            with checks.about_file(part.file, self.roots[part.file]):
                checks.check_process(part.file, part.element, part.nodes, self.forms, self.decisions)
            part.checked = True

    def _files_needed(self, model: ProcessModel, parts: list[_Process]) -> dict[str, str]:
        names = [p.file for p in parts]
        names += [self.decisions[d] for d in _decisions_used(model) if d in self.decisions]
        names += [n for n in self.files if n.endswith(".json") and channels.parse_name(n) is None
                  and _form_key(n) in model.forms]
        names += [n for n in self.mappings if channels.parse_name(n)[0] == model.key]
        return {n: self.files[n] for n in dict.fromkeys(names)}

    def warnings(self, models: list[ProcessModel]) -> list[DeployWarning]:
        """What the upload holds that no deployed version uses: not stored, and said so."""
        decisions = {d for m in models for d in _decisions_used(m)}
        forms = {k for m in models for k in m.forms}
        found = [DeployWarning(f, f"decision '{d}' is not used by any process; not deployed")
                 for d, f in self.decisions.items() if d not in decisions]
        found += [DeployWarning(n, f"form '{_form_key(n)}' is not used by any process; not deployed")
                  for n in self.files if n.endswith(".json") and channels.parse_name(n) is None
                  and _form_key(n) not in forms]
        deployed = {m.key for m in models}
        found += [DeployWarning(n, f"mapping for process '{channels.parse_name(n)[0]}', which is not deployed "
                                   "with it; not deployed") for n in self.mappings
                  if channels.parse_name(n)[0] not in deployed]
        found += [DeployWarning(p.file, f"process '{p.key}' is not executable (isExecutable=\"false\"); "
                                        "not deployed") for p in self.processes.values() if not p.executable]
        return sorted(found, key=lambda w: (w.file, w.message))


def _read(name: str, reader: Callable[[], Any]) -> Any:
    """Read one file; whatever goes wrong (a JSON nested too deep for the decoder, say) names the file."""
    with checks.about_file(name):
        return reader()


def _with_dmn_prefix(root):
    """SpiffWorkflow finds DMN elements with the prefix `dmn`, bound from the document's default namespace;
    a file that binds the DMN namespace to another prefix (`<semantic:definitions>`, as some modelers and the
    DMN TCK write) is the same DMN, so the root gets that binding too."""
    namespace = etree.QName(root).namespace
    if root.nsmap.get(None) == namespace or "dmn" in root.nsmap:
        return root
    rebound = etree.Element(root.tag, attrib=dict(root.attrib), nsmap={**root.nsmap, "dmn": namespace})
    rebound.text = root.text
    rebound.extend(list(root))
    rebound.sourceline = root.sourceline
    return rebound


@functools.cache
def _dmn_schemas() -> dict[str, str]:
    """The DMN XSDs SpiffWorkflow ships that compile. Its DMN 1.2 schema imports the DMNDI namespace from
    the DI schema and cannot be compiled, which failed every DMN 1.2 upload with an error about that XSD;
    SpiffWorkflow runs DMN 1.2 tables all the same, so they are read without XSD validation (finflow's own
    structure checks in `checks.dmn_decision` still apply)."""
    usable = {}
    for namespace, path in DMN_SCHEMAS.items():
        try:
            BpmnValidator(path)
        except etree.LxmlError:
            continue
        usable[namespace] = path
    return usable


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


def _form_keys(model: ProcessModel) -> set[str]:
    keys = {n.form_key for n in model.nodes.values() if n.form_key}
    return keys | ({model.start_form} if model.start_form else set())


def _form_key(filename: str) -> str:
    return filename.rsplit("/", 1)[-1].removesuffix(".json")


def _load_form(filename: str, text: str, strict: bool = True) -> dict[str, Any]:
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DeploymentInvalid(f"{filename} is not valid JSON: {exc.msg}",
                                {"file": filename, "line": exc.lineno}) from exc
    if not isinstance(schema, dict) or schema.get("type") != "object":
        raise DeploymentInvalid(f"{filename}: a form schema must be a JSON object with type 'object'",
                                {"file": filename})
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise DeploymentInvalid(f"{filename} is not a valid JSON Schema: {exc.message}",
                                {"file": filename, "path": list(exc.path)}) from exc
    if strict:
        checks.check_form_refs(filename, schema)
    return schema


def _load_mapping(filename: str, text: str) -> dict[str, Any]:
    try:
        mapping = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DeploymentInvalid(f"{filename} is not valid JSON: {exc.msg}",
                                {"file": filename, "line": exc.lineno}) from exc
    if not isinstance(mapping, dict):
        raise DeploymentInvalid(f"{filename}: a channel mapping must be a JSON object", {"file": filename})
    return mapping


def _decisions_used(model: ProcessModel) -> set[str]:
    return {n.properties["calledDecisionId"] for n in model.nodes.values()
            if n.kind == "businessRuleTask" and n.properties.get("calledDecisionId")}


_MODELS: dict[tuple[int, str], ProcessModel] = {}


def model_for_version(version_id: int, content_hash: str,
                      source: Callable[[], tuple[str, dict[str, str]]]) -> ProcessModel:
    """The runnable model of a deployed version, parsed once per process (versions never change).

    `source` returns the version's process key and files; it is called only when the model is not cached.
    The key picks the process, as a version's files may define several (a multi-process file, called
    processes).
    """
    key = (version_id, content_hash)
    model = _MODELS.get(key)
    if model is None:
        process_key, files = source()
        model = load_model(files, process_key)
        model.version_id = version_id
        _MODELS[key] = model
    return model
