"""The daily scoring path: daily_events -> scored_events / alerts -> daily_drift_report.

Partitioned by UTC day, in its own job apart from the unpartitioned training pipeline (raw_events
... registered_model). Scoring loads ``models:/<name>@champion`` at run time, so promoting or
rolling back a model changes what the next partition is scored with; scored_events and alerts
declare ``registered_model`` as a dependency so the lineage shows where their model comes from.

The partitions cover the days the configured source has (``partition_days``): the embedded
synthetic default's ten days, or from ``ANOMALY_PIPELINE_PARTITION_START`` (and up to
``ANOMALY_PIPELINE_PARTITION_END`` when set) for a real source. A day without events is its own
outcome (daily_events says so; scoring and drift are skipped), not a quarantine-rate failure.

The day is scored against the history ``serve`` and ``stream`` have when it starts
(``scoring_history``): the champion's warm history (its newest training events, logged with the
weights) plus the daily_events after its end, within ``history_days`` before the day, deduplicated
by event_id, so one champion raises the same alerts on a day in daily scoring and in the warm
service. ``lookback_days`` overrides it with the previous days of daily_events only, which is also
the fallback for a champion without a warm history; the ``history`` metadata says which was used.

Each partition's tables are Parquet files under ``$ANOMALY_PIPELINE_HOME/data/daily/<asset>/<day>.parquet``
(one file per day, so backfills of many days never overwrite each other); the assets return
their figures as metadata and the path of their file.
"""


import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import mlflow
import numpy as np
import pandas as pd
from pydantic import Field

from anomaly_pipeline import registry
from anomaly_pipeline.defaults import DEFAULT_MEMORY_DAYS, WARM_HISTORY_MAX_EVENTS
from anomaly_pipeline.drift import compute_drift, drift_frame, score_drift
from anomaly_pipeline.mlflow_model import HybridScorer, load_pyfunc
from anomaly_pipeline.schema import SchemaError
from anomaly_pipeline.sources.synthetic import SyntheticConfig
from anomaly_pipeline.validation import ValidationPolicy, validate_events

from .common import OWNERS, md_table, table_metadata
from .resources import EventSourceResource, MlflowResource, StateResource

PARTITION_START_ENV = "ANOMALY_PIPELINE_PARTITION_START"
PARTITION_END_ENV = "ANOMALY_PIPELINE_PARTITION_END"
EVENTS_PATH_ENV = "ANOMALY_PIPELINE_EVENTS_PATH"


def partition_days(environ: Mapping[str, str] | None = None) -> tuple[str, str | None]:
    """First day and exclusive end day (None: open-ended, up to yesterday) of the daily partitions.

    Explicit ``ANOMALY_PIPELINE_PARTITION_START`` / ``_END`` win. Without an events file configured
    the source is the embedded synthetic default, whose days are known, so the partitions are
    exactly those days and a schedule ticking after them skips instead of failing every night. A
    configured file without a start falls back to the synthetic start, open-ended; set the start
    to the file's first day.
    """
    env = os.environ if environ is None else environ
    default = EventSourceResource()
    first = pd.Timestamp(SyntheticConfig().start)
    start = env.get(PARTITION_START_ENV) or first.strftime("%Y-%m-%d")
    end = env.get(PARTITION_END_ENV) or None
    if end is None and not env.get(PARTITION_START_ENV) and not env.get(EVENTS_PATH_ENV):
        end = (first + pd.Timedelta(days=default.days)).strftime("%Y-%m-%d")
    return start, end


_START, _END = partition_days()
daily_partitions = dg.DailyPartitionsDefinition(start_date=_START, end_date=_END, timezone="UTC")
DAILY_GROUP = "daily_scoring"
ALERT_COLUMNS = [
    "event_id", "ts", "event_type", "user", "src_host", "dst_host", "process", "dst_port",
    "score", "calibrated_tail", "threshold", "rank", "model_version", "raw_ref",
]


def daily_file(state: StateResource, asset: str, day: str) -> Path:
    """Where one partition of one daily asset is stored."""
    folder = state.paths.data_dir / "daily" / asset
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{day}.parquet"


def _day_bounds(context: dg.AssetExecutionContext) -> tuple[str, pd.Timestamp, pd.Timestamp]:
    window = context.partition_time_window
    return context.partition_key, pd.Timestamp(window.start).tz_convert("UTC"), pd.Timestamp(window.end).tz_convert("UTC")


