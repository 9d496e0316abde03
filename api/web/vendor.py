"""GET /static/vendor/<package>/<path>: the browser packages npm installed (package.json at the project
root: bpmn-js, dmn-js), served from node_modules — declared and installed, never copied into the repo.
Only the packages' `dist/` folders are reachable."""

from __future__ import annotations

from pathlib import Path

from flask import Response, send_from_directory

from api.web import blp
from api.web.pages import error_page

NODE_MODULES = Path(__file__).resolve().parents[2] / "node_modules"
PACKAGES = frozenset({"bpmn-js", "dmn-js"})


@blp.get("/static/vendor/<package>/<path:path>")
def vendor_file(package: str, path: str) -> Response:
    dist = NODE_MODULES / package / "dist"
    if package not in PACKAGES or not dist.is_dir():
        return error_page("资源不存在", f"前端组件 {package[:40]} 未安装：请运行 scripts/setup.sh（npm ci）。", 404)
    response = send_from_directory(dist, path, max_age=3600)  # refuses paths outside dist (404)
    return response
