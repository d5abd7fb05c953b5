"""Format adapters (LANL, Zeek, DARPA, OCSF, Windows) and the format registry.

Each adapter is read on hand-written samples (under tmp_path) that hold good records and one of
each kind of damage at a known line, and, where the data set is at hand, on the real files in
the shared data folder (``$ANOMALY_PIPELINE_DATA_DIR``, default ``<repo>/../shared/datasets``;
those tests skip with the reason when a file is absent). The checks are what a user relies on:
lines in = rows out, a bad line lands as a parse_error row with its file:line and reason, good
lines map to the right canonical values, and validation reconciles.
"""

from __future__ import annotations

import gzip
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from anomaly_pipeline import schema
from anomaly_pipeline.sources import _common as common
from anomaly_pipeline.sources.darpa import iter_darpa, read_darpa
from anomaly_pipeline.sources.formats import (
    FORMATS,
    FormatDetectionError,
    detect_format,
    iter_events,
    read_events,
)
from anomaly_pipeline.sources.lanl import DEFAULT_EPOCH, detect_lanl_kind, iter_lanl, load_redteam, read_lanl
from anomaly_pipeline.sources.ocsf import read_ocsf
from anomaly_pipeline.sources.windows import read_windows
from anomaly_pipeline.sources.zeek import read_zeek
from anomaly_pipeline.validation import ValidationPolicy, validate_events

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("ANOMALY_PIPELINE_DATA_DIR", REPO.parent / "shared" / "datasets"))
REDTEAM = DATA_DIR / "lanl" / "redteam.txt.gz"
DARPA_ZIP = DATA_DIR / "darpa98" / "darpa_original.zip"
ZEEK_MIXED = DATA_DIR / "stratosphere" / "008-zeek-mixed.conn.log.labeled"
ZEEK_NJRAT = DATA_DIR / "stratosphere" / "001-zeek-scenario-malicious.labeled-conn.log"
CONTRACT = [*schema.EVENT_COLUMNS, *schema.ENVELOPE_COLUMNS]
POLICY = ValidationPolicy(
    ts_min=pd.Timestamp("1970-01-01", tz="UTC"), ts_max=pd.Timestamp("2030-01-01", tz="UTC")
)


def need(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(
            f"data file {path} not found; set ANOMALY_PIPELINE_DATA_DIR to the shared datasets folder"
        )
    return path


def write(path: Path, lines: list[bytes], *, compress: bool = False) -> Path:
    data = b"\n".join(lines) + b"\n"
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def check_contract(frame: pd.DataFrame, n_rows: int) -> None:
    """Lines in = rows out, the contract's columns and dtypes, one row per raw_ref."""
    assert len(frame) == n_rows
    assert list(frame.columns) == CONTRACT
    for name, dtype in schema.EVENT_DTYPES.items():
        assert str(frame[name].dtype) == dtype, name
    assert frame["raw_ref"].is_unique
    assert frame["event_id"].notna().all()
    # The frames built without conform's copies are exactly what conform returns.
    pd.testing.assert_frame_equal(frame, schema.conform(frame))


def errors_by_ref(frame: pd.DataFrame) -> dict[str, str]:
    bad = frame[frame["parse_error"].notna()]
    return dict(zip(bad["raw_ref"], bad["parse_error"], strict=True))


def row(frame: pd.DataFrame, ref: str) -> pd.Series:
    match = frame[frame["raw_ref"] == ref]
    assert len(match) == 1, ref
    return match.iloc[0]


def reconciles(frame: pd.DataFrame, policy: ValidationPolicy = POLICY) -> None:
    result = validate_events(frame, policy)
    assert result.rows_read == len(frame) == result.rows_valid + result.rows_quarantined
    parse = result.quarantined[result.quarantined["stage"] == "parse"]
    assert set(parse["raw_ref"]) == set(frame.loc[frame["parse_error"].notna(), "raw_ref"])


# --------------------------------------------------------------------------------------------
# LANL
# --------------------------------------------------------------------------------------------

AUTH_LINES: list[bytes] = [
    b"1,ANONYMOUS LOGON@C586,ANONYMOUS LOGON@C586,C1250,C586,NTLM,Network,LogOn,Success",  # 1
    b"1,C101$@DOM1,C101$@DOM1,C988,C988,?,?,LogOff,Success",  # 2: ? -> null
    b"2,U22@DOM1,U22@DOM1,C506,C586,Kerberos,Network,LogOn",  # 3: 8 fields
    b"",  # 4: empty line
    b"soon,U22@DOM1,U22@DOM1,C506,C586,Kerberos,Network,LogOn,Success",  # 5: bad time
    b"3,U66@DOM1,U66@DOM1,C2,C2,Negotiate,Service,LogOn,Maybe",  # 6: bad success/failure
    b"\xde\xad\x00\xbe\xef,,,,,,,,",  # 7: binary
    b"4,U7@DOM1,U7@DOM1,C17693,C1003,MICROSOFT_AUTHENTICATION_PACKAGE_V1_0,RemoteInteractive,TGS,Fail\r",  # 8: CRLF
    b"5,U8@DOM1,SYSTEM@C9,C9,C9,Wave,NewCredentials,LogOn,Success",  # 9: rare types -> other
]


def test_lanl_auth_maps_fields_and_keeps_bad_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "auth.txt", AUTH_LINES)
    frame = read_lanl(path)
    check_contract(frame, len(AUTH_LINES))
    assert frame["raw_ref"].tolist() == [f"auth.txt:{i}" for i in range(1, 10)]
    assert frame["source"].eq("lanl").all()
    errors = errors_by_ref(frame)
    assert set(errors) == {"auth.txt:3", "auth.txt:4", "auth.txt:5", "auth.txt:6", "auth.txt:7"}
    assert errors["auth.txt:3"].startswith("wrong field count: expected 9 comma-separated fields")
    assert errors["auth.txt:3"].endswith("got 8")
    assert errors["auth.txt:4"] == "empty line"
    assert errors["auth.txt:5"].startswith("bad number: field time value 'soon'")
    assert errors["auth.txt:6"].startswith("bad value: field success/failure value 'Maybe'")
    assert errors["auth.txt:7"].startswith("binary data: NUL byte")
    bad = frame[frame["parse_error"].notna()]
    assert bad["ts"].isna().all() and bad["user"].isna().all() and bad["raw_excerpt"].notna().all()
    assert row(frame, "auth.txt:5")["raw_excerpt"].startswith("soon,U22@DOM1")

    first = row(frame, "auth.txt:1")
    assert first["event_id"] == "lanl:auth.txt:1"
    assert first["ts"] == DEFAULT_EPOCH + pd.Timedelta(seconds=1)
    assert (first["event_type"], first["user"], first["src_host"], first["dst_host"]) == (
        "auth",
        "ANONYMOUS LOGON@C586",
        "C1250",
        "C586",
    )
    assert (first["auth_type"], first["logon_type"], first["success"]) == ("ntlm", "network", True)
    second = row(frame, "auth.txt:2")
    assert pd.isna(second["auth_type"]) and pd.isna(second["logon_type"])
    crlf = row(frame, "auth.txt:8")
    assert (crlf["auth_type"], crlf["logon_type"], crlf["success"], crlf["dst_host"]) == (
        "ntlm",
        "remote_interactive",
        False,
        "C1003",
    )
    rare = row(frame, "auth.txt:9")
    assert (rare["auth_type"], rare["logon_type"]) == ("other", "other")
    assert frame["label"].isna().all()  # no red-team file given
    reconciles(frame)


