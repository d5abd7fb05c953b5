"""anomaly-pipeline: graph-temporal anomaly detection for security telemetry (domain library, no Dagster)."""

__version__ = "0.1.0"
