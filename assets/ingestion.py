"""raw_events: the configured source read into the canonical event table."""


import time

import dagster as dg
import pandas as pd

from anomaly_pipeline.schema import describe_contract

from .common import OWNERS, md_table, table_metadata
from .resources import EventSourceResource


@dg.asset(group_name="ingestion", kinds={"pandas", "parquet"}, owners=OWNERS)
def raw_events(context: dg.AssetExecutionContext, event_source: EventSourceResource) -> dg.Output[pd.DataFrame]:
    """Security events from the configured source (synthetic enterprise telemetry by default) in the
    canonical event contract. Records that could not be parsed are kept as rows with a
    `parse_error`, so validation can quarantine them with file and line: nothing is dropped here."""
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
    return dg.Output(events, metadata=metadata)