def test_lanl_gzip_chunks_and_epoch(tmp_path: Path) -> None:
    plain = read_lanl(write(tmp_path / "auth.txt", AUTH_LINES))
    chunks = list(iter_lanl(write(tmp_path / "auth.txt.gz", AUTH_LINES, compress=True), chunk_rows=2))
    assert [len(c) for c in chunks] == [2, 2, 2, 2, 1]
    gz = pd.concat(chunks, ignore_index=True)
    assert gz["raw_ref"].tolist() == [f"auth.txt.gz:{i}" for i in range(1, 10)]
    same = [c for c in CONTRACT if c not in ("raw_ref", "event_id")]
    pd.testing.assert_frame_equal(gz[same], plain[same])
    shifted = read_lanl(tmp_path / "auth.txt", epoch="2015-01-01")
    assert shifted.loc[0, "ts"] == pd.Timestamp("2015-01-01 00:00:01", tz="UTC")


def test_lanl_redteam_join_with_real_redteam_file(tmp_path: Path) -> None:
    redteam = load_redteam(need(REDTEAM))
    assert len(redteam) == 715  # 749 lines, 715 distinct (time, user, src, dst) tuples
    real = sorted(redteam)[:3]
    lines = []
    for t, user, src, dst in real:
        lines.append(f"{t},{user},{user},{src},{dst},Kerberos,Network,LogOn,Success".encode())
    t, user, src, dst = real[0]
    lines += [
        f"{t},{user},{user},{src},C99999,Kerberos,Network,LogOn,Success".encode(),  # other destination
        f"{t + 1},{user},{user},{src},{dst},Kerberos,Network,LogOn,Success".encode(),  # other second
        f"{t},U1@DOM1,U1@DOM1,{src},{dst},Kerberos,Network,LogOn,Success".encode(),  # other user
        f"{t},{user},{user},{src},{dst},Kerberos,Network,LogOn".encode(),  # damaged red-team line
    ]
    frame = read_lanl(write(tmp_path / "auth_sample.txt", lines), redteam=REDTEAM)
    check_contract(frame, len(lines))
    assert frame["label"].tolist()[:6] == [1, 1, 1, 0, 0, 0]
    assert frame["label_detail"].tolist()[:3] == ["redteam"] * 3
    assert frame["label_detail"][3:6].isna().all()
    assert pd.isna(frame.loc[6, "label"]) and frame.loc[6, "parse_error"].startswith("wrong field count")
    # The same labels from the pre-loaded tuples, and from a tuple collection.
    again = read_lanl(tmp_path / "auth_sample.txt", redteam=redteam)
    pd.testing.assert_series_equal(again["label"], frame["label"])
    reconciles(frame)


