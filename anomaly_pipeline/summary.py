"""The end-of-run summary: what a person wants to read after ``make run`` (and the same as JSON)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REQUIRED_KEYS = (
    "events_ingested",
    "events_quarantined",
    "registered_model",
    "model_version",
    "aliases",
    "metrics",
    "drift_share",
    "mlflow_tracking_uri",
)


def write_summary(summary: dict[str, Any], path: Path) -> Path:
    missing = [k for k in REQUIRED_KEYS if k not in summary]
    if missing:
        raise ValueError(f"run summary is missing keys {missing}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return path


def format_summary(s: dict[str, Any]) -> str:
    """A short human summary: counts, metrics next to the baselines', registry, drift, next steps."""
    lines = [
        "",
        "anomaly-pipeline run summary",
        "============================",
        f"events generated/read : {s.get('events_read', 'n/a'):>10,}",
        f"events ingested       : {s['events_ingested']:>10,}",
        f"events quarantined    : {s['events_quarantined']:>10,}",
        "",
        f"{'model':<22} {'ROC-AUC':>8} {'AP':>8} {'TPR@1%':>8} {'precision':>10}",
    ]
    for name, m in s["metrics"].items():
        lines.append(
            f"{name:<22} {m['roc_auc']:>8.4f} {m['average_precision']:>8.4f} "
            f"{m.get('tpr', float('nan')):>8.3f} {m.get('precision', float('nan')):>10.3f}"
        )
    lines += [
        f"training              : {s.get('epochs_run', 'n/a')} epochs"
        + (f" (resumed from epoch {s['resumed_from_epoch']})" if s.get("resumed_from_epoch") else ""),
        f"quality gate          : {'passed' if s.get('gate_passed') else 'failed'} ({s.get('gate_reason', '')})",
        "",
        f"MLflow model          : {s['registered_model']} version {s['model_version']} "
        f"aliases [{', '.join(s['aliases']) or 'none'}]",
        f"promotion             : {s.get('promotion_decision', 'n/a')}: {s.get('promotion_reason', '')}",
        f"drift share           : {s['drift_share']:.3f} (drifted: {', '.join(s.get('drifted_columns', [])) or 'none'})",
        f"wall time             : {s.get('wall_seconds', float('nan')):.0f} s (Dagster run {s.get('dagster_run_id', '?')})",
        "",
        "Look around:",
        "  make ui    # Dagster UI on http://127.0.0.1:3000 and MLflow UI on http://127.0.0.1:5000",
        f"  summary JSON: {s.get('summary_file', '')}",
        "",
    ]
    return "\n".join(lines)
