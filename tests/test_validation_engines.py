"""The vectorised validation engine and the full-GX engine give the same result.

``validate_events`` (engine ``"vectorised"``) evaluates the row-level checks over whole columns
and lets GX validate each batch's representative rows; ``engine="gx"`` lets GX evaluate every
row. On crafted bad inputs, tables and files alike, both must keep the same valid rows and
quarantine the same rows with the same stage, reason and excerpt, with the same counts and the
same expectations table.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from anomaly_pipeline import schema, validation
from anomaly_pipeline.sources.darpa import read_darpa
from anomaly_pipeline.sources.lanl import read_lanl
from anomaly_pipeline.validation import (
    ValidationPolicy,
    ValidationResult,
    _rolling_offsets,
    _sorted_offsets,
    validate_events,
)
from tests.test_validation import _events, _good, _minutes

POLICY = ValidationPolicy(ts_max=pd.Timestamp("2030-01-01", tz="UTC"))
OLD_POLICY = ValidationPolicy(ts_min=pd.Timestamp("1990-01-01", tz="UTC"), ts_max=pd.Timestamp("2030-01-01", tz="UTC"))


def same_result(raw: pd.DataFrame, policy: ValidationPolicy = POLICY, *, engine: str = "vectorised") -> ValidationResult:
    """Validate with both engines, assert every output is equal; the vectorised result."""
    fast = validate_events(raw.copy(), policy)
    full = validate_events(raw.copy(), policy, engine="gx")
    assert fast.engine == engine
    assert full.engine == "gx"
    pd.testing.assert_frame_equal(fast.valid, full.valid)
    pd.testing.assert_frame_equal(fast.quarantined, full.quarantined)
    pd.testing.assert_frame_equal(fast.expectations, full.expectations)
    assert (fast.rows_read, fast.rows_valid, fast.rows_quarantined, fast.rows_duplicate) == (
        full.rows_read,
        full.rows_valid,
        full.rows_quarantined,
        full.rows_duplicate,
    )
    assert fast.reason_counts == full.reason_counts
    assert list(fast.reason_counts) == list(full.reason_counts)
    assert fast.gx_success == full.gx_success
    assert fast.policy == full.policy
    fast_summary, full_summary = fast.summary(), full.summary()
    assert fast_summary.pop("engine") == engine and full_summary.pop("engine") == "gx"
    assert fast_summary == full_summary
    return fast


def test_every_row_rule_fails_alike() -> None:
    rows = [
        _good(),
        _good("2024-03-01T10:00:01Z", dst_port=70000),
        _good("2024-03-01T10:00:02Z", bytes_out=-1.0),
        _good("2024-03-01T10:00:03Z", event_type="teleport"),
        _good("1970-01-01T00:00:00Z"),
        _good("2100-01-01T00:00:00Z"),
        _good("2024-03-01T10:00:04Z", label=2),
        _good("2024-03-01T10:00:05Z", protocol="carrier_pigeon"),
        _good("2024-03-01T10:00:06Z", duration_s=2e13),
        _good("2024-03-01T08:00:00Z"),  # behind
        _good("2024-03-01T10:00:07Z", dst_port=-1, event_type="teleport", auth_type="magic", logon_type="psychic"),
        _good("2024-03-01T10:00:08Z", packets=1e14, bytes_in=-5.0, label=-1),
        _good("2024-03-01T10:00:09Z"),
    ]
    result = same_result(_events(rows))
    assert result.rows_quarantined == 11
    assert result.gx_success is False


def test_clean_table_and_empty_table() -> None:
    clean = same_result(_events([_good(t, auth_type="kerberos", logon_type="network") for t in _minutes(50)]))
    assert clean.rows_valid == 50 and clean.gx_success
    empty = same_result(schema.empty_events())
    assert empty.rows_read == 0


def test_nulls_in_required_columns() -> None:
    raw = _events([_good(t) for t in _minutes(6)])
    raw.loc[1, "event_type"] = pd.NA
    raw.loc[2, "ts"] = pd.NaT
    raw.loc[3, "event_type"] = None  # pandas stores pd.NA either way
    raw.loc[4, "source"] = pd.NA
    raw.loc[5, "raw_ref"] = pd.NA
    result = same_result(raw)
    assert result.rows_quarantined == 5


def test_out_of_order_and_future_dated_lines() -> None:
    times = _minutes(120)
    times[10] = "2024-02-20T00:00:00Z"  # one past-dated line
    times[50] = "2029-06-01T00:00:00Z"  # one future-dated line
    for k in range(80, 90):  # a burst of ten future-dated lines
        times[k] = f"2024-03-05T00:00:{k - 80:02d}Z"
    times[100], times[101] = times[101], times[100]  # a swap within tolerance
    result = same_result(_events([_good(t) for t in times]))
    assert result.rows_quarantined == 12


def test_interleaved_files_and_a_real_step_back() -> None:
    rows = []
    for i, t in enumerate(_minutes(60)):
        rows.append(_good(t, raw_ref=f"a.csv:{i + 1}"))
        back = pd.Timestamp(t) - pd.Timedelta(hours=3 if 30 <= i < 40 else 0)
        rows.append(_good(back.isoformat(), raw_ref=f"dir/b:x.csv:{i + 1}"))
    result = same_result(_events(rows))
    assert result.rows_quarantined == 10
    # Unsorted files (every row jittered) take the rolling medians; still the same.
    rng = np.random.default_rng(3)
    jittered = [(pd.Timestamp(t) + pd.Timedelta(seconds=int(s))).isoformat()
                for t, s in zip(_minutes(200), rng.integers(-400, 400, 200), strict=True)]
    jittered[77] = "2024-03-01T00:00:00Z"
    same_result(_events([_good(t) for t in jittered]), ValidationPolicy(ts_max=POLICY.ts_max, order_tolerance_s=300))


def test_duplicates_and_parse_errors() -> None:
    raw = _events([_good(t) for t in _minutes(8)])
    raw.loc[3, "event_id"] = "e1"
    raw.loc[5, "event_id"] = "e1"
    raw["parse_error"] = pd.array([pd.NA, pd.NA, "bad number: x", pd.NA, pd.NA, pd.NA, "empty line", pd.NA],
                                  dtype="string")
    raw["raw_excerpt"] = pd.array([pd.NA, pd.NA, "junk", pd.NA, pd.NA, pd.NA, "", pd.NA], dtype="string")
    raw.loc[2, ["ts", "event_type"]] = [pd.NaT, pd.NA]
    raw.loc[7, "dst_port"] = 99999
    result = same_result(raw)
    assert (result.rows_duplicate, result.rows_quarantined) == (2, 5)


def test_table_level_failures_take_the_gx_engine() -> None:
    raw = _events([_good(), _good("2024-03-01T10:00:01Z", dst_port=70000)])
    same_result(raw.drop(columns=["protocol"]), engine="gx")
    naive = raw.copy()
    naive["ts"] = naive["ts"].dt.tz_localize(None)
    same_result(naive, engine="gx")
    objects = raw.copy()
    objects["user"] = objects["user"].astype(object)
    same_result(objects, engine="gx")
    floats = raw.copy()
    floats["dst_port"] = floats["dst_port"].astype("float64")  # wrong dtype column
    same_result(floats, engine="gx")


def test_memoised_gx_configurations_change_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """GX's results are the same with the per-validation configuration memo as without it."""
    raw = _events(
        [
            _good(),
            _good("2024-03-01T10:00:01Z", dst_port=70000),
            _good("2024-03-01T10:00:02Z", event_type="teleport", label=2),
            _good("2100-01-01T00:00:00Z"),
            _good("2024-03-01T10:00:03Z"),
        ]
    )
    results = {}
    for memo in (True, False):
        if not memo:
            monkeypatch.setattr(validation, "_configurations_memoised", contextlib.nullcontext)
        for engine in ("vectorised", "gx"):
            results[memo, engine] = validate_events(raw.copy(), POLICY, engine=engine)
    for engine in ("vectorised", "gx"):
        memoised, plain = results[True, engine], results[False, engine]
        assert memoised.engine == plain.engine == engine
        pd.testing.assert_frame_equal(memoised.quarantined, plain.quarantined)
        pd.testing.assert_frame_equal(memoised.expectations, plain.expectations)
        assert memoised.summary() == plain.summary()
    assert validation._CONFIGURATION_MEMO.get() is None  # only active inside a validation


