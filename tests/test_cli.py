"""The console script a user runs outside the UI."""

from __future__ import annotations

import pandas as pd

from anomaly_pipeline.cli import main
from anomaly_pipeline.sources.files import read_event_file
from anomaly_pipeline.validation import validate_events


def test_generate_writes_a_file_the_file_adapter_reads_back_cleanly(tmp_path, capsys):
    out = tmp_path / "events.csv"
    assert main(["generate", "--out", str(out), "--users", "20", "--days", "4", "--seed", "5"]) == 0
    assert "attack events" in capsys.readouterr().out
    events = read_event_file(out)
    result = validate_events(events)
    assert result.rows_quarantined == 0 and result.rows_valid == len(pd.read_csv(out)) > 1000
    assert events["label"].sum() > 0


def test_summary_without_a_run_says_what_to_do(tmp_path, capsys):
    assert main(["--home", str(tmp_path), "summary"]) == 1
    assert "run `make run` first" in capsys.readouterr().err


def test_models_list_on_an_empty_registry(tmp_path, capsys):
    assert main(["--home", str(tmp_path), "models", "list"]) == 0
    assert "no versions" in capsys.readouterr().out
