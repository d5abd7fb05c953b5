"""Validation with Great Expectations: each failing row is quarantined with a precise reason."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from anomaly_pipeline import schema
from anomaly_pipeline.validation import (
    HELPER_COLUMNS,
    ValidationPolicy,
    ValidationResult,
    validate_events,
)

POLICY = ValidationPolicy(ts_max=pd.Timestamp("2030-01-01", tz="UTC"))
TS_RANGE = "[2000-01-01T00:00:00+00:00, 2030-01-01T00:00:00+00:00]"
BETWEEN = "expect_column_values_to_be_between"
IN_SET = "expect_column_values_to_be_in_set"
NOT_NULL = "expect_column_values_to_not_be_null"


def _events(rows: list[dict], source: str = "test") -> pd.DataFrame:
    """A conformed table (no envelope columns) with raw_ref test.csv:<n> in row order."""
    frame = pd.DataFrame(rows)
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    frame["event_id"] = [f"e{i}" for i in range(len(frame))]
    frame["raw_ref"] = frame.get("raw_ref", pd.Series([f"test.csv:{i + 2}" for i in range(len(frame))]))
    return schema.conform(frame, source=source)


def _reasons(result: ValidationResult) -> dict[str, str]:
    return dict(zip(result.quarantined["raw_ref"], result.quarantined["reason"], strict=True))


def _good(ts: str = "2024-03-01T10:00:00Z", **extra) -> dict:
    return {"ts": ts, "event_type": "network_flow", "src_host": "WS1", "dst_host": "SRV1",
            "dst_port": 443, "protocol": "tcp", "bytes_out": 10.0, "packets": 2.0, "label": 0, **extra}  # fmt: skip


def test_clean_table_passes_untouched() -> None:
    raw = _events([_good(), _good("2024-03-01T10:00:01Z", auth_type="kerberos", logon_type="network")])
    result = validate_events(raw, POLICY)
    assert result.gx_success is True
    assert (result.rows_read, result.rows_valid, result.rows_quarantined) == (2, 2, 0)
    pd.testing.assert_frame_equal(result.valid, raw)
    assert result.expectations["success"].all()
    assert list(result.quarantined.columns) == list(schema.QUARANTINE_COLUMNS)


def test_each_rule_names_column_and_value() -> None:
    raw = _events(
        [
            _good(),  # test.csv:2 valid
            _good("2024-03-01T10:00:01Z", dst_port=70000),  # 3
            _good("2024-03-01T10:00:02Z", bytes_out=-1.0),  # 4
            _good("2024-03-01T10:00:03Z", event_type="teleport"),  # 5
            _good("1970-01-01T00:00:00Z"),  # 6
            _good("2100-01-01T00:00:00Z"),  # 7
            _good("2024-03-01T10:00:04Z", label=2),  # 8
            _good("2024-03-01T10:00:05Z", protocol="carrier_pigeon"),  # 9
            _good("2024-03-01T10:00:06Z", duration_s=2e13),  # 10
            _good("2024-03-01T08:00:00Z"),  # 11: 2 h 5 s behind 10:00:05, the last confirmed time
            _good("2024-03-01T10:00:07Z"),  # 12 valid
        ]
    )
    result = validate_events(raw, POLICY)
    assert _reasons(result) == {
        "test.csv:3": f"{BETWEEN}: dst_port=70000 outside [0, 65535]",
        "test.csv:4": f"{BETWEEN}: bytes_out=-1 outside [0, 1e+13]",
        "test.csv:5": f"{IN_SET}: event_type='teleport' not one of {', '.join(schema.EVENT_TYPES)}",
        "test.csv:6": f"{BETWEEN}: ts=1970-01-01T00:00:00+00:00 outside {TS_RANGE}",
        "test.csv:7": f"{BETWEEN}: ts=2100-01-01T00:00:00+00:00 outside {TS_RANGE}",
        "test.csv:8": f"{IN_SET}: label=2 not one of 0, 1",
        "test.csv:9": f"{IN_SET}: protocol='carrier_pigeon' not one of {', '.join(schema.PROTOCOLS)}",
        "test.csv:10": f"{BETWEEN}: duration_s=20000000000000 outside [0, 1e+13]",
        "test.csv:11": (
            f"{BETWEEN}: ts=2024-03-01T08:00:00+00:00 is 7205 s behind the time confirmed by the earlier rows "
            "of its file (tolerance 3600 s)"
        ),
    }
    assert set(result.quarantined["stage"]) == {"validation"}
    assert result.valid["raw_ref"].tolist() == ["test.csv:2", "test.csv:12"]
    assert result.gx_success is False
    # Without an ingestion excerpt, the quarantine shows the row's fields.
    excerpt = dict(zip(result.quarantined["raw_ref"], result.quarantined["raw_excerpt"], strict=True))
    assert excerpt["test.csv:3"].startswith(
        "event_id='e1', ts=2024-03-01T10:00:01+00:00, event_type='network_flow'"
    )
    assert "dst_port=70000" in excerpt["test.csv:3"]


def test_row_failing_several_rules_lists_all_and_counts_once() -> None:
    raw = _events([_good(), _good("2024-03-01T10:00:01Z", dst_port=-1, event_type="teleport")])
    result = validate_events(raw, POLICY)
    assert result.rows_quarantined == 1
    reason = _reasons(result)["test.csv:3"]
    assert f"{BETWEEN}: dst_port=-1 outside [0, 65535]" in reason
    assert f"{IN_SET}: event_type='teleport' not one of" in reason
    table = result.expectations.set_index(["expectation", "column"])
    assert table.loc[(BETWEEN, "dst_port"), "unexpected_count"] == 1
    assert table.loc[(IN_SET, "event_type"), "unexpected_count"] == 1
    assert table.loc[(BETWEEN, "dst_port"), "unexpected_percent"] == pytest.approx(50.0)
    assert not table.loc[(BETWEEN, "dst_port"), "success"]
    assert table.loc[(BETWEEN, "bytes_out"), "success"]


def test_required_nulls_are_quarantined() -> None:
    raw = _events([_good(), _good("2024-03-01T10:00:01Z")])
    raw.loc[1, "event_type"] = pd.NA
    raw.loc[1, "ts"] = pd.NaT
    result = validate_events(raw, POLICY)
    assert _reasons(result) == {
        "test.csv:3": f"{NOT_NULL}: ts is null (required); {NOT_NULL}: event_type is null (required)"
    }


def test_nulls_in_optional_columns_are_allowed() -> None:
    raw = _events([{"ts": "2024-03-01T10:00:00Z", "event_type": "auth"}])
    assert validate_events(raw, POLICY).rows_valid == 1


def test_order_tolerance_is_per_file_and_configurable() -> None:
    raw = _events(
        [
            {"ts": "2024-03-01T12:00:00Z", "event_type": "auth", "raw_ref": "a.csv:2"},
            # Another file interleaved: its own clock, not behind a.csv.
            {"ts": "2024-03-01T09:00:00Z", "event_type": "auth", "raw_ref": "b.csv:2"},
            {"ts": "2024-03-01T12:01:00Z", "event_type": "auth", "raw_ref": "a.csv:3"},
            {"ts": "2024-03-01T11:30:00Z", "event_type": "auth", "raw_ref": "a.csv:4"},  # 1800 s behind 12:00
            {"ts": "2024-03-01T09:10:00Z", "event_type": "auth", "raw_ref": "b.csv:3"},
            {"ts": "2024-03-01T12:02:00Z", "event_type": "auth", "raw_ref": "a.csv:5"},
        ]
    )
    assert validate_events(raw, POLICY).rows_quarantined == 0
    strict = validate_events(raw, ValidationPolicy(ts_max=POLICY.ts_max, order_tolerance_s=600))
    assert list(_reasons(strict)) == ["a.csv:4"]
    assert "is 1800 s behind" in _reasons(strict)["a.csv:4"]  # a.csv:2 confirmed by a.csv:3
    assert "(tolerance 600 s)" in _reasons(strict)["a.csv:4"]


def _minutes(n: int, start: str = "2024-03-01T10:00:00Z") -> list[str]:
    """``n`` times one minute apart, ISO strings."""
    first = pd.Timestamp(start)
    return [(first + pd.Timedelta(minutes=i)).isoformat() for i in range(n)]


@pytest.mark.parametrize("position", [0, 1, 50, 98])
def test_one_future_dated_line_loses_exactly_that_line(position: int) -> None:
    # Issue 13: a plausible but later time (an hour before now, in a file from 2024) used to
    # raise the running maximum, so every later line was quarantined and the bad one passed.
    times = _minutes(100)
    times[position] = (pd.Timestamp.now(tz="UTC").floor("s") - pd.Timedelta(hours=1)).isoformat()
    raw = _events([_good(t) for t in times])
    result = validate_events(raw)
    assert list(_reasons(result)) == [f"test.csv:{position + 2}"]
    reason = _reasons(result)[f"test.csv:{position + 2}"]
    assert "ahead of the rows of its file before it and of the median of the 31 after it" in reason
    assert result.rows_valid == 99


def test_one_past_dated_line_loses_exactly_that_line() -> None:
    times = _minutes(100)
    times[40] = "2024-02-20T00:00:00Z"
    result = validate_events(_events([_good(t) for t in times]), POLICY)
    assert list(_reasons(result)) == ["test.csv:42"]
    assert "behind the time confirmed by the earlier rows" in _reasons(result)["test.csv:42"]


def test_two_rows_that_disagree_blame_neither() -> None:
    # Found by the fuzz suite: with one row after it and none before, a row is not "ahead" (one
    # row's word against another's); the rule needs two witnesses.
    result = validate_events(_events([_good("2024-03-01T10:00:00Z"), _good("2023-03-01T10:00:00Z")]), POLICY)
    assert result.rows_quarantined == 0


def test_a_real_jump_in_time_is_accepted_and_a_real_step_back_is_not() -> None:
    # 40 rows, then a 5 h gap (a quiet night): the rows after it confirm the new time.
    times = _minutes(40) + _minutes(40, "2024-03-01T15:40:00Z")
    assert validate_events(_events([_good(t) for t in times]), POLICY).rows_quarantined == 0
    # 40 rows, then 40 rows from 2 h earlier: those are behind, as before, not the rows before them.
    times = _minutes(40) + _minutes(40, "2024-03-01T08:00:00Z")
    result = validate_events(_events([_good(t) for t in times]), POLICY)
    assert sorted(_reasons(result), key=lambda r: int(r.split(":")[1])) == [f"test.csv:{i + 2}" for i in range(40, 80)]


def test_a_burst_shorter_than_half_the_window_cannot_move_the_reference() -> None:
    times = _minutes(200)
    later = pd.Timestamp("2024-03-05T00:00:00Z")
    for k in range(100, 110):  # ten consecutive future-dated lines
        times[k] = (later + pd.Timedelta(seconds=k)).isoformat()
    result = validate_events(_events([_good(t) for t in times]), POLICY)
    assert list(_reasons(result)) == [f"test.csv:{k + 2}" for k in range(100, 110)]


def test_duplicate_event_ids_are_dropped_knowingly_and_counted() -> None:
    raw = _events([_good(t) for t in _minutes(5)])
    raw.loc[3, "event_id"] = "e1"
    raw.loc[4, "event_id"] = "e1"
    result = validate_events(raw, POLICY)
    assert result.valid["event_id"].tolist() == ["e0", "e1", "e2"]
    assert (result.rows_read, result.rows_valid, result.rows_quarantined, result.rows_duplicate) == (5, 3, 2, 2)
    q = result.quarantined
    assert q["stage"].tolist() == ["duplicate", "duplicate"]
    assert q["reason"].tolist() == [
        "duplicate event_id: 'e1' was already read at test.csv:3; this repeat is dropped and the first one kept"
    ] * 2
    assert q["raw_excerpt"].iloc[0].startswith("event_id='e1', ts=2024-03-01T10:03:00+00:00")
    assert result.reason_counts == {"duplicate: event_id": 2}
    assert result.summary()["rows_duplicate"] == 2


def test_a_duplicate_of_an_unparsed_row_is_not_a_duplicate() -> None:
    raw = _events([_good(t) for t in _minutes(2)])
    raw["event_id"] = pd.array(["same", "same"], dtype="string")
    raw["parse_error"] = pd.array(["empty line", pd.NA], dtype="string")
    raw["raw_excerpt"] = pd.array(["", pd.NA], dtype="string")
    result = validate_events(raw, POLICY)
    assert result.rows_duplicate == 0
    assert result.valid["raw_ref"].tolist() == ["test.csv:3"]


def test_out_of_range_ts_does_not_drag_the_order_check() -> None:
    # A row in 2100 is rejected for its range; it must not make every later row "behind".
    raw = _events([_good(), _good("2100-01-01T00:00:00Z"), _good("2024-03-01T10:00:01Z")])
    result = validate_events(raw, POLICY)
    assert list(_reasons(result)) == ["test.csv:3"]


def test_parse_errors_go_straight_to_quarantine() -> None:
    raw = _events([_good(), _good("2024-03-01T10:00:01Z")])
    raw["parse_error"] = pd.array([pd.NA, "empty line"], dtype="string")
    raw["raw_excerpt"] = pd.array([pd.NA, ""], dtype="string")
    raw.loc[1, ["ts", "event_type"]] = [pd.NaT, pd.NA]  # as ingestion leaves a bad row
    result = validate_events(raw, POLICY)
    q = result.quarantined
    assert q[["raw_ref", "stage", "reason", "raw_excerpt"]].values.tolist() == [
        ["test.csv:3", "parse", "empty line", ""]
    ]
    assert result.gx_success is True  # GX saw only the parsed row
    assert list(result.valid.columns) == list(schema.EVENT_COLUMNS)  # envelope dropped


def test_empty_table() -> None:
    result = validate_events(schema.empty_events(), POLICY)
    assert (result.rows_read, result.rows_valid, result.rows_quarantined) == (0, 0, 0)
    assert result.gx_success is True
    assert {c: str(t) for c, t in result.valid.dtypes.items()} == schema.EVENT_DTYPES
    assert list(result.quarantined.columns) == list(schema.QUARANTINE_COLUMNS)
    assert len(result.expectations) > 20  # GX still ran the suite
    assert result.summary()["quarantine_rate"] == 0.0


def test_missing_column_quarantines_every_row_with_the_reason() -> None:
    raw = _events([_good(), _good("2024-03-01T10:00:01Z")]).drop(columns=["protocol"])
    result = validate_events(raw, POLICY)
    assert result.rows_valid == 0
    assert result.rows_quarantined == 2
    assert set(result.quarantined["reason"]) == {
        "expect_table_columns_to_match_set: columns do not match the contract: "
        "missing ['protocol'], unexpected []"
    }
    assert result.gx_success is False


def test_wrong_dtype_quarantines_every_row_with_the_reason() -> None:
    raw = _events([_good(), _good("2024-03-01T10:00:01Z")])
    raw["ts"] = raw["ts"].dt.tz_localize(None)  # naive timestamps break the contract
    result = validate_events(raw, POLICY)
    assert result.rows_quarantined == 2
    assert set(result.quarantined["reason"]) == {
        "expect_column_values_to_be_of_type: column ts has dtype datetime64[ns], "
        "the contract says datetime64[ns, UTC]"
    }


def test_summary_is_json_and_reconciles() -> None:
    raw = _events([_good(), _good("2024-03-01T10:00:01Z", dst_port=70000), _good("2024-03-01T10:00:02Z")])
    raw["parse_error"] = pd.array(
        [pd.NA, pd.NA, "bad number: column x value 'y' is not a number"], dtype="string"
    )
    raw["raw_excerpt"] = pd.array([pd.NA, pd.NA, "junk"], dtype="string")
    summary = validate_events(raw, POLICY).summary()
    assert json.loads(json.dumps(summary)) == summary
    assert summary["rows_read"] == 3
    assert summary["rows_valid"] == 1
    assert summary["rows_quarantined"] == 2
    assert summary["quarantine_rate"] == pytest.approx(2 / 3)
    assert summary["quarantine_reasons"] == {
        "parse: bad number": 1,
        f"validation: {BETWEEN}(dst_port)": 1,
    }
    port = [e for e in summary["expectations"] if e["expectation"] == BETWEEN and e["column"] == "dst_port"]
    assert port == [
        {
            "expectation": BETWEEN,
            "column": "dst_port",
            "success": False,
            "unexpected_count": 1,
            "unexpected_percent": 50.0,
            "details": None,
        }
    ]
    assert summary["policy"]["ts_max"] == "2030-01-01T00:00:00+00:00"


def test_order_helper_columns_are_not_in_the_output() -> None:
    result = validate_events(_events([_good()]), POLICY)
    for column in HELPER_COLUMNS:
        assert column not in result.valid.columns
        assert column in set(result.expectations["column"].dropna())


def test_default_policy_accepts_today_and_rejects_next_week() -> None:
    now = pd.Timestamp.now(tz="UTC").floor("s")
    raw = _events([_good(now.isoformat()), _good((now + pd.Timedelta(days=7)).isoformat())])
    result = validate_events(raw)
    assert result.valid["raw_ref"].tolist() == ["test.csv:2"]


def test_invalid_policy_is_rejected() -> None:
    with pytest.raises(ValueError, match="ts_min .* is after ts_max"):
        validate_events(_events([_good()]), ValidationPolicy(ts_min=pd.Timestamp("2031-01-01")))


def test_index_of_input_does_not_matter() -> None:
    raw = _events([_good(), _good("2024-03-01T10:00:01Z", dst_port=70000)])
    raw.index = pd.Index([100, 7])
    result = validate_events(raw, POLICY)
    assert list(_reasons(result)) == ["test.csv:3"]
    assert result.valid.index.equals(pd.RangeIndex(1))
    assert np.array_equal(result.valid["raw_ref"].to_numpy(), np.array(["test.csv:2"], dtype=object))
