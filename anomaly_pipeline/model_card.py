"""A model card for each registered version: what it was trained on, how it scored, where it fails.

Written as Markdown next to the model in MLflow (``model_card.md``) so a reviewer deciding on a
promotion reads, in one page, the data window, the features, the metrics against the baselines,
the validation outcome, the lineage (git commit, Dagster run) and the known limits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Limits measured on this project's benchmarks (README "Not yet"); every card repeats them because
# they hold for every version of the detector, whatever its scores on the synthetic test window.
KNOWN_LIMITS: tuple[str, ...] = (
    "Self-supervised: whatever dominates the training window is learned as normal. Where attacks are "
    "most of the training traffic (DARPA stream, scanner-heavy Zeek captures) it ranks them as ordinary.",
    "Scores are relative to the training window's behaviour; after a reorganisation (new hours, new "
    "hosts) expect more alerts until the drift sensor's retraining has run.",
    "Entities never seen in training are scored from behaviour features only (degrees, novelty, "
    "time, volume); identity is not used.",
    "Thresholds are set at a target false-positive rate on the validation window; alert volume "
    "follows traffic volume.",
)


@dataclass
class ModelCard:
    """Everything a card says. Metric dicts map detector name -> metric name -> value."""

    model_name: str
    version: str | None
    data_window: str
    train_window: str
    events: Mapping[str, int]  # e.g. {"train": ..., "validation": ..., "test": ...}
    features: Sequence[str]
    metrics: Mapping[str, Mapping[str, float]]
    hybrid_name: str
    gate_passed: bool
    gate_reason: str
    params: Mapping[str, Any] = field(default_factory=dict)
    validation: Mapping[str, Any] = field(default_factory=dict)  # GX counts and outcome
    lineage: Mapping[str, str] = field(default_factory=dict)  # git_commit, dagster_run_id, mlflow_run_id
    known_limits: Sequence[str] = KNOWN_LIMITS

    def __post_init__(self) -> None:
        if self.hybrid_name not in self.metrics:
            raise ValueError(
                f"the card's metrics have no entry for the model itself ({self.hybrid_name!r}); "
                f"metrics are given for {sorted(self.metrics)}"
            )

    def to_markdown(self) -> str:
        """The card as Markdown (headings, tables); deterministic for the same inputs."""
        title = f"# Model card: {self.model_name}" + (f" version {self.version}" if self.version else "")
        parts = [
            title,
            "Graph-temporal anomaly detector for security telemetry: heterogeneous GNN per time window, "
            "bidirectional LSTM over each entity's recent windows, cross-attention fusion; trained "
            "self-supervised (temporal link prediction). Higher score = stranger event.",
            "## Data",
            f"- data window: {self.data_window}",
            f"- training window: {self.train_window}",
            "- events: " + ", ".join(f"{k} {int(v):,}" for k, v in self.events.items()),
            _validation_section(self.validation),
            "## Features",
            f"{len(self.features)} per-event behaviour features (no identity): " + ", ".join(f"`{f}`" for f in self.features),
            "## Metrics (test window, thresholds set on validation scores)",
            _metrics_table(self.metrics, self.hybrid_name),
            "## Quality gate",
            f"{'passed' if self.gate_passed else 'FAILED'}: {self.gate_reason}",
        ]
        if self.params:
            parts += ["## Training parameters", _kv_table(self.params)]
        if self.lineage:
            parts += ["## Lineage", _kv_table(self.lineage)]
        parts += ["## Known limits", "\n".join(f"- {limit}" for limit in self.known_limits)]
        return "\n\n".join(p for p in parts if p) + "\n"


def _validation_section(validation: Mapping[str, Any]) -> str:
    if not validation:
        return "- validation: no Great Expectations summary was available for this run"
    keys = ("rows_read", "rows_valid", "rows_quarantined", "quarantine_rate", "gx_success")
    shown = ", ".join(f"{k} {validation[k]}" for k in keys if k in validation)
    return f"- validation (Great Expectations): {shown}"


def _metrics_table(metrics: Mapping[str, Mapping[str, float]], hybrid_name: str) -> str:
    columns: list[str] = []
    for values in metrics.values():
        columns += [c for c in values if c not in columns]
    order = [hybrid_name] + sorted(n for n in metrics if n != hybrid_name)
    lines = ["| detector | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name in order:
        cells = [_fmt(metrics[name].get(c)) for c in columns]
        label = f"**{name}**" if name == hybrid_name else name
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _kv_table(values: Mapping[str, Any]) -> str:
    lines = ["| key | value |", "|---|---|"]
    lines += [f"| {k} | {str(v).replace('|', '/')} |" for k, v in sorted(values.items())]
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(number):
        return "n/a"
    return f"{number:.4f}" if abs(number) < 1000 else f"{number:,.0f}"
