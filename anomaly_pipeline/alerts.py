"""Where alerts go: always the log, and a webhook when ``ANOMALY_PIPELINE_ALERT_WEBHOOK`` is set.

Sensors (drift, failed runs, a failed quality gate) and the streaming scorer (detections) call
``AlertSink.send``. Delivery never raises: an alert that cannot be posted is logged with the reason,
because a broken webhook must not fail the run or the sensor tick that noticed the problem.

The webhook receives one JSON object per alert::

    {"kind": "drift", "title": "...", "payload": {...}, "sent_at": "2026-01-05T03:00:00+00:00",
     "source": "anomaly-pipeline"}

It works with any endpoint that accepts a JSON POST (Slack and Teams incoming webhooks read the
``text`` field, which carries ``title``).
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from anomaly_pipeline.redact import redact_text, redact_url

WEBHOOK_ENV = "ANOMALY_PIPELINE_ALERT_WEBHOOK"
TIMEOUT_ENV = "ANOMALY_PIPELINE_ALERT_TIMEOUT_S"
ALERT_KINDS: tuple[str, ...] = ("drift", "run_failure", "quality_gate", "detection")
DEFAULT_TIMEOUT_S = 5.0

logger = logging.getLogger(__name__)


@dataclass
class AlertSink:
    """Sends alerts to the log and, when ``webhook_url`` is set, POSTs them as JSON.

    Args:
        webhook_url: http(s) URL, or None for log-only delivery.
        timeout_s: seconds to wait for the webhook before giving up (the alert is still logged).
        log: a ``logging.Logger``-like object (``warning`` and ``error`` methods; a Dagster context
            log works); default this module's logger.
    """

    webhook_url: str | None = field(default=None, repr=False)  # carries a token: shown redacted
    timeout_s: float = DEFAULT_TIMEOUT_S
    log: Any = None
    delivered: int = field(default=0, repr=False)  # webhook deliveries that got a 2xx answer
    failed: int = field(default=0, repr=False)  # webhook deliveries that did not

    def __post_init__(self) -> None:
        if self.webhook_url is not None:
            self.webhook_url = self.webhook_url.strip() or None
        if self.webhook_url and not self.webhook_url.startswith(("http://", "https://")):
            raise ValueError(
                f"alert webhook URL {redact_url(self.webhook_url)!r} must start with http:// or https://; "
                f"fix {WEBHOOK_ENV} or unset it for log-only alerts"
            )
        if not self.timeout_s > 0:
            raise ValueError(f"alert webhook timeout must be a positive number of seconds, got {self.timeout_s}")
        if self.log is None:
            self.log = logger

    def __repr__(self) -> str:
        return f"AlertSink(webhook={self.endpoint!r}, timeout_s={self.timeout_s})"

    @property
    def endpoint(self) -> str | None:
        """The webhook as it may be printed: host and first path segment, token masked."""
        return redact_url(self.webhook_url)

    @classmethod
    def from_env(cls, log: Any = None) -> AlertSink:
        """The sink configured by ``ANOMALY_PIPELINE_ALERT_WEBHOOK`` (unset or empty: log only) and
        ``ANOMALY_PIPELINE_ALERT_TIMEOUT_S`` (default 5 s)."""
        raw_timeout = os.environ.get(TIMEOUT_ENV, "").strip()
        try:
            timeout = float(raw_timeout) if raw_timeout else DEFAULT_TIMEOUT_S
        except ValueError as exc:
            raise ValueError(f"{TIMEOUT_ENV}={raw_timeout!r} is not a number of seconds") from exc
        return cls(webhook_url=os.environ.get(WEBHOOK_ENV) or None, timeout_s=timeout, log=log)

    def send(self, kind: str, title: str, payload: dict) -> bool:
        """Log the alert and POST it to the webhook if one is configured.

        Returns True when the alert reached every configured destination (log only: always True;
        with a webhook: the webhook answered 2xx). Never raises for delivery problems.

        Raises:
            ValueError: ``kind`` is not one of ``ALERT_KINDS`` (a programming error, not delivery).
        """
        if kind not in ALERT_KINDS:
            raise ValueError(f"alert kind {kind!r} is not one of {ALERT_KINDS}")
        body = {
            "kind": kind,
            "title": title,
            "text": f"[anomaly-pipeline {kind}] {title}",
            "payload": _jsonable(payload),
            "sent_at": datetime.now(UTC).isoformat(),
            "source": "anomaly-pipeline",
        }
        self.log.warning(f"ALERT [{kind}] {title} {json.dumps(body['payload'], sort_keys=True)[:2000]}")
        if not self.webhook_url:
            return True
        return self._post(body)

    def _post(self, body: dict[str, Any]) -> bool:
        data = json.dumps(body).encode("utf-8")
        request = urllib.request.Request(
            self.webhook_url or "",
            data=data,
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "anomaly-pipeline-alerts"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310 - http(s) checked
                status = int(response.status)
        except urllib.error.HTTPError as exc:
            self.failed += 1
            self.log.error(f"alert webhook {self.endpoint} answered HTTP {exc.code}; the alert is only in the log")
            return False
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            self.failed += 1
            self.log.error(
                f"alert webhook {self.endpoint} not reached within {self.timeout_s} s "
                f"({redact_text(str(reason))}); "
                "the alert is only in the log"
            )
            return False
        if not 200 <= status < 300:
            self.failed += 1
            self.log.error(f"alert webhook {self.endpoint} answered HTTP {status}; the alert is only in the log")
            return False
        self.delivered += 1
        return True


def _jsonable(value: Any) -> Any:
    """``value`` with anything JSON cannot hold (numpy numbers, timestamps, paths) as plain values/strings."""
    return json.loads(json.dumps(value, default=_default))


def _default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        try:
            return value.item()
        except (TypeError, ValueError):
            pass
    return str(value)