def _read_partition(state: StateResource, asset: str, day: str, upstream_hint: str) -> pd.DataFrame:
    path = daily_file(state, asset, day)
    if not path.exists():
        raise dg.Failure(
            f"{asset} has no partition {day} ({path} missing); materialize {upstream_hint} for {day} first"
        )
    return pd.read_parquet(path)


class DailyEventsConfig(dg.Config):
    """Validation policy of a day's events (as for validated_events)."""

    order_tolerance_s: float = Field(default=3600.0, description="seconds a line may go back in time before it is quarantined as out of order")
    max_quarantine_rate: float = Field(default=0.05, description="share of quarantined rows above which the blocking check stops the day's scoring")


@dg.asset(
    group_name=DAILY_GROUP,
    kinds={"pandas", "parquet"},
    owners=OWNERS,
    partitions_def=daily_partitions,
    check_specs=[
        dg.AssetCheckSpec(
            "daily_quarantine_rate_below_threshold",
            asset="daily_events",
            blocking=True,
            description="Stops the day's scoring when the share of quarantined rows passes max_quarantine_rate.",
        )
    ],
)
def daily_events(
    context: dg.AssetExecutionContext, config: DailyEventsConfig, event_source: EventSourceResource, state: StateResource
):
    """One UTC day of events from the configured source, validated with the same Great
    Expectations suite as validated_events; the day's rejected rows are counted and kept next to it."""
    day, start, end = _day_bounds(context)
    raw = event_source.load()
    ts = pd.to_datetime(raw["ts"], utc=True, errors="coerce")
    in_day = ((ts >= start) & (ts < end)).to_numpy()
    result = validate_events(raw[in_day].reset_index(drop=True),
                             ValidationPolicy(order_tolerance_s=config.order_tolerance_s))
    valid_path = daily_file(state, "daily_events", day)
    result.valid.to_parquet(valid_path, index=False)
    result.quarantined.to_parquet(daily_file(state, "daily_quarantine", day), index=False)
    rate = result.rows_quarantined / max(result.rows_read, 1)
    counts = {"rows_read": result.rows_read, "rows_valid": result.rows_valid,
              "rows_quarantined": result.rows_quarantined, "rows_duplicate": result.rows_duplicate,
              "quarantine_rate": round(rate, 6)}
    empty = result.rows_read == 0
    outcome = (f"no events for {day} in {event_source.describe()}: nothing to score; scoring and drift "
               "are skipped for this day" if empty else
               f"{result.rows_valid} valid, {result.rows_quarantined} quarantined of {result.rows_read}")
    (context.log.warning if empty else context.log.info)(f"{day}: {outcome}")
    yield dg.MaterializeResult(
        metadata={
            **counts,
            "outcome": outcome,
            "day": day,
            "source": event_source.describe(),
            "gx_success": result.gx_success,
            **table_metadata(result.valid),
            "path": dg.MetadataValue.path(str(valid_path)),
        }
    )
    passed = empty or (rate <= config.max_quarantine_rate and result.rows_valid > 0)
    yield dg.AssetCheckResult(
        check_name="daily_quarantine_rate_below_threshold",
        passed=passed,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={**counts, "max_quarantine_rate": config.max_quarantine_rate},
        description=outcome if empty else None if passed else (
            f"{day}: no valid events from {event_source.describe()}: check the source covers this day"
            if result.rows_valid == 0 else
            f"{day}: {rate:.2%} of rows quarantined (limit {config.max_quarantine_rate:.2%}); "
            "inspect data/daily/daily_quarantine for the reasons"
        ),
    )


# History without warm start: the previous day, as daily scoring did before models carried one.
FALLBACK_LOOKBACK_DAYS = 1
# The warm history's own cap (defaults.WARM_HISTORY_MAX_EVENTS) and as many again for the daily
# events after it: what daily scoring holds besides the day itself.
MAX_HISTORY_EVENTS = 2 * WARM_HISTORY_MAX_EVENTS


