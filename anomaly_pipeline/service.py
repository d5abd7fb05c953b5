"""The scoring service: a small FastAPI app over one ``StreamScorer``.

``POST /events`` ingests and scores a batch (an ``event_id`` already scored within the memory
horizon is dropped and counted, not scored twice), ``GET /alerts`` lists recent alerts,
``GET /incidents`` (an HTML index ranked by evidence for a browser, JSON otherwise) and
``GET /incidents/{id}`` (JSON; ``.md``, ``.svg`` and ``.html`` for Markdown, the subgraph picture
and the incident page), ``GET /healthz``, ``GET /metrics`` (Prometheus text), ``GET /`` (a landing
page linking all of them) and the OpenAPI schema at ``/openapi.json`` with an API reference at
``/docs`` that needs no CDN (``service_pages``). Bound to 127.0.0.1 by default; request bodies over
``max_body_bytes`` are refused with 413 before they are read in full.

Hostile input: every event is checked at the door as batch ingestion checks a row (fields, types,
domains, ranges; text with control characters or invalid Unicode is refused), so what reaches
the scorer's state can always be written to a log line, an HTML page and UTF-8 JSON; every event
received is scored, quarantined or a duplicate, and ``/metrics`` reconciles. Scoring runs in a
worker thread, so ``/healthz`` answers at once during a burst. With ``api_token`` every route but
``/healthz`` needs ``Authorization: Bearer <token>``; requests whose ``Host`` header is not in
``allowed_hosts`` are refused (400), which stops DNS rebinding against a service on loopback.

Whether the scorer started warm (the champion's training history replayed before the first
event, ``StreamScorer.warm_start``) and from which model version and how many events, or why it
did not, is on ``/``, in ``/healthz`` (``warm_start``) and in ``/metrics``
(``anomaly_stream_warm_start``, ``anomaly_stream_warm_history_events``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Sequence
from typing import Any

import anyio
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from pydantic import BaseModel, Field, ValidationError
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from anomaly_pipeline import service_pages
from anomaly_pipeline.defaults import (
    API_TOKEN_ENV,
    DEFAULT_HOST,
    LOOPBACK_HOSTS,
    MAX_BODY_BYTES,
    MAX_EVENTS_PER_REQUEST,
)
from anomaly_pipeline.streaming.scorer import StreamScorer, rss_bytes
from anomaly_pipeline.streaming.sources import Batch


class EventBatch(BaseModel):
    """A batch of events following the event contract (see ``anomaly_pipeline.schema``): each
    needs ``ts`` (ISO 8601, UTC) and ``event_type``; ``user``, ``src_host``, ``dst_host``,
    ``process``, ``dst_port``, ``auth_type``, ``logon_type``, ``success``, ``bytes_out``,
    ``bytes_in``, ``packets``, ``duration_s``, ``event_id``... are optional. Malformed events are
    quarantined with a reason (in the response); the rest are scored."""

    events: list[dict[str, Any]] = Field(..., min_length=1, max_length=MAX_EVENTS_PER_REQUEST)


MAX_DUPLICATE_IDS_LISTED = 1_000


class IngestResult(BaseModel):
    """What became of a batch: every event received is scored, quarantined (with the reason), a
    duplicate of an event already scored (same ``event_id`` within the scorer's memory horizon:
    not scored again) or late/unplaceable (the rest)."""

    received: int = Field(description="events in the request")
    scored: int = Field(description="events scored now")
    quarantined: int = Field(description="malformed or late events, listed in quarantine")
    duplicates: int = Field(0, description="events whose event_id was already scored: not scored again")
    duplicate_event_ids: list[str] = Field(
        default_factory=list, description=f"their event_ids (the first {MAX_DUPLICATE_IDS_LISTED:,})")
    quarantine: list[dict[str, Any]] = Field(description="quarantined events with raw_ref and reason")
    alerts: list[dict[str, Any]] = Field(description="alerts raised by this batch")
    seconds: float = Field(description="time spent on the batch")


class _BodyLimit:
    """Refuse bodies over ``limit`` bytes with 413: by Content-Length at once, else while reading."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send, int(declared))
            return
        seen, too_large, refused = 0, False, False

        async def limited() -> dict:
            nonlocal seen, too_large
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    too_large = True  # stop reading; the app's answer is replaced by a 413
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        async def guarded_send(message: dict) -> None:
            nonlocal refused
            if not too_large:
                await send(message)
            elif not refused:
                refused = True
                await self._refuse(send, seen, exact=False)

        await self.app(scope, limited, guarded_send)

    async def _refuse(self, send: Send, size: int, exact: bool = True) -> None:
        body = json.dumps({"detail": f"request body of {'' if exact else 'more than '}{size:,} bytes exceeds the limit of {self.limit:,} bytes; "
                                     f"send the events in smaller batches (at most {MAX_EVENTS_PER_REQUEST:,} "
                                     "events per request)"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


OPEN_PATHS = ("/healthz",)  # a load balancer's liveness probe carries no secret


class _BearerToken:
    """401 unless the request carries ``Authorization: Bearer <token>``, on every path but
    ``OPEN_PATHS``. The SHA-256 digests are compared in constant time, so response times leak
    neither the token's characters nor its length."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app, self._digest = app, hashlib.sha256(token.encode()).digest()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        body = json.dumps({"detail": "missing or wrong bearer token: send the header 'Authorization: Bearer "
                                     f"<token>' with the token the service was started with (${API_TOKEN_ENV})"}).encode()
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"www-authenticate", b'Bearer realm="anomaly-pipeline"')]})
        await send({"type": "http.response.body", "body": body})

    def _allowed(self, scope: Scope) -> bool:
        header = dict(scope.get("headers") or []).get(b"authorization", b"")
        scheme, _, given = header.partition(b" ")
        digest = hashlib.sha256(given.strip()).digest()
        return hmac.compare_digest(digest, self._digest) and scheme.lower() == b"bearer"


def _invalid_body(errors: list[dict[str, Any]]) -> RequestValidationError:
    """FastAPI's own 422 answer; without the offending input, which may be anything a client sent."""
    return RequestValidationError([{"type": e["type"], "loc": ("body", *e["loc"]), "msg": e["msg"]} for e in errors])


def parse_event_batch(body: bytes) -> EventBatch:
    """The body of ``POST /events`` as an ``EventBatch``, or the 422 FastAPI would answer. Parsed
    here, in the scoring thread, instead of by FastAPI on the event loop: 20,000 events take tens
    of milliseconds, and a burst of them would hold up every other request."""
    try:
        data = json.loads(body)
    except RecursionError:
        raise _invalid_body([{"type": "json_invalid", "loc": (0,), "msg": "JSON decode error: nested too deeply"}]) from None
    except ValueError as exc:  # JSONDecodeError, or bytes that are not UTF-8
        position = getattr(exc, "pos", 0)
        raise _invalid_body([{"type": "json_invalid", "loc": (position,),
                              "msg": f"JSON decode error: {getattr(exc, 'msg', exc)}"}]) from None
    try:
        return EventBatch.model_validate(data)
    except ValidationError as exc:
        raise _invalid_body(exc.errors(include_url=False)) from None


EVENT_BATCH_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"$ref": "#/components/schemas/EventBatch"}}}}}