def test_lanl_proc_flows_dns(tmp_path: Path) -> None:
    proc = read_lanl(
        write(
            tmp_path / "proc.txt",
            [b"1,C553$@DOM1,C553,P16,Start", b"2,C553$@DOM1,C553,P16,End", b"3,U1@DOM1,C1,P4,Restart"],
        ),
        redteam=[(1, "x", "y", "z")],
    )
    check_contract(proc, 3)
    assert (proc.loc[0, "event_type"], proc.loc[0, "process"], proc.loc[0, "src_host"]) == (
        "process_start",
        "P16",
        "C553",
    )
    assert proc.loc[0, "label"] == 0  # a red-team file is given: non-auth events are label 0
    assert proc.loc[1, "parse_error"].startswith("unsupported event: process End")
    assert proc.loc[2, "parse_error"].startswith("bad value: field start/end value 'Restart'")

    flows = read_lanl(
        write(
            tmp_path / "flows.txt",
            [b"1,9,C3090,N10471,C3420,N46,6,3,144", b"1,0,C1,N1,C2,443,17,1,60", b"2,x,C1,N1,C2,80,6,1,60"],
        )
    )
    check_contract(flows, 3)
    first, second = flows.iloc[0], flows.iloc[1]
    assert (
        first["event_type"],
        first["protocol"],
        first["packets"],
        first["bytes_out"],
        first["duration_s"],
    ) == (
        "network_flow",
        "tcp",
        3,
        144,
        9,
    )
    assert pd.isna(first["dst_port"]) and pd.isna(first["bytes_in"])  # N46 is an anonymised port
    assert (second["dst_port"], second["protocol"]) == (443, "udp")
    assert flows.loc[2, "parse_error"].startswith("bad number: field duration value 'x'")

    dns = read_lanl(write(tmp_path / "dns.txt", [b"2,C4653,C5030", b"2,C1"]))
    check_contract(dns, 2)
    assert (dns.loc[0, "event_type"], dns.loc[0, "src_host"], dns.loc[0, "dst_host"]) == (
        "dns",
        "C4653",
        "C5030",
    )
    assert dns.loc[1, "parse_error"].startswith("wrong field count: expected 3")


def test_lanl_kind_detection(tmp_path: Path) -> None:
    odd = write(tmp_path / "events.txt", [b"1,C1,C2"])
    assert detect_lanl_kind(odd) == "dns"
    assert detect_lanl_kind(write(tmp_path / "x.txt", AUTH_LINES[:1])) == "auth"
    with pytest.raises(ValueError, match="red-team label file"):
        detect_lanl_kind(tmp_path / "redteam.txt")
    with pytest.raises(ValueError, match="pass kind="):
        detect_lanl_kind(write(tmp_path / "junk.txt", [b"hello"]))


def test_long_lines_and_block_boundaries(tmp_path: Path) -> None:
    """An over-long line is one parse_error row; block cuts never split or lose a line."""
    lines = [b"1,C1,C2", b"2,C1," + b"C" * 500, b"3,C1,C3", b"4,C2,C4"]
    frame = read_lanl(write(tmp_path / "dns.txt", lines), max_line_bytes=100, chunk_rows=3)
    check_contract(frame, 4)
    assert errors_by_ref(frame) == {"dns.txt:2": "line too long: 505 bytes, more than max_line_bytes=100"}
    # The block reader on its own, with reads much smaller than a line and no final line break.
    import io

    data = b"\n".join([b"a" * 30, b"b" * 300, b"", b"c" * 5, b"d" * 7])
    blocks = list(common.iter_line_blocks(io.BytesIO(data), chunk_rows=2, max_line_bytes=50, read_bytes=7))
    got = [blk.line(i) for blk in blocks for i in range(blk.n_lines)]
    assert [len(x) for x in got] == [30, 52, 0, 5, 7]  # the 300-byte line keeps max+2 bytes
    assert [blk.first_line for blk in blocks] == [1, 3, 5]
    assert blocks[0].overlong == {1: 300}


# --------------------------------------------------------------------------------------------
# Zeek
# --------------------------------------------------------------------------------------------

ZEEK_HEADER = [
    b"#separator \\x09",
    b"#set_separator\t,",
    b"#empty_field\t(empty)",
    b"#unset_field\t-",
    b"#path\tconn",
    b"#open\t2024-03-01-10-00-00",
    b"#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tservice\tduration\torig_bytes\tresp_bytes\torig_pkts\tresp_pkts\tlabel\tdetailedlabel",
    b"#types\ttime\tstring\taddr\tport\taddr\tport\tenum\tstring\tinterval\tcount\tcount\tcount\tcount\tstring\tstring",
]


