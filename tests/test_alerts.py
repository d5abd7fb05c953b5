"""The alert sink against a real HTTP server on 127.0.0.1: delivery, refusals, failures never raised."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from anomaly_pipeline.alerts import WEBHOOK_ENV, AlertSink


class Webhook:
    """A local webhook that records JSON bodies and answers with ``status`` after ``delay_s``."""

    def __init__(self, status: int = 200, delay_s: float = 0.0) -> None:
        self.received: list[dict] = []
        self.status = status
        self.delay_s = delay_s
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length", 0))
                outer.received.append(
                    {"body": json.loads(self.rfile.read(length)), "content_type": self.headers.get("Content-Type")}
                )
                time.sleep(outer.delay_s)
                self.send_response(outer.status)
                self.end_headers()

            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Webhook:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    with Webhook() as hook:
        yield hook


def test_webhook_from_env_receives_the_alert_as_json(webhook: Webhook, monkeypatch, caplog) -> None:
    monkeypatch.setenv(WEBHOOK_ENV, webhook.url)
    sink = AlertSink.from_env()
    with caplog.at_level(logging.WARNING, logger="anomaly_pipeline.alerts"):
        delivered = sink.send("drift", "drift share 0.43 on 2026-01-12", {"drift_share": np.float64(0.43),
                                                                          "drifted_columns": ["hour_sin"]})
    assert delivered is True
    [request] = webhook.received
    assert request["content_type"] == "application/json"
    body = request["body"]
    assert body["kind"] == "drift" and body["title"] == "drift share 0.43 on 2026-01-12"
    assert body["payload"] == {"drift_share": 0.43, "drifted_columns": ["hour_sin"]}
    assert body["text"].startswith("[anomaly-pipeline drift]")
    assert "ALERT [drift]" in caplog.text  # the log always gets it too
    assert (sink.delivered, sink.failed) == (1, 0)


def test_without_webhook_the_log_gets_it(monkeypatch, caplog) -> None:
    monkeypatch.delenv(WEBHOOK_ENV, raising=False)
    sink = AlertSink.from_env()
    assert sink.webhook_url is None
    with caplog.at_level(logging.WARNING, logger="anomaly_pipeline.alerts"):
        assert sink.send("quality_gate", "gate failed for version 3", {"version": "3"}) is True
    assert "ALERT [quality_gate] gate failed for version 3" in caplog.text


def test_failed_deliveries_are_logged_never_raised(caplog) -> None:
    with Webhook(status=500) as broken:
        sink = AlertSink(webhook_url=broken.url)
        with caplog.at_level(logging.ERROR, logger="anomaly_pipeline.alerts"):
            assert sink.send("run_failure", "run abc failed", {"run_id": "abc"}) is False
        assert len(broken.received) == 1
    assert "HTTP 500" in caplog.text

    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    sink = AlertSink(webhook_url=f"http://127.0.0.1:{closed_port}/hook", timeout_s=2)
    assert sink.send("detection", "3 alerts", {"alerts": 3}) is False
    assert (sink.delivered, sink.failed) == (0, 1)

    with Webhook(delay_s=1.5) as slow:
        started = time.perf_counter()
        assert AlertSink(webhook_url=slow.url, timeout_s=0.3).send("drift", "slow", {}) is False
        assert time.perf_counter() - started < 1.4  # gave up at the timeout


def test_refusals_say_what_is_wrong(monkeypatch) -> None:
    with pytest.raises(ValueError, match="must start with http"):
        AlertSink(webhook_url="hooks.example.org/x")
    with pytest.raises(ValueError, match="not one of"):
        AlertSink().send("weather", "sunny", {})
    monkeypatch.setenv("ANOMALY_PIPELINE_ALERT_TIMEOUT_S", "soon")
    with pytest.raises(ValueError, match="not a number of seconds"):
        AlertSink.from_env()


def test_webhook_tokens_never_reach_logs_or_reprs(caplog) -> None:
    from anomaly_pipeline.redact import redact_url

    secret = "XXXXSECRETTOKEN"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    sink = AlertSink(webhook_url=f"http://127.0.0.1:{closed_port}/services/T0/B0/{secret}?token={secret}", timeout_s=1)
    assert secret not in repr(sink) and "services/***" in repr(sink)
    with caplog.at_level(logging.WARNING, logger="anomaly_pipeline.alerts"):
        assert sink.send("drift", "drifted", {}) is False
    assert "not reached" in caplog.text and secret not in caplog.text
    with pytest.raises(ValueError) as refused:
        AlertSink(webhook_url=f"ftp://user:{secret}@host/{secret}")
    assert secret not in str(refused.value)
    assert redact_url(f"postgresql://dagster:{secret}@db:5432/dagster") == "postgresql://dagster:***@db:5432/dagster"
    assert redact_url("sqlite:////tmp/state/mlflow.db") == "sqlite:////tmp/state/mlflow.db"