class ScoringConfig(dg.Config):
    """Which model scores the day and which history its graph windows get."""

    lookback_days: int | None = Field(
        default=None, ge=0,
        description="set: the history is only the previous N days of daily_events (an override); unset: the "
        "champion's warm history plus the daily events after it, what serve/stream start from (the previous "
        f"{FALLBACK_LOOKBACK_DAYS} day when the champion has no warm history)")
    history_days: float = Field(
        default=DEFAULT_MEMORY_DAYS, gt=0,
        description="the model's memory horizon: history older than this many days before the scored day is left "
        "out (as serve/stream --memory-days forget it)")
    max_history_events: int = Field(
        default=MAX_HISTORY_EVENTS, ge=1,
        description="most history events kept in memory (the newest); beyond it the oldest are left out and the "
        "metadata says so")
    model_alias: str = Field(default=registry.CHAMPION, description="registry alias to score with")


@dataclass
class ScoringHistory:
    """The events before the scored day that its graph windows see, and where they came from."""

    events: pd.DataFrame
    source: str  # "champion_warm_history" or "lookback"
    description: str  # one line for the metadata: which history, how many events, from when to when
    warm_events: int = 0
    daily_events: int = 0
    missing_days: list[str] = field(default_factory=list)


def _span(frame: pd.DataFrame) -> str:
    return f"from {frame['ts'].min().isoformat()} to {frame['ts'].max().isoformat()}" if len(frame) else ""


def _read_daily(state: StateResource, days: list[str], lower: pd.Timestamp, upper: pd.Timestamp,
                optional: frozenset[str] = frozenset()) -> tuple[list[pd.DataFrame], list[str]]:
    """The daily_events of ``days`` with ``ts`` in [lower, upper), one file at a time; (frames,
    days without a file, ``optional`` ones left out of that list)."""
    frames, missing = [], []
    for past in days:
        path = daily_file(state, "daily_events", past)
        if not path.exists():
            if past not in optional:
                missing.append(past)
            continue
        frame = pd.read_parquet(path)
        ts = pd.to_datetime(frame["ts"], utc=True)
        frames.append(frame[((ts >= lower) & (ts < upper)).to_numpy()])
    return frames, missing


def lookback_history(state: StateResource, start: pd.Timestamp, days: int, reason: str) -> ScoringHistory:
    """The previous ``days`` days of daily_events (the history before warm start existed)."""
    names = [(start - pd.Timedelta(days=k)).strftime("%Y-%m-%d") for k in range(days, 0, -1)]
    frames, missing = _read_daily(state, names, start - pd.Timedelta(days=days), start)
    events = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    where = f"{len(events):,} daily events of the previous {days} day(s)"
    gap = f" ({', '.join(missing)} not materialized)" if missing else ""
    return ScoringHistory(events, "lookback", f"lookback only: {reason}; {where}{gap}",
                          daily_events=len(events), missing_days=missing)


def warm_history(state: StateResource, warm: pd.DataFrame, version: str, start: pd.Timestamp,
                 history_days: float) -> ScoringHistory:
    """What ``serve``/``stream`` hold when the day starts, had they run since the champion was
    registered: the champion's warm history, plus the daily events after its end, both within
    ``history_days`` before ``start`` and before it, deduplicated by ``event_id`` (the history's
    copy wins, as the service drops a re-sent event)."""
    lower = start - pd.Timedelta(days=history_days)
    total, last = len(warm), warm["ts"].iloc[-1]
    ts = warm["ts"]
    kept = warm[((ts >= lower) & (ts < start)).to_numpy()]
    del warm
    # The days after the history's end (its last day too: events after its last one), within the horizon.
    first_day = max(last.floor("D"), lower.floor("D"))
    names = [d.strftime("%Y-%m-%d") for d in pd.date_range(first_day, start - pd.Timedelta(days=1), freq="D")]
    # The history's last day is mostly in the history: without a file for it, nothing is said.
    frames, missing = _read_daily(state, names, lower, start, optional=frozenset(names[:1]))
    gap = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["event_id", "ts"])
    gap = gap[~gap["event_id"].isin(kept["event_id"])].drop_duplicates("event_id")
    if len(kept):
        head = f"champion warm history v{version}: {len(kept):,} events {_span(kept)}"
    else:
        head = (f"champion warm history v{version}: 0 of its {total:,} events (they end {last.isoformat()}, over "
                f"{history_days:g} days before the day)")
    text = f"{head}, plus {len(gap):,} daily events" + (f" {_span(gap)}" if len(gap) else "")
    if missing:
        text += (f" ({', '.join(missing)} not materialized: the service would have seen those days; materialize "
                 "daily_events for them)")
    events = pd.concat([kept, gap], ignore_index=True) if len(gap) else kept.reset_index(drop=True)
    return ScoringHistory(events, "champion_warm_history", text, warm_events=len(kept), daily_events=len(gap),
                          missing_days=missing)


