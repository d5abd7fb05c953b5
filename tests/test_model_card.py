"""The model card: what a reviewer reads before promoting a version."""

from __future__ import annotations

import math

import pytest

from anomaly_pipeline.model_card import KNOWN_LIMITS, ModelCard

METRICS = {
    "hybrid_gnn_lstm": {"roc_auc": 0.91234, "average_precision": 0.4321, "alerts_per_day": 12345.0},
    "isolation_forest": {"roc_auc": 0.8, "average_precision": math.nan},
}


def _card(**overrides) -> ModelCard:
    values = dict(
        model_name="anomaly-pipeline-hybrid",
        version="3",
        data_window="2026-01-05 .. 2026-01-10",
        train_window="2026-01-05 .. 2026-01-08",
        events={"train": 6000, "validation": 2000, "test": 2000},
        features=["hour_sin", "log_bytes_out"],
        metrics=METRICS,
        hybrid_name="hybrid_gnn_lstm",
        gate_passed=False,
        gate_reason="isolation_forest has higher average precision",
        params={"hidden": 16, "curriculum": "easy(1, random) > hard(1, hard)"},
        validation={"rows_read": 10100, "rows_valid": 10000, "rows_quarantined": 100, "gx_success": False},
        lineage={"git_commit": "abc123", "dagster_run_id": "run-1"},
    )
    values.update(overrides)
    return ModelCard(**values)


def test_card_carries_window_features_metrics_gate_lineage_and_limits() -> None:
    text = _card().to_markdown()
    assert text.startswith("# Model card: anomaly-pipeline-hybrid version 3\n")
    assert "- data window: 2026-01-05 .. 2026-01-10" in text
    assert "- events: train 6,000, validation 2,000, test 2,000" in text
    assert "rows_quarantined 100" in text and "gx_success False" in text
    assert "`hour_sin`" in text and "2 per-event behaviour features" in text
    # the model's own row comes first and is bold; NaN shows as n/a; large numbers get separators
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert rows[0] == "| detector | roc_auc | average_precision | alerts_per_day |"
    assert rows[1] == "| **hybrid_gnn_lstm** | 0.9123 | 0.4321 | 12,345 |"
    assert rows[2] == "| isolation_forest | 0.8000 | n/a |  |"
    assert "FAILED: isolation_forest has higher average precision" in text
    assert "| git_commit | abc123 |" in text
    assert "easy(1, random) > hard(1, hard)" in text
    assert all(limit in text for limit in KNOWN_LIMITS)
    assert _card().to_markdown() == text  # deterministic


def test_card_without_validation_says_so() -> None:
    text = _card(validation={}, version=None).to_markdown()
    assert text.startswith("# Model card: anomaly-pipeline-hybrid\n")
    assert "no Great Expectations summary" in text


def test_card_refuses_metrics_without_the_model() -> None:
    with pytest.raises(ValueError, match="no entry for the model itself"):
        _card(hybrid_name="hybrid")
