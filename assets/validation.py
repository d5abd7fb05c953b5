"""validated_events and quarantined_events: Great Expectations on every batch, nothing lost."""


import dagster as dg
import pandas as pd
from pydantic import Field

from anomaly_pipeline.validation import ValidationPolicy, validate_events

from .common import OWNERS, md_table, table_metadata


class ValidationConfig(dg.Config):
    """Validation policy (shown in the Launchpad)."""

    order_tolerance_s: float = Field(default=3600.0, description="seconds a line may go back in time before it is quarantined as out of order")
    max_quarantine_rate: float = Field(default=0.05, description="share of quarantined rows above which the blocking check stops the run")


@dg.multi_asset(
    outs={
        "validated_events": dg.AssetOut(
            group_name="ingestion",
            kinds={"pandas", "parquet"},
            owners=OWNERS,
            description="Events that passed the Great Expectations suite (schema, types, required "
            "non-nulls, timestamp range and order, categorical domains, numeric ranges).",
        ),
        "quarantined_events": dg.AssetOut(
            group_name="ingestion",
            kinds={"pandas", "parquet"},
            owners=OWNERS,
            description="Rejected records with raw_ref (file:line), stage (parse or validation) and the reason.",
        ),
    },
    check_specs=[
        dg.AssetCheckSpec(
            "quarantine_rate_below_threshold",
            asset="validated_events",
            blocking=True,
            description="Stops the graph when the share of quarantined rows passes max_quarantine_rate.",
        )
    ],
)
def validate_raw_events(context: dg.AssetExecutionContext, config: ValidationConfig, raw_events: pd.DataFrame):
    """Validate raw events with Great Expectations 1.x; failing rows go to quarantine."""
    result = validate_events(raw_events, ValidationPolicy(order_tolerance_s=config.order_tolerance_s))
    assert result.rows_read == result.rows_valid + result.rows_quarantined
    rate = result.rows_quarantined / max(result.rows_read, 1)
    summary = result.summary()
    counts = {
        "rows_read": result.rows_read,
        "rows_valid": result.rows_valid,
        "rows_quarantined": result.rows_quarantined,
        "rows_duplicate": result.rows_duplicate,  # repeated event ids, dropped knowingly (in quarantine)
        "quarantine_rate": round(rate, 6),
    }
    yield dg.Output(
        result.valid,
        output_name="validated_events",
        metadata={
            **counts,
            "gx_success": result.gx_success,
            "expectations": md_table(result.expectations, 40),
            **table_metadata(result.valid),
        },
    )
    reasons = pd.DataFrame(list(result.reason_counts.items()), columns=["reason", "rows"])
    yield dg.Output(
        result.quarantined,
        output_name="quarantined_events",
        metadata={
            **counts,
            "top_reasons": md_table(reasons) if len(reasons) else "none",
            **table_metadata(result.quarantined),
            "preview": md_table(result.quarantined, 10) if len(result.quarantined) else "none",
        },
    )
    passed = rate <= config.max_quarantine_rate
    yield dg.AssetCheckResult(
        check_name="quarantine_rate_below_threshold",
        asset_key="validated_events",
        passed=passed,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={**counts, "max_quarantine_rate": config.max_quarantine_rate,
                  "gx_summary": dg.MetadataValue.json(summary)},
        description=None if passed else (
            f"{rate:.2%} of rows quarantined (limit {config.max_quarantine_rate:.2%}): "
            "inspect quarantined_events for the reasons and fix the source or raise the limit"
        ),
    )