def test_zeek_tsv_handwritten(tmp_path: Path) -> None:
    lines = [
        *ZEEK_HEADER,  # 1-8
        b"1709287205.5\tCb\t10.0.0.1\t50000\t10.0.0.2\t443\ttcp\tssl\t1.5\t100\t2000\t5\t6\tBenign\tWeb",  # 9
        b"1709287200.25\tCa\t10.0.0.1\t50001\t10.0.0.3\t53\tudp\tdns\t-\t-\t-\t1\t-\tMalicious\tC&C",  # 10
        b"1709287201.0\tCc\t10.0.0.1\t8\t10.0.0.4\t0\ticmp\t-\t0.1\t64\t64\t1\t1\tBackground\t(empty)",  # 11
        b"1709287202.0\tCd\t10.0.0.1\t1\t10.0.0.4",  # 12: too few fields
        b"-\tCe\t10.0.0.1\t1\t10.0.0.4\t80\ttcp\t-\t-\t-\t-\t-\t-\t-\t-",  # 13: unset ts
        b"1709287203.0\tCf\t10.0.0.1\t1\t10.0.0.4\t80\ttcp\t-\t-\tlots\t-\t-\t-\t-\t-",  # 14: bad number
        b"",  # 15: empty
        b"#close\t2024-03-01-11-00-00",  # 16
    ]
    frame = read_zeek(write(tmp_path / "conn.log", lines))
    check_contract(frame, 7)  # 7 data lines; the 9 header lines are not rows
    errors = errors_by_ref(frame)
    assert set(errors) == {"conn.log:12", "conn.log:13", "conn.log:14", "conn.log:15"}
    assert errors["conn.log:12"].startswith("wrong field count: expected 15 tab-separated fields")
    assert errors["conn.log:13"] == "missing required field: ts is unset"
    assert errors["conn.log:14"].startswith("bad number: field orig_bytes value 'lots'")
    assert errors["conn.log:15"] == "empty line"
    good = frame[frame["parse_error"].isna()]
    assert good["raw_ref"].tolist() == ["conn.log:10", "conn.log:11", "conn.log:9"]  # sorted by ts
    assert frame["parse_error"].tail(4).notna().all()  # parse-error rows last
    flow = row(frame, "conn.log:9")
    assert flow["event_id"] == "zeek:Cb"
    assert flow["ts"] == pd.Timestamp(1709287205.5, unit="s", tz="UTC")
    assert (flow["src_host"], flow["dst_host"], flow["dst_port"], flow["protocol"]) == (
        "10.0.0.1",
        "10.0.0.2",
        443,
        "tcp",
    )
    assert (flow["bytes_out"], flow["bytes_in"], flow["packets"], flow["duration_s"]) == (100, 2000, 11, 1.5)
    assert (flow["label"], flow["label_detail"]) == (0, "Web")
    dns = row(frame, "conn.log:10")
    assert (dns["label"], dns["label_detail"], dns["packets"]) == (1, "C&C", 1)
    assert pd.isna(dns["bytes_out"]) and pd.isna(dns["duration_s"])
    icmp = row(frame, "conn.log:11")
    assert pd.isna(icmp["dst_port"]) and pd.isna(icmp["label"]) and pd.isna(icmp["label_detail"])
    unsorted = read_zeek(tmp_path / "conn.log", sort=False)
    assert unsorted["raw_ref"].tolist() == [f"conn.log:{i}" for i in range(9, 16)]
    # Blocks that cut through the header or hold only header lines change nothing.
    for chunk_rows in (1, 2, 5):
        pd.testing.assert_frame_equal(
            read_zeek(tmp_path / "conn.log", sort=False, chunk_rows=chunk_rows), unsorted
        )
    reconciles(frame)


def test_zeek_concatenated_logs_and_iot23_layout(tmp_path: Path) -> None:
    second_header = [
        b"#separator \\x09",
        b"#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\ttunnel_parents   label   detailed-label",
    ]
    lines = [
        *ZEEK_HEADER[:7],
        b"1.0\tC1\t10.0.0.1\t1\t10.0.0.2\t80\ttcp\t-\t-\t-\t-\t-\t-\tBenign\t-",  # 8
        *second_header,  # 9-10: a new layout (IoT-23 style)
        b"2.0\tC2\t10.0.0.1\t1\t10.0.0.5\t23\ttcp\t(empty)   Malicious   PartOfAHorizontalPortScan",  # 11
        b"3.0\tC3\t10.0.0.1\t1\t10.0.0.6\t23\ttcp\t(empty)   Malicious",  # 12: one value short
    ]
    frame = read_zeek(write(tmp_path / "conn.cat.log.gz", lines, compress=True))
    check_contract(frame, 3)
    assert frame["raw_ref"].tolist() == ["conn.cat.log.gz:8", "conn.cat.log.gz:11", "conn.cat.log.gz:12"]
    assert frame["label"].tolist()[:2] == [0, 1]
    assert frame.loc[1, "label_detail"] == "PartOfAHorizontalPortScan"
    assert frame.loc[2, "parse_error"].startswith(
        "wrong field count: field 'tunnel_parents   label   detailed-label'"
    )