def scoring_history(config: ScoringConfig, state: StateResource, model: HybridScorer, version: str,
                    start: pd.Timestamp) -> ScoringHistory:
    """The history the day is scored against: by default the one the warm service has (the
    champion's warm history and the daily events after it), the lookback where ``lookback_days``
    is set or the champion has no usable warm history (the reason is in ``description``)."""
    if config.lookback_days is not None:
        return lookback_history(state, start, config.lookback_days,
                                f"lookback_days={config.lookback_days} set in the run config")
    fallback = None
    if not model.has_warm_history:
        fallback = f"champion v{version} was registered without a warm-start history"
    else:
        try:
            warm = model.warm_history()
        except (SchemaError, ValueError, OSError) as exc:
            warm, fallback = None, f"champion v{version}'s warm-start history cannot be read: {exc}"
        if warm is not None and warm.empty:
            fallback = f"champion v{version}'s warm-start history is empty"
        elif warm is not None and warm["ts"].iloc[0] >= start:
            fallback = (f"the day is before champion v{version}'s warm history (from {warm['ts'].iloc[0].isoformat()}),"
                        " which the service never scores")
    if fallback is not None:
        return lookback_history(state, start, FALLBACK_LOOKBACK_DAYS, fallback)
    return warm_history(state, warm, version, start, config.history_days)


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            "scored_events", group_name=DAILY_GROUP, kinds={"pytorch", "parquet"}, owners=OWNERS,
            deps=["daily_events", "registered_model"], partitions_def=daily_partitions, skippable=True,
            description="Every event of the day with the champion's anomaly score, calibrated tail "
            "(share of validation events scoring as high), alert flag and rank (1 = most anomalous).",
        ),
        dg.AssetSpec(
            "alerts", group_name=DAILY_GROUP, kinds={"pandas", "parquet"}, owners=OWNERS,
            deps=["daily_events", "registered_model"], partitions_def=daily_partitions, skippable=True,
            description="The day's events above the champion's alert threshold, ranked, each with its "
            "score, the threshold and the model version that raised it.",
        ),
    ],
)
def scored_events(
    context: dg.AssetExecutionContext, config: ScoringConfig, mlflow_resource: MlflowResource, state: StateResource
):
    """Score one day with `models:/<name>@champion` against the history the warm service has: the
    champion's warm history and the daily events after it (``scoring_history``)."""
    day, start, end = _day_bounds(context)
    today = _read_partition(state, "daily_events", day, "daily_events")
    if today.empty:
        # An empty day (see daily_events' outcome): nothing is materialized, drift is skipped.
        context.log.warning(f"daily_events {day} has no events: scored_events, alerts and the day's drift are skipped")
        return

    reg = mlflow_resource.registry_config()
    client = registry.configure(reg)
    try:
        mv = client.get_model_version_by_alias(reg.model_name, config.model_alias)
    except mlflow.exceptions.MlflowException as exc:
        raise dg.Failure(
            f"model {reg.model_name!r} has no '{config.model_alias}' version yet: materialize registered_model "
            "(make run) and promote a version (anomaly-pipeline models promote VERSION)"
        ) from exc
    model_uri = f"models:/{reg.model_name}@{config.model_alias}"
    started = time.perf_counter()
    _, model = load_pyfunc(model_uri)
    history = scoring_history(config, state, model, str(mv.version), start)
    past = history.events
    if len(past):
        # An event of the day is scored as the day's, never as its own history.
        past = past[~past["event_id"].isin(today["event_id"])]
    left_out = max(len(past) - config.max_history_events, 0)
    if left_out:
        past = past.sort_values("ts", kind="stable").iloc[left_out:]
        history.description += (f"; the oldest {left_out:,} left out (max_history_events="
                                f"{config.max_history_events:,}), so the first-seen features count less than the "
                                "service's")
    (context.log.warning if history.missing_days or left_out or history.source == "lookback"
     else context.log.info)(f"{day}: history: {history.description}")
    events = pd.concat([past, today], ignore_index=True) if len(past) else today
    del past
    history.events = history.events.iloc[:0]  # held once, in `events`
    period = model.score_period(events, start, end)
    seconds = time.perf_counter() - started
    scored = period.scored
    scored["threshold"] = period.threshold
    scored["model_version"] = str(mv.version)
    scored_path = daily_file(state, "scored_events", day)
    scored.to_parquet(scored_path, index=False)
    # What drift compares: the features the model saw for the day's events, and its scores.
    drift_frame(period.windows, period.index, scored["score"].to_numpy()).to_parquet(
        daily_file(state, "drift_current", day), index=False)
    alerts = scored.loc[scored["alert"], [c for c in ALERT_COLUMNS if c in scored]].sort_values("rank")
    alerts_path = daily_file(state, "alerts", day)
    alerts.to_parquet(alerts_path, index=False)
    context.log.info(f"{day}: scored {len(scored)} events with {model_uri} (version {mv.version}) in "
                     f"{seconds:.1f} s; {len(alerts)} alerts above {period.threshold:.3f}")
    common = {"model_uri": model_uri, "model_version": str(mv.version), "threshold": period.threshold,
              "mlflow_run_id": mv.run_id or "", "day": day, "history": history.description,
              "history_source": history.source, **mlflow_resource.links(version=str(mv.version))}
    labelled = scored["label"].notna() if "label" in scored else pd.Series(False, index=scored.index)
    yield dg.MaterializeResult(
        asset_key="scored_events",
        metadata={
            **common,
            "events_scored": len(scored),
            "history_events": len(events) - len(today),
            "warm_history_events": history.warm_events,
            "daily_history_events": history.daily_events,
            **({"lookback_days": config.lookback_days if config.lookback_days is not None else FALLBACK_LOOKBACK_DAYS}
               if history.source == "lookback" else {"history_days": config.history_days}),
            "history_missing_days": ", ".join(history.missing_days) or "none",
            "score_median": float(np.median(scored["score"])) if len(scored) else 0.0,
            "seconds": round(seconds, 2),
            "attack_events": int(scored.loc[labelled, "label"].sum()) if labelled.any() else 0,
            **table_metadata(scored),
            "path": dg.MetadataValue.path(str(scored_path)),
        },
    )
    top = alerts.head(10)[["ts", "event_type", "user", "src_host", "dst_host", "score", "rank"]].astype(str)
    yield dg.MaterializeResult(
        asset_key="alerts",
        metadata={
            **common,
            "alerts": len(alerts),
            "alert_rate": round(len(alerts) / max(len(scored), 1), 6),
            "top_alerts": md_table(top) if len(top) else "none",
            **table_metadata(alerts),
            "path": dg.MetadataValue.path(str(alerts_path)),
        },
    )


