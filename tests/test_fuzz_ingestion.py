"""Hostile input for every reader: nothing escapes, nothing is lost, every bad row says where and why.

Two parts:

* property-based (hypothesis): files of every format built from good lines and hostile ones
  (random bytes, JSON nested 100,000 deep, lines over 1 MiB, bad numbers such as NaN, 1e400,
  ``"²"`` or ``[3]``, future- and past-dated lines), sorted, reversed or shuffled, plain, gzip
  or gzip cut short. For each: reading and validating raise nothing, rows read = valid +
  quarantined exactly, every quarantined row has ``file:line`` and a reason, every line is one
  row, and in a sorted file every good line stays valid whatever its neighbours are.
  ``ANOMALY_PIPELINE_FUZZ_EXAMPLES`` sets the examples per format (default 6, well under a
  minute for the whole file; e.g. 200 for a longer run).
* the concrete cases of issue 13, one regression test each.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anomaly_pipeline.sources.formats import read_events
from anomaly_pipeline.validation import ValidationPolicy, validate_events

EXAMPLES = int(os.environ.get("ANOMALY_PIPELINE_FUZZ_EXAMPLES", "6"))
MAX_LINE_BYTES = 1_048_576
BASE = pd.Timestamp("2026-01-05T00:00:00Z")
LANL_EPOCH = pd.Timestamp("2026-01-01T00:00:00Z")
POLICY = ValidationPolicy(ts_min=pd.Timestamp("1990-01-01", tz="UTC"))

JSON_TOKENS = [
    "NaN", "Infinity", "-Infinity", "1e400", '"²"', "[3]", '{"#text": "²"}', "-1", "99999999999999999999999999999",
    '"nan"', "true", '"3"', "3.5", '"\\u0000"', '"\\ud800"', '"1e400"', "{}",
]  # fmt: skip
TEXT_TOKENS = ["nan", "NaN", "inf", "-inf", "1e400", "²", "[3]", "-1", "99999999999999999999999999", "", "true",
               "0x10", " 3", "\x00", "1,2"]  # fmt: skip


def _future() -> pd.Timestamp:
    """A plausible but wrong time: an hour before now, in a file from January 2026."""
    return pd.Timestamp.now(tz="UTC").floor("s") - pd.Timedelta(hours=1)


PAST = pd.Timestamp("2001-01-01T00:00:00Z")


# --------------------------------------------------------------------------------------------
# One good line per format; ``token`` replaces one numeric field's text (a bad number)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Format:
    """How to write a file of one format."""

    name: str  # reader name in sources.formats.FORMATS
    file_name: str
    header: tuple[bytes, ...]  # header lines (no row)
    line: Callable[[int, pd.Timestamp, str | None], bytes]
    json: bool


def _canonical_csv(i: int, ts: pd.Timestamp, token: str | None) -> bytes:
    value = "1200" if token is None else token
    return f"e{i},{ts.isoformat()},network_flow,u{i % 3},WS{i % 4},SRV1,443,{value}".encode()


def _canonical_jsonl(i: int, ts: pd.Timestamp, token: str | None) -> bytes:
    value = "1200" if token is None else token
    return (
        f'{{"event_id": "e{i}", "ts": "{ts.isoformat()}", "event_type": "network_flow", "src_host": "WS{i % 4}", '
        f'"dst_host": "SRV1", "bytes_out": {value}}}'
    ).encode()


def _lanl_flows(i: int, ts: pd.Timestamp, token: str | None) -> bytes:
    seconds = int((ts - LANL_EPOCH).total_seconds())
    value = "5" if token is None else token
    return f"{seconds},{value},C{i % 4},N1,C9,443,6,10,1000".encode()


def _darpa(i: int, ts: pd.Timestamp, token: str | None) -> bytes:
    when = ts.strftime("%m/%d/%Y-%H:%M") if token is None else token
    return f"172.016.{i % 4}.1,172.016.9.9,{when},-".encode()


def _zeek_tsv(i: int, ts: pd.Timestamp, token: str | None) -> bytes:
    value = "1.5" if token is None else token
    return f"{ts.value / 1e9:.6f}\tC{i}\t10.0.0.{i % 4}\t5000\t10.0.1.1\t443\ttcp\t{value}\tSF".encode()


def _zeek_json(i: int, ts: pd.Timestamp, token: str | None) -> bytes:
    value = "1.5" if token is None else token
    return (
        f'{{"ts": {ts.value / 1e9:.6f}, "uid": "C{i}", "id.orig_h": "10.0.0.{i % 4}", "id.resp_h": "10.0.1.1", '
        f'"proto": "tcp", "duration": {value}}}'
    ).encode()


def _ocsf(i: int, ts: pd.Timestamp, token: str | None) -> bytes:
    value = "3" if token is None else token
    return (
        f'{{"class_uid": 3002, "time": {ts.value // 1_000_000}, "metadata": {{"uid": "m{i}"}}, '
        f'"src_endpoint": {{"hostname": "WS{i % 4}"}}, "dst_endpoint": {{"hostname": "DC1"}}, "logon_type_id": {value}}}'
    ).encode()


def _windows(i: int, ts: pd.Timestamp, token: str | None) -> bytes:
    logon, event = ("3", "4624") if token is None else ((token, "4624") if i % 2 else ("3", token))
    return (
        f'{{"EventID": {event}, "TimeCreated": "{ts.isoformat()}", "Computer": "DC1", "EventRecordID": {i}, '
        f'"TargetUserName": "u{i % 3}", "WorkstationName": "WS{i % 4}", "LogonType": {logon}}}'
    ).encode()


ZEEK_HEADER = (
    b"#separator \\x09",
    b"#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tduration\tconn_state",
)
FORMATS: dict[str, Format] = {
    "canonical_csv": Format(
        "canonical", "events.csv", (b"event_id,ts,event_type,user,src_host,dst_host,dst_port,bytes_out",),
        _canonical_csv, False,
    ),
    "canonical_jsonl": Format("canonical", "events.jsonl", (), _canonical_jsonl, True),
    "lanl": Format("lanl", "flows.txt", (), _lanl_flows, False),
    "darpa": Format("darpa", "darpa.csv", (), _darpa, False),
    "zeek_tsv": Format("zeek", "conn.log", ZEEK_HEADER, _zeek_tsv, False),
    "zeek_json": Format("zeek", "conn.json", (), _zeek_json, True),
    "ocsf": Format("ocsf", "ocsf.jsonl", (), _ocsf, True),
    "windows": Format("windows", "security.jsonl", (), _windows, True),
}  # fmt: skip


# --------------------------------------------------------------------------------------------
# The files hypothesis draws
# --------------------------------------------------------------------------------------------

GOOD, FUTURE, PAST_DATED, BAD_NUMBER, RANDOM, NESTED, HUGE, EMPTY = (
    "good", "future", "past", "bad_number", "random", "nested", "huge", "empty",
)  # fmt: skip
KINDS = st.sampled_from([GOOD] * 6 + [FUTURE, PAST_DATED, BAD_NUMBER, BAD_NUMBER, RANDOM, NESTED, HUGE, EMPTY])


@dataclass
class Drawn:
    """A drawn file: the body lines and what each one is."""

    kinds: list[str]
    lines: list[bytes]
    order: str
    compression: str
    cut: float


@st.composite
def drawn_files(draw: st.DrawFn, fmt: Format) -> Drawn:
    kinds = draw(st.lists(KINDS, min_size=1, max_size=40))
    order = draw(st.sampled_from(["sorted", "sorted", "reversed", "shuffled"]))
    positions = list(range(len(kinds)))
    if order == "reversed":
        positions.reverse()
    elif order == "shuffled":
        positions = draw(st.permutations(positions))
    lines = []
    for i, kind in enumerate(kinds):
        ts = BASE + pd.Timedelta(minutes=positions[i])
        if kind == GOOD:
            lines.append(fmt.line(i, ts, None))
        elif kind == FUTURE:
            lines.append(fmt.line(i, _future(), None))
        elif kind == PAST_DATED:
            lines.append(fmt.line(i, PAST, None))
        elif kind == BAD_NUMBER:
            token = draw(st.sampled_from(JSON_TOKENS if fmt.json else TEXT_TOKENS))
            lines.append(fmt.line(i, ts, token))
        elif kind == RANDOM:
            lines.append(draw(st.binary(min_size=1, max_size=120)).replace(b"\n", b" "))
        elif kind == NESTED:
            depth = draw(st.sampled_from([50, 5_000, 100_000]))
            lines.append(b'{"a": ' + b"[" * depth)
        elif kind == HUGE:
            lines.append(b"y" * (MAX_LINE_BYTES + draw(st.integers(1, 3000))))
        else:
            lines.append(b"")
    compression = draw(st.sampled_from(["plain", "gzip", "gzip_cut"]))
    cut = draw(st.floats(0.05, 0.95))
    return Drawn(kinds, lines, order, compression, cut)


def _write(tmp: Path, fmt: Format, drawn: Drawn) -> Path:
    data = b"".join(line + b"\n" for line in (*fmt.header, *drawn.lines))
    path = tmp / fmt.file_name
    if drawn.compression == "plain":
        path.write_bytes(data)
        return path
    path = path.with_name(path.name + ".gz")
    packed = gzip.compress(data, compresslevel=1)
    if drawn.compression == "gzip_cut":
        packed = packed[: max(12, int(len(packed) * drawn.cut))]
    path.write_bytes(packed)
    return path


def check_file(path: Path, fmt: Format, drawn: Drawn | None = None) -> tuple[pd.DataFrame, object]:
    """Read and validate ``path``; assert the invariants every input must keep."""
    raw = read_events(path, fmt.name)  # raises nothing: any bad record is a row
    result = validate_events(raw, POLICY)
    # The vectorised engine and GX on every row agree on every output (test_validation_engines).
    full = validate_events(raw, POLICY, engine="gx")
    pd.testing.assert_frame_equal(result.valid, full.valid)
    pd.testing.assert_frame_equal(result.quarantined, full.quarantined)
    pd.testing.assert_frame_equal(result.expectations, full.expectations)
    assert result.reason_counts == full.reason_counts and result.gx_success == full.gx_success
    assert result.rows_read == len(raw)
    assert result.rows_read == result.rows_valid + result.rows_quarantined
    q = result.quarantined
    ref = re.compile(rf"^{re.escape(path.name)}:(\d+)$")
    assert all(ref.match(str(r)) for r in q["raw_ref"].tolist()), q["raw_ref"].tolist()
    assert all(isinstance(r, str) and r for r in q["reason"].tolist())
    assert set(q["stage"].tolist()) <= {"parse", "validation", "duplicate"}
    line_numbers = [int(ref.match(str(r)).group(1)) for r in raw["raw_ref"].tolist()]
    assert len(set(line_numbers)) == len(line_numbers)
    if drawn is None:
        return raw, result
    first_body = len(fmt.header) + 1
    n_body = len(drawn.lines)
    if drawn.compression != "gzip_cut":
        # Lines in = rows out: every body line is exactly one row.
        assert sorted(line_numbers) == list(range(first_body, first_body + n_body))
    else:
        assert len(raw) <= n_body + 1
        broke = raw["parse_error"].astype("string").str.startswith("truncated input").fillna(False)
        assert broke.sum() <= 1
    hostile = sum(k in (FUTURE, PAST_DATED) for k in drawn.kinds)
    n_good = sum(k == GOOD for k in drawn.kinds)
    if drawn.order == "sorted" and drawn.compression != "gzip_cut" and hostile <= 2 and 3 * hostile < n_good:
        # A few records cannot turn against their neighbours: every good line of a sorted file is
        # valid. (Where the hostile lines are a majority around a good one, as in [good, past,
        # past], the majority rule blames the good line: that is the rule, not a leak.)
        valid_lines = {int(ref.match(str(r)).group(1)) for r in result.valid["raw_ref"].tolist()}
        good = {first_body + i for i, kind in enumerate(drawn.kinds) if kind == GOOD}
        assert good <= valid_lines, sorted(good - valid_lines)
    return raw, result


FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=EXAMPLES <= 20,  # the CI run is reproducible; a long run explores
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)


@pytest.mark.parametrize("key", list(FORMATS))
def test_fuzzed_files_keep_every_invariant(key: str, tmp_path: Path) -> None:
    fmt = FORMATS[key]

    @FUZZ_SETTINGS
    @given(drawn=drawn_files(fmt))
    def run(drawn: Drawn) -> None:
        path = _write(tmp_path, fmt, drawn)
        try:
            check_file(path, fmt, drawn)
        except ValueError as refused:
            # The one file-level refusal: a Zeek log whose first 20 lines show neither a '#'
            # header nor a JSON object cannot be told TSV or JSON (the message names the file).
            # (In a cut gzip, the lines after the break are not there to look at.)
            shaped = [k for k in drawn.kinds if k not in (EMPTY, HUGE)][: 1 if drawn.compression == "gzip_cut" else 20]
            assert fmt.name == "zeek" and not set(shaped) & {GOOD, FUTURE, PAST_DATED, BAD_NUMBER, NESTED}
            assert path.name in str(refused)

    run()


@pytest.mark.parametrize("key", list(FORMATS))
def test_random_bytes_files_are_read_or_refused_with_a_message(key: str, tmp_path: Path) -> None:
    """A whole file of junk: every line becomes a row, or the whole file is refused with a message
    naming it (a canonical CSV needs its header, a Zeek TSV data line its ``#fields``, a Zeek log
    starts with ``#`` or ``{``): a SchemaError or ValueError at the file level, never a crash."""
    fmt = FORMATS[key]

    @FUZZ_SETTINGS
    @given(data=st.binary(min_size=1, max_size=3000), gz=st.booleans())
    def run(data: bytes, gz: bool) -> None:
        path = tmp_path / (fmt.file_name + (".gz" if gz else ""))
        path.write_bytes(gzip.compress(data)[: len(data) // 2 + 12] if gz else data)
        try:
            check_file(path, fmt)
        except ValueError as refused:  # schema.SchemaError is one: a file-level refusal names the file
            assert path.name in str(refused)

    run()


# --------------------------------------------------------------------------------------------
# Issue 13, case by case
# --------------------------------------------------------------------------------------------

N_LINES = 600


@pytest.mark.parametrize("key", list(FORMATS))
@pytest.mark.parametrize("position", [0, N_LINES // 2, N_LINES - 2])
def test_one_future_dated_line_loses_exactly_that_line(key: str, position: int, tmp_path: Path) -> None:
    """Before: that line counted as valid and every later line was quarantined (all formats but Zeek)."""
    fmt = FORMATS[key]
    lines = [fmt.line(i, _future() if i == position else BASE + pd.Timedelta(minutes=i), None) for i in range(N_LINES)]
    path = tmp_path / fmt.file_name
    path.write_bytes(b"".join(line + b"\n" for line in (*fmt.header, *lines)))
    raw, result = check_file(path, fmt)
    if fmt.name == "zeek":
        # The Zeek reader sorts each chunk by ts (Zeek writes a connection when it ends), so the
        # line moves to the end, where no later line refutes it: nothing is lost, as before.
        assert result.rows_quarantined == 0
        return
    bad = f"{path.name}:{len(fmt.header) + position + 1}"
    assert result.quarantined["raw_ref"].tolist() == [bad]
    assert "ahead of the rows of its file before it" in result.quarantined["reason"].iloc[0]
    assert result.rows_valid == N_LINES - 1


JSON_FORMATS = ["canonical_jsonl", "ocsf", "windows", "zeek_json"]


@pytest.mark.parametrize("key", JSON_FORMATS)
def test_json_nested_100k_deep_is_one_quarantined_line(key: str, tmp_path: Path) -> None:
    """Before: RecursionError, the whole file lost."""
    fmt = FORMATS[key]
    path = tmp_path / fmt.file_name
    lines = [fmt.line(0, BASE, None), b'{"a": ' + b"[" * 100_000, fmt.line(2, BASE + pd.Timedelta(minutes=1), None)]
    path.write_bytes(b"\n".join(lines) + b"\n")
    raw, result = check_file(path, fmt)
    assert result.rows_valid == 2
    assert result.quarantined["raw_ref"].tolist() == [f"{path.name}:2"]
    assert result.quarantined["reason"].iloc[0] == "invalid JSON: nested deeper than the parser's recursion limit"


def _windows_line(**fields: object) -> str:
    event = {"EventID": 4624, "TimeCreated": "2026-01-05T00:00:00Z", "Computer": "DC1", "WorkstationName": "WS1",
             "TargetUserName": "u", **fields}  # fmt: skip
    return json.dumps(event, ensure_ascii=False)


OCSF_AUTH = {"class_uid": 3002, "time": 1767571200000, "src_endpoint": {"hostname": "WS1"},
             "dst_endpoint": {"hostname": "DC1"}}  # fmt: skip


@pytest.mark.parametrize(
    ("key", "line", "reason"),
    [
        ("windows", _windows_line(LogonType=float("nan")), "non-finite number: NaN is not a number JSON can hold"),
        ("windows", _windows_line(LogonType=float("inf")), "non-finite number: Infinity is not a number JSON can hold"),
        ("windows", _windows_line(LogonType=[3]), "bad value: field LogonType value [3] is not a number"),
        ("windows", _windows_line(LogonType="²"), "bad value: field LogonType value '²' is not a number"),
        ("windows", _windows_line(EventID="²"), "bad value: field EventID value '²' is not an event number"),
        ("ocsf", json.dumps({**OCSF_AUTH, "logon_type_id": "²"}, ensure_ascii=False),
         "bad value: field logon_type_id value '²' is not an integer"),
        ("ocsf", json.dumps({**OCSF_AUTH, "traffic": {"bytes_out": 1e400}}),
         "non-finite number: Infinity is not a number JSON can hold"),
        ("ocsf", '{"class_uid": 3002, "time": 1767571200000, "traffic": {"bytes_out": 1e400}}',
         "bad number: field bytes_out value Infinity is not a finite number"),
        ("canonical_jsonl", '{"ts": "2026-01-05T00:00:00Z", "event_type": "auth", "src_host": "a", "bytes_out": NaN}',
         "non-finite number: NaN is not a number JSON can hold"),
        ("zeek_json", '{"ts": 1767571200.0, "id.orig_h": "a", "id.resp_h": "b", "orig_bytes": NaN}',
         "non-finite number: NaN is not a number JSON can hold"),
        ("zeek_json", '{"ts": 1767571200.0, "id.orig_h": "a", "id.resp_h": "b", "orig_bytes": "nan"}',
         "bad number: field bytes_out value NaN is not a finite number"),
        ("zeek_tsv", "1767571200.0\tC1\t10.0.0.1\t5000\t10.0.1.1\t443\ttcp\tnan\tSF",
         "bad number: field duration value nan is not a finite number (Zeek conn.log)"),
        ("lanl", "500000,inf,C1,N1,C9,443,6,10,1000",
         "bad number: field duration value inf is not a finite number (LANL flows)"),
    ],
)  # fmt: skip
def test_one_bad_value_quarantines_its_line_with_the_reason(key: str, line: str, reason: str, tmp_path: Path) -> None:
    """Before: ValueError / OverflowError / TypeError aborted the file, or NaN became null silently."""
    fmt = FORMATS[key]
    path = tmp_path / fmt.file_name
    body = [fmt.line(0, BASE, None), line.encode(), fmt.line(2, BASE + pd.Timedelta(minutes=1), None)]
    path.write_bytes(b"".join(x + b"\n" for x in (*fmt.header, *body)))
    raw, result = check_file(path, fmt)
    assert result.rows_valid == 2
    assert result.quarantined["raw_ref"].tolist() == [f"{path.name}:{len(fmt.header) + 2}"]
    assert result.quarantined["reason"].iloc[0].startswith(reason), result.quarantined["reason"].iloc[0]


@pytest.mark.parametrize("key", list(FORMATS))
def test_truncated_gzip_keeps_the_lines_before_the_break(key: str, tmp_path: Path) -> None:
    """Before: a bare EOFError (LANL, Zeek, DARPA) or an OSError, and no rows at all."""
    fmt = FORMATS[key]
    body = [fmt.line(i, BASE + pd.Timedelta(minutes=i), None) for i in range(N_LINES)]
    packed = gzip.compress(b"".join(x + b"\n" for x in (*fmt.header, *body)))
    path = tmp_path / (fmt.file_name + ".gz")
    path.write_bytes(packed[: len(packed) * 2 // 3])
    raw, result = check_file(path, fmt)
    errors = raw["parse_error"].astype("string")
    broke = errors.str.startswith("truncated input").fillna(False)
    assert broke.sum() == 1
    kept = int((~broke).sum())
    assert kept > N_LINES // 3  # the lines before the break are rows, valid ones
    assert result.rows_valid == kept
    after = len(fmt.header) + kept
    assert raw.loc[broke, "raw_ref"].item() == f"{path.name}:{after + 1}"
    assert errors[broke].item().startswith(f"truncated input: the stream ends early or is corrupt after line {after}")
    assert result.reason_counts == {"parse: truncated input": 1}


def test_duplicate_event_ids_are_dropped_and_counted(tmp_path: Path) -> None:
    """Before: both copies were valid events."""
    fmt = FORMATS["canonical_csv"]
    body = [fmt.line(min(i, 3), BASE + pd.Timedelta(minutes=i), None) for i in range(6)]
    path = tmp_path / fmt.file_name
    path.write_bytes(b"".join(x + b"\n" for x in (*fmt.header, *body)))
    raw, result = check_file(path, fmt)
    assert (result.rows_valid, result.rows_quarantined, result.rows_duplicate) == (4, 2, 2)
    assert result.quarantined["reason"].tolist() == [
        "duplicate event_id: 'e3' was already read at events.csv:5; this repeat is dropped and the first one kept"
    ] * 2
    assert result.summary()["rows_duplicate"] == 2


def test_detect_refuses_a_truncated_gzip_with_status_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Before: exit status 1 and an EOFError traceback."""
    from anomaly_pipeline.cli import main

    fmt = FORMATS["lanl"]
    body = [fmt.line(i, BASE + pd.Timedelta(minutes=i), None) for i in range(N_LINES)]
    packed = gzip.compress(b"".join(x + b"\n" for x in body))
    path = tmp_path / "flows.txt.gz"
    path.write_bytes(packed[: len(packed) // 2])
    status = main(["--home", str(tmp_path / "home"), "detect", "--input", str(path), "--train-fraction", "0.3",
                   "--output", str(tmp_path / "out.csv")])  # fmt: skip
    out = capsys.readouterr()
    assert status == 2
    assert "Traceback" not in out.err
    assert f"{path} is incomplete: flows.txt.gz:" in out.err
    assert "truncated input: the stream ends early or is corrupt after line" in out.err
    assert "nothing was trained or scored on a partial file" in out.err
    assert "parse: truncated input: 1" in out.out
    assert not (tmp_path / "out.csv").exists()


def test_run_refuses_a_truncated_gzip_with_status_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Before: raw_events failed with the reader's EOFError and the run exited with status 1."""
    from anomaly_pipeline.cli import main

    fmt = FORMATS["canonical_csv"]
    body = [fmt.line(i, BASE + pd.Timedelta(minutes=i), None) for i in range(N_LINES)]
    packed = gzip.compress(b"".join(x + b"\n" for x in (*fmt.header, *body)))
    path = tmp_path / "events.csv.gz"
    path.write_bytes(packed[: len(packed) // 2])
    status = main(["--home", str(tmp_path / "home"), "run", "--input", str(path)])
    err = capsys.readouterr().err
    assert status == 2
    assert "the input is incomplete, so the run stopped after reading it: events.csv.gz:" in err
    assert "truncated input: the stream ends early or is corrupt after line" in err


def test_zeek_json_cut_inside_its_second_line_is_sniffed_as_json(tmp_path: Path) -> None:
    """Found by a long fuzz run: format sniffing read the gzip with read(), lost what it had
    inflated at the break, took the file for TSV and refused it."""
    fmt = FORMATS["zeek_json"]
    body = [fmt.line(i, BASE + pd.Timedelta(minutes=i), None) for i in range(2)]
    packed = gzip.compress(b"".join(x + b"\n" for x in body), compresslevel=1)
    path = tmp_path / "conn.json.gz"
    path.write_bytes(packed[: int(len(packed) * 0.875)])
    raw, result = check_file(path, fmt)
    assert raw["raw_ref"].tolist() == ["conn.json.gz:1", "conn.json.gz:2"]
    assert result.rows_valid == 1 and result.reason_counts == {"parse: truncated input": 1}


@pytest.mark.parametrize("key", ["ocsf", "lanl"])
def test_a_file_that_only_starts_like_a_zip_is_refused_with_a_message(key: str, tmp_path: Path) -> None:
    """Found by a long fuzz run: a bare zipfile.BadZipFile escaped."""
    fmt = FORMATS[key]
    path = tmp_path / fmt.file_name
    path.write_bytes(b"PK\x03\x04" + b"\x00" * 20)
    with pytest.raises(ValueError, match="starts like a zip archive but cannot be opened .*fetch or copy it again"):
        read_events(path, fmt.name)
