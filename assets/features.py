"""graph_windows: typed graph snapshots over sliding windows with behavioural features."""


import dagster as dg
import pandas as pd
from pydantic import Field

from anomaly_pipeline.graph import (
    EVENT_FEATURES,
    NODE_FEATURES,
    GraphWindows,
    WindowConfig,
    build_graph_windows,
)

from .common import OWNERS


class GraphWindowsConfig(dg.Config):
    """How time is cut into windows (hours) and how many past snapshots each event sees."""

    stride_hours: float = Field(default=1.0, description="hours between snapshot starts")
    window_hours: float = Field(default=2.0, description="hours each snapshot covers")
    history: int = Field(default=6, description="past snapshots each event's sequence sees")
    train_fraction: float = Field(default=0.6, description="earliest share of time used for training")
    validation_fraction: float = Field(default=0.2, description="next share of time used for validation (thresholds, calibration); the rest is test")
    adaptive_events_per_bucket: int | None = Field(default=None, description="cut snapshots by event count instead of fixed hours (unset = fixed hours)")
    coarse_stride_hours: float | None = Field(default=24.0, description="stride of the coarse (multi-scale) snapshots; unset = no coarse scale")
    coarse_history: int = Field(default=7, description="coarse snapshots of history")


@dg.asset(group_name="features", kinds={"pytorch", "numpy"}, owners=OWNERS)
def graph_windows(
    context: dg.AssetExecutionContext, config: GraphWindowsConfig, validated_events: pd.DataFrame
) -> dg.Output[GraphWindows]:
    """Heterogeneous graph snapshots (users, hosts, processes, external endpoints; logon, remote
    auth, process and flow relations) over sliding, overlapping windows, with behavioural node
    features, per-event features and a time-ordered train / validation / test split."""
    # The Launchpad config mirrors WindowConfig field for field.
    windows = build_graph_windows(validated_events, WindowConfig(**config.model_dump()))
    summary = windows.summary()
    context.log.info(f"built {summary['snapshots']} snapshots over {summary['nodes']} nodes")
    ts = windows.events["ts"]
    splits = windows.events.groupby("split")["ts"].agg(["min", "max", "size"]).reset_index()
    return dg.Output(
        windows,
        metadata={
            **summary,
            "events_without_edge": windows.meta["events_without_edge"],
            "data_window": f"{ts.min()} .. {ts.max()}",
            "splits": dg.MetadataValue.md(splits.astype(str).to_markdown(index=False)),
            "node_features": dg.MetadataValue.json(list(NODE_FEATURES)),
            "event_features": dg.MetadataValue.json(list(EVENT_FEATURES)),
        },
    )