def drift_verdict(drift_share: float, threshold: float, evidently_dataset_drift: bool) -> str:
    """One sentence saying which of the two drift verdicts acts: ours (the share of drifted columns
    against ``threshold``, which alerts and triggers drift_retrain_sensor) and Evidently's own
    ``dataset_drift`` (its default 0.5 share), shown beside it but never acted on."""
    ours = (f"drifted: share {drift_share:.3f} >= threshold {threshold} -> drift_retrain_sensor retrains"
            if drift_share >= threshold else f"not drifted: share {drift_share:.3f} < threshold {threshold}")
    theirs = "detected" if evidently_dataset_drift else "NOT detected"
    return f"{ours}. Evidently's own dataset_drift ({theirs}, at its 0.5 share) is informational only."


# Novelty and gap features count against the history the scorer was given: the training split saw
# days of it, a scored day sees the champion's warm history and the days after it (`lookback_days`
# where that is set or the champion has none). Compared as they are they measured the lookback, not
# the data (measured in the drift demo, before scoring used the warm history: both drift on quiet
# days at any lookback), so they are left out of the daily comparison by default.
HISTORY_DEPENDENT = ["pair_first_seen", "log_pair_gap_s"]


class DailyDriftConfig(dg.Config):
    """The day counts as drifted when this share of the compared columns drifted."""

    # Measured in the drift demo's setting (12 compared columns, 40 users, champion trained on 7
    # quiet days): quiet days 0.0 - 0.083 (at most the score), days after the reorganisation switch
    # 0.167 - 0.25 (hour of day, durations). 0.15 = two or more columns.
    drift_share_threshold: float = Field(default=0.15, description="share of drifted columns at or above which the day counts as drifted and drift_retrain_sensor retrains (Evidently's own dataset_drift verdict, shown beside it, uses 0.5)")
    exclude_columns: list[str] = Field(default_factory=lambda: list(HISTORY_DEPENDENT),
                                       description="monitored columns left out of the comparison")


