"""The scoring service over real HTTP on 127.0.0.1: ingest, alerts, incidents, health, metrics, limits."""

from __future__ import annotations

import html
import json
import re

import httpx
import pandas as pd
import pytest

from anomaly_pipeline.incidents import Incident
from anomaly_pipeline.service import create_app, serve_in_thread
from anomaly_pipeline.service_pages import incident_index_page, wants_html
from anomaly_pipeline.streaming import StreamConfig, StreamScorer
from anomaly_pipeline.streaming.scorer import SeenEventIds
from tests.test_streaming import STREAM_WINDOW, stream_events, tiny_model, to_records


@pytest.fixture(scope="module")
def service():
    scorer = StreamScorer(tiny_model(), stream_config=StreamConfig(window=STREAM_WINDOW))
    server, thread, port = serve_in_thread(create_app(scorer, max_body_bytes=2_000_000))
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        yield client, scorer
    server.should_exit = True
    thread.join(timeout=10)


def test_events_are_scored_and_alerts_and_incidents_served(service):
    client, scorer = service
    records = to_records(stream_events().iloc[:4000])
    totals = {"scored": 0, "alerts": 0}
    for lo in range(0, len(records), 1000):
        response = client.post("/events", json={"events": records[lo : lo + 1000]})
        assert response.status_code == 200, response.text
        body = response.json()
        totals["scored"] += body["scored"]
        totals["alerts"] += len(body["alerts"])
    assert totals["scored"] == 4000
    alerts = client.get("/alerts", params={"limit": 10_000}).json()
    assert len(alerts) == totals["alerts"] > 0
    assert all(a["score"] > scorer.threshold for a in alerts)
    incidents = client.get("/incidents").json()
    assert incidents and sum(i["n_alerts"] for i in incidents) == len(alerts)
    first = incidents[0]["incident_id"]
    detail = client.get(f"/incidents/{first}").json()
    times = [step["when"] for step in detail["attack_path"]]
    assert times == sorted(times)
    assert client.get(f"/incidents/{first}.md").text.startswith(f"# Incident {first}")
    svg = client.get(f"/incidents/{first}.svg")
    assert svg.headers["content-type"].startswith("image/svg+xml") and "<svg" in svg.text
    missing = client.get("/incidents/INC-99999")
    assert missing.status_code == 404 and "GET /incidents lists them" in missing.json()["detail"]


def test_health_metrics_and_openapi(service):
    client, _ = service
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["model"] == "test:tiny"
    client.post("/events", json={"events": to_records(stream_events().iloc[4000:4100])})
    text = client.get("/metrics").text
    values = dict(line.split(" ", 1) for line in text.splitlines() if not line.startswith("#"))
    assert int(values["anomaly_stream_events_scored_total"]) >= 100
    assert float(values["anomaly_stream_resident_memory_bytes"]) > 10 * 2**20
    for name in ("anomaly_stream_events_per_second", "anomaly_stream_lag_seconds", "anomaly_stream_alerts_total"):
        assert name in values
    schema = client.get("/openapi.json").json()
    assert {"/events", "/alerts", "/incidents/{incident_id}", "/healthz", "/metrics"} <= set(schema["paths"])