def test_zeek_json_lines(tmp_path: Path) -> None:
    records = [
        {"ts": 1709287200.5, "uid": "CJ1", "id.orig_h": "10.0.0.1", "id.orig_p": 5, "id.resp_h": "10.0.0.2",
         "id.resp_p": 22, "proto": "tcp", "duration": 2.0, "orig_bytes": 10, "resp_bytes": 20,
         "orig_pkts": 1, "resp_pkts": 2, "label": "Malicious", "detailedlabel": "Bruteforce"},
        {"ts": "2024-03-01T10:00:00Z", "uid": "CJ2", "id": {"orig_h": "10.0.0.3", "resp_h": "10.0.0.4",
         "resp_p": 53}, "proto": "udp"},
    ]  # fmt: skip
    lines = [json.dumps(r).encode() for r in records] + [b"{not json", json.dumps({"uid": "x"}).encode()]
    frame = read_zeek(write(tmp_path / "conn.json", lines), sort=False)
    check_contract(frame, 4)
    assert (frame.loc[0, "event_id"], frame.loc[0, "label"], frame.loc[0, "label_detail"]) == (
        "zeek:CJ1",
        1,
        "Bruteforce",
    )
    assert (frame.loc[0, "packets"], frame.loc[0, "dst_port"]) == (3, 22)
    assert (frame.loc[1, "src_host"], frame.loc[1, "dst_port"], frame.loc[1, "protocol"]) == (
        "10.0.0.3",
        53,
        "udp",
    )
    assert frame.loc[1, "ts"] == pd.Timestamp("2024-03-01T10:00:00Z")
    assert frame.loc[2, "parse_error"].startswith("invalid JSON")
    assert frame.loc[3, "parse_error"] == "missing required field: ts is absent"
    assert detect_format(tmp_path / "conn.json") == "zeek"


@pytest.mark.parametrize(
    ("name", "rows", "malicious", "benign", "unknown"),
    [(ZEEK_MIXED.name, 5663, 4201, 1402, 60), (ZEEK_NJRAT.name, 992, 244, 9, 739)],
)
def test_zeek_real_stratosphere_captures(
    name: str, rows: int, malicious: int, benign: int, unknown: int
) -> None:
    path = need(DATA_DIR / "stratosphere" / name)
    frame = read_zeek(path)
    check_contract(frame, rows)
    assert frame["parse_error"].isna().all()
    assert (frame["label"] == 1).sum() == malicious and (frame["label"] == 0).sum() == benign
    assert frame["label"].isna().sum() == unknown
    assert frame["ts"].is_monotonic_increasing  # the file is small: sorted as a whole
    assert frame["event_id"].is_unique and frame["event_id"].str.startswith("zeek:C").all()
    assert detect_format(path) == "zeek"
    # raw_ref points at the physical line: check a few against the file itself.
    text = path.read_text().split("\n")
    for ref, uid in frame[["raw_ref", "event_id"]].sample(5, random_state=1).itertuples(index=False):
        line = int(ref.rsplit(":", 1)[1])
        assert text[line - 1].split("\t")[1] == uid.removeprefix("zeek:")
    if name == ZEEK_MIXED.name:
        assert set(frame.loc[frame["label"] == 1, "label_detail"]) == {"External-Attack-to-Device"}
        reconciles(frame)
    else:
        # Timestamps relative to the capture start: 1970 under the default policy's ts_min.
        result = validate_events(frame)
        assert result.rows_quarantined == rows
        reconciles(frame)


# --------------------------------------------------------------------------------------------
# DARPA
# --------------------------------------------------------------------------------------------


def test_darpa_handwritten_csv_gz(tmp_path: Path) -> None:
    lines = [
        b"172.016.112.020,192.168.001.010,06/01/1998-07:55,-",  # 1
        b"192.168.001.005,192.168.001.001,06/01/1998-08:01,neptune",  # 2
        b"192.168.001.005,192.168.001.001,13/45/1998-99:99,-",  # 3: bad time
        b"192.168.001.005,192.168.001.001,06/01/1998-08:02",  # 4: 3 fields
        b"172.016.112.050,197.182.091.233,07/32/1998-05:31,httptunnel-e",  # 5: July 32 (as in the real file)
    ]
    path = write(tmp_path / "darpa.csv.gz", lines, compress=True)
    frame = read_darpa(path)
    check_contract(frame, 5)
    assert frame["raw_ref"].tolist() == [f"darpa.csv.gz:{i}" for i in range(1, 6)]  # stream order
    errors = errors_by_ref(frame)
    assert set(errors) == {"darpa.csv.gz:3", "darpa.csv.gz:4", "darpa.csv.gz:5"}
    assert errors["darpa.csv.gz:3"].startswith("bad timestamp: field time value '13/45/1998-99:99'")
    assert errors["darpa.csv.gz:4"].startswith("wrong field count: expected 4")
    assert errors["darpa.csv.gz:5"].startswith("bad timestamp: field time value '07/32/1998-05:31'")
    assert (frame.loc[0, "src_host"], frame.loc[0, "dst_host"], frame.loc[0, "label"]) == (
        "172.016.112.020",
        "192.168.001.010",
        0,
    )
    assert frame.loc[0, "ts"] == pd.Timestamp("1998-06-01 07:55", tz="UTC")
    assert (frame.loc[1, "label"], frame.loc[1, "label_detail"], frame.loc[1, "event_type"]) == (
        1,
        "neptune",
        "network_flow",
    )
    rolled = read_darpa(path, roll_over_days=True)
    assert rolled.loc[4, "ts"] == pd.Timestamp("1998-08-01 05:31", tz="UTC")
    assert pd.isna(rolled.loc[4, "parse_error"])
    reconciles(frame, ValidationPolicy(ts_min="1998-01-01"))


