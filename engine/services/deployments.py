"""Deploying process files as versions; the same content deploys to the same version."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, load_only

from engine.errors import DeploymentInvalid, Forbidden, NotFound
from engine.history import Actor
from engine.models import ProcessDefinition, ProcessVersion, User
from engine.runner.execution import utcnow
from engine.runner.model import DeployWarning, ParsedBundle, ProcessModel, model_for_version, parse_bundle
from engine.services import access

DESIGNER_ROLES = access.roles_granting("design")


@dataclass
class Deployed:
    version: ProcessVersion
    created: bool


class DeployResult(list[Deployed]):
    """The versions a deployment stored or found unchanged, with what it did not deploy and why."""

    def __init__(self, deployed: list[Deployed], warnings: list[DeployWarning]):
        super().__init__(deployed)
        self.warnings = warnings


def deploy(session: Session, files: dict[str, str], actor: Actor) -> DeployResult:
    """Validate the files and store one version per executable process they define."""
    if actor.user_id is not None:
        user = session.get(User, actor.user_id)
        if user is None or not (user.role_ids & DESIGNER_ROLES):
            raise Forbidden("只有流程设计人员或管理员可以部署流程", {"required_roles": sorted(DESIGNER_ROLES)})
    bundle = parse_bundle(_by_basename(files))
    results = []
    for model in bundle.models:
        needed = bundle.files_by_model[model.key]
        digest = content_hash(needed)
        existing = session.scalar(select(ProcessVersion).where(ProcessVersion.process_key == model.key,
                                                               ProcessVersion.content_hash == digest))
        if existing is not None:
            results.append(Deployed(existing, created=False))
            continue
        definition = session.get(ProcessDefinition, model.key, with_for_update=True)
        if definition is None:
            definition = ProcessDefinition(key=model.key, name=model.name, latest_version=0, created_at=utcnow())
            session.add(definition)
        definition.latest_version += 1
        definition.name = model.name
        version = ProcessVersion(process_key=model.key, version=definition.latest_version, name=model.name,
                                 content_hash=digest, bpmn_file=model.bpmn_file, files=needed,
                                 deployed_by=actor.user_id, deployed_at=utcnow())
        session.add(version)
        session.flush()
        results.append(Deployed(version, created=True))
    return DeployResult(results, bundle.warnings)


def validate(files: dict[str, str]) -> ParsedBundle:
    """What deploy would say of these files, storing nothing: raises DeploymentInvalid (naming file,
    element and line) or returns the parsed processes and the warnings."""
    return parse_bundle(_by_basename(files))


def _by_basename(files: dict[str, str]) -> dict[str, str]:
    """Files are identified by name alone, so a CLI deploy of a folder and an upload hash the same."""
    named: dict[str, str] = {}
    for path, text in files.items():
        name = path.replace("\\", "/").rsplit("/", 1)[-1]
        if name in named:
            raise DeploymentInvalid(f"two files are named {name}", {"file": name})
        named[name] = text
    return named


def deploy_directory(session: Session, directory: Path, actor: Actor) -> DeployResult:
    files = {}
    for path in sorted(directory.rglob("*")):
        if path.suffix in (".bpmn", ".dmn", ".json") and path.is_file():
            files[path.relative_to(directory).as_posix()] = path.read_text(encoding="utf-8")
    return deploy(session, files, actor)


def content_hash(files: dict[str, str]) -> str:
    canonical = json.dumps(sorted(files.items()), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def get_definition(session: Session, key: str) -> ProcessDefinition:
    definition = session.get(ProcessDefinition, key)
    if definition is None:
        raise NotFound(f"流程 '{key}' 不存在", {"process_key": key})
    return definition


def list_definitions(session: Session) -> list[ProcessDefinition]:
    return list(session.scalars(select(ProcessDefinition).order_by(ProcessDefinition.key)))


def list_versions(session: Session, key: str) -> list[ProcessVersion]:
    return list(session.scalars(select(ProcessVersion).options(load_only(
        ProcessVersion.id, ProcessVersion.process_key, ProcessVersion.version, ProcessVersion.name,
        ProcessVersion.content_hash, ProcessVersion.bpmn_file, ProcessVersion.deployed_by,
        ProcessVersion.deployed_at)).where(ProcessVersion.process_key == key).order_by(ProcessVersion.version)))


def get_version(session: Session, key: str, version: int | None = None) -> ProcessVersion:
    """A version of a process, the latest when `version` is None."""
    definition = get_definition(session, key)
    number = definition.latest_version if version is None else version
    found = session.scalar(select(ProcessVersion).where(ProcessVersion.process_key == key,
                                                        ProcessVersion.version == number))
    if found is None:
        raise NotFound(f"流程 '{key}' 没有版本 {number}", {"process_key": key, "version": number})
    return found


def model_for(session: Session, version_id: int, content_hash: str | None = None) -> ProcessModel:
    """The runnable model of a version; pass its content hash when the caller already read it."""
    digest = content_hash or session.scalar(select(ProcessVersion.content_hash)
                                            .where(ProcessVersion.id == version_id))

    def source() -> tuple[str, dict[str, str]]:
        key, files = session.execute(select(ProcessVersion.process_key, ProcessVersion.files)
                                     .where(ProcessVersion.id == version_id)).one()
        return key, files

    return model_for_version(version_id, digest, source)
