"""Credentials out of what gets printed: URLs are shown without their secrets.

Webhook URLs carry their token in the path (Slack: ``/services/T…/B…/<token>``) or the query
(``?token=…``), database and tracking URIs in the user-info (``postgresql://user:password@host``).
Logs, error messages, reprs and Dagster metadata show ``redact_url(url)`` instead: scheme, host,
port and a first path segment that reads like a route name stay (enough to tell which endpoint),
the rest is masked.
"""

from __future__ import annotations

import re
import urllib.parse

MASK = "***"


def redact_url(url: str | None) -> str | None:
    """``url`` with user-info password, the path beyond a route-like first segment and query values masked.

    Local paths and ``sqlite:///`` URIs have no secrets and come back unchanged; so does None.
    """
    if url is None:
        return None
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return MASK
    if not parts.netloc or parts.scheme in ("file", "sqlite"):
        return url
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if _port(parts) else "")
    if parts.username is not None:
        netloc = f"{parts.username}:{MASK}@{netloc}" if parts.password is not None else f"{MASK}@{netloc}"
    segments = [s for s in parts.path.split("/") if s]
    # The first segment stays when it reads like a route name ("services", "hooks"), never a token.
    keep = segments[:1] if segments and _ROUTE.fullmatch(segments[0]) else []
    path = "/" + "/".join(keep + ([MASK] if len(segments) > len(keep) else [])) if segments else parts.path
    query = urllib.parse.urlencode([(k, MASK) for k, _ in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)],
                                   safe="*")
    return urllib.parse.urlunsplit((parts.scheme, netloc, path, query, ""))


def redact_text(text: str) -> str:
    """Every URL with credentials inside ``text`` redacted (for messages that embed one)."""
    return _URL.sub(lambda m: redact_url(m.group(0)) or "", text)


def _port(parts: urllib.parse.SplitResult) -> int | None:
    try:
        return parts.port
    except ValueError:
        return None


_ROUTE = re.compile(r"[a-z][a-z_-]{0,15}")  # lower-case words; tokens mix case and digits
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")
