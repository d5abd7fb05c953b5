"""graph_windows: typed graph snapshots over sliding windows with behavioural features."""


import dagster as dg
import pandas as pd

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

    stride_hours: float = 1.0
    window_hours: float = 2.0
    history: int = 6
    train_fraction: float = 0.6
    validation_fraction: float = 0.2
    adaptive_events_per_bucket: int | None = None
    coarse_stride_hours: float | None = 24.0
    coarse_history: int = 7


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
