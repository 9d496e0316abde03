"""Destination URLs as subscriptions use them: parsed with a 422 for a malformed one, shown without the
password."""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit

from engine.errors import InvalidInput


def split(url: str) -> SplitResult:
    """`urlsplit`, with a malformed URL (e.g. an unclosed IPv6 bracket) refused as a 422 naming `url`."""
    try:
        return urlsplit(url)
    except ValueError as exc:
        raise InvalidInput(f"url is malformed: {exc}", {"fields": {"url": [f"malformed URL: {exc}"]}}) from exc


def mask(url: str) -> str:
    """The URL without its password, for lists, logs and errors."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()