def test_darpa_real_zip_first_lines() -> None:
    path = need(DARPA_ZIP)
    n = 20_000
    stream = iter_darpa(path, chunk_rows=n)
    frame = next(stream)
    stream.close()  # only the first n lines are read and parsed
    check_contract(frame, n)
    assert frame["raw_ref"].tolist() == [
        f"darpa_original.zip/darpa_original.csv:{i}" for i in range(1, n + 1)
    ]
    with zipfile.ZipFile(path) as archive, archive.open("darpa_original.csv") as handle:
        raw = [next(handle).rstrip(b"\n").decode().split(",") for _ in range(n)]
    assert frame["src_host"].tolist() == [r[0] for r in raw]
    assert frame["dst_host"].tolist() == [r[1] for r in raw]
    assert frame["label"].tolist() == [int(r[3] != "-") for r in raw]
    expected_ts = pd.to_datetime([r[2] for r in raw], format="%m/%d/%Y-%H:%M").tz_localize("UTC")
    assert (frame["ts"].to_numpy() == expected_ts.to_numpy()).all()
    assert frame["parse_error"].isna().all()
    assert detect_format(path) == "darpa"
    reconciles(frame.head(2000), ValidationPolicy(ts_min="1998-01-01"))


# --------------------------------------------------------------------------------------------
# OCSF
# --------------------------------------------------------------------------------------------

OCSF_RECORDS: list[dict] = [
    {  # 1: Authentication, logon failure over Kerberos
        "class_uid": 3002, "class_name": "Authentication", "category_uid": 3, "activity_id": 1,
        "type_uid": 300201, "time": 1709287200123, "severity_id": 1,
        "metadata": {"uid": "auth-1", "version": "1.1.0", "product": {"name": "test"}},
        "user": {"name": "alice", "uid": "S-1-5-21-1"}, "actor": {"user": {"name": "SYSTEM"}},
        "src_endpoint": {"ip": "10.0.0.7"}, "dst_endpoint": {"hostname": "dc01", "ip": "10.0.0.1"},
        "auth_protocol_id": 2, "logon_type_id": 3, "status_id": 2, "status": "Failure",
    },
    {  # 2: Network Activity with traffic
        "class_uid": 4001, "activity_id": 6, "time": 1709287201000, "metadata": {"version": "1.1.0"},
        "src_endpoint": {"ip": "10.0.0.7", "port": 50123}, "dst_endpoint": {"ip": "93.184.216.34", "port": 443},
        "connection_info": {"protocol_name": "TCP", "direction_id": 2},
        "traffic": {"bytes_out": 1200, "bytes_in": 34000, "packets_out": 10, "packets_in": 25},
        "duration": 1500,
    },
    {  # 3: Process Activity, Launch
        "class_uid": 1007, "activity_id": 1, "time": 1709287202000, "device": {"hostname": "ws07"},
        "actor": {"user": {"name": "bob"}}, "process": {"pid": 4242, "file": {"path": "C:\\Windows\\System32\\cmd.exe"}},
    },
    {"class_uid": 1007, "activity_id": 2, "activity_name": "Terminate", "time": 1709287203000},  # 4
    {"class_uid": 2004, "class_name": "Detection Finding", "time": 1709287204000},  # 5
    {"class_uid": 3002, "activity_id": 1, "user": {"name": "carol"}},  # 6: no time
    {  # 7: captions instead of ids, ISO time_dt
        "class_uid": 3002, "activity_id": 1, "time_dt": "2024-03-01T10:00:05Z", "user": {"name": "dave"},
        "auth_protocol": "NTLM", "logon_type": "RemoteInteractive", "status": "Success",
        "device": {"hostname": "srv2"},
    },
    {"class_uid": 4001, "time": 1709287206000, "dst_endpoint": {"ip": "10.0.0.9", "port": "http"}},  # 8
]  # fmt: skip


