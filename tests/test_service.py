"""The scoring service over real HTTP on 127.0.0.1: ingest, alerts, incidents, health, metrics, limits."""

from __future__ import annotations

import html
import json
import re

import httpx
import numpy as np
import pandas as pd
import pytest

from anomaly_pipeline.incidents import Incident
from anomaly_pipeline.service import create_app, serve_in_thread
from anomaly_pipeline.service_pages import incident_index_page, wants_html
from anomaly_pipeline.streaming import StreamConfig, StreamScorer
from anomaly_pipeline.streaming.scorer import SeenEventIds, strongest_part_reason
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
    # The fallback, where no feature reason applies, names the part with the smallest tail probability.
    from anomaly_pipeline.training import SCORE_PARTS

    parts, log_p = np.zeros(len(SCORE_PARTS)), np.zeros(len(SCORE_PARTS))
    k = SCORE_PARTS.index("rate_destination")
    parts[k], log_p[k] = 7.5, np.log(1e-4)
    reason = strongest_part_reason({"from": "WS01", "to": "SRV01", "event_type": "flow"}, parts, log_p)
    assert "rate_destination 7.5 nats" in reason and "strongest part of the score" in reason
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


# -- hostile input, reconciliation, load, token, Host allowlist (issue 13) --


def _post_raw(client: httpx.Client, events: list) -> httpx.Response:
    """POST as a hostile client writes it: JSON escapes such as \\ud800 and NaN kept as sent."""
    body = json.dumps({"events": events})  # ensure_ascii: a lone surrogate goes out as the escape \ud800
    return client.post("/events", content=body.encode(), headers={"content-type": "application/json"})


def test_invalid_unicode_and_control_characters_are_quarantined_and_poison_nothing(service):
    client, scorer = service
    good = to_records(stream_events().iloc[4200:4203])
    hostile = [{**good[0], "event_id": "h-1", "src_host": "\ud800"},
               {**good[1], "event_id": "h-2", "src_host": "WS1\r\n2026-01-09 INFO forged log line"},
               {**good[2], "event_id": "h-3\x00", "user": "alice\x1b[31m"}]
    response = _post_raw(client, [*good, *hostile])
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["scored"] == 3 and body["quarantined"] == 3
    reasons = [q["reason"] for q in body["quarantine"]]
    assert all("control character or invalid Unicode" in r for r in reasons)
    assert "U+D800" in reasons[0] and "U+000D" in reasons[1] and "U+0000" in reasons[2]
    # What is listed back is escaped: printable, and encodable as UTF-8.
    for row in body["quarantine"]:
        text = json.dumps(row, ensure_ascii=False)
        text.encode("utf-8")
        assert "\r" not in text and "\x00" not in text and "\x1b" not in text
    assert body["quarantine"][2]["event_id"] == "h-3\\u0000"
    # Nothing reached the state: every route still answers, and later events are scored.
    assert client.get("/alerts", params={"limit": 10_000}).status_code == 200
    assert client.get("/incidents").status_code == 200
    assert client.get("/incidents", params={"format": "html"}).status_code == 200
    assert client.post("/events", json={"events": to_records(stream_events().iloc[4203:4205])}).json()["scored"] == 2
    json.dumps(list(scorer.alerts), ensure_ascii=False, default=str).encode("utf-8")


@pytest.mark.parametrize(("field", "raw", "reason"), [
    ("dst_port", 1e9, "outside [0, 65535]"),
    ("dst_port", 80.5, "whole number"),
    ("bytes_out", 1e308, "outside [0, 1e+13]"),
    ("bytes_in", float("nan"), "finite"),
    ("packets", float("inf"), "finite"),
    ("duration_s", -1, "outside [0, 1e+13]"),
    ("protocol", "carrier-pigeon", "not one of tcp"),
    ("label", 7, "'label' must be one of 0, 1"),
    ("ts", "1970-01-01T00:00:00Z", "outside [2000-01-01"),
    ("ts", "2100-01-01T00:00:00Z", "outside [2000-01-01"),
    ("src_host", ["WS1"], "must be text"),
])
def test_values_batch_validation_refuses_are_quarantined_not_scored(service, field, raw, reason):
    client, _ = service
    [record] = to_records(stream_events().iloc[4300:4301])
    record = {**record, "event_id": f"range-{field}-{raw}", field: raw}
    body = _post_raw(client, [record]).json()
    assert body["scored"] == 0 and body["quarantined"] == 1, body
    assert reason in body["quarantine"][0]["reason"]


def test_every_event_received_is_scored_quarantined_or_a_duplicate_and_metrics_reconcile(service):
    client, _ = service

    def counters() -> dict[str, int]:
        text = client.get("/metrics").text
        values = dict(line.split(" ", 1) for line in text.splitlines() if not line.startswith("#"))
        return {k: int(values[f"anomaly_stream_events_{k}_total"])
                for k in ("received", "scored", "quarantined", "duplicate")}

    fresh = to_records(stream_events().iloc[4400:4460])
    client.post("/events", json={"events": fresh[:10]})
    before = counters()
    no_hosts = {**fresh[10], "event_id": "nohost-1", "event_type": "auth", "user": "U999",
                "src_host": None, "dst_host": None}
    no_process = {**fresh[11], "event_id": "noproc-1", "event_type": "process_start", "process": None}
    mixed = [*fresh[:10], *fresh[12:], no_hosts, no_process, {"ts": "2026-01-09T10:00:00Z"},
             {**fresh[12], "event_id": "bad-port", "dst_port": 1e9}, {**fresh[13], "event_id": "nan", "bytes_in": float("nan")}]
    body = _post_raw(client, mixed).json()
    assert body["received"] == len(mixed) == body["scored"] + body["quarantined"] + body["duplicates"]
    assert body["duplicates"] == 10 and body["quarantined"] == 5 and body["scored"] == len(fresh) - 12
    placed = {q["event_id"]: q["reason"] for q in body["quarantine"] if q["event_id"] in ("nohost-1", "noproc-1")}
    assert placed["nohost-1"].startswith("cannot be placed in the graph: a auth event needs dst_host")
    assert "missing process" in placed["noproc-1"]
    after = counters()
    delta = {k: after[k] - before[k] for k in after}
    assert delta["received"] == len(mixed) == delta["scored"] + delta["quarantined"] + delta["duplicate"]
    assert after["received"] == after["scored"] + after["quarantined"] + after["duplicate"]


