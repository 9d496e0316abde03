"""Security headers (api/security_headers.py) on every kind of response, a CSP on pages that runs our own
script files only, no inline script left in a template, and the pages working under it in chromium."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from api import create_app
from engine.db import transaction
from engine.services import passwords
from tests.live_server import serving

WEB = Path(__file__).resolve().parent.parent / "api"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def directives(policy: str) -> dict[str, list[str]]:
    parts = [p.split() for p in policy.split(";") if p.strip()]
    return {p[0]: p[1:] for p in parts}


def assert_secured(response) -> dict[str, list[str]]:
    headers = response.headers
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "same-origin"
    assert headers["X-Frame-Options"] == "DENY"
    policy = directives(headers["Content-Security-Policy"])
    assert policy["frame-ancestors"] == ["'none'"]
    assert "Strict-Transport-Security" not in headers  # plain HTTP
    return policy


def assert_strict_page_policy(policy: dict[str, list[str]]) -> None:
    script = policy.get("script-src", policy.get("default-src"))
    assert script in (["'self'"], ["'none'"]), policy
    assert not any("'unsafe-eval'" in v or "'unsafe-inline'" in v for k, v in policy.items() if k != "style-src")
    assert policy["base-uri"] == ["'self'"] and policy["object-src"] == ["'none'"]
    assert policy["form-action"] == ["'self'"]


@pytest.mark.parametrize(("path", "status"), [
    ("/api/v1/health", 200),
    ("/api/v1/instances", 401),  # an error of the API
    ("/api/v1/no-such-thing", 404),
    ("/no/such/page", 404),
    ("/api/v1/openapi.json", 200),
])
def test_api_answers_and_errors_carry_the_headers(app, path, status):
    response = app.test_client().get(path)
    assert response.status_code == status and response.mimetype == "application/json"
    assert assert_secured(response)["default-src"] == ["'none'"]


def test_a_405_and_a_413_carry_them_too(as_user):
    assert_secured(as_user("suxiaoyun").client.delete("/api/v1/health"))
    big = as_user("luyao").post("/api/v1/definitions", data={"files": [(__import__("io").BytesIO(b"x" * (6 << 20)),
                                                                        "big.bpmn")]},
                                content_type="multipart/form-data")
    assert big.status_code == 413
    assert_secured(big)


@pytest.mark.parametrize("path", ["/static/web/designer.js", "/static/web/audit.css", "/static/web/swagger-init.js",
                                  "/api/v1/docs/assets/swagger-ui-bundle.js"])
def test_static_files_carry_them(app, path):
    response = app.test_client().get(path)
    assert response.status_code == 200
    assert assert_secured(response)["default-src"] == ["'none'"]


def test_the_login_page_and_the_message_page_get_a_strict_policy(app):
    client = app.test_client()
    login = client.get("/login")
    assert login.status_code == 200 and login.mimetype == "text/html"
    assert_strict_page_policy(assert_secured(login))
    refused = client.post("/login", data={})  # the message page's sibling: the form again, 403
    assert_strict_page_policy(assert_secured(refused))


def test_the_diagram_pages_get_the_scripted_policy(app):
    with transaction() as session:
        passwords.set_password(session, "luyao", "headers-pass-2026")
    client = app.test_client()
    form = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="form_token" value="([^"]+)"', form).group(1)
    client.post("/login", data={"form_token": token, "login": "luyao", "password": "headers-pass-2026", "next": "/m/"})
    page = client.get("/designer/reimbursement/1")
    assert page.status_code == 200 and page.mimetype == "text/html"
    policy = assert_secured(page)
    assert_strict_page_policy(policy)
    assert policy["script-src"] == ["'self'"] and "'unsafe-inline'" in policy["style-src"]  # bpmn-js styles


def test_the_swagger_ui_page_runs_no_inline_script(app):
    page = app.test_client().get("/api/v1/docs")
    assert page.status_code == 200
    policy = assert_secured(page)
    assert_strict_page_policy(policy)
    assert policy["script-src"] == ["'self'"] and policy["connect-src"] == ["'self'"]
    assert policy["img-src"] == ["'self'", "data:"]
    assert not inline_scripts(page.get_data(as_text=True))


def test_hsts_only_over_https(app):
    client = app.test_client()
    plain = client.get("/api/v1/health", headers={"X-Forwarded-Proto": "https"})  # not believed: no proxy
    assert "Strict-Transport-Security" not in plain.headers
    secure = client.get("/api/v1/health", base_url="https://finflow.test")
    assert secure.headers["Strict-Transport-Security"] == "max-age=31536000"
    proxied = create_app({"TESTING": True, "TRUSTED_PROXY_HOPS": 1}).test_client()
    behind = proxied.get("/login", headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "198.51.100.1"})
    assert behind.headers["Strict-Transport-Security"] == "max-age=31536000"


def test_the_wecom_and_oa_callbacks_carry_them(app):
    client = app.test_client()
    assert_secured(client.post("/wecom/callback", data=b"<xml/>"))
    assert_secured(client.post("/oa/callback", json={}))


def inline_scripts(html: str) -> list[str]:
    """<script> elements a strict CSP blocks: no src and not a JSON data block; and inline handlers."""
    found = [m.group(0) for m in re.finditer(r"<script\b(?![^>]*\bsrc=)(?![^>]*type=\"application/json\")[^>]*>", html)]
    found += re.findall(r"\s(on[a-z]+)\s*=", html)
    found += re.findall(r"javascript:", html, flags=re.IGNORECASE)
    return found


@pytest.mark.parametrize("template", sorted(p.name for p in (WEB / "web" / "templates").glob("*.html"))
                         + ["../../templates/swagger_ui.html"])
def test_no_template_has_an_inline_script_or_handler(template):
    text = (WEB / "web" / "templates" / template).read_text(encoding="utf-8")
    assert not inline_scripts(text), template


@pytest.mark.parametrize("script", sorted(p.name for p in (WEB / "web" / "static").glob("*.js")))
def test_no_script_of_ours_needs_eval(script):
    text = (WEB / "web" / "static" / script).read_text(encoding="utf-8")
    assert not re.search(r"\beval\(|new Function\(|setTimeout\(\s*['\"]|\son[a-z]+=", text), script


# -- in chromium: the CSP holds and nothing is refused -----------------------------------------------------

@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="chromium is installed by scripts/browser.sh")
def test_pages_raise_no_csp_violation_in_chromium():
    from playwright.sync_api import sync_playwright

    with transaction() as session:
        passwords.set_password(session, "luyao", "headers-pass-2026")
    with serving(threads=4) as site, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        page = browser.new_page()
        refused: list[str] = []
        page.on("console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None)
        page.goto(f"{site}/api/v1/docs")
        page.wait_for_selector(".swagger-ui .opblock", timeout=30_000)  # Swagger UI started from its file
        page.goto(f"{site}/login?next=/designer/reimbursement/1")
        page.fill("input[name=login]", "luyao")
        page.fill("input[name=password]", "headers-pass-2026")
        page.click("form[action='/login'] button[type=submit]")
        page.wait_for_selector("body[data-modeler=ready]", timeout=30_000)  # bpmn-js and designer.js ran
        browser.close()
    assert refused == []