def test_ocsf_classes_and_quarantine(tmp_path: Path) -> None:
    lines = [json.dumps(r).encode() for r in OCSF_RECORDS] + [
        b"[1, 2]",  # 9: not an object
        b"   ",  # 10: blank
        b'{"class_uid": 3002, "time": 1, "user": {"name": "\xff\xfe"}}',  # 11: invalid UTF-8
        b'{"class_uid": 3002, "time": 1, "user": {"name": "a\x00b"}}',  # 12: NUL
    ]
    frame = read_ocsf(write(tmp_path / "ocsf.jsonl", lines))
    check_contract(frame, 12)
    errors = errors_by_ref(frame)
    assert set(errors) == {f"ocsf.jsonl:{i}" for i in (4, 5, 6, 8, 9, 10, 11, 12)}
    assert errors["ocsf.jsonl:10"] == "empty line"
    assert errors["ocsf.jsonl:11"].startswith("not valid UTF-8")
    assert errors["ocsf.jsonl:12"].startswith("binary data: NUL byte")
    assert errors["ocsf.jsonl:4"].startswith("unsupported event: Process Activity activity_id 2 (Terminate)")
    assert errors["ocsf.jsonl:5"].startswith(
        "unsupported event: class_uid 2004 (Detection Finding) is not one of"
    )
    assert errors["ocsf.jsonl:6"].startswith("missing required field: time")
    assert errors["ocsf.jsonl:8"].startswith("bad value: field dst_endpoint.port value 'http'")
    assert errors["ocsf.jsonl:9"].startswith("JSON not an object")
    auth = row(frame, "ocsf.jsonl:1")
    assert auth["event_id"] == "ocsf:auth-1"
    assert auth["ts"] == pd.Timestamp(1709287200123, unit="ms", tz="UTC")
    assert (auth["event_type"], auth["user"], auth["src_host"], auth["dst_host"]) == (
        "auth",
        "alice",
        "10.0.0.7",
        "dc01",
    )
    assert (auth["auth_type"], auth["logon_type"], auth["success"]) == ("kerberos", "network", False)
    flow = row(frame, "ocsf.jsonl:2")
    assert flow["event_id"] == "ocsf:ocsf.jsonl:2"
    assert (flow["event_type"], flow["dst_port"], flow["protocol"]) == ("network_flow", 443, "tcp")
    assert (flow["bytes_out"], flow["bytes_in"], flow["packets"], flow["duration_s"]) == (
        1200,
        34000,
        35,
        1.5,
    )
    proc = row(frame, "ocsf.jsonl:3")
    assert (proc["event_type"], proc["user"], proc["src_host"], proc["process"]) == (
        "process_start",
        "bob",
        "ws07",
        "cmd.exe",
    )
    captions = row(frame, "ocsf.jsonl:7")
    assert (captions["auth_type"], captions["logon_type"], captions["success"], captions["dst_host"]) == (
        "ntlm",
        "remote_interactive",
        True,
        "srv2",
    )
    assert captions["ts"] == pd.Timestamp("2024-03-01T10:00:05Z")
    assert frame["label"].isna().all()
    assert detect_format(tmp_path / "ocsf.jsonl") == "ocsf"
    reconciles(frame)


# --------------------------------------------------------------------------------------------
# Windows
# --------------------------------------------------------------------------------------------

WINDOWS_RECORDS: list[dict] = [
    {  # 1: flat 4624
        "EventID": 4624, "TimeCreated": "2024-03-01T10:00:00.1234567Z", "Computer": "WS01.corp.local",
        "EventRecordID": 1001, "TargetUserName": "alice", "TargetDomainName": "CORP", "LogonType": 3,
        "IpAddress": "10.0.0.7", "WorkstationName": "WS07", "AuthenticationPackageName": "Kerberos",
    },
    {  # 2: nested 4625 with a Data list
        "Event": {"System": {"EventID": {"#text": "4625"}, "TimeCreated": {"@SystemTime": "2024-03-01T10:00:01Z"},
                             "Computer": "WS01.corp.local", "EventRecordID": "1002"},
                  "EventData": {"Data": [{"@Name": "TargetUserName", "#text": "bob"},
                                         {"@Name": "LogonType", "#text": "10"},
                                         {"@Name": "IpAddress", "#text": "-"},
                                         {"@Name": "WorkstationName", "#text": "-"},
                                         {"@Name": "AuthenticationPackageName", "#text": "NTLM"}]}},
    },
    {  # 3: 4688
        "EventID": 4688, "TimeCreated": "/Date(1709287202000)/", "Computer": "WS01.corp.local",
        "SubjectUserName": "alice", "TargetUserName": "-", "NewProcessName": "C:\\Windows\\System32\\cmd.exe",
    },
    {  # 4: 4768, nested with a plain EventData object
        "Event": {"System": {"EventID": 4768, "TimeCreated": {"SystemTime": "2024-03-01T10:00:03Z"},
                             "Computer": "DC01.corp.local"},
                  "EventData": {"TargetUserName": "carol", "IpAddress": "::ffff:10.0.0.8", "Status": "0x0"}},
    },
    {  # 5: 4769, failed
        "EventID": "4769", "TimeCreated": "2024-03-01T10:00:04Z", "Computer": "DC01.corp.local",
        "TargetUserName": "dave@CORP.LOCAL", "ServiceName": "WS02$", "IpAddress": "10.0.0.9", "Status": "0x1F",
    },
    {"EventID": 4634, "TimeCreated": "2024-03-01T10:00:05Z", "Computer": "WS01"},  # 6: logoff
    {"EventID": 4624, "Computer": "WS01", "TargetUserName": "erin"},  # 7: no time
    {"EventID": 4624, "TimeCreated": "yesterday", "Computer": "WS01"},  # 8: bad time
]  # fmt: skip


