"""A file of malformed lines goes through the ingestion assets without a crash: every bad line is
in quarantine with its line number and reason, and the counts reconcile exactly."""

from __future__ import annotations

import dagster as dg

from assets.ingestion import raw_events
from assets.resources import EventSourceResource, LocalStateIOManager
from assets.validation import validate_raw_events

HEADER = "event_id,ts,event_type,user,src_host,dst_host,dst_port,bytes_out,success"
GOOD = [
    "e1,2026-01-05T09:00:00Z,auth,u1,WS1,SRV1,,,true",
    "e2,2026-01-05T09:01:00Z,network_flow,u1,WS1,SRV1,445,1200,",
    "e3,2026-01-05T09:02:00Z,process_start,u1,WS1,,,,",
]


def _write(tmp_path, lines: list[bytes]):
    path = tmp_path / "events.csv"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _materialize(tmp_path, path):
    return dg.materialize(
        [raw_events, validate_raw_events],
        resources={
            "event_source": EventSourceResource(kind="file", path=str(path)),
            "io_manager": LocalStateIOManager(base_dir=str(tmp_path / "state")),
        },
        raise_on_error=False,
    )


def test_malformed_lines_are_quarantined_with_line_and_reason(tmp_path):
    lines = [HEADER.encode(), *(g.encode() for g in GOOD)]
    lines += [
        b"e4,2026-01-05T09:03:00Z,auth",  # line 5: wrong column count
        b"e5,not-a-time,auth,u1,WS1,SRV1,,,true",  # line 6: bad timestamp
        b"",  # line 7: empty
        b"\x00\xff\xfe garbage \x80",  # line 8: binary
        b"e9,2026-01-05T09:04:00Z,network_flow,u1,WS1,SRV1,70000,10,",  # line 9: port out of range
        b"e10,2026-01-05T09:05:00Z,teleport,u1,WS1,SRV1,,,",  # line 10: unknown event type
        b"e11,2026-01-05T09:06:00Z,auth,u1,WS1,SRV1,,,true," + b"x" * 1_100_000,  # line 11: 1 MB line
        b"e12,2026-01-05T09:07:00Z,network_flow,u1,WS1,SRV1,443,-5,",  # line 12: negative bytes
    ]
    result = _materialize(tmp_path, _write(tmp_path, lines))

    valid = result.asset_value("validated_events")
    quarantine = result.asset_value("quarantined_events").set_index("raw_ref")
    assert sorted(valid["event_id"]) == ["e1", "e2", "e3"]
    assert sorted(quarantine.index, key=lambda r: int(r.split(":")[1])) == [
        f"events.csv:{n}" for n in range(5, 13)
    ]
    reasons = quarantine["reason"].to_dict()
    assert "column count" in reasons["events.csv:5"]
    assert "timestamp" in reasons["events.csv:6"]
    assert "empty line" in reasons["events.csv:7"]
    assert "dst_port" in reasons["events.csv:9"]
    assert "event_type" in reasons["events.csv:10"]
    assert "too long" in reasons["events.csv:11"]
    assert "bytes_out" in reasons["events.csv:12"]

    mats = {
        e.event_specific_data.materialization.asset_key.to_user_string(): e.event_specific_data.materialization.metadata
        for e in result.get_asset_materialization_events()
    }
    counts = mats["validated_events"]
    assert counts["rows_read"].value == 11 == counts["rows_valid"].value + counts["rows_quarantined"].value
    assert mats["raw_events"]["parse_errors"].value == 5

    # 8 of 11 rows quarantined: the blocking check fails and says what to do.
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks["input_is_complete"].passed  # a plain file: nothing cut short
    check = checks["quarantine_rate_below_threshold"]
    assert not check.passed
    assert "inspect quarantined_events" in check.description


def test_clean_file_passes_the_quarantine_check(tmp_path):
    result = _materialize(tmp_path, _write(tmp_path, [HEADER.encode(), *(g.encode() for g in GOOD)]))
    assert result.success
    assert len(result.asset_value("quarantined_events")) == 0
    assert result.get_asset_check_evaluations()[0].passed


def test_the_source_resource_reads_any_supported_format(tmp_path):
    """A Zeek conn.log chosen by configuration alone goes through the same assets."""
    import os
    from pathlib import Path

    import pytest

    data = Path(os.environ.get("ANOMALY_PIPELINE_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "datasets"))
    capture = data / "stratosphere" / "008-zeek-mixed.conn.log.labeled"
    if not capture.exists():
        pytest.skip(f"Stratosphere capture not found at {capture}")
    result = _materialize(tmp_path, capture)
    valid = result.asset_value("validated_events")
    quarantined = result.asset_value("quarantined_events")
    assert len(valid) > 5000 and (valid["source"] == "zeek").all()
    assert valid["label"].notna().any()
    mats = {e.event_specific_data.materialization.asset_key.to_user_string(): e.event_specific_data.materialization.metadata
            for e in result.get_asset_materialization_events()}
    assert mats["validated_events"]["rows_read"].value == len(valid) + len(quarantined)
