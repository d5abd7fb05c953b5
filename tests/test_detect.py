"""``anomaly-pipeline detect`` and ``anomaly-pipeline datasets``: output table, raw_ref back to the
input line, labels and metrics, clear errors; data set listing. Training is one epoch per stage."""

from __future__ import annotations

import contextlib
import csv
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from anomaly_pipeline import cli
from anomaly_pipeline.detect import (
    KNOWN_DATASETS,
    UNDEFINED_ONE_CLASS,
    DetectError,
    dataset_search_dirs,
    detect_file,
    label_metrics,
)
from anomaly_pipeline.sources.synthetic import SyntheticConfig, generate_events

TINY = SyntheticConfig(seed=5, n_users=10, n_servers=5, n_external=20, days=3, events_per_user_day=12.0)
ZEEK = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "stratosphere" / "008-zeek-mixed.conn.log.labeled"
REQUIRED = ("raw_ref", "ts", "score", "rank", "calibrated_tail", "event_type", "user", "src_host", "dst_host",
            "reasons")
FAST = ["--epochs-per-stage", "1"]


@pytest.fixture(scope="module")
def synthetic_csv(tmp_path_factory) -> Path:
    """The tiny synthetic enterprise as ``anomaly-pipeline generate`` writes it, plus one damaged line."""
    events = generate_events(TINY)
    path = tmp_path_factory.mktemp("detect") / "events.csv"
    events.drop(columns=["source", "raw_ref"]).to_csv(path, index=False)
    with path.open("a") as handle:
        handle.write("this line,is,damaged\n")
    return path


def _line(path: Path, ref: str) -> str:
    name, line = ref.rsplit(":", 1)
    assert name == path.name
    with path.open() as handle:
        for number, text in enumerate(handle, start=1):
            if number == int(line):
                return text
    raise AssertionError(f"{ref}: the file has fewer lines")


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def synthetic_detect(synthetic_csv, tmp_path_factory):
    out = tmp_path_factory.mktemp("detect_out") / "ranked.csv"
    stdout = io.StringIO()  # capsys is function-scoped; this fixture runs once per module
    with contextlib.redirect_stdout(stdout):
        rc = cli.main(["detect", "--input", str(synthetic_csv), "--train-fraction", "0.5", "--output", str(out),
                       "--explain-top", "5", *FAST])
    return rc, stdout.getvalue(), out


def test_detect_writes_a_ranked_table_with_the_columns(synthetic_detect):
    rc, printed, out = synthetic_detect
    assert rc == 0
    table = pd.read_csv(out)
    for column in (*REQUIRED, "label"):
        assert column in table.columns, column
    assert len(table) > 100
    assert table["rank"].tolist() == list(range(1, len(table) + 1))
    assert (np.diff(table["score"].to_numpy()) <= 1e-9).all()  # rank 1 = highest score
    assert table["calibrated_tail"].between(0, 1).all()
    assert table["reasons"].iloc[:5].notna().all() and (table["reasons"].iloc[:5].str.len() > 0).all()
    assert table["reasons"].iloc[5:].isna().all()
    assert set(table["label"].dropna().unique()) <= {0, 1}


def test_detect_seed_changes_the_model_not_the_events(synthetic_detect, synthetic_csv, tmp_path, capsys):
    _, _, out0 = synthetic_detect
    out1 = tmp_path / "seed1.csv"
    rc, _, _ = _run(["detect", "--input", str(synthetic_csv), "--train-fraction", "0.5", "--output", str(out1),
                     "--explain-top", "5", "--seed", "1", *FAST], capsys)
    assert rc == 0
    a = pd.read_csv(out0, dtype={"raw_ref": str}).set_index("raw_ref").sort_index()
    b = pd.read_csv(out1, dtype={"raw_ref": str}).set_index("raw_ref").sort_index()
    assert a.index.equals(b.index)  # the same events scored: the split does not depend on the seed
    assert not np.allclose(a["score"], b["score"])  # another initialisation, another model


def test_detect_scores_only_the_part_after_the_training_span(synthetic_detect, synthetic_csv):
    _, printed, out = synthetic_detect
    table = pd.read_csv(out)
    source = pd.read_csv(synthetic_csv, usecols=["ts"]).iloc[:-1]  # without the damaged last line
    ts_in = pd.to_datetime(source["ts"], utc=True, format="ISO8601")
    scored = pd.to_datetime(table["ts"], utc=True)
    t0 = ts_in.min().floor("h")
    n_buckets = int((ts_in.max() - t0) / pd.Timedelta(hours=1)) + 1
    first_scored_bucket = int(np.ceil(n_buckets * 0.5))
    assert scored.min() >= t0 + pd.Timedelta(hours=first_scored_bucket)
    assert len(table) == (ts_in >= t0 + pd.Timedelta(hours=first_scored_bucket)).sum()


