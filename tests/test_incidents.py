"""Incidents: a lateral-movement campaign becomes one incident with its path and blast radius;
the incident page renders in headless Chromium."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import httpx
import pandas as pd
import pytest

from anomaly_pipeline.graph import build_graph_windows
from anomaly_pipeline.incidents import IncidentTracker
from anomaly_pipeline.service import create_app, serve_in_thread
from anomaly_pipeline.streaming import StreamConfig, StreamScorer
from anomaly_pipeline.streaming.scorer import event_summary
from tests.test_streaming import STREAM_WINDOW, stream_events, tiny_model, to_records

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _alert(row: pd.Series, score: float = 50.0) -> dict:
    return {"alert_id": f"alert-{row['event_id']}", "event_id": str(row["event_id"]), "ts": row["ts"].isoformat(),
            "score": score, "score_parts": {}, "event": event_summary(row), "reasons": ["test"],
            "time_attention": [], "neighbours": []}


def test_lateral_movement_campaign_is_one_incident_in_order_with_its_blast_radius():
    events = stream_events()
    campaign = events[events["label_detail"].fillna("").str.startswith("lateral_movement")]
    assert len(campaign) >= 5
    windows = build_graph_windows(events, STREAM_WINDOW)
    tracker = IncidentTracker(horizon_s=2 * 86400.0)  # the campaign is low and slow: a day between phases
    # Alerts arrive in stream order, each with the state of the events seen so far.
    for _, row in campaign.iterrows():
        tracker.add(_alert(row), windows)
    biggest = max(tracker.incidents.values(), key=lambda i: len(i.alerts))
    assert len(biggest.alerts) >= 0.8 * len(campaign), tracker.summaries()
    path = biggest.to_dict()["attack_path"]
    assert [p["when"] for p in path] == sorted(p["when"] for p in path)
    assert [p["event_id"] for p in path] == [e for e in campaign["event_id"] if e in {p["event_id"] for p in path}]
    # Blast radius: what the compromised accounts reached, including every hop of the path.
    entities = biggest.entities()
    blast = {row["entity"]: set(row["reached"]) for row in biggest.blast_radius()}
    assert set(entities["accounts"]) & set(blast)
    reached = set().union(*blast.values())
    assert {p["to"] for p in path if p["to"]} <= reached
    markdown = biggest.to_markdown()
    assert "## Attack path" in markdown and "## Blast radius" in markdown
    assert markdown.index(path[0]["when"]) < markdown.index(path[-1]["when"])


def test_alerts_sharing_only_a_popular_destination_stay_apart():
    events = stream_events()
    to_dc = events[(events["dst_host"] == "DC01") & events["user"].notna()]
    users = to_dc.drop_duplicates("user").head(2)
    assert users["src_host"].nunique() == 2
    tracker = IncidentTracker()
    for _, row in users.iterrows():
        tracker.add(_alert(row))
    assert len(tracker.incidents) == 2


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_incident_page_renders_in_headless_chromium(tmp_path: Path):
    scorer = StreamScorer(tiny_model(), stream_config=StreamConfig(window=STREAM_WINDOW))
    server, thread, port = serve_in_thread(create_app(scorer))
    try:
        base = f"http://127.0.0.1:{port}"
        records = to_records(stream_events())
        with httpx.Client(base_url=base, timeout=120) as client:
            for lo in range(0, len(records), 2000):
                assert client.post("/events", json={"events": records[lo : lo + 2000]}).status_code == 200
            incidents = client.get("/incidents").json()
            assert incidents, "no incidents found in the stream"
            chosen = max(incidents, key=lambda i: i["n_alerts"])
            detail = client.get(f"/incidents/{chosen['incident_id']}").json()
        url = f"{base}/incidents/{chosen['incident_id']}.html"
        common = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}"]
        png = tmp_path / "incident.png"
        subprocess.run([*common, f"--screenshot={png}", "--window-size=1200,900", url], check=True,
                       capture_output=True, timeout=90)
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
        dom = subprocess.run([*common, "--dump-dom", url], check=True, capture_output=True, text=True, timeout=90).stdout
        assert f"Incident {chosen['incident_id']}" in dom
        assert "<svg" in dom and 'id="attack-path"' in dom
        for step in detail["attack_path"]:
            assert step["when"] in dom
            assert (step["to"] or "") in dom
    finally:
        server.should_exit = True
        thread.join(timeout=10)
