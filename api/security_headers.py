"""Security headers on every response: API JSON, pages, errors, static files, callbacks.

- `X-Content-Type-Options: nosniff`, so a browser never runs an upload or a JSON answer as a script;
  `Referrer-Policy: same-origin`, so instance and task URLs do not leak to other sites.
- Never framed (clickjacking on the approve buttons): `frame-ancestors 'none'` and, for older
  browsers, `X-Frame-Options: DENY`.
- A Content-Security-Policy on every response. HTML gets a real one (HTML_POLICY): our own scripts only,
  no inline script and no eval (the templates keep their data in `<script type="application/json">`
  blocks, the Swagger UI page starts from api/web/static/swagger-init.js); inline styles are allowed
  because bpmn-js and dmn-js set them. Anything else gets `default-src 'none'`: a JSON answer or a file
  opened directly runs and loads nothing. A page that sets its own, stricter policy (api/web/pages.py)
  keeps it, completed with the directives that do not fall back to default-src.
- `Strict-Transport-Security` only over HTTPS (request.is_secure, which believes X-Forwarded-Proto only
  from FINFLOW_TRUSTED_PROXY_HOPS proxies): sent over plain HTTP it would be meaningless, and a demo on
  http://localhost must stay reachable. No includeSubDomains: finflow does not speak for sibling hosts.
"""

from __future__ import annotations

from flask import Flask, Response, request

HTML_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
               "font-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'self'; "
               "form-action 'self'; frame-ancestors 'none'")
OTHER_POLICY = "default-src 'none'; frame-ancestors 'none'"
# Directives that do not fall back to default-src, added to a policy a view set itself when it lacks them.
REQUIRED = {"frame-ancestors": "'none'", "base-uri": "'self'", "form-action": "'self'", "object-src": "'none'"}
HSTS = "max-age=31536000"
FIXED = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin", "X-Frame-Options": "DENY"}


def register(app: Flask) -> None:
    app.after_request(add_security_headers)


def add_security_headers(response: Response) -> Response:
    for name, value in FIXED.items():
        response.headers.setdefault(name, value)
    response.headers["Content-Security-Policy"] = policy(response)
    if request.is_secure:
        response.headers.setdefault("Strict-Transport-Security", HSTS)
    return response


def policy(response: Response) -> str:
    """The response's CSP: its own completed with REQUIRED, else HTML_POLICY or OTHER_POLICY."""
    own = response.headers.get("Content-Security-Policy")
    if not own:
        return HTML_POLICY if response.mimetype == "text/html" else OTHER_POLICY
    present = {part.split()[0].lower() for part in own.split(";") if part.strip()}
    missing = [f"{name} {value}" for name, value in REQUIRED.items() if name not in present]
    return "; ".join([own.rstrip("; "), *missing])