def test_raw_ref_points_at_the_input_line_of_the_event(synthetic_detect, synthetic_csv):
    _, _, out = synthetic_detect
    table = pd.read_csv(out, dtype={"raw_ref": str, "src_host": str, "dst_host": str, "user": str})
    header = next(csv.reader(synthetic_csv.open()))
    for row in pd.concat([table.head(10), table.sample(20, random_state=0)]).itertuples(index=False):
        fields = dict(zip(header, next(csv.reader([_line(synthetic_csv, row.raw_ref)])), strict=True))
        assert pd.Timestamp(fields["ts"]) == pd.Timestamp(row.ts)
        assert fields["src_host"] == (row.src_host if isinstance(row.src_host, str) else "")
        assert fields["dst_host"] == (row.dst_host if isinstance(row.dst_host, str) else "")
        assert fields["event_type"] == row.event_type
        assert int(fields["label"]) == int(row.label)


def test_detect_reports_quarantine_progress_and_metrics(synthetic_detect):
    _, printed, _ = synthetic_detect
    assert "1 of " in printed and "lines quarantined" in printed and "top reasons: parse" in printed
    assert "epoch 1/3" in printed and "epoch 3/3" in printed  # one epoch per stage, three stages
    assert "ROC-AUC" in printed and "average precision" in printed
    assert "wall time" in printed


def test_detect_without_labels_has_no_label_column(tmp_path, capsys):
    events = generate_events(TINY).drop(columns=["source", "raw_ref", "label", "label_detail"])
    path = tmp_path / "unlabelled.csv"
    events.to_csv(path, index=False)
    result = detect_file(path, train_fraction=0.5, explain_top=0, epochs_per_stage=1, log=lambda _: None)
    assert not result.has_labels
    assert "label" not in result.table.columns
    assert result.metrics["roc_auc"] is None and "no labels" in result.metrics["metrics_note"]


@pytest.mark.skipif(not ZEEK.is_file(), reason=f"Stratosphere capture not present at {ZEEK}")
def test_detect_on_the_real_zeek_capture(tmp_path, capsys):
    out = tmp_path / "zeek.csv"
    rc, printed, err = _run(["detect", "--input", str(ZEEK), "--train-fraction", "0.3", "--output", str(out),
                             "--explain-top", "3", *FAST], capsys)
    assert rc == 0, err
    assert "as zeek" in printed and "0 of 5,663 lines quarantined" in printed
    assert "ROC-AUC" in printed  # a number or the undefined note, never a crash
    table = pd.read_csv(out, dtype={"raw_ref": str})
    assert "label" in table.columns and table["label"].notna().any()
    assert table["rank"].tolist() == list(range(1, len(table) + 1))
    for row in table.head(5).itertuples(index=False):
        fields = _line(ZEEK, row.raw_ref).rstrip("\n").split("\t")
        assert abs(float(fields[0]) - pd.Timestamp(row.ts).timestamp()) < 1e-3
        assert fields[2] == row.src_host and fields[4] == row.dst_host


def test_too_short_a_span_says_what_to_do(tmp_path, capsys):
    events = generate_events(TINY).head(40).copy()
    events["ts"] = events["ts"].iloc[0] + pd.to_timedelta(np.arange(40), unit="min")  # 40 events in 40 minutes
    path = tmp_path / "short.csv"
    events.drop(columns=["source", "raw_ref"]).to_csv(path, index=False)
    rc, _, err = _run(["detect", "--input", str(path), "--train-fraction", "0.3", "--output",
                       str(tmp_path / "o.csv"), *FAST], capsys)
    assert rc == 2
    assert "too short a time span" in err and "spans several hours" in err


