"""Evidently drift reports: verdicts on known shifts, the report files, and refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from anomaly_pipeline.drift import SCORE_COLUMNS, compute_drift

N_ROWS = 3_000  # > 1,000 rows: Evidently uses Wasserstein distance for numerical columns
PROTOCOLS = ("tcp", "udp", "icmp")


def _window(
    seed: int, *, shift: float = 0.0, protocols: tuple[str, ...] = PROTOCOLS, n: int = N_ROWS
) -> pd.DataFrame:
    """A window of flow features; ``shift`` moves byte and duration means, ``protocols`` the categories."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "bytes_out": rng.lognormal(8.0 + shift, 1.0, n),
            "duration_s": rng.gamma(2.0, 3.0 + 3.0 * shift, n),
            "packets": rng.poisson(20, n).astype(float),
            "score": rng.beta(2, 8, n),
            "protocol": rng.choice(protocols, n, p=[0.6, 0.3, 0.1]),
            "logon_type": rng.choice(["network", "interactive"], n),
            "schema_version": np.full(n, 3.0),  # constant on both sides
        }
    )


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return _window(seed=1)


def test_same_distribution_is_not_drift(reference: pd.DataFrame, tmp_path: Path) -> None:
    result = compute_drift(reference, _window(seed=2), tmp_path, name="same")
    assert result.drift_share < 0.3
    assert not result.dataset_drift
    assert result.n_columns == 7
    assert "schema_version" not in result.drifted_columns
    assert list(result.column_scores.columns) == list(SCORE_COLUMNS)
    assert result.column_scores["column"].tolist() == list(reference.columns)
    kinds = dict(zip(result.column_scores["column"], result.column_scores["column_type"], strict=True))
    assert kinds["protocol"] == "categorical" and kinds["bytes_out"] == "numerical"


def test_shifted_columns_are_flagged(reference: pd.DataFrame, tmp_path: Path) -> None:
    current = _window(seed=3, shift=1.0, protocols=("tcp", "udp", "quic"))
    current["logon_type"] = np.where(np.arange(N_ROWS) % 10 == 0, "remote_interactive", current["logon_type"])
    result = compute_drift(reference, current, tmp_path, name="shifted")
    assert {"bytes_out", "duration_s", "protocol", "logon_type"} <= set(result.drifted_columns)
    assert not {"packets", "score", "schema_version"} & set(result.drifted_columns)
    assert result.drift_share == pytest.approx(4 / 7)
    assert result.dataset_drift  # 4/7 >= 0.5
    scores = result.column_scores.set_index("column")
    assert scores.loc["bytes_out", "stattest"].startswith("Wasserstein")
    assert scores.loc["bytes_out", "score"] > scores.loc["bytes_out", "threshold"]

    stricter = compute_drift(reference, current, tmp_path, name="shifted_strict", drift_share_threshold=0.8)
    assert stricter.drift_share == pytest.approx(result.drift_share)
    assert not stricter.dataset_drift


def test_reports_are_written_and_metadata_is_json(reference: pd.DataFrame, tmp_path: Path) -> None:
    current = _window(seed=4, shift=1.0)
    result = compute_drift(reference, current, tmp_path / "reports", name="daily", max_rows=1_000)
    assert result.html_path == tmp_path / "reports" / "daily.html"
    html = result.html_path.read_text(encoding="utf-8")
    assert result.html_path.stat().st_size > 10_000
    assert "<html" in html.lower()
    snapshot = json.loads(result.json_path.read_text(encoding="utf-8"))
    assert any("DriftedColumnsCount" in m["metric_name"] for m in snapshot["metrics"])

    meta = result.metadata()
    assert json.loads(json.dumps(meta)) == meta
    assert meta["drifted_columns"] == result.drifted_columns
    assert (meta["reference_rows"], meta["current_rows"]) == (1_000, 1_000)
    assert (meta["reference_rows_total"], meta["current_rows_total"]) == (N_ROWS, N_ROWS)
    assert meta["sampled"] is True
    assert meta["column_scores"]["bytes_out"]["drifted"] is True

    again = compute_drift(reference, current, tmp_path / "again", name="daily", max_rows=1_000)
    pd.testing.assert_frame_equal(again.column_scores, result.column_scores)  # sampling is seeded


def test_constant_nullable_and_timestamp_columns(tmp_path: Path) -> None:
    n = 400
    rng = np.random.default_rng(5)
    reference = pd.DataFrame(
        {
            "ts": pd.date_range("2024-01-01", periods=n, freq="min", tz="UTC"),
            "bytes_in": pd.array(rng.normal(100, 10, n), dtype="Float64"),
            "dst_port": pd.array(rng.choice([22, 443, 3389], n), dtype="Int32"),
            "success": pd.array(rng.choice([True, False], n), dtype="boolean"),
            "auth_type": pd.array(rng.choice(["kerberos", "ntlm"], n), dtype="string"),
            "tenant": np.full(n, 1.0),
            "label": pd.array([pd.NA] * n, dtype="Int8"),
        }
    )
    current = reference.copy()
    current["ts"] = current["ts"] + pd.Timedelta(days=7)
    current.loc[:40, "bytes_in"] = pd.NA
    current["tenant"] = 2.0  # a constant that changed value
    result = compute_drift(reference, current, tmp_path, categorical=["dst_port"])

    scores = result.column_scores.set_index("column")
    assert scores.loc["dst_port", "column_type"] == "categorical"
    assert scores.loc["success", "column_type"] == "categorical"
    assert result.drifted_columns == ["tenant"]
    assert set(result.skipped_columns) == {"ts", "label"}
    assert "null" in result.skipped_columns["label"]
    assert result.n_columns == 5


def test_empty_current_is_refused(reference: pd.DataFrame, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="current data is empty"):
        compute_drift(reference, reference.iloc[:0], tmp_path)


def test_missing_column_is_named(reference: pd.DataFrame, tmp_path: Path) -> None:
    current = _window(seed=6).drop(columns=["protocol"])
    with pytest.raises(ValueError, match="column 'protocol' is missing from the current data"):
        compute_drift(reference, current, tmp_path)
    with pytest.raises(ValueError, match="column 'hour' is missing from the reference and current data"):
        compute_drift(reference, _window(seed=6), tmp_path, columns=["bytes_out", "hour"])


def test_explicit_columns_and_bad_threshold(reference: pd.DataFrame, tmp_path: Path) -> None:
    result = compute_drift(reference, _window(seed=7, shift=1.0), tmp_path, columns=["bytes_out", "packets"])
    assert result.n_columns == 2
    assert result.drifted_columns == ["bytes_out"]
    assert result.drift_share == pytest.approx(0.5)
    with pytest.raises(ValueError, match="drift_share_threshold"):
        compute_drift(reference, reference, tmp_path, drift_share_threshold=0.0)
