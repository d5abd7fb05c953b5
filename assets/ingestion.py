"""raw_events: the configured source read into the canonical event table."""


import time

import dagster as dg
import pandas as pd

from anomaly_pipeline.schema import describe_contract

from .common import OWNERS, md_table, table_metadata
from .resources import EventSourceResource


@dg.asset(
    group_name="ingestion",
    kinds={"pandas", "parquet"},
    owners=OWNERS,
    check_specs=[
        dg.AssetCheckSpec(
            "input_is_complete",
            asset="raw_events",
            blocking=True,
            description="Stops the graph when a compressed input ends early (truncated gzip, corrupt zip "
            "member): the lines before the break are kept and the break is quarantined, but nothing is "
            "trained on part of a file.",
        )
    ],
)
def raw_events(context: dg.AssetExecutionContext, event_source: EventSourceResource):
    """Security events from the configured source (synthetic enterprise telemetry by default) in the
    canonical event contract. Records that could not be parsed are kept as rows with a
    `parse_error`, so validation can quarantine them with file and line: nothing is dropped here.
    A compressed file that ends early keeps the lines before the break and one row for the break;
    the blocking check `input_is_complete` then stops the run."""
    started = time.perf_counter()
    context.log.info(f"reading events from {event_source.describe()}")
    events = event_source.load()
    seconds = time.perf_counter() - started
    parse_errors = int(events["parse_error"].notna().sum()) if "parse_error" in events else 0
    labelled = events["label"].notna()
    metadata = {
        "source": event_source.describe(),
        "rows_read": len(events),
        "parse_errors": parse_errors,
        "seconds": round(seconds, 2),
        "rows_per_second": round(len(events) / max(seconds, 1e-9)),
        "first_ts": str(events["ts"].min()),
        "last_ts": str(events["ts"].max()),
        "attack_events": int(events.loc[labelled, "label"].sum()),
        "event_types": dg.MetadataValue.json(events["event_type"].fillna("(unparsed)").value_counts().astype(int).to_dict()),
        "contract": dg.MetadataValue.md(describe_contract()),
        "preview": md_table(events.drop(columns=["parse_error", "raw_excerpt"], errors="ignore"), 10),
        **table_metadata(events),
    }
    if event_source.kind == "synthetic" and labelled.any():
        from anomaly_pipeline.sources.synthetic import campaign_summary

        metadata["campaigns"] = md_table(campaign_summary(events))
    breaks = _input_breaks(events)
    metadata["input_complete"] = not breaks
    yield dg.Output(events, metadata=metadata)
    yield dg.AssetCheckResult(
        check_name="input_is_complete",
        asset_key="raw_events",
        passed=not breaks,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"breaks": dg.MetadataValue.json(breaks)},
        description=(
            None if not breaks else f"{breaks[0]} - the file is incomplete: fetch or copy it again and rerun"
        ),
    )


def _input_breaks(events: pd.DataFrame) -> list[str]:
    """``raw_ref: reason`` of each row that stands for a break in a compressed input."""
    from anomaly_pipeline.sources.files import TRUNCATED_CATEGORY

    if "parse_error" not in events:
        return []
    errors = events["parse_error"].astype("string")
    hit = errors.str.startswith(TRUNCATED_CATEGORY).fillna(False).to_numpy()
    return [f"{ref}: {reason}" for ref, reason in zip(events.loc[hit, "raw_ref"], errors[hit], strict=True)]
