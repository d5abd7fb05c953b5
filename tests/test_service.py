"""The scoring service over real HTTP on 127.0.0.1: ingest, alerts, incidents, health, metrics, limits."""

from __future__ import annotations

import json

import httpx
import pytest

from anomaly_pipeline.service import create_app, serve_in_thread
from anomaly_pipeline.streaming import StreamConfig, StreamScorer
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