def test_healthz_answers_within_a_second_during_a_burst_of_posts(service):
    import concurrent.futures
    import threading
    import time

    client, scorer = service
    base = str(client.base_url)
    records = to_records(stream_events().iloc[4500:5500])
    done_before = scorer.metrics.batches

    def post(i: int) -> int:
        batch = [{**r, "event_id": f"{r['event_id']}-burst{i}"} for r in records[(i * 5) % 950:][:50]]
        with httpx.Client(base_url=base, timeout=600) as own:
            return own.post("/events", json={"events": batch}).status_code

    latencies: list[float] = []
    stop = threading.Event()

    def probe() -> None:
        with httpx.Client(base_url=base, timeout=600) as own:
            while not stop.is_set():
                started = time.monotonic()
                assert own.get("/healthz").status_code == 200
                latencies.append(time.monotonic() - started)
                time.sleep(0.05)

    prober = threading.Thread(target=probe)
    prober.start()
    with concurrent.futures.ThreadPoolExecutor(200) as pool:
        codes = list(pool.map(post, range(200)))
    stop.set()
    prober.join()
    assert set(codes) == {200} and scorer.metrics.batches > done_before
    print(f"/healthz during 200 concurrent POSTs: max {max(latencies):.3f} s, "
          f"median {sorted(latencies)[len(latencies) // 2]:.3f} s over {len(latencies)} probes")
    # The design bound is 1 s (scoring is off the event loop); 3 s leaves room for a loaded CI machine.
    assert len(latencies) >= 5 and max(latencies) < 3.0


@pytest.fixture(scope="module")
def guarded():
    """A service started with a token and the default (loopback) Host allowlist."""
    scorer = StreamScorer(tiny_model(), stream_config=StreamConfig(window=STREAM_WINDOW))
    server, thread, port = serve_in_thread(create_app(scorer, api_token="s3cret-token"))
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        yield client, port
    server.should_exit = True
    thread.join(timeout=10)
    scorer.close()


def test_with_a_token_every_route_but_healthz_needs_it(guarded):
    client, _ = guarded
    assert client.get("/healthz").status_code == 200
    events = {"events": to_records(stream_events().iloc[:5])}
    for method, path in (("GET", "/"), ("GET", "/alerts"), ("GET", "/incidents"), ("GET", "/metrics"),
                         ("GET", "/docs"), ("GET", "/openapi.json"), ("GET", "/incidents/INC-00001")):
        response = client.request(method, path)
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert "ANOMALY_PIPELINE_API_TOKEN" in response.json()["detail"]
    assert client.post("/events", json=events).status_code == 401
    for wrong in ("Bearer s3cret", "Bearer s3cret-token-and-more", "Basic s3cret-token", "s3cret-token"):
        assert client.get("/alerts", headers={"authorization": wrong}).status_code == 401, wrong
    right = {"authorization": "Bearer s3cret-token"}
    assert client.get("/alerts", headers=right).status_code == 200
    assert client.post("/events", json=events, headers=right).json()["scored"] == 5


def test_without_a_token_the_routes_are_open(service):
    client, _ = service
    assert client.get("/alerts").status_code == 200


def test_only_allowed_host_names_are_answered(guarded):
    client, port = guarded
    right = {"authorization": "Bearer s3cret-token"}
    for host in (f"localhost:{port}", f"127.0.0.1:{port}"):
        assert client.get("/alerts", headers={**right, "host": host}).status_code == 200
    for host in ("evil.example", f"attacker.example:{port}"):  # DNS rebinding reaches loopback with these
        assert client.get("/alerts", headers={**right, "host": host}).status_code == 400
        assert client.get("/healthz", headers={"host": host}).status_code == 400


def test_allowed_hosts_for_each_bind_address(monkeypatch):
    from anomaly_pipeline.cli_checks import UsageError
    from anomaly_pipeline.streaming.commands import allowed_hosts

    monkeypatch.delenv("ANOMALY_PIPELINE_ALLOWED_HOSTS", raising=False)
    assert allowed_hosts("127.0.0.1", None) == ["localhost", "127.0.0.1", "[::1]"]
    assert allowed_hosts("10.0.0.5", None) == ["10.0.0.5"]
    assert allowed_hosts("0.0.0.0", "scorer.example.com, 10.0.0.5") == ["scorer.example.com", "10.0.0.5"]
    with pytest.raises(UsageError, match="--allowed-hosts"):
        allowed_hosts("0.0.0.0", None)
    with pytest.raises(UsageError, match="not a host name"):
        allowed_hosts("0.0.0.0", "scorer.*.com")
    monkeypatch.setenv("ANOMALY_PIPELINE_ALLOWED_HOSTS", "*.corp.example")
    assert allowed_hosts("0.0.0.0", None) == ["*.corp.example"]
