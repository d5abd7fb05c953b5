"""The scoring service's HTML pages: the landing page, the incident index and the API reference.

Self-contained (no script, no stylesheet or font from a CDN), so they work on an analyst's machine
without Internet access: FastAPI's own ``/docs`` loads Swagger UI from jsDelivr and is blank
offline, and no installed package ships the Swagger UI files, so ``/docs`` is an API reference
generated here from the OpenAPI schema. Every value that comes from events, incidents or the
schema is escaped with ``html.escape``.
"""

from __future__ import annotations

import html
import json
from typing import Any

_STYLE = """body{font-family:sans-serif;margin:1.5em;color:#222;max-width:80em}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:left;
vertical-align:top}th{background:#f4f4f4}code,pre{background:#f6f6f6;padding:1px 3px}pre{padding:6px;
overflow-x:auto}.method{font-weight:bold;text-transform:uppercase}.muted{color:#666}nav a{margin-right:1em}"""

NAV = (("/", "home"), ("/incidents", "incidents"), ("/alerts", "alerts (JSON)"), ("/docs", "API"),
       ("/metrics", "metrics"), ("/healthz", "health"))


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def page(title: str, body: str) -> str:
    """A whole HTML document with the service's navigation; ``body`` must already be escaped."""
    nav = "".join(f'<a href="{href}">{_e(text)}</a>' for href, text in NAV)
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f"<style>{_STYLE}</style></head><body><nav>{nav}</nav>\n<h1>{_e(title)}</h1>\n{body}\n</body></html>\n")


def wants_html(accept: str | None) -> bool:
    """True when the ``Accept`` header prefers HTML to JSON (a browser), False otherwise (curl,
    httpx, a SIEM: ``*/*`` or ``application/json``), so JSON clients keep getting JSON."""
    quality = {"html": 0.0, "json": 0.0}
    for item in (accept or "").split(","):
        media, *params = (part.strip() for part in item.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if media in ("text/html", "application/xhtml+xml"):
            quality["html"] = max(quality["html"], q)
        elif media in ("application/json", "application/*"):
            quality["json"] = max(quality["json"], q)
    return quality["html"] > quality["json"]


def landing_page(status: dict[str, Any]) -> str:
    """``/``: what the service runs and where everything is."""
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in status.items())
    links = "".join(
        f'<li><a href="{href}">{_e(href)}</a>: {_e(text)}</li>'
        for href, text in (
            ("/incidents", "incidents ranked by evidence (HTML in a browser, JSON otherwise)"),
            ("/alerts", "recent alerts, newest last (JSON)"),
            ("/docs", "API reference (works offline)"),
            ("/openapi.json", "OpenAPI schema"),
            ("/metrics", "Prometheus metrics"),
            ("/healthz", "liveness and the model in use"),
        )
    )
    body = (f"<table>{rows}</table>\n<h2>Where to go</h2><ul>{links}</ul>\n<p class=\"muted\">Send events with "
            "<code>POST /events</code> and a body <code>{\"events\": [...]}</code> (see the API reference).</p>")
    return page("anomaly-pipeline scoring service", body)


def _names(names: list[str], most: int = 5) -> str:
    shown = ", ".join(names[:most])
    return _e(shown + (f" … {len(names) - most} more" if len(names) > most else "") or "-")


def _minute(ts: str) -> str:
    """``2026-01-07T12:32:10.260000+00:00`` as ``2026-01-07 12:32:10`` (the page says UTC)."""
    return ts[:19].replace("T", " ")


