"""The LANL-style benchmark background around the real red-team lines."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from anomaly_pipeline.sources.lanl import load_redteam, read_lanl
from anomaly_pipeline.sources.lanl_style import (
    generate_lanl_style_auth,
    read_redteam_lines,
    redteam_auth_pool,
)

REDTEAM = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "lanl" / "redteam.txt.gz"
pytestmark = pytest.mark.skipif(not REDTEAM.is_file(), reason=f"real red-team file not found at {REDTEAM}")

SMALL = dict(background_users=40, background_computers=80, events_per_user_day=4.0,
             machine_events_per_computer_day=1.0)
COLUMNS = ["time", "su", "du", "sc", "dc", "at", "lt", "o", "r"]


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("lanl_style") / "auth.txt.gz"
    return path, generate_lanl_style_auth(path, REDTEAM, seed=3, **SMALL)


def _lines(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, header=None, names=COLUMNS, dtype=str, keep_default_na=False)


def _is_red(lines: pd.DataFrame) -> np.ndarray:
    """Lines carrying a red-team (time, user, source, destination) tuple."""
    red = read_redteam_lines(REDTEAM)
    red_tuples = set(zip(red["time"].astype(str), red["user"], red["src"], red["dst"], strict=True))
    tuples = pd.Series(list(zip(lines["time"], lines["su"], lines["sc"], lines["dc"], strict=True)))
    return tuples.isin(red_tuples).to_numpy()


def test_redteam_file_is_the_real_one() -> None:
    red = read_redteam_lines(REDTEAM)
    assert len(red) == 749
    assert len(load_redteam(REDTEAM)) == 715


def test_redteam_lines_present_and_labelled_by_the_join(generated: tuple[Path, dict]) -> None:
    path, summary = generated
    assert summary["redteam_lines"] == 749 and summary["redteam_distinct"] == 715
    lines = _lines(path)
    assert len(lines) == summary["lines"] == summary["background_lines"] + 749
    red = read_redteam_lines(REDTEAM)
    is_red = _is_red(lines)
    assert is_red.sum() == 749  # the red-team lines and nothing else carry a red-team tuple
    written = lines.loc[is_red & (lines["su"] == lines["du"])]
    assert len(written) == 749  # destination user = source user
    keys = pd.MultiIndex.from_frame(written[["time", "su", "sc", "dc"]].astype({"time": np.int64}))
    red_keys = pd.MultiIndex.from_frame(red[["time", "user", "src", "dst"]].set_axis(["time", "su", "sc", "dc"], axis=1))
    assert red_keys.isin(keys).all()  # every red-team line is written at its real time
    times = lines["time"].astype(np.int64).to_numpy()
    assert (np.diff(times) >= 0).all() and times.min() >= 0
    assert summary["days"] == 31 and times.max() < 31 * 86400

    raw = read_lanl(path, kind="auth", redteam=REDTEAM)
    assert len(raw) == summary["lines"]
    assert raw["parse_error"].isna().all()  # zero quarantined at parsing
    assert int((raw["label"] == 1).sum()) == 749  # all lines, duplicates included
    labelled = raw.loc[raw["label"] == 1, ["ts", "user", "src_host", "dst_host"]].drop_duplicates()
    assert len(labelled) == 715
    assert (raw.loc[raw["label"] == 1, "label_detail"] == "redteam").all()
    assert raw["label"].notna().all()


def test_redteam_auth_fields_follow_the_background_remote_logon_mix(generated: tuple[Path, dict]) -> None:
    path, summary = generated
    lines = _lines(path)
    is_red = _is_red(lines)
    red, bg = lines.loc[is_red], lines.loc[~is_red]
    pool = bg.loc[redteam_auth_pool(bg["su"], bg["sc"], bg["dc"], bg["o"], not_to=summary["domain_controllers"])]
    assert len(pool) >= 1000
    fields = ["at", "lt", "o", "r"]
    # Not one constant signature: several auth types and orientations, mostly Success.
    assert red["at"].nunique() >= 3 and red["o"].nunique() >= 2
    assert red[fields].drop_duplicates().shape[0] >= 4
    assert red[fields].value_counts(normalize=True).iloc[0] < 0.8
    assert (red["r"] == "Success").mean() >= 0.9
    # Every red-team signature is one the background's remote user logons use, in about their mix.
    assert set(red[fields].apply(tuple, axis=1)) <= set(pool[fields].apply(tuple, axis=1))
    for column, value in (("at", "NTLM"), ("at", "Kerberos"), ("at", "Negotiate"), ("o", "TGS"), ("o", "LogOn")):
        share, expected = (red[column] == value).mean(), (pool[column] == value).mean()
        assert abs(share - expected) <= 0.05, (column, value, share, expected)
    assert summary["redteam_auth_types"] == red["at"].value_counts().to_dict()


def test_every_redteam_entity_has_background_activity(generated: tuple[Path, dict]) -> None:
    path, _ = generated
    lines = _lines(path)
    red = read_redteam_lines(REDTEAM)
    red_tuples = set(zip(red["time"].astype(str), red["user"], red["src"], red["dst"], strict=True))
    tuples = pd.Series(list(zip(lines["time"], lines["su"], lines["sc"], lines["dc"], strict=True)))
    bg = lines.loc[~tuples.isin(red_tuples).to_numpy()]
    assert len(bg) == len(lines) - 749
    bg_users = set(bg["su"])
    assert set(red["user"]) <= bg_users
    bg_hosts = set(bg["sc"]) | set(bg["dc"])
    assert set(red["src"]) | set(red["dst"]) <= bg_hosts
    # Red-team users are active across the period, from their own home workstation(s).
    user_days = bg.loc[bg["su"].isin(set(red["user"]))].assign(day=lambda f: f["time"].astype(int) // 86400)
    per_user_days = user_days.groupby("su")["day"].nunique()
    assert (per_user_days >= 20).all()
    # The red-team source computers are used in background as somebody's source host.
    assert set(red["src"]) <= set(bg["sc"])


def test_lanl_naming_and_vocabularies(generated: tuple[Path, dict]) -> None:
    path, _ = generated
    lines = _lines(path)
    user_pattern = re.compile(
        r"^(U\d+@(DOM1|C\d+)|C\d+\$@DOM1|ANONYMOUS LOGON@C\d+|SYSTEM@C\d+|LOCAL SERVICE@C\d+|NETWORK SERVICE@C\d+)$"
    )
    assert lines["su"].map(lambda u: bool(user_pattern.match(u))).all()
    assert lines["du"].map(lambda u: bool(user_pattern.match(u))).all()
    assert lines["sc"].str.fullmatch(r"C\d+").all() and lines["dc"].str.fullmatch(r"C\d+").all()
    # Local accounts (U123@C456) come from the red-team file's own users only.
    for prefix in (r"U\d+@DOM1", r"C\d+\$@DOM1", "ANONYMOUS LOGON@", "SYSTEM@"):
        assert lines["su"].str.match(prefix).any(), prefix
    assert set(lines["at"]) <= {"Kerberos", "NTLM", "Negotiate", "?"}
    assert {"Kerberos", "NTLM", "Negotiate", "?"} <= set(lines["at"])
    assert {"Network", "Service", "Batch", "Interactive", "Unlock", "?"} <= set(lines["lt"])
    assert set(lines["o"]) == {"LogOn", "LogOff", "TGS", "TGT", "AuthMap"}
    assert set(lines["r"]) == {"Success", "Fail"}
    fail = (lines["r"] == "Fail").mean()
    assert 0.003 < fail < 0.05


def test_deterministic_by_seed(tmp_path: Path, generated: tuple[Path, dict]) -> None:
    path, summary = generated
    again = tmp_path / "again.txt.gz"
    assert generate_lanl_style_auth(again, REDTEAM, seed=3, **SMALL) | {"path": str(path)} == summary
    assert again.read_bytes() == path.read_bytes()
    other = tmp_path / "other.txt"
    generate_lanl_style_auth(other, REDTEAM, seed=4, **SMALL)
    with gzip.open(path, "rb") as handle:
        assert other.read_bytes() != handle.read()


def test_days_must_cover_the_redteam(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ends before the last red-team event"):
        generate_lanl_style_auth(tmp_path / "a.txt", REDTEAM, days=10, **SMALL)
