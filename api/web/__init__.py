"""The approver page (/m/…): what a WeCom card's 详情 button opens, logged in through WeCom OAuth2.

Plain HTML for a phone (375 px wide, no external assets), served by Flask with Jinja templates, beside
the JSON API and outside it: a browser session cookie (engine/services/sessions.py) instead of a bearer
token, a per-session CSRF token on the forms. Issue 16's web pages will grow from here.
"""

from __future__ import annotations

from flask import Blueprint

blp = Blueprint("web", __name__, template_folder="templates", static_folder="static", static_url_path="/static/web")

from api.web import audit, designer, login, vendor, views  # noqa: E402,F401  (registers the routes on blp)