@dg.asset(
    group_name=DAILY_GROUP,
    kinds={"evidently", "mlflow"},
    owners=OWNERS,
    partitions_def=daily_partitions,
    deps=["scored_events"],
    check_specs=[dg.AssetCheckSpec("daily_drift_share_below_threshold", asset="daily_drift_report",
                                   description="Warns when the day's share of drifted columns passes the threshold.")],
)
def daily_drift_report(
    context: dg.AssetExecutionContext, config: DailyDriftConfig, mlflow_resource: MlflowResource, state: StateResource
):
    """Evidently drift of the day's features and anomaly scores against the training reference of
    the champion that scored the day. The HTML report is kept in MLflow (a `drift-<day>` run);
    `drift_share`, the drifted columns and the champion version are read by drift_retrain_sensor."""
    day, _, _ = _day_bounds(context)
    current = _read_partition(state, "drift_current", day, "scored_events")
    scored = _read_partition(state, "scored_events", day, "scored_events")
    version = str(scored["model_version"].iloc[0])
    reg = mlflow_resource.registry_config()
    client = registry.configure(reg)
    try:
        reference = registry.load_drift_reference(client, reg, version)
    except ValueError as exc:
        raise dg.Failure(str(exc)) from exc
    out_dir = state.run_dir("reports", context.run_id)
    unknown = sorted(set(config.exclude_columns) - set(reference.columns))
    if unknown:
        raise dg.Failure(f"exclude_columns names {unknown}, which are not monitored; monitored: {list(reference.columns)}")
    columns = [c for c in reference.columns if c not in config.exclude_columns]
    result = compute_drift(reference, current, out_dir, name=f"drift_{day}", columns=columns,
                           drift_share_threshold=config.drift_share_threshold)
    on_scores = score_drift(result)
    experiment = registry.experiment_id(client, reg)
    with mlflow.start_run(experiment_id=experiment, run_name=f"drift-{day}",
                          tags={"kind": "drift", "partition": day, "model_version": version,
                                "dagster_run_id": context.run_id}) as run:
        mlflow.log_artifact(str(result.html_path), "drift")
        mlflow.log_dict(result.metadata(), "drift/summary.json")
        mlflow.log_metrics({"drift_share": result.drift_share, "n_drifted_columns": len(result.drifted_columns)})
    artifact_uri = f"runs:/{run.info.run_id}/drift/{result.html_path.name}"
    context.log.info(f"{day}: drift share {result.drift_share:.3f} vs champion v{version}; drifted {result.drifted_columns}")
    yield dg.MaterializeResult(
        metadata={
            "day": day,
            "drift_share": result.drift_share,
            "drift_share_threshold": config.drift_share_threshold,
            "dataset_drift": result.dataset_drift,
            "verdict": drift_verdict(result.drift_share, config.drift_share_threshold, result.dataset_drift),
            "drifted_columns": ", ".join(result.drifted_columns) or "none",
            "drifted_columns_list": dg.MetadataValue.json(result.drifted_columns),
            "score_drift": dg.MetadataValue.json(on_scores or {}),
            "n_columns": result.n_columns,
            "excluded_columns": ", ".join(config.exclude_columns) or "none",
            "champion_version": version,
            "model_version": version,
            "reference_rows": result.reference_rows_total,
            "current_rows": result.current_rows_total,
            "report_html": dg.MetadataValue.path(str(result.html_path)),
            "report_file_url": dg.MetadataValue.url(result.html_path.resolve().as_uri()),
            "mlflow_run_id": run.info.run_id,
            **mlflow_resource.links(run_id=run.info.run_id, experiment_id=experiment,
                                    artifact=f"drift/{result.html_path.name}"),
            "mlflow_artifact": artifact_uri,
            "column_scores": md_table(result.column_scores.round(4), 40),
        }
    )
    yield dg.AssetCheckResult(
        check_name="daily_drift_share_below_threshold",
        passed=result.drift_share < config.drift_share_threshold,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"drift_share": result.drift_share, "threshold": config.drift_share_threshold},
        description=f"{day}: drift share {result.drift_share:.3f} vs threshold {config.drift_share_threshold}",
    )
