from __future__ import annotations

from flask import Response, request

from api.context import authenticated, command
from api.openapi import errors
from api.parsing import Blueprint
from api.schemas import DefinitionDetailSchema, DefinitionSchema, DeployResultSchema, ValidateResultSchema
from engine.errors import DeploymentInvalid, InvalidInput
from engine.services import deployments

blp = Blueprint("definitions", __name__, description="Deploy and read BPMN/DMN process definitions")

MAX_FILE_BYTES = 2 * 1024 * 1024
MAX_FILES = 50


@blp.route("/definitions", methods=["POST"])
@blp.doc(requestBody={"content": {"multipart/form-data": {"schema": {
    "type": "object", "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"}}}}}}})
@blp.response(201, DeployResultSchema)
@errors(blp, {403: "The caller is not a designer or an administrator",
              422: "Validation failed; details name file, element and reason"})
@command(DeployResultSchema, status=201)
def deploy(session, user, actor):
    """Deploy BPMN, DMN and form files (multipart field `files`); same content is the same version.

    Every executable process becomes a version holding the files it needs (the BPMN files of the processes
    it calls, their decisions and forms). What was uploaded but not deployed is listed in `warnings`.
    """
    results = deployments.deploy(session, _uploaded_files(), actor)
    return {"deployed": [
        {"process_key": r.version.process_key, "version": r.version.version, "version_id": r.version.id,
         "created": r.created} for r in results],
        "warnings": [{"file": w.file, "message": w.message} for w in results.warnings]}


@blp.route("/definitions/validate", methods=["POST"])
@blp.doc(requestBody={"content": {"multipart/form-data": {"schema": {
    "type": "object", "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"}}}}}}})
@blp.response(200, ValidateResultSchema)
@errors(blp, {422: "Validation failed; details name file, element and reason"})
@authenticated
def validate(session, user):
    """Run the deploy's validation on the files (multipart field `files`) and store nothing: the
    designer's 校验 button. 200 with the processes found and the warnings, or the deploy's 422."""
    bundle = deployments.validate(_uploaded_files())
    return {"processes": [{"process_key": m.key, "name": m.name} for m in bundle.models],
            "warnings": [{"file": w.file, "message": w.message} for w in bundle.warnings]}


def _uploaded_files() -> dict[str, str]:
    uploads = request.files.getlist("files")
    if not uploads:
        raise InvalidInput("Upload the process files as multipart/form-data field 'files'",
                           {"fields": {"files": ["at least one file is required"]}})
    if len(uploads) > MAX_FILES:
        raise InvalidInput(f"At most {MAX_FILES} files per deployment", {"fields": {"files": ["too many files"]}})
    files = {}
    for upload in uploads:
        name = (upload.filename or "").replace("\\", "/").rsplit("/", 1)[-1]
        raw = upload.read(MAX_FILE_BYTES + 1)
        if len(raw) > MAX_FILE_BYTES:
            raise DeploymentInvalid(f"{name} is larger than {MAX_FILE_BYTES // 1024} KiB", {"file": name})
        try:
            files[name] = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise DeploymentInvalid(f"{name} is not UTF-8 text", {"file": name}) from None
    return files


@blp.route("/definitions")
@blp.response(200, DefinitionSchema(many=True))
@authenticated
def list_definitions(session, user):
    """Every deployed process with its latest version number."""
    return deployments.list_definitions(session)


@blp.route("/definitions/<key(64):key>")
@blp.response(200, DefinitionDetailSchema)
@errors(blp, {404: "No such process"})
@authenticated
def get_definition(key, session, user):
    """One process with all its versions."""
    definition = deployments.get_definition(session, key)
    view = {name: getattr(definition, name) for name in DefinitionSchema().fields}
    return {**view, "versions": deployments.list_versions(session, key)}


@blp.route("/definitions/<key(64):key>/versions/<rowid:version>/bpmn")
@blp.response(200, content_type="application/xml", description="The BPMN XML of that version")
@errors(blp, {404: "No such process or version"})
@authenticated
def download_bpmn(key, version, session, user):
    """The BPMN file of a version, as deployed (for the diagram viewer and the modeler)."""
    found = deployments.get_version(session, key, version)
    return Response(found.files[found.bpmn_file], mimetype="application/xml",
                    headers={"Content-Disposition": f'attachment; filename="{found.bpmn_file}"'})