def test_unusual_values_in_contract_dtypes() -> None:
    raw = _events([_good(t) for t in _minutes(5)])
    # A NaN that is a value, not a null, in a Float64 column (FloatingArray keeps it unmasked).
    raw["bytes_out"] = pd.arrays.FloatingArray(np.array([1.0, np.nan, 3.0, 4.0, 5.0]), np.zeros(5, dtype=bool))
    raw["ts"] = raw["ts"].astype("datetime64[ns, UTC]")
    result = same_result(raw)
    assert result.rows_quarantined == 1
    # Equal strings that are distinct objects, and many distinct categorical values.
    many = _events([_good(t, protocol=f"p{i}" if i % 2 else "tcp") for i, t in enumerate(_minutes(300))])
    many["event_type"] = pd.array(["".join(["net", "work_flow"]) for _ in range(300)], dtype="string")
    assert same_result(many).rows_quarantined == 150


def test_every_row_failing() -> None:
    raw = _events([_good(t, dst_port=70000 + i) for i, t in enumerate(_minutes(400))])
    assert same_result(raw).rows_valid == 0


LANL_LINES = [
    b"1,U1@DOM1,U1@DOM1,C1,C2,Kerberos,Network,LogOn,Success",
    b"2,U2@DOM1,U2@DOM1,C3,C2,NTLM,Network,LogOn,Fail",
    b"2,U2@DOM1,U2@DOM1,C3,C2,Kerberos,Network,LogOn",  # wrong field count
    b"",  # empty line
    b"soon,U2@DOM1,U2@DOM1,C3,C2,Kerberos,Network,LogOn,Success",  # bad time
    b"3,U3@DOM1,U3@DOM1,C4,C4,Negotiate,Service,LogOn,Maybe",  # bad success/failure
    b"\xde\xad\x00\xbe\xef,,,,,,,,",  # binary
    b"900000,U4@DOM1,U4@DOM1,C5,C6,?,?,TGS,Success",  # future-dated (10 days ahead)
    b"4,U5@DOM1,U5@DOM1,C7,C8,Wave,NewCredentials,LogOn,Success",
]