def test_oversize_requests_are_refused_with_a_clear_error(service):
    client, _ = service
    big = {"events": to_records(stream_events().iloc[:6000])}
    body = json.dumps(big).encode()
    assert len(body) > 2_000_000
    response = client.post("/events", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert "exceeds the limit of 2,000,000 bytes" in response.json()["detail"]

    def chunks():  # no Content-Length: the limit is enforced while reading
        for i in range(0, len(body), 65536):
            yield body[i : i + 65536]

    response = client.post("/events", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_malformed_requests_are_rejected_and_bad_events_quarantined(service):
    client, scorer = service
    response = client.post("/events", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422 and "JSON" in json.dumps(response.json())
    response = client.post("/events", json={"events": []})
    assert response.status_code == 422 and "at least 1" in json.dumps(response.json())
    response = client.post("/events", json={"records": [{"ts": "x"}]})
    assert response.status_code == 422 and '"events"' in json.dumps(response.json()["detail"][0]["loc"])
    good = to_records(stream_events().iloc[4100:4110])
    response = client.post("/events", json={"events": [*good, {"ts": "2026-01-09T10:00:00Z", "event_type": "coffee"}]})
    assert response.status_code == 200
    body = response.json()
    assert body["scored"] == 10 and body["quarantined"] == 1
    assert "event_type 'coffee' is not one of" in body["quarantine"][0]["reason"]


# -- pages for a browser, offline docs, reasons on every alert, duplicates --

BROWSER = {"accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


@pytest.fixture(scope="module")
def scored():
    """A service of its own (the one above is shared with other tests) after 4,000 events, with
    the alerts as the POST answers carried them (before the explanation worker)."""
    scorer = StreamScorer(tiny_model(), stream_config=StreamConfig(window=STREAM_WINDOW))
    server, thread, port = serve_in_thread(create_app(scorer))
    answered: list[dict] = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
        records = to_records(stream_events().iloc[:4000])
        for lo in range(0, len(records), 1000):
            response = client.post("/events", json={"events": records[lo : lo + 1000]})
            assert response.status_code == 200, response.text
            answered += response.json()["alerts"]
        yield client, scorer, answered
    server.should_exit = True
    thread.join(timeout=10)
    scorer.close()


def test_root_is_a_landing_page_linking_every_tool(scored):
    client, _, _ = scored
    response = client.get("/", headers=BROWSER)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    for href in ("/incidents", "/alerts", "/docs", "/metrics", "/healthz", "/openapi.json"):
        assert f'href="{href}"' in response.text
    assert "test:tiny" in response.text


def test_api_docs_need_no_cdn(scored):
    client, _, _ = scored
    docs = client.get("/docs")
    assert docs.status_code == 200 and docs.headers["content-type"].startswith("text/html")
    assert "<script" not in docs.text and "http://" not in docs.text and "https://" not in docs.text
    for route in ("/events", "/alerts", "/incidents/{incident_id}", "/healthz", "/metrics"):
        assert f"<code>{route}</code>" in docs.text
    assert "EventBatch" in docs.text and "duplicate_event_ids" in docs.text
    redoc = client.get("/redoc", follow_redirects=False)
    assert redoc.status_code in (302, 307) and redoc.headers["location"] == "/docs"


def test_incident_index_is_html_for_a_browser_ranked_by_evidence_and_json_otherwise(scored):
    client, _, _ = scored
    summaries = client.get("/incidents").json()  # httpx sends Accept: */*, as curl does: JSON
    assert len(summaries) > 1 and {"incident_id", "n_alerts", "max_score", "evidence"} <= set(summaries[0])
    page = client.get("/incidents", headers=BROWSER)
    assert page.headers["content-type"].startswith("text/html") and page.headers["vary"] == "Accept"
    order = [s["incident_id"] for s in sorted(summaries, key=lambda s: -s["evidence"])]
    linked = re.findall(r'href="/incidents/(INC-\d+)\.html"', page.text)
    assert linked == order
    assert client.get("/incidents", params={"format": "html"}).headers["content-type"].startswith("text/html")
    assert client.get("/incidents", params={"format": "json"}, headers=BROWSER).json() == summaries
    assert client.get("/incidents", params={"format": "xml"}).status_code == 422
    incident = client.get(f"/incidents/{order[0]}.html")
    assert 'href="/incidents"' in incident.text  # back to the index


def test_the_index_escapes_what_events_carry():
    hostile = "<script>alert(1)</script>"
    incident = Incident("INC-00001")
    incident.take({"alert_id": "a-1", "event_id": "e-1", "ts": "2026-01-09T10:00:00+00:00", "score": 9.0,
                   "score_parts": {}, "reasons": [f"first logon from {hostile}"], "time_attention": [],
                   "neighbours": [], "event": {"who": hostile, "from": "WS01", "to": "SRV01", "how": "auth",
                                               "when": "2026-01-09T10:00:00+00:00", "event_type": "auth"}})
    page = incident_index_page([incident])
    assert hostile not in page and html.escape(hostile) in page


def test_accept_header_negotiation():
    assert wants_html(BROWSER["accept"])
    assert not wants_html("*/*") and not wants_html(None) and not wants_html("application/json")
    assert not wants_html("text/html;q=0.5, application/json")


def test_every_alert_carries_a_reason(scored):
    client, scorer, answered = scored
    # As sent (before the model's explanation): a feature reason, else the strongest score part.
    assert answered and all(a["reasons"] and all(r.strip() for r in a["reasons"]) for a in answered)
    assert any("strongest part of the score" in a["reasons"][0] for a in answered)  # the fallback was needed
    scorer.flush_explanations()
    alerts = client.get("/alerts", params={"limit": 10_000}).json()
    assert alerts and all(a["reasons"] for a in alerts)


def test_events_posted_twice_are_scored_once_and_counted(scored):
    client, scorer, _ = scored
    records = to_records(stream_events().iloc[4000:4300])

    def duplicates_metric() -> int:
        text = client.get("/metrics").text
        return int(dict(line.split(" ", 1) for line in text.splitlines() if not line.startswith("#"))
                   ["anomaly_stream_events_duplicate_total"])

    first = client.post("/events", json={"events": records}).json()
    alerts_after_first = scorer.metrics.alerts
    before = duplicates_metric()
    again = client.post("/events", json={"events": records}).json()
    assert first["scored"] == 300 and first["duplicates"] == 0
    assert again["scored"] == 0 and again["duplicates"] == 300 and again["alerts"] == []
    assert again["duplicate_event_ids"] == [r["event_id"] for r in records]
    assert scorer.metrics.alerts == alerts_after_first
    assert duplicates_metric() == before + 300
    # Twice in one batch: the second copy is the duplicate.
    fresh = to_records(stream_events().iloc[4300:4301])
    both = client.post("/events", json={"events": fresh + fresh}).json()
    assert both["scored"] == 1 and both["duplicates"] == 1


def test_seen_event_ids_are_forgotten_after_the_memory_horizon():
    seen = SeenEventIds(memory_days=2)
    day = pd.Timestamp("2026-01-05", tz="UTC")
    old = pd.DataFrame({"event_id": ["a", "b"], "ts": [day, day]})
    seen.remember(old)
    assert len(seen.split(old)[1]) == 2
    seen.remember(pd.DataFrame({"event_id": ["c"], "ts": [day + pd.Timedelta(days=3)]}))
    fresh, repeats = seen.split(old)
    assert len(fresh) == 2 and repeats.empty and len(seen) == 1