def test_unknown_or_undetectable_format_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["detect", "--input", "x.csv", "--format", "bogus", "--train-fraction", "0.3", "--output", "o.csv"])
    assert exc.value.code == 2 and "invalid choice: 'bogus'" in capsys.readouterr().err
    with pytest.raises(DetectError, match="unknown format 'bogus'"):
        detect_file(__file__, train_fraction=0.3, fmt="bogus")
    notes = tmp_path / "notes.txt"
    notes.write_text("just some prose\nnothing like a log\n")
    rc, _, err = _run(["detect", "--input", str(notes), "--train-fraction", "0.3", "--output", "o.csv"], capsys)
    assert rc == 2 and "fit none of the formats" in err and "--format" in err
    rc, _, err = _run(["detect", "--input", str(tmp_path / "missing.csv"), "--train-fraction", "0.3",
                       "--output", "o.csv"], capsys)
    assert rc == 2 and "not found" in err
    with pytest.raises(SystemExit) as exc:  # refused while parsing, before the file is read
        cli.main(["detect", "--input", str(notes), "--train-fraction", "1.5", "--output", "o.csv"])
    assert exc.value.code == 2 and "between 0 and 1" in capsys.readouterr().err


def test_metrics_one_class_is_undefined_not_an_error():
    metrics = label_metrics(np.array([1.0, 1.0, np.nan]), np.array([0.1, 0.5, 0.2]))
    assert metrics["roc_auc"] is None and metrics["metrics_note"].startswith(UNDEFINED_ONE_CLASS)
    metrics = label_metrics(np.array([1.0, 0.0, np.nan]), np.array([0.9, 0.1, 0.2]))
    assert metrics["roc_auc"] == 1.0 and metrics["labelled"] == 2