def test_crafted_lanl_file(tmp_path: Path) -> None:
    lines = LANL_LINES + [f"{5 + i},U{i}@DOM1,U{i}@DOM1,C{i},C1,Kerberos,Network,LogOn,Success".encode()
                          for i in range(40)]
    lines[30] = b"-99999,U9@DOM1,U9@DOM1,C9,C1,Kerberos,Network,LogOn,Success"  # far behind
    path = tmp_path / "auth.txt"
    path.write_bytes(b"\n".join(lines) + b"\n")
    raw = read_lanl(path, kind="auth")
    result = same_result(raw, OLD_POLICY)
    assert result.reason_counts.get("parse: wrong field count") == 1
    assert "auth.txt:8" in set(result.quarantined["raw_ref"])
    assert "auth.txt:31" in set(result.quarantined["raw_ref"])


def test_crafted_darpa_file(tmp_path: Path) -> None:
    lines = [f"172.016.{i % 7:03d}.001,172.016.000.{i % 5:03d},07/31/1998-23:{i % 60:02d},-".encode() for i in range(50)]
    lines[5] = b"172.016.000.001,172.016.000.002,07/32/1998-05:31,httptunnel-e"  # not a date
    lines[9] = b"172.016.000.001,172.016.000.002,07/31/1998-23:09"  # 3 fields
    lines[20] = b"172.016.000.001,172.016.000.002,07/20/1998-01:00,neptune"  # far behind
    lines.sort(key=lambda line: line.count(b",") == 3 and b"07/31" in line)  # out of order
    path = tmp_path / "darpa.csv"
    path.write_bytes(b"\n".join(lines) + b"\n")
    for roll in (False, True):
        raw = read_darpa(path, roll_over_days=roll)
        same_result(raw, OLD_POLICY)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 30, 31, 32, 33, 64, 500])
@pytest.mark.parametrize("window", [1, 2, 5, 31])
def test_sorted_offsets_equal_the_rolling_medians(n: int, window: int) -> None:
    rng = np.random.default_rng(n * 100 + window)
    seconds = np.sort(1.7e9 + rng.integers(0, 50, n).astype(np.float64) * rng.choice([1.0, 0.5, 3600.0]))
    behind, ahead = _sorted_offsets(seconds, window)
    ref_behind, ref_ahead = _rolling_offsets(seconds, np.zeros(n, dtype=np.int64), window)
    np.testing.assert_array_equal(behind, ref_behind)
    np.testing.assert_array_equal(ahead, ref_ahead)
