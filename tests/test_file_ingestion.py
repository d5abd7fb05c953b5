"""Reading canonical event files: every physical line is one row, bad lines say exactly why.

The fixture files are written under pytest's tmp_path; each holds good lines and one line of
each kind of damage a user meets in practice, at a known line number. The tests check what a
user would see: which line landed in quarantine, with which reason, and that the good rows
arrive intact with the contract's dtypes.
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pandas as pd
import pytest

from anomaly_pipeline import schema
from anomaly_pipeline.sources.files import iter_event_file, read_event_file
from anomaly_pipeline.validation import ValidationPolicy, validate_events

# Fixed bounds so reasons that quote ts_max are reproducible.
POLICY = ValidationPolicy(ts_max=pd.Timestamp("2030-01-01", tz="UTC"))
TS_RANGE = "[2000-01-01T00:00:00+00:00, 2030-01-01T00:00:00+00:00]"
EVENT_TYPES = ", ".join(schema.EVENT_TYPES)
LONG_LINE_BYTES = 1_100_000


def _garbage() -> bytes:
    """Binary junk: a NUL at byte 4, invalid UTF-8, then random bytes without line breaks."""
    rng = random.Random(7)
    tail = bytes(b for b in rng.randbytes(64) if b not in (0x0A, 0x0D))
    return b"\xde\xad\xbe\xef\x00\xff\xfe" + tail


CSV_HEADER = (
    b"event_id,ts,event_type,user,src_host,dst_host,dst_port,protocol,success,bytes_out,bytes_in,label"
)
CSV_LINES: list[bytes] = [
    CSV_HEADER,  # line 1
    b"g1,2024-03-01T10:00:00Z,auth,alice,WS1,DC1,,,true,,,0",  # 2 good
    b"g2,2024-03-01T10:00:05+00:00,network_flow,,WS1,SRV1,443,tcp,,1200,3400,0",  # 3 good
    b"g3,2024-03-01T10:00:06Z,auth,bob",  # 4 wrong column count
    b"g4,yesterday,auth,bob,WS2,DC1,,,true,,,0",  # 5 non-numeric timestamp
    b"",  # 6 empty line
    _garbage(),  # 7 binary garbage
    b"g5," + b"x" * LONG_LINE_BYTES,  # 8 longer than 1 MiB
    b"g6,2024-03-01T10:00:07Z,network_flow,,WS1,SRV1,70000,tcp,,10,10,0",  # 9 port out of range
    b"g7,2024-03-01T10:00:08Z,network_flow,,WS1,SRV1,80,tcp,,-5,10,0",  # 10 negative bytes
    b"g8,2024-03-01T10:00:09Z,logon_magic,carol,WS3,DC1,,,true,,,0",  # 11 unknown event_type
    b"g9,1970-01-01T00:00:00Z,auth,dave,WS4,DC1,,,true,,,0",  # 12 ts in 1970
    b"g10,2100-01-01T00:00:00Z,auth,dave,WS4,DC1,,,true,,,0",  # 13 ts in 2100
    b"g11,1709287210,auth,dave,WS4,DC1,,,false,,,1",  # 14 good, epoch seconds
    b'g12,2024-03-01T10:00:11Z,dns,"smith, j",WS5,DNS1,53,udp,,,,0',  # 15 good, quoted comma
    b"g13,2024-03-01T10:00:12Z,network_flow,,WS1,SRV1,80,tcp,,lots,10,0",  # 16 non-numeric bytes
    b"g14,2024-03-01T10:00:13Z,auth,\xff\xfeuser,WS1,DC1,,,true,,,0",  # 17 invalid UTF-8, no NUL
    b"g15,2024-03-01T08:00:00Z,auth,erin,WS6,DC1,,,true,,,0",  # 18 2 h behind the confirmed time
]

CSV_PARSE_ERRORS = {
    "events.csv:4": "wrong column count: expected 12 columns (as in the header), got 4",
    "events.csv:5": "bad timestamp: column ts value 'yesterday' is not ISO-8601 or epoch seconds",
    "events.csv:6": "empty line",
    "events.csv:7": "binary data: NUL byte at byte offset 4",
    "events.csv:8": f"line too long: {LONG_LINE_BYTES + 3} bytes, more than max_line_bytes=1048576",
    "events.csv:16": "bad number: column bytes_out value 'lots' is not a number",
    "events.csv:17": "not valid UTF-8: invalid start byte at byte offset 30",
}
CSV_VALIDATION_ERRORS = {
    "events.csv:9": "expect_column_values_to_be_between: dst_port=70000 outside [0, 65535]",
    "events.csv:10": "expect_column_values_to_be_between: bytes_out=-5 outside [0, 1e+13]",
    "events.csv:11": f"expect_column_values_to_be_in_set: event_type='logon_magic' not one of {EVENT_TYPES}",
    "events.csv:12": f"expect_column_values_to_be_between: ts=1970-01-01T00:00:00+00:00 outside {TS_RANGE}",
    "events.csv:13": f"expect_column_values_to_be_between: ts=2100-01-01T00:00:00+00:00 outside {TS_RANGE}",
    "events.csv:18": (
        # 10:00:09 (line 11) is the latest time later lines confirm: 10:00:10 and 10:00:11 are
        # followed only by this line, so they cannot raise the reference on their own.
        "expect_column_values_to_be_between: ts=2024-03-01T08:00:00+00:00 is 7209 s behind "
        "the time confirmed by the earlier rows of its file (tolerance 3600 s)"
    ),
}


def _json(obj: object) -> bytes:
    return json.dumps(obj).encode()


JSONL_LINES: list[bytes] = [
    _json({"event_id": "j1", "ts": "2024-03-01T10:00:00Z", "event_type": "auth", "user": "alice",
           "success": True, "label": 0}),  # 1 good
    _json({"ts": 1709287205, "event_type": "network_flow", "src_host": "WS1", "dst_host": "SRV1",
           "dst_port": 443, "protocol": "tcp", "bytes_out": 1200, "bytes_in": 3400}),  # 2 good, no id
    b'{"ts": "2024-03-01T10:00:06Z", "event_type": "auth",',  # 3 truncated JSON
    b"[1, 2, 3]",  # 4 JSON, but not an object
    _json({"event_id": "j5", "ts": "yesterday", "event_type": "auth"}),  # 5 bad timestamp
    b"",  # 6 empty line
    _garbage(),  # 7 binary garbage
    b'{"event_id": "big", "label_detail": "' + b"x" * LONG_LINE_BYTES + b'"}',  # 8 > 1 MiB
    _json({"event_id": "j9", "ts": "2024-03-01T10:00:07Z"}),  # 9 required event_type missing
    _json({"event_id": "j10", "ts": "2024-03-01T10:00:08Z", "event_type": "network_flow",
           "dst_port": 70000}),  # 10 port out of range
    _json({"event_id": "j11", "ts": "2024-03-01T10:00:08Z", "event_type": "network_flow",
           "bytes_out": -5}),  # 11 negative bytes
    _json({"event_id": "j12", "ts": "2024-03-01T10:00:09Z", "event_type": "logon_magic"}),  # 12
    _json({"event_id": "j13", "ts": 0, "event_type": "auth"}),  # 13 epoch 0 = 1970
    _json({"event_id": "j14", "ts": "2100-01-01T00:00:00Z", "event_type": "auth"}),  # 14
    _json({"event_id": "j15", "ts": "2024-03-01T10:00:10Z", "event_type": "network_flow",
           "bytes_out": "lots"}),  # 15 non-numeric number
    _json({"event_id": "j16", "ts": "2024-03-01T10:00:10Z", "event_type": "auth",
           "colour": "red"}),  # 16 a field outside the contract
    _json({"event_id": "j17", "ts": "2024-03-01T11:00:11+01:00", "event_type": "dns",
           "user": "smith, j", "dst_port": "53", "label": 1}),  # 17 good (offset, port as text)
]  # fmt: skip

JSONL_PARSE_ERRORS = {
    "events.jsonl:3": "invalid JSON: Expecting property name enclosed in double quotes at column 53",
    "events.jsonl:4": "JSON not an object: got array (JSON Lines expected: one object per line, not one array)",
    "events.jsonl:5": "bad timestamp: column ts value 'yesterday' is not ISO-8601 or epoch seconds",
    "events.jsonl:6": "empty line",
    "events.jsonl:7": "binary data: NUL byte at byte offset 4",
    "events.jsonl:8": f"line too long: {LONG_LINE_BYTES + 39} bytes, more than max_line_bytes=1048576",
    "events.jsonl:9": "missing required field: 'event_type' is absent or empty",
    "events.jsonl:15": "bad number: column bytes_out value 'lots' is not a number",
    "events.jsonl:16": "unknown field: ['colour'] not in the event contract",
}
JSONL_VALIDATION_ERRORS = {
    "events.jsonl:10": "expect_column_values_to_be_between: dst_port=70000 outside [0, 65535]",
    "events.jsonl:11": "expect_column_values_to_be_between: bytes_out=-5 outside [0, 1e+13]",
    "events.jsonl:12": f"expect_column_values_to_be_in_set: event_type='logon_magic' not one of {EVENT_TYPES}",
    "events.jsonl:13": f"expect_column_values_to_be_between: ts=1970-01-01T00:00:00+00:00 outside {TS_RANGE}",
    "events.jsonl:14": f"expect_column_values_to_be_between: ts=2100-01-01T00:00:00+00:00 outside {TS_RANGE}",
}


def _write(path: Path, lines: list[bytes], *, eol: bytes = b"\n", compress: bool = False) -> Path:
    data = eol.join(lines) + eol
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


@pytest.fixture
def csv_file(tmp_path: Path) -> Path:
    return _write(tmp_path / "events.csv", CSV_LINES)


@pytest.fixture
def jsonl_file(tmp_path: Path) -> Path:
    return _write(tmp_path / "events.jsonl", JSONL_LINES)


def _quarantine_by_ref(result) -> dict[str, tuple[str, str]]:
    q = result.quarantined
    return {
        ref: (stage, reason) for ref, stage, reason in zip(q["raw_ref"], q["stage"], q["reason"], strict=True)
    }


# --------------------------------------------------------------------------------------------
# CSV
# --------------------------------------------------------------------------------------------


def test_csv_every_line_becomes_one_row_with_its_line_number(csv_file: Path) -> None:
    raw = read_event_file(csv_file)
    assert len(raw) == len(CSV_LINES) - 1  # every line after the header, bad ones included
    assert raw["raw_ref"].tolist() == [f"events.csv:{n}" for n in range(2, len(CSV_LINES) + 1)]
    assert set(raw["source"]) == {"file:csv"}
    assert list(raw.columns) == [*schema.EVENT_COLUMNS, *schema.ENVELOPE_COLUMNS]
    errors = dict(zip(raw["raw_ref"], raw["parse_error"], strict=True))
    assert {ref: e for ref, e in errors.items() if not pd.isna(e)} == CSV_PARSE_ERRORS


def test_csv_quarantine_lines_and_reasons_are_exact(csv_file: Path) -> None:
    result = validate_events(read_event_file(csv_file), POLICY)
    expected = {ref: ("parse", reason) for ref, reason in CSV_PARSE_ERRORS.items()}
    expected |= {ref: ("validation", reason) for ref, reason in CSV_VALIDATION_ERRORS.items()}
    assert _quarantine_by_ref(result) == expected
    assert result.rows_read == 17
    assert result.rows_valid == 4
    assert result.rows_quarantined == 13
    assert result.rows_read == result.rows_valid + result.rows_quarantined
    # Quarantine keeps file order and the row's own event id where the line had one.
    assert result.quarantined["raw_ref"].tolist() == sorted(expected, key=lambda r: int(r.split(":")[1]))
    ids = dict(zip(result.quarantined["raw_ref"], result.quarantined["event_id"], strict=True))
    assert ids["events.csv:9"] == "g6"
    assert ids["events.csv:6"] == "events.csv:6"  # an empty line has no id of its own


def test_csv_good_rows_arrive_intact_with_contract_dtypes(csv_file: Path) -> None:
    valid = validate_events(read_event_file(csv_file), POLICY).valid
    assert list(valid.columns) == list(schema.EVENT_COLUMNS)
    assert {c: str(t) for c, t in valid.dtypes.items()} == schema.EVENT_DTYPES
    assert valid["event_id"].tolist() == ["g1", "g2", "g11", "g12"]
    assert valid["raw_ref"].tolist() == ["events.csv:2", "events.csv:3", "events.csv:14", "events.csv:15"]
    rows = valid.set_index("event_id")
    assert rows.loc["g1", "ts"] == pd.Timestamp("2024-03-01T10:00:00Z")
    assert rows.loc["g11", "ts"] == pd.Timestamp("2024-03-01T10:00:10Z")  # from epoch seconds
    assert rows.loc["g2", "dst_port"] == 443
    assert rows.loc["g2", "bytes_out"] == 1200.0
    assert rows.loc["g2", "bytes_in"] == 3400.0
    assert rows.loc["g12", "user"] == "smith, j"  # quoted comma stays inside the field
    assert bool(rows.loc["g1", "success"]) is True
    assert bool(rows.loc["g11", "success"]) is False
    assert rows.loc["g11", "label"] == 1
    assert pd.isna(rows.loc["g1", "dst_port"])  # empty field is null, not 0
    assert pd.isna(rows.loc["g1", "protocol"])


def test_csv_excerpts_show_the_start_of_bad_lines_safely(csv_file: Path) -> None:
    raw = read_event_file(csv_file).set_index("raw_ref")
    long_excerpt = raw.loc["events.csv:8", "raw_excerpt"]
    assert long_excerpt == "g5," + "x" * 197  # 200 characters, the rest never decoded
    garbage = raw.loc["events.csv:7", "raw_excerpt"]
    assert "\ufffd" in garbage  # invalid UTF-8 replaced
    assert "\\x00" in garbage  # the NUL shown escaped ...
    assert "\x00" not in garbage  # ... never raw
    assert raw.loc["events.csv:4", "raw_excerpt"] == "g3,2024-03-01T10:00:06Z,auth,bob"
    assert raw.loc["events.csv:6", "raw_excerpt"] == ""
    # A bad row keeps no half-parsed values.
    assert raw.loc["events.csv:16", ["ts", "event_type", "bytes_in"]].isna().all()
    assert pd.isna(raw.loc["events.csv:2", "raw_excerpt"])  # good rows carry no excerpt


def test_csv_gzip_gives_identical_results(tmp_path: Path, csv_file: Path) -> None:
    plain = validate_events(read_event_file(csv_file), POLICY)
    gz_path = _write(tmp_path / "events.csv.gz", CSV_LINES, compress=True)
    packed = validate_events(read_event_file(gz_path), POLICY)

    def renamed(frame: pd.DataFrame) -> pd.DataFrame:
        out = frame.copy()
        for col in ("raw_ref", "event_id"):
            out[col] = out[col].str.replace("events.csv.gz:", "events.csv:", regex=False)
        return out

    pd.testing.assert_frame_equal(renamed(packed.valid), plain.valid)
    pd.testing.assert_frame_equal(renamed(packed.quarantined), plain.quarantined)
    assert (packed.rows_read, packed.rows_valid, packed.rows_quarantined) == (17, 4, 13)


def test_gzip_is_detected_by_magic_bytes_and_format_by_content(tmp_path: Path, csv_file: Path) -> None:
    # No telling extension at all: gzip from the magic bytes, CSV from the first line.
    path = _write(tmp_path / "export.dat", CSV_LINES, compress=True)
    raw = read_event_file(path)
    assert set(raw["source"]) == {"file:csv"}
    expected = read_event_file(csv_file)
    assert raw["parse_error"].tolist() == expected["parse_error"].tolist()


def test_crlf_line_endings_read_the_same(tmp_path: Path, csv_file: Path) -> None:
    crlf = read_event_file(_write(tmp_path / "events.csv", CSV_LINES, eol=b"\r\n"))
    lf = read_event_file(csv_file)
    pd.testing.assert_frame_equal(crlf, lf)


def test_chunks_are_bounded_and_line_numbers_continue_across_them(csv_file: Path) -> None:
    chunks = list(iter_event_file(csv_file, chunk_rows=5))
    assert [len(c) for c in chunks] == [5, 5, 5, 2]
    joined = pd.concat(chunks, ignore_index=True)
    pd.testing.assert_frame_equal(joined, read_event_file(csv_file))


def test_max_line_bytes_boundary(tmp_path: Path) -> None:
    ok = b"a1,2024-03-01T10:00:00Z,auth,u"  # 30 bytes
    too_long = b"a2,2024-03-01T10:00:00Z,auth,uu"  # 31 bytes
    path = _write(tmp_path / "edge.csv", [b"event_id,ts,event_type,user", ok, too_long])
    raw = read_event_file(path, max_line_bytes=30)
    assert raw["parse_error"].tolist()[0] is pd.NA
    assert raw["parse_error"].tolist()[1] == "line too long: 31 bytes, more than max_line_bytes=30"


def test_max_line_bytes_boundary_with_crlf(tmp_path: Path) -> None:
    ok = b"a1,2024-03-01T10:00:00Z,auth,u"  # 30 bytes + CRLF: still within the limit
    path = _write(tmp_path / "edge.csv", [b"event_id,ts,event_type,user", ok, ok + b"x" * 100], eol=b"\r\n")
    raw = read_event_file(path, max_line_bytes=30)
    assert raw["parse_error"].tolist()[0] is pd.NA
    assert raw["parse_error"].tolist()[1] == "line too long: 130 bytes, more than max_line_bytes=30"


def test_truncated_gzip_keeps_the_rows_before_the_break_and_quarantines_it(tmp_path: Path) -> None:
    data = gzip.compress(b"\n".join([CSV_HEADER] + [CSV_LINES[1]] * 5000))
    path = tmp_path / "cut.csv.gz"
    path.write_bytes(data[: len(data) // 2])
    raw = read_event_file(path)
    errors = raw["parse_error"]
    assert errors.iloc[:-1].isna().all()  # every complete line before the break is an event
    assert len(raw) > 100
    last = len(raw)  # the break's row: the line after the last complete one (+1 for the header)
    assert raw["raw_ref"].iloc[-1] == f"cut.csv.gz:{last + 1}"
    assert errors.iloc[-1].startswith(f"truncated input: the stream ends early or is corrupt after line {last}")
    assert "fetch or copy it again" in errors.iloc[-1]
    result = validate_events(raw, POLICY)
    assert result.rows_read == result.rows_valid + result.rows_quarantined == len(raw)
    assert result.reason_counts["parse: truncated input"] == 1


def test_header_only_file_gives_zero_rows(tmp_path: Path) -> None:
    path = _write(tmp_path / "empty.csv", [CSV_HEADER])
    raw = read_event_file(path)
    assert len(raw) == 0
    assert list(raw.columns) == [*schema.EVENT_COLUMNS, *schema.ENVELOPE_COLUMNS]
    assert list(iter_event_file(path)) == []
    result = validate_events(raw, POLICY)
    assert (result.rows_read, result.rows_valid, result.rows_quarantined) == (0, 0, 0)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "events.csv"
    with pytest.raises(FileNotFoundError, match="event file not found: .*events.csv"):
        iter_event_file(missing)  # raised at the call, not at the first next()


def test_header_without_required_column_is_a_schema_error(tmp_path: Path) -> None:
    path = _write(tmp_path / "bad_header.csv", [b"event_id,ts,user", b"x,2024-03-01T10:00:00Z,u"])
    with pytest.raises(schema.SchemaError, match=r"missing required columns \['event_type'\]"):
        read_event_file(path)


def test_header_with_unknown_column_is_a_schema_error(tmp_path: Path) -> None:
    path = _write(tmp_path / "typo.csv", [b"event_id,timestamp,ts,event_type", b"x,1,2,auth"])
    with pytest.raises(schema.SchemaError, match=r"unknown columns \['timestamp'\]"):
        read_event_file(path)


def test_empty_csv_file_is_a_schema_error(tmp_path: Path) -> None:
    path = tmp_path / "nothing.csv"
    path.write_bytes(b"")
    with pytest.raises(schema.SchemaError, match="no CSV header line"):
        read_event_file(path)


# --------------------------------------------------------------------------------------------
# JSON Lines
# --------------------------------------------------------------------------------------------


def test_jsonl_quarantine_lines_and_reasons_are_exact(jsonl_file: Path) -> None:
    raw = read_event_file(jsonl_file)
    assert raw["raw_ref"].tolist() == [f"events.jsonl:{n}" for n in range(1, len(JSONL_LINES) + 1)]
    assert set(raw["source"]) == {"file:jsonl"}
    result = validate_events(raw, POLICY)
    expected = {ref: ("parse", reason) for ref, reason in JSONL_PARSE_ERRORS.items()}
    expected |= {ref: ("validation", reason) for ref, reason in JSONL_VALIDATION_ERRORS.items()}
    assert _quarantine_by_ref(result) == expected
    assert (result.rows_read, result.rows_valid, result.rows_quarantined) == (17, 3, 14)


def test_jsonl_good_rows_arrive_intact_with_contract_dtypes(jsonl_file: Path) -> None:
    valid = validate_events(read_event_file(jsonl_file), POLICY).valid
    assert {c: str(t) for c, t in valid.dtypes.items()} == schema.EVENT_DTYPES
    assert valid["event_id"].tolist() == ["j1", "events.jsonl:2", "j17"]  # id falls back to file:line
    rows = valid.set_index("event_id")
    assert rows.loc["events.jsonl:2", "ts"] == pd.Timestamp("2024-03-01T10:00:05Z")
    assert rows.loc["j17", "ts"] == pd.Timestamp("2024-03-01T10:00:11Z")  # +01:00 converted to UTC
    assert rows.loc["j17", "dst_port"] == 53
    assert rows.loc["j17", "user"] == "smith, j"
    assert rows.loc["events.jsonl:2", "bytes_in"] == 3400.0
    assert bool(rows.loc["j1", "success"]) is True
    assert rows.loc["j1", "label"] == 0


def test_jsonl_gzip_gives_identical_results(tmp_path: Path, jsonl_file: Path) -> None:
    gz_path = _write(tmp_path / "events.jsonl.gz", JSONL_LINES, compress=True)
    plain = read_event_file(jsonl_file)
    packed = read_event_file(gz_path)
    for col in ("raw_ref", "event_id"):
        packed[col] = packed[col].str.replace("events.jsonl.gz:", "events.jsonl:", regex=False)
    pd.testing.assert_frame_equal(packed, plain)


def test_jsonl_wrong_value_types_are_named(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "types.jsonl",
        [
            _json({"ts": "2024-03-01T10:00:00Z", "event_type": "auth", "dst_port": True}),
            _json({"ts": "2024-03-01T10:00:00Z", "event_type": "auth", "user": {"name": "a"}}),
            _json({"ts": 1.7e12, "event_type": "auth"}),
        ],
    )
    errors = read_event_file(path)["parse_error"].tolist()
    assert errors == [
        "bad value: column dst_port expects a number, got boolean",
        "bad value: column user expects a string, got object",
        "bad timestamp: column ts value 1700000000000.0 is out of range for epoch seconds "
        "(milliseconds? the reader expects seconds)",
    ]


def test_format_is_sniffed_from_first_line_without_extension(tmp_path: Path) -> None:
    path = _write(tmp_path / "events.log", [b"", JSONL_LINES[0]])
    raw = read_event_file(path)
    assert set(raw["source"]) == {"file:jsonl"}
    assert raw["parse_error"].tolist()[0] == "empty line"
    assert raw["event_id"].tolist()[1] == "j1"


def test_unknown_format_argument_is_rejected(csv_file: Path) -> None:
    with pytest.raises(ValueError, match="fmt must be one of"):
        iter_event_file(csv_file, fmt="parquet")