def test_datasets_list_shows_origins_and_local_paths(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ANOMALY_PIPELINE_DATA_DIR", str(tmp_path))
    (tmp_path / "darpa98").mkdir()
    (tmp_path / "darpa98" / "darpa_original.zip").write_bytes(b"PK")
    rc, printed, _ = _run(["datasets", "list"], capsys)
    assert rc == 0
    for name in ("darpa98", "lanl-redteam", "stratosphere-008-mixed", "stratosphere-001-malicious"):
        assert name in printed and KNOWN_DATASETS[name].url in printed
    assert str(tmp_path / "darpa98" / "darpa_original.zip") in printed
    assert printed.count("not found") == len(KNOWN_DATASETS) - 1
    assert "https://github.com/Stream-AD/MIDAS" in printed and "csr.lanl.gov" in printed


def test_dataset_search_order_without_the_environment_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("ANOMALY_PIPELINE_DATA_DIR", raising=False)
    dirs = dataset_search_dirs(tmp_path / "home")
    assert dirs[0] == (tmp_path / "home").resolve() / "data" / "datasets"
    assert dirs[1] == Path(cli.__file__).resolve().parents[1].parent / "shared" / "datasets"


def test_datasets_download_of_an_unknown_name_is_refused(capsys):
    rc, _, err = _run(["datasets", "download", "no-such-set"], capsys)
    assert rc == 2 and "unknown data set 'no-such-set'" in err and "darpa98" in err


def test_write_table_matches_the_former_strftime_writer(tmp_path):
    """Issue 15: ``ts`` is formatted vectorised now; the CSV is byte for byte what the former
    ``strftime`` writer produced (microseconds, ``Z``, empty cells for missing values)."""
    from anomaly_pipeline.detect import write_table

    ts = pd.Series(pd.to_datetime(["1998-06-01 07:55:00", "2026-01-05 09:00:00.123456", "2000-02-29 23:59:59.5"],
                                  utc=True, format="ISO8601"))
    table = pd.DataFrame({
        "rank": [1, 2, 3],
        "score": [12.3456789, np.nan, 1e-7],
        "calibrated_tail": [0.0, 1.0, 0.25],
        "raw_ref": pd.array(["f:1", "f:2", None], dtype="string"),
        "ts": ts,
        "user": pd.array([None, "u1", "u,2"], dtype="string"),
        "dst_port": pd.array([80, None, 443], dtype="Int32"),
        "label": pd.array([1, 0, None], dtype="Int8"),
        "reasons": ["a; b", "", ""],
    })
    former = table.copy()
    former["ts"] = pd.to_datetime(former["ts"], utc=True).dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    former.to_csv(tmp_path / "former.csv", index=False, float_format="%.6g")
    write_table(table, tmp_path / "now.csv")
    assert (tmp_path / "now.csv").read_bytes() == (tmp_path / "former.csv").read_bytes()
    assert "2026-01-05T09:00:00.123456Z" in (tmp_path / "now.csv").read_text()
    assert table["ts"].dtype == ts.dtype  # the caller's table is left as it was


def test_csv_writer_writes_what_pandas_writes(tmp_path):
    """Issue 15: ``write_table``'s vectorised writer against ``DataFrame.to_csv``, byte for byte, on
    cells that need quoting, missing values, float edge cases, every column kind of the detect
    table, and blocks that cut the rows; a column it cannot format goes to pandas whole."""
    from anomaly_pipeline.csv_writer import write_csv

    rng = np.random.default_rng(0)
    n = 500
    floats = rng.standard_normal(n) * 10.0 ** rng.integers(-12, 12, n)
    floats[::7] = np.nan
    floats[1:6] = [np.inf, -np.inf, -0.0, 0.0, 5e-324]
    words = np.array(["x\ry", 'q"q', "c,d", "", None, " s", "n\nl", "é", "plain", '"', ",", "a\r\nb"], dtype=object)

    def pick():
        return words[rng.integers(0, len(words), n)]

    table = pd.DataFrame({
        "rank": np.arange(n), "score": floats, "f32": floats.astype(np.float32), "obj": pick(),
        "obj_na": pd.Series(pick()).where(lambda s: s != "plain", pd.NA), "text": pd.array(pick(), dtype="string"),
        "port": pd.array(np.where(rng.random(n) < 0.3, None, rng.integers(0, 65535, n)), dtype="Int32"),
        "label": pd.array(np.where(rng.random(n) < 0.3, None, rng.integers(0, 2, n)), dtype="Int8"),
        "category": pd.Categorical(pick()), 'odd,"name': 1,
    })
    cases = [(table, 7), (table, 100_000), (pd.DataFrame({"flag": [True, False], "mixed": [1, "x"]}), 7)]
    for frame, block_rows in cases:
        frame.to_csv(tmp_path / "pandas.csv", index=False, float_format="%.6g")
        write_csv(frame, tmp_path / "ours.csv", float_format="%.6g", block_rows=block_rows)
        assert (tmp_path / "ours.csv").read_bytes() == (tmp_path / "pandas.csv").read_bytes()


def test_repeated_ids_found_by_hash_equal_pandas_duplicated(monkeypatch):
    """Issue 15: repeats are found from 64-bit hashes (pieces of ``ID_HASH_PIECE`` ids), not a
    table of every id; the result is pandas' ``duplicated`` (first kept), missing ids never repeat."""
    import anomaly_pipeline.detect as detect

    rng = np.random.default_rng(0)
    ids = pd.Series([f"e{v}" for v in rng.integers(0, 400, size=1000)], dtype="string[pyarrow]")
    ids[rng.integers(0, 1000, size=30)] = pd.NA
    monkeypatch.setattr(detect, "ID_HASH_PIECE", 77)  # repeats across pieces
    expected = (ids.duplicated(keep="first") & ids.notna()).to_numpy()
    assert expected.sum() > 300
    np.testing.assert_array_equal(detect._repeated(ids), expected)
    assert not detect._repeated(pd.Series([f"e{i}" for i in range(500)], dtype="string[pyarrow]")).any()
    assert len(detect._repeated(pd.Series([], dtype="string[pyarrow]"))) == 0


def test_raw_refs_split_into_file_and_line_join_back_exactly():
    """Issue 15: ``detect`` keeps ``raw_ref`` as a file code and a line number until the table
    (50 bytes an event less); joined back, every reference is the same string. A reference of
    another shape (no line number, a leading zero, a second file) leaves the column as it is."""
    from anomaly_pipeline.detect import _joined_refs, _split_refs

    refs = ["C:\\logs\\a:b.csv:1", "C:\\logs\\a:b.csv:20", "C:\\logs\\a:b.csv:0", "C:\\logs\\a:b.csv:7",
            "C:\\logs\\a:b.csv:123456789012"]
    for dtype in ("string[pyarrow]", "string", object):
        events = pd.DataFrame({"raw_ref": pd.Series(refs, dtype=dtype), "n": range(len(refs))})
        assert _split_refs(events)
        assert "raw_ref" not in events.columns and events["_raw_ref_line"].dtype == np.int64
        order = np.array([4, 0, 2, 1, 3])
        joined = _joined_refs(events["_raw_ref_file"].take(order), events["_raw_ref_line"].take(order))
        assert joined.dtype == "string[pyarrow]"
        assert joined.tolist() == [refs[i] for i in order]
    for odd in (["a.csv:1", "a.csv"], ["a.csv:01"], ["a.csv:1", None], ["a.csv:1", "b.csv:2"], ["a.csv:1", "a.csv:x"],
                ["a.csv:1", "b.csx:2"]):
        events = pd.DataFrame({"raw_ref": pd.Series(odd, dtype="string[pyarrow]")})
        assert not _split_refs(events) and events["raw_ref"].tolist() == pd.Series(odd, dtype="string[pyarrow]").tolist()