def test_windows_events_both_shapes(tmp_path: Path) -> None:
    lines = [json.dumps(r).encode() for r in WINDOWS_RECORDS] + [b'{"EventID": 4624,']  # 9: truncated
    path = write(tmp_path / "security.jsonl.gz", lines, compress=True)
    frame = read_windows(path)
    check_contract(frame, 9)
    ref = "security.jsonl.gz:{}".format
    errors = errors_by_ref(frame)
    assert set(errors) == {ref(i) for i in (6, 7, 8, 9)}
    assert errors[ref(6)].startswith(
        "unsupported event: EventID 4634 is not one of 4624, 4625, 4688, 4768, 4769"
    )
    assert errors[ref(7)] == "missing required field: TimeCreated is absent"
    assert errors[ref(8)].startswith("bad timestamp: value 'yesterday'")
    assert errors[ref(9)].startswith("invalid JSON")
    logon = row(frame, ref(1))
    assert logon["event_id"] == "windows:WS01.corp.local:1001"
    assert logon["ts"] == pd.Timestamp("2024-03-01T10:00:00.1234567Z")
    assert (logon["event_type"], logon["user"], logon["src_host"], logon["dst_host"]) == (
        "auth",
        "alice",
        "WS07",
        "WS01.corp.local",
    )
    assert (logon["logon_type"], logon["auth_type"], logon["success"]) == ("network", "kerberos", True)
    failed = row(frame, ref(2))
    assert failed["event_id"] == "windows:WS01.corp.local:1002"
    assert (failed["user"], failed["logon_type"], failed["auth_type"], failed["success"]) == (
        "bob",
        "remote_interactive",
        "ntlm",
        False,
    )
    assert pd.isna(failed["src_host"])
    proc = row(frame, ref(3))
    assert (proc["event_type"], proc["user"], proc["process"], proc["src_host"]) == (
        "process_start",
        "alice",
        "cmd.exe",
        "WS01.corp.local",
    )
    assert proc["ts"] == pd.Timestamp(1709287202000, unit="ms", tz="UTC")
    assert proc["event_id"] == "windows:security.jsonl.gz:3"  # no record number
    tgt = row(frame, ref(4))
    assert (tgt["user"], tgt["src_host"], tgt["dst_host"], tgt["auth_type"], tgt["success"]) == (
        "carol",
        "10.0.0.8",
        "DC01.corp.local",
        "kerberos",
        True,
    )
    tgs = row(frame, ref(5))
    assert (tgs["user"], tgs["success"]) == ("dave", False)
    assert detect_format(path) == "windows"
    reconciles(frame)


# --------------------------------------------------------------------------------------------
# Registry and detection
# --------------------------------------------------------------------------------------------


def test_registry_detection_and_read_events(tmp_path: Path) -> None:
    assert set(FORMATS) == {"canonical", "lanl", "zeek", "darpa", "ocsf", "windows"}
    auth = write(tmp_path / "a.txt", AUTH_LINES)
    assert detect_format(auth) == "lanl"
    darpa = write(tmp_path / "d.csv", [b"1.2.3.4,5.6.7.8,06/01/1998-07:55,-"] * 3)
    assert detect_format(darpa) == "darpa"
    canonical = write(
        tmp_path / "c.csv", [b"event_id,ts,event_type,user", b"e1,2024-03-01T10:00:00Z,auth,alice"]
    )
    assert detect_format(canonical) == "canonical"
    assert read_events(canonical)["user"].tolist() == ["alice"]
    # Chunks and the one-call read agree; fmt is passed through.
    whole = read_events(auth, chunk_rows=4)
    parts = list(iter_events(auth, "lanl", chunk_rows=4))
    pd.testing.assert_frame_equal(whole, pd.concat(parts, ignore_index=True))
    # Ambiguous: an OCSF object that also carries a Windows EventID.
    both = {"class_uid": 3002, "time": 1, "EventID": 4624, "TimeCreated": "2024-03-01T10:00:00Z"}
    with pytest.raises(FormatDetectionError, match="ocsf, windows") as info:
        detect_format(write(tmp_path / "both.jsonl", [json.dumps(both).encode()]))
    assert info.value.candidates == ("ocsf", "windows")
    with pytest.raises(FormatDetectionError, match="fit none"):
        detect_format(write(tmp_path / "prose.txt", [b"hello world", b"more prose"]))
    with pytest.raises(FormatDetectionError, match="redteam"):
        detect_format(write(tmp_path / "rt.txt", [b"150885,U620@DOM1,C17693,C1003"]))
    with pytest.raises(ValueError, match="unknown format"):
        read_events(auth, fmt="syslog")


def test_bad_arguments_fail_at_the_call(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="input file not found"):
        iter_lanl(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="chunk_rows"):
        iter_darpa(write(tmp_path / "d.csv", [b"a"]), chunk_rows=0)
    archive = tmp_path / "two.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("a.csv", "1.2.3.4,5.6.7.8,06/01/1998-07:55,-\n")
        z.writestr("b.csv", "1.2.3.4,5.6.7.8,06/01/1998-07:56,smurf\n")
    with pytest.raises(ValueError, match="pass member="):
        list(iter_darpa(archive))
    picked = read_darpa(archive, member="b.csv")
    assert picked["raw_ref"].tolist() == ["two.zip/b.csv:1"]
    assert picked["label_detail"].tolist() == ["smurf"]


def test_empty_inputs_give_no_rows(tmp_path: Path) -> None:
    empty = tmp_path / "auth.txt"
    empty.write_bytes(b"")
    assert list(iter_lanl(empty)) == []
    assert len(read_events(empty, fmt="lanl")) == 0
    assert list(read_events(empty, fmt="lanl").columns) == CONTRACT
    np.testing.assert_array_equal(read_lanl(empty).columns, CONTRACT)