def create_app(scorer: StreamScorer, *, max_body_bytes: int = MAX_BODY_BYTES, api_token: str | None = None,
               allowed_hosts: Sequence[str] = LOOPBACK_HOSTS) -> FastAPI:
    """The app for ``scorer`` (every request shares it; scoring is serialised by its lock).

    ``api_token``: when given, every route but ``/healthz`` answers 401 without
    ``Authorization: Bearer <api_token>``. ``allowed_hosts``: the names the ``Host`` header may
    carry (Starlette's ``TrustedHostMiddleware``; ``"*.example.com"`` patterns, ``"*"`` for any);
    others get 400. The default, the loopback names, fits a service bound to 127.0.0.1.
    """
    # docs_url=None: FastAPI's Swagger UI and ReDoc pages load their scripts from a CDN and are
    # blank offline; /docs is our own page generated from the same schema (service_pages).
    app = FastAPI(title="anomaly-pipeline streaming scorer", version="0.1.0", docs_url=None, redoc_url=None,
                  description="Real-time scoring of security events with the @champion GNN-LSTM model; "
                              "alerts grouped into incidents with their attack path and blast radius.")
    app.state.scorer = scorer

    @app.get("/", include_in_schema=False)
    def landing() -> HTMLResponse:
        m = scorer.metrics
        return HTMLResponse(service_pages.landing_page({
            "model": scorer.model.uri + (f" (version {scorer.model.version})" if scorer.model.version else ""),
            "warm start": scorer.warm.summary(), "alert threshold": f"{scorer.threshold:.3f}",
            "events scored": f"{m.events_scored:,}", "duplicates dropped": f"{m.events_duplicate:,}",
            "quarantined": f"{m.events_quarantined:,}", "alerts": f"{m.alerts:,}",
            "incidents": f"{len(scorer.incidents.incidents):,}"}))

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return HTMLResponse(service_pages.api_reference_page(app.openapi()))

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> RedirectResponse:
        return RedirectResponse("/docs")

    # Scoring takes CPU seconds: it runs in a worker thread of its own (one: the scorer's lock
    # serialises batches anyway), so the event loop keeps answering /healthz and the GET routes
    # keep the threadpool, while the batches of a burst wait for their turn here.
    scoring = anyio.CapacityLimiter(1)

    def ingest(body: bytes) -> IngestResult:
        batch = parse_event_batch(body)
        report = scorer.process(Batch(records=list(batch.events)), source="http")
        q = report.quarantine
        quarantine = q.astype(object).where(q.notna(), None).to_dict("records") if len(q) else []
        return IngestResult(received=len(batch.events), scored=report.scored, quarantined=len(q),
                            duplicates=len(report.duplicate_ids),
                            duplicate_event_ids=report.duplicate_ids[:MAX_DUPLICATE_IDS_LISTED],
                            quarantine=quarantine, alerts=report.alerts, seconds=round(report.seconds, 4))

    @app.post("/events", response_model=IngestResult, summary="Ingest and score a batch of events",
              openapi_extra=EVENT_BATCH_BODY)
    async def post_events(request: Request) -> IngestResult:
        """The body is an ``EventBatch``: ``{"events": [...]}``."""
        return await anyio.to_thread.run_sync(ingest, await request.body(), limiter=scoring)

    @app.get("/alerts", summary="Recent alerts, newest last")
    def get_alerts(limit: int = Query(100, ge=1, le=10_000), min_score: float | None = None) -> list[dict]:
        alerts = [a for a in list(scorer.alerts) if min_score is None or a["score"] >= min_score]
        return alerts[-limit:]

    @app.get("/incidents", summary="Incidents found so far (HTML index for a browser, JSON otherwise)",
             response_model=list[dict[str, Any]],
             responses={200: {"content": {"text/html": {}}, "description": "JSON list, or the HTML index"}})
    def get_incidents(request: Request,
                      fmt: str | None = Query(None, alias="format", pattern="^(html|json)$",
                                              description="html or json; default: by the Accept header")) -> Response:
        """JSON (one summary per incident, in the order they were opened) unless the client prefers
        HTML (a browser) or asks for format=html: then a page ranked by evidence (the sum of the
        incident's alert scores), linking each incident's page."""
        html = fmt == "html" if fmt else service_pages.wants_html(request.headers.get("accept"))
        with scorer.incidents.lock:
            if html:
                page = service_pages.incident_index_page(list(scorer.incidents.incidents.values()))
                return HTMLResponse(page, headers={"Vary": "Accept"})
            return JSONResponse(scorer.incidents.summaries(), headers={"Vary": "Accept"})

    @app.get("/incidents/{incident_id}", summary="One incident: JSON, or .md / .svg / .html")
    def get_incident(incident_id: str) -> Response:
        base, _, ext = incident_id.partition(".")
        if ext not in ("", "md", "svg", "html"):
            raise HTTPException(404, f"unknown incident format {ext!r}: use .md, .svg, .html or none (JSON)")
        with scorer.incidents.lock:
            incident = scorer.incidents.find(base)
            if incident is None:
                known = ", ".join(list(scorer.incidents.incidents)[-5:]) or "none yet"
                raise HTTPException(404, f"no incident {base!r}; recent incidents: {known} (GET /incidents lists them)")
            if ext == "md":
                return PlainTextResponse(incident.to_markdown(), media_type="text/markdown")
            if ext == "svg":
                return Response(incident.to_svg(), media_type="image/svg+xml")
            if ext == "html":
                return HTMLResponse(incident.to_html())
            return JSONResponse(incident.to_dict())

    @app.get("/healthz", summary="Liveness and the model in use")
    async def healthz() -> dict:
        # async: answered on the event loop, never queued behind the threadpool or the scorer's lock.
        return {"status": "ok", "model": scorer.model.uri, "model_version": scorer.model.version,
                "threshold": scorer.threshold, "events_scored": scorer.metrics.events_scored,
                "warm_start": scorer.warm.to_dict()}

    @app.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
    def metrics() -> str:
        m, warm = scorer.metrics, scorer.warm
        rows = [
            ("anomaly_stream_events_received_total", "counter", "events received", m.events_received),
            ("anomaly_stream_events_scored_total", "counter", "events scored", m.events_scored),
            ("anomaly_stream_events_quarantined_total", "counter", "malformed or late events quarantined",
             m.events_quarantined),
            ("anomaly_stream_events_duplicate_total", "counter", "events dropped as already scored (same event_id)",
             m.events_duplicate),
            ("anomaly_stream_alerts_total", "counter", "alerts raised", m.alerts),
            ("anomaly_stream_incidents", "gauge", "incidents tracked", len(scorer.incidents.incidents)),
            ("anomaly_stream_events_per_second", "gauge", "events scored per second, last 10 s",
             round(m.events_per_second(), 3)),
            ("anomaly_stream_lag_seconds", "gauge", "arrival of the last batch to its scores", round(m.lag_seconds, 6)),
            ("anomaly_stream_event_time_lag_seconds", "gauge", "wall clock minus the newest event time",
             round(m.event_time_lag_seconds, 3)),
            ("anomaly_stream_buffer_events", "gauge", "events in the window state", scorer.state.n_buffered),
            ("anomaly_stream_memory_keys", "gauge", "remembered pairs and nodes", scorer.state.memory.n_keys()),
            ("anomaly_stream_resident_memory_bytes", "gauge", "resident memory of the process", rss_bytes()),
            (f'anomaly_stream_warm_start{{model_version="{_label(warm.model_version or "")}"}}', "gauge",
             "1 when the state started from the champion's training history, 0 when cold (GET /healthz says why)",
             int(warm.warm)),
            ("anomaly_stream_warm_history_events", "gauge", "training events replayed into the state at start",
             warm.events),
            ("anomaly_stream_warm_start_seconds", "gauge", "time the warm start took", round(warm.seconds, 3)),
        ]
        lines = []
        for name, kind, help_text, value in rows:
            family = name.partition("{")[0]
            lines += [f"# HELP {family} {help_text}", f"# TYPE {family} {kind}", f"{name} {value}"]
        return "\n".join(lines) + "\n"

    def openapi() -> dict[str, Any]:
        """FastAPI's schema plus ``EventBatch``, the body ``POST /events`` parses itself."""
        if app.openapi_schema is None:
            schema = FastAPI.openapi(app)
            models = schema.setdefault("components", {}).setdefault("schemas", {})
            models["EventBatch"] = EventBatch.model_json_schema(ref_template="#/components/schemas/{model}")
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    # The last added runs first: the Host check, then the token, then the body limit.
    app.add_middleware(_BodyLimit, limit=max_body_bytes)
    if api_token:
        app.add_middleware(_BearerToken, token=api_token)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))
    return app


def _label(value: str) -> str:
    """A Prometheus label value: backslash, quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def serve_in_thread(app: Any, host: str = DEFAULT_HOST, port: int = 0) -> tuple[Any, threading.Thread, int]:
    """Run ``app`` with uvicorn in a daemon thread; returns (server, thread, bound port)."""
    import socket
    import time

    import uvicorn

    if port == 0:
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True, name="uvicorn")
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    if not server.started:
        raise RuntimeError(f"the service did not start on {host}:{port} within 20 s")
    return server, thread, port
