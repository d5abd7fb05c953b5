"""Data drift between a reference window and the newest data, computed by Evidently 0.7.

``compute_drift`` compares the distributions of the chosen columns (features and anomaly scores)
of ``current`` against ``reference`` (the champion's training data) with Evidently's
``DataDriftPreset``, writes Evidently's own HTML report and JSON snapshot, and returns the
dataset-level verdict, the share of drifted columns and one row per column (statistical test,
score, threshold, verdict) for Dagster metadata, MLflow and the drift sensor.

Every number comes from Evidently's snapshot: the drifted count and share from its
``DriftedColumnsCount`` metric, each column's score, test and threshold from its ``ValueDrift``
metric, and the per-column and dataset-level verdicts from the tests Evidently attaches to those
metrics (``include_tests=True``; FAIL means drift). Nothing is recomputed here.

Evidently picks the test per column from the column type and the sample size: for numerical
columns with more than 1,000 rows a normed Wasserstein distance (drift when >= 0.1), otherwise a
Kolmogorov-Smirnov p-value (drift when < 0.05); for categorical columns (and numerical columns with
at most 5 distinct values) Jensen-Shannon distance, chi-squared or a proportion test. So a
``score`` is a distance for some tests and a p-value for others; ``drifted`` is the verdict to use.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

DEFAULT_MAX_ROWS = 50_000
SCORE_COLUMN = "anomaly_score"
SCORE_COLUMNS: tuple[str, ...] = ("column", "column_type", "stattest", "score", "threshold", "drifted")


@dataclass
class DriftResult:
    """What Evidently found when comparing ``current`` with ``reference``.

    ``column_scores`` has one row per compared column: ``column``, ``column_type`` (numerical or
    categorical), ``stattest`` (Evidently's test name), ``score`` (a p-value or a distance,
    depending on the test), ``threshold`` and ``drifted``.
    """

    drift_share: float
    drifted_columns: list[str]
    n_columns: int
    column_scores: pd.DataFrame
    html_path: Path
    json_path: Path
    dataset_drift: bool
    drift_share_threshold: float = 0.5
    reference_rows: int = 0
    current_rows: int = 0
    reference_rows_total: int = 0
    current_rows_total: int = 0
    skipped_columns: dict[str, str] = field(default_factory=dict)
    evidently_version: str = ""

    def metadata(self) -> dict[str, Any]:
        """A JSON-able summary for Dagster materialization metadata and MLflow."""
        scores = {
            str(row.column): {
                "column_type": str(row.column_type),
                "stattest": str(row.stattest),
                "score": _finite_or_none(row.score),
                "threshold": _finite_or_none(row.threshold),
                "drifted": bool(row.drifted),
            }
            for row in self.column_scores.itertuples(index=False)
        }
        return {
            "drift_share": float(self.drift_share),
            "dataset_drift": bool(self.dataset_drift),
            "drift_share_threshold": float(self.drift_share_threshold),
            "n_columns": int(self.n_columns),
            "n_drifted_columns": len(self.drifted_columns),
            "drifted_columns": list(self.drifted_columns),
            "column_scores": scores,
            "reference_rows": int(self.reference_rows),
            "current_rows": int(self.current_rows),
            "reference_rows_total": int(self.reference_rows_total),
            "current_rows_total": int(self.current_rows_total),
            "sampled": bool(
                self.reference_rows < self.reference_rows_total or self.current_rows < self.current_rows_total
            ),
            "skipped_columns": dict(self.skipped_columns),
            "html_path": str(self.html_path),
            "json_path": str(self.json_path),
            "evidently_version": self.evidently_version,
        }


def compute_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    out_dir: Path,
    *,
    columns: list[str] | None = None,
    drift_share_threshold: float = 0.5,
    name: str = "drift_report",
    categorical: Sequence[str] = (),
    max_rows: int = DEFAULT_MAX_ROWS,
    random_state: int = 0,
) -> DriftResult:
    """Compare ``current`` with ``reference`` column by column with Evidently's DataDriftPreset.

    Args:
        reference: the reference window (e.g. the champion's training features and scores).
        current: the newest data, same columns.
        out_dir: folder for ``<name>.html`` (Evidently's report) and ``<name>.json`` (its snapshot);
            created if missing, files overwritten.
        columns: columns to compare; default all columns of ``reference`` except datetime ones.
            Each must exist in both frames. Columns that are entirely null on either side cannot
            be tested by Evidently; they are left out and listed, with the reason, in
            ``skipped_columns`` (so is each datetime column of the default selection).
        drift_share_threshold: the dataset counts as drifted when at least this share (0..1) of
            the columns drifted (Evidently's ``drift_share``).
        name: file stem of the two reports.
        categorical: columns to treat as categorical even though their dtype is numeric (e.g.
            ports). Columns with string, boolean, category or object dtype are always categorical;
            other numeric columns are numerical.
        max_rows: each side is sampled down to at most this many rows (without replacement,
            ``random_state`` fixed, so the same inputs give the same report); the sizes used are in
            the result and its metadata.
        random_state: seed of that sampling.

    Raises:
        ValueError: an empty side, a requested column missing from a side, a datetime column,
            a column that is numeric on one side and not on the other, or an invalid threshold.
    """
    if not 0.0 < drift_share_threshold <= 1.0:
        raise ValueError(
            f"drift_share_threshold must be in (0, 1], got {drift_share_threshold}; "
            "it is the share of drifted columns at which the whole dataset counts as drifted"
        )
    if max_rows < 1:
        raise ValueError(f"max_rows must be a positive number of rows, got {max_rows}")
    if len(current) == 0:
        raise ValueError(
            "current data is empty (0 rows): there is nothing to compare with the reference; "
            "run drift only after new data has been scored, or widen the current window"
        )
    if len(reference) == 0:
        raise ValueError(
            "reference data is empty (0 rows): pass the champion's training window "
            "(features and scores) as the reference"
        )

    selected, skipped = _select_columns(reference, current, columns)
    forced_categorical = set(categorical)
    unknown = forced_categorical - set(selected)
    if unknown:
        raise ValueError(
            f"categorical= names column(s) {sorted(unknown)} that are not compared; "
            f"compared columns: {selected}"
        )
    for col in list(selected):
        empty_sides = [
            side for side, frame in (("reference", reference), ("current", current)) if _all_null(frame[col])
        ]
        if empty_sides:
            # Evidently refuses an all-null column; report it as skipped instead of failing the whole
            # report (an all-null feature is a data-quality finding for validation, not a drift score).
            skipped[col] = f"all values are null in the {' and '.join(empty_sides)} data"
            selected.remove(col)
    if not selected:
        raise ValueError(
            f"no column left to compare: skipped {skipped}; pass columns=[...] naming columns with "
            "values on both sides"
        )
    numerical, categorical_cols = _column_kinds(reference, current, selected, forced_categorical)

    ref = _prepare(_sample(reference, max_rows, random_state), numerical, categorical_cols)
    cur = _prepare(_sample(current, max_rows, random_state), numerical, categorical_cols)

    # Imported here: Evidently takes seconds to import and most callers of this package never need it.
    import evidently
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical_cols)
    report = Report(
        [DataDriftPreset(columns=selected, drift_share=drift_share_threshold)],
        include_tests=True,  # the tests carry Evidently's per-column and dataset drift verdicts
    )
    with warnings.catch_warnings():
        # Constant columns make numpy warn about 0/0 in Evidently's correlation plots; the drift
        # tests themselves handle them (a constant column that stays constant does not drift).
        warnings.simplefilter("ignore", RuntimeWarning)
        snapshot = report.run(
            Dataset.from_pandas(cur, data_definition=definition),
            Dataset.from_pandas(ref, data_definition=definition),
            name=name,
        )
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        html_path = out_dir / f"{name}.html"
        json_path = out_dir / f"{name}.json"
        snapshot.save_html(str(html_path))
        snapshot.save_json(str(json_path))
    # Read back the saved JSON rather than ``snapshot.dict()``: the dict holds enums (test status)
    # and numpy scalars, the file holds the plain values every other consumer of the report sees.
    summary = json.loads(json_path.read_text(encoding="utf-8"))

    kinds = {c: "numerical" for c in numerical} | {c: "categorical" for c in categorical_cols}
    scores, share, dataset_drift = _parse_snapshot(summary, selected, kinds, drift_share_threshold)
    drifted = scores.loc[scores["drifted"], "column"].tolist()
    return DriftResult(
        drift_share=share,
        drifted_columns=drifted,
        n_columns=len(selected),
        column_scores=scores,
        html_path=html_path,
        json_path=json_path,
        dataset_drift=dataset_drift,
        drift_share_threshold=drift_share_threshold,
        reference_rows=len(ref),
        current_rows=len(cur),
        reference_rows_total=len(reference),
        current_rows_total=len(current),
        skipped_columns=skipped,
        evidently_version=evidently.__version__,
    )


def drift_frame(windows: Any, idx: np.ndarray, scores: np.ndarray) -> pd.DataFrame:
    """The columns drift is measured on, for events ``idx`` of ``windows`` (a ``GraphWindows``).

    The behaviour features listed in ``graph.DRIFT_MONITORED_FEATURES`` (as the model sees them),
    the event type, and the model's anomaly score (``anomaly_score``): the same frame is built for
    the champion's training reference at registration and for each scored day, so both sides of a
    comparison always have the same columns.
    """
    from anomaly_pipeline.graph import DRIFT_MONITORED_FEATURES, EVENT_FEATURES

    idx = np.asarray(idx, dtype=np.int64)
    scores = np.asarray(scores, dtype=float)
    if len(idx) != len(scores):
        raise ValueError(f"{len(idx)} event positions but {len(scores)} scores; pass one score per event")
    columns = [EVENT_FEATURES.index(f) for f in DRIFT_MONITORED_FEATURES]
    frame = pd.DataFrame(windows.event_x[np.ix_(idx, columns)], columns=list(DRIFT_MONITORED_FEATURES))
    frame["event_type"] = windows.events["event_type"].to_numpy()[idx].astype(str)
    frame[SCORE_COLUMN] = scores
    return frame


def score_drift(result: DriftResult) -> dict[str, Any] | None:
    """The anomaly-score row of ``result`` (test, score, threshold, drifted), or None if not compared."""
    rows = result.column_scores[result.column_scores["column"] == SCORE_COLUMN]
    if rows.empty:
        return None
    row = rows.iloc[0]
    return {"stattest": str(row.stattest), "score": _finite_or_none(row.score),
            "threshold": _finite_or_none(row.threshold), "drifted": bool(row.drifted)}


def _select_columns(
    reference: pd.DataFrame, current: pd.DataFrame, columns: list[str] | None
) -> tuple[list[str], dict[str, str]]:
    """The columns to compare and the datetime columns left out of the default selection."""
    skipped: dict[str, str] = {}
    if columns is None:
        selected = []
        for col in reference.columns:
            if _is_datetime(reference[col]):
                skipped[str(col)] = "timestamps are not compared by default"
            else:
                selected.append(str(col))
    else:
        selected = list(dict.fromkeys(columns))
    if not selected:
        raise ValueError(
            "no columns to compare: pass columns=[...] naming numeric or categorical columns "
            "present in both reference and current"
        )
    for col in selected:
        missing_from = [
            side for side, frame in (("reference", reference), ("current", current)) if col not in frame
        ]
        if missing_from:
            raise ValueError(
                f"column '{col}' is missing from the {' and '.join(missing_from)} data; both sides need "
                "the columns being compared (drop it from columns= or produce it upstream). "
                f"Reference columns: {sorted(map(str, reference.columns))}; "
                f"current columns: {sorted(map(str, current.columns))}"
            )
    for col in selected:
        if _is_datetime(reference[col]) or _is_datetime(current[col]):
            raise ValueError(
                f"column '{col}' holds timestamps; drift on time is always 'detected' for a newer "
                "window, so leave it out of columns= (or derive e.g. hour-of-day first)"
            )
    return selected, skipped


def _column_kinds(
    reference: pd.DataFrame, current: pd.DataFrame, selected: list[str], forced_categorical: set[str]
) -> tuple[list[str], list[str]]:
    """Split the columns into Evidently's numerical and categorical columns."""
    numerical: list[str] = []
    categorical: list[str] = []
    for col in selected:
        ref_num, cur_num = _is_numeric(reference[col]), _is_numeric(current[col])
        if col in forced_categorical:
            categorical.append(col)
        elif ref_num and cur_num:
            numerical.append(col)
        elif ref_num != cur_num:
            raise ValueError(
                f"column '{col}' is numeric in the {'reference' if ref_num else 'current'} data but "
                f"{current[col].dtype if ref_num else reference[col].dtype} in the other; cast both "
                "sides to the same dtype (or list it in categorical=)"
            )
        else:
            categorical.append(col)
    return numerical, categorical


def _sample(frame: pd.DataFrame, max_rows: int, random_state: int) -> pd.DataFrame:
    if len(frame) <= max_rows:
        return frame
    return frame.sample(n=max_rows, random_state=random_state)


def _prepare(frame: pd.DataFrame, numerical: list[str], categorical: list[str]) -> pd.DataFrame:
    """Plain numpy dtypes for Evidently: float64 with NaN, and strings (object) with NaN.

    pandas extension dtypes (``Float64``, ``Int32``, ``string``, ``boolean``) carry ``pd.NA``,
    which Evidently's statistics do not expect.
    """
    out: dict[str, pd.Series] = {}
    for col in numerical:
        out[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
    for col in categorical:
        values = frame[col]
        as_text = values.astype("string").astype(object)
        out[col] = as_text.where(values.notna().to_numpy(), np.nan)
    return pd.DataFrame(out, index=frame.index).reset_index(drop=True)


def _parse_snapshot(
    summary: dict[str, Any], selected: list[str], kinds: dict[str, str], drift_share_threshold: float
) -> tuple[pd.DataFrame, float, bool]:
    """Per-column rows, the drifted share and the dataset verdict from ``Snapshot.dict()``."""
    metrics = summary.get("metrics", [])
    tests = summary.get("tests", [])
    status_by_metric: dict[str, str] = {}
    for test in tests:
        metric_id = (test.get("metric_config") or {}).get("metric_id")
        if metric_id is not None:
            status_by_metric[metric_id] = str(test.get("status", ""))

    share: float | None = None
    dataset_drift: bool | None = None
    rows: dict[str, dict[str, Any]] = {}
    for metric in metrics:
        config = metric.get("config", {})
        kind = str(config.get("type", ""))
        if kind.endswith(":DriftedColumnsCount"):
            share = float(metric["value"]["share"])
            status = status_by_metric.get(metric["id"])
            if status is not None:
                dataset_drift = status == "FAIL"
        elif kind.endswith(":ValueDrift"):
            column = str(config["column"])
            status = status_by_metric.get(metric["id"])
            if status is None:
                raise RuntimeError(
                    f"Evidently returned no drift test for column '{column}'; this evidently version's "
                    "snapshot layout is not the one this module reads (expected evidently 0.7)"
                )
            rows[column] = {
                "column": column,
                "column_type": kinds.get(column, ""),
                "stattest": str(config.get("method", "")),
                "score": float(metric["value"]),
                "threshold": float(config["threshold"]) if config.get("threshold") is not None else np.nan,
                "drifted": status == "FAIL",
            }
    missing = [c for c in selected if c not in rows]
    if share is None or missing:
        raise RuntimeError(
            "Evidently's snapshot lacks the drift share or the drift of column(s) "
            f"{missing}; expected evidently 0.7's DataDriftPreset output"
        )
    if dataset_drift is None:  # test not attached: same rule as Evidently's get_dataset_drift
        dataset_drift = share >= drift_share_threshold
    scores = pd.DataFrame([rows[c] for c in selected], columns=list(SCORE_COLUMNS))
    scores["drifted"] = scores["drifted"].astype(bool)
    return scores, share, dataset_drift


def _is_numeric(values: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype)


def _is_datetime(values: pd.Series) -> bool:
    return pd.api.types.is_datetime64_any_dtype(values.dtype) or pd.api.types.is_timedelta64_dtype(
        values.dtype
    )


def _all_null(values: pd.Series) -> bool:
    return bool(values.isna().all())


def _finite_or_none(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None