def incident_index_page(incidents: list[Any]) -> str:
    """``/incidents`` for a browser: every incident, most evidence (sum of alert scores) first,
    each linked to its page, with its time span, size, entities and strongest alert's reason."""
    ranked = sorted(incidents, key=lambda i: -i.evidence)
    rows = []
    for rank, incident in enumerate(ranked, start=1):
        iid = _e(incident.incident_id)
        entities = incident.entities()
        top = max(incident.alerts, key=lambda a: a["score"])
        rows.append(
            f'<tr><td>{rank}</td><td><a href="/incidents/{iid}.html">{iid}</a> '
            f'<a class="muted" href="/incidents/{iid}">json</a></td><td>{incident.evidence:.1f}</td>'
            f"<td>{len(incident.alerts) + incident.dropped}</td><td>{top['score']:.2f}</td>"
            f"<td>{_e(_minute(incident.first_ts))}</td><td>{_e(_minute(incident.last_ts))}</td>"
            f"<td>{_names(entities['accounts'])}</td><td>{_names(entities['source_hosts'])}</td>"
            f"<td>{_names(entities['destinations'])}</td><td>{_e('; '.join(top['reasons'][:2]))}</td></tr>"
        )
    if not rows:
        return page("Incidents", "<p>No incidents yet: alerts form incidents as events are scored "
                                 "(<code>POST /events</code>).</p>")
    head = ("<tr><th>#</th><th>incident</th><th>evidence</th><th>alerts</th><th>max score</th><th>first (UTC)</th>"
            "<th>last (UTC)</th><th>accounts</th><th>source hosts</th><th>destinations</th><th>strongest alert's reason</th></tr>")
    body = (f"<p>{len(rows)} incidents, most evidence (sum of alert scores) first. The same list as JSON: "
            f'<a href="/incidents?format=json">/incidents?format=json</a>.</p>\n'
            f'<table id="incidents">{head}\n' + "\n".join(rows) + "\n</table>")
    return page("Incidents", body)


def _schema_type(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    if "anyOf" in schema:
        return " | ".join(_schema_type(s) for s in schema["anyOf"])
    if schema.get("type") == "array":
        return f"array of {_schema_type(schema.get('items', {}))}"
    return str(schema.get("type", "any"))


def api_reference_page(openapi: dict[str, Any]) -> str:
    """``/docs``: every route of the OpenAPI schema with its parameters, body and answers, and the
    models (request and response bodies) with their fields."""
    info = openapi.get("info", {})
    parts = [f"<p>{_e(info.get('description', ''))}</p>",
             '<p class="muted">Machine-readable: <a href="/openapi.json">/openapi.json</a> (OpenAPI '
             f"{_e(openapi.get('openapi', ''))}, version {_e(info.get('version', ''))}).</p>"]
    for path, methods in openapi.get("paths", {}).items():
        for method, op in methods.items():
            parts.append(f'<h2><span class="method">{_e(method)}</span> <code>{_e(path)}</code></h2>')
            parts.append(f"<p><b>{_e(op.get('summary', ''))}</b></p>")
            if op.get("description"):
                parts.append(f"<p>{_e(op['description'])}</p>")
            params = op.get("parameters", [])
            if params:
                rows = "".join(
                    f"<tr><td><code>{_e(p['name'])}</code></td><td>{_e(p.get('in'))}</td>"
                    f"<td>{'yes' if p.get('required') else 'no'}</td><td>{_e(_schema_type(p.get('schema', {})))}</td>"
                    f"<td>{_e(json.dumps(p.get('schema', {}).get('default')) if 'default' in p.get('schema', {}) else '')}"
                    f"</td><td>{_e(p.get('description', ''))}</td></tr>" for p in params)
                parts.append("<table><tr><th>parameter</th><th>in</th><th>required</th><th>type</th><th>default</th>"
                             f"<th>meaning</th></tr>{rows}</table>")
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            if body:
                name = _schema_type(body)
                parts.append(f'<p>Request body (JSON): <a href="#{_e(name)}"><code>{_e(name)}</code></a></p>')
            answers = ", ".join(f"{_e(code)} {_e(r.get('description', ''))}" for code, r in op.get("responses", {}).items())
            parts.append(f"<p class=\"muted\">Answers: {answers}</p>")
    models = openapi.get("components", {}).get("schemas", {})
    if models:
        parts.append("<h2>Models</h2>")
    for name, model in models.items():
        fields = "".join(
            f"<tr><td><code>{_e(field)}</code></td><td>{_e(_schema_type(spec))}</td>"
            f"<td>{'yes' if field in model.get('required', []) else 'no'}</td><td>{_e(spec.get('description', ''))}</td></tr>"
            for field, spec in model.get("properties", {}).items())
        parts.append(f"<h3 id=\"{_e(name)}\">{_e(name)}</h3><p>{_e(model.get('description', ''))}</p>"
                     f"<table><tr><th>field</th><th>type</th><th>required</th><th>meaning</th></tr>{fields}</table>")
    return page(f"{info.get('title', 'API')}: API reference", "\n".join(parts))
