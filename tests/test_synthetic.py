"""The synthetic generator: determinism, the event contract, campaigns, benign novelty, rhythms, drift."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from anomaly_pipeline.schema import CATEGORICAL_DOMAINS, REQUIRED_COLUMNS, empty_events
from anomaly_pipeline.sources.synthetic import (
    CAMPAIGNS,
    ROLLOUT_PROCESS,
    SUPPLY_CHAIN_PROCESS,
    SyntheticConfig,
    campaign_summary,
    generate_events,
)

SMALL = SyntheticConfig(n_users=20, n_servers=6, days=4)
DEFAULT = SyntheticConfig()
START = pd.Timestamp(DEFAULT.start, tz="UTC")


@pytest.fixture(scope="module")
def default_events() -> pd.DataFrame:
    return generate_events(DEFAULT)


@pytest.fixture(scope="module")
def small_events() -> pd.DataFrame:
    return generate_events(SMALL)


def _campaign(events: pd.DataFrame, name: str) -> pd.DataFrame:
    return events[events["label_detail"].fillna("").str.startswith(f"{name}:")]


def _period_fraction(ts: pd.Series | pd.Timestamp, days: int) -> pd.Series | float:
    """Position in the period: 0 at the start, 1 at the end."""
    return (ts - START) / pd.Timedelta(days=days)


def _benign(events: pd.DataFrame) -> pd.DataFrame:
    return events[events["label"] == 0]


def _humans(events: pd.DataFrame) -> pd.Series:
    """Rows acted by a regular user or admin (not SYSTEM, not service accounts)."""
    return events["user"].str.fullmatch(r"u\d{4}|adm\d{3}").fillna(False).astype(bool)


def _max_hosts_per_hour(auth: pd.DataFrame) -> int:
    """Most distinct dst_hosts one user authenticates to within any sliding one-hour window."""
    best = 0
    for _, events in auth.sort_values("ts").groupby("user"):
        ts, hosts = events["ts"].dt.tz_localize(None).to_numpy(), events["dst_host"].to_numpy()
        ends = np.searchsorted(ts, ts + np.timedelta64(1, "h"))
        best = max([best, *(len(set(hosts[i:j])) for i, j in enumerate(ends))])
    return best


# -- determinism and contract ---------------------------------------------------------------


def test_same_config_gives_identical_frame(small_events: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(generate_events(SMALL), small_events)


def test_other_seed_gives_other_events(small_events: pd.DataFrame) -> None:
    other = generate_events(replace(SMALL, seed=8))
    assert other["event_id"].iloc[0] == "synthetic-8-0"
    assert len(other) != len(small_events) or not other["ts"].equals(small_events["ts"])
    # Same estate (names), different behaviour: who talks to whom differs.
    assert set(other["user"].dropna()) & set(small_events["user"].dropna()) >= {
        "u0000",
        "adm000",
        "svc_backup",
    }
    pairs = [
        set(zip(frame["user"].fillna(""), frame["dst_host"].fillna(""), strict=True))
        for frame in (other, small_events)
    ]
    assert pairs[0] != pairs[1]


@pytest.mark.parametrize("fixture", ["small_events", "default_events"])
def test_follows_the_event_contract(fixture: str, request: pytest.FixtureRequest) -> None:
    events: pd.DataFrame = request.getfixturevalue(fixture)
    pd.testing.assert_series_equal(events.dtypes, empty_events().dtypes)
    for column in REQUIRED_COLUMNS:
        assert events[column].notna().all(), column
    for column, domain in CATEGORICAL_DOMAINS.items():
        assert set(events[column].dropna().unique()) <= set(domain), column
    seed = DEFAULT.seed
    positions = pd.Series(np.arange(len(events))).astype(str)
    assert (events["event_id"] == f"synthetic-{seed}-" + positions).all()
    assert (events["raw_ref"] == f"synthetic:seed={seed}:row=" + positions).all()
    assert (events["source"] == "synthetic").all()
    assert events["label"].notna().all() and set(events["label"].unique()) == {0, 1}
    is_attack = events["label"] == 1
    assert events.loc[~is_attack, "label_detail"].isna().all()
    assert events.loc[is_attack, "label_detail"].str.fullmatch(rf"({'|'.join(CAMPAIGNS)}):[a-z_]+").all()


def test_fields_match_the_event_type(default_events: pd.DataFrame) -> None:
    ev = default_events
    auth = ev[ev["event_type"] == "auth"]
    assert auth[["user", "src_host", "dst_host", "auth_type", "logon_type", "success"]].notna().all().all()
    proc = ev[ev["event_type"] == "process_start"]
    assert proc[["user", "src_host", "process"]].notna().all().all() and proc["dst_host"].isna().all()
    flow = ev[ev["event_type"] == "network_flow"]
    numeric = ["dst_port", "bytes_out", "bytes_in", "packets", "duration_s"]
    assert flow[["src_host", "dst_host", "protocol", *numeric]].notna().all().all()
    assert (flow[numeric[1:]] >= 0).all().all() and flow["dst_port"].between(0, 65535).all()
    assert ev.loc[ev["event_type"] != "network_flow", "bytes_out"].isna().all()


@pytest.mark.parametrize("fixture,config", [("small_events", SMALL), ("default_events", DEFAULT)])
def test_sorted_and_inside_the_period(
    fixture: str, config: SyntheticConfig, request: pytest.FixtureRequest
) -> None:
    events: pd.DataFrame = request.getfixturevalue(fixture)
    assert events["ts"].is_monotonic_increasing
    assert events["ts"].min() >= START
    assert events["ts"].max() < START + pd.Timedelta(days=config.days)


# -- size, entities, labels -----------------------------------------------------------------


def test_default_size_entities_and_attack_share(default_events: pd.DataFrame) -> None:
    ev = default_events
    assert 100_000 <= len(ev) <= 150_000
    share = ev["label"].mean()
    assert 0.001 <= share <= 0.01, share
    users = set(ev["user"].dropna())
    assert sum(u.startswith("u") and u[1:].isdigit() for u in users) >= 120
    assert sum(u.startswith("adm") for u in users) >= 2
    assert {"svc_backup", "svc_sql", "SYSTEM"} <= users
    hosts = pd.concat([ev["src_host"], ev["dst_host"]]).dropna().unique()
    hosts = pd.Series(hosts)
    assert hosts.str.fullmatch(r"WS\d{4}").sum() >= 126  # one per user and admin (+ onboarded)
    assert {"SRV-FILE01", "SRV-DB01", "SRV-WEB01", "SRV-APP01", "SRV-BKP01", "DC01", "DC03"} <= set(hosts)
    assert hosts.str.fullmatch(r"SRV-[A-Z]+\d{2}").sum() == DEFAULT.n_servers
    external = hosts.str.fullmatch(r"(203\.0\.113|198\.51\.100|192\.0\.2)\.\d+|ext-[a-z]+-\d+\.example")
    assert external.sum() >= 100
    assert {
        "chrome.exe",
        "outlook.exe",
        "powershell.exe",
        "svchost.exe",
        "sqlservr.exe",
        "backup_agent.exe",
    } <= set(ev["process"].dropna())
    # Benign typos: about 2 % of users' logons fail.
    human_auth = ev[(ev["event_type"] == "auth") & _humans(ev) & (ev["label"] == 0)]
    assert 0.01 <= 1 - human_auth["success"].mean() <= 0.03


@pytest.mark.parametrize("fixture,config", [("small_events", SMALL), ("default_events", DEFAULT)])
def test_every_campaign_present_and_in_the_test_period(
    fixture: str, config: SyntheticConfig, request: pytest.FixtureRequest
) -> None:
    events: pd.DataFrame = request.getfixturevalue(fixture)
    summary = campaign_summary(events).set_index("campaign")
    assert set(summary.index) == set(CAMPAIGNS)
    assert (summary["n_events"] >= 3).all()
    assert summary["n_events"].sum() == events["label"].sum()
    # Time-ordered evaluation tests on the end: every campaign has events in the last 40 %.
    assert (_period_fraction(summary["last_ts"], config.days) >= 0.6).all(), summary
    lateral = summary.loc["lateral_movement"]
    assert 0.3 <= _period_fraction(lateral["first_ts"], config.days) <= 0.55
    assert _period_fraction(lateral["last_ts"], config.days) >= 0.8
    assert summary.loc["lateral_movement", "stages"].split(", ")[0] == "initial_access"


def _split_of(events: pd.DataFrame) -> np.ndarray:
    """0 train, 1 validation, 2 test per row: the default time-ordered split, computed as
    ``build_graph_windows`` does (1 h buckets from the floored first ts, ceil of the fractions)."""
    from anomaly_pipeline.graph import WindowConfig

    config = WindowConfig()
    assert config.stride_hours == 1.0 and config.adaptive_events_per_bucket is None
    ts = events["ts"]
    bucket = np.floor((ts - ts.min().floor("60min")).dt.total_seconds().to_numpy() / 3600.0).astype(int)
    n_buckets = int(bucket.max()) + 1
    train_end = int(np.ceil(n_buckets * config.train_fraction))
    val_end = int(np.ceil(n_buckets * (config.train_fraction + config.validation_fraction)))
    return np.where(bucket < train_end, 0, np.where(bucket < val_end, 1, 2))


@pytest.mark.parametrize(
    "config",
    [replace(DEFAULT, seed=seed) for seed in range(5)] + [SMALL, replace(SMALL, seed=3, days=5)],
    ids=lambda c: f"seed{c.seed}-users{c.n_users}-days{c.days}",
)
def test_test_window_holds_every_campaign_and_none_dominates(config: SyntheticConfig) -> None:
    events = generate_events(config)
    split = _split_of(events)
    test = campaign_summary(events[split == 2]).set_index("campaign")["n_events"]
    assert set(test.index) == set(CAMPAIGNS), test
    assert test.max() <= 0.4 * test.sum(), test  # no single campaign dominates the test window
    assert test.sum() >= 30
    # Most campaigns also act before the test window: training sees some attacks, unlabelled.
    earlier = campaign_summary(events[split < 2]).set_index("campaign")["n_events"]
    assert len(earlier) >= 3 and earlier.sum() < test.sum(), earlier


def test_lateral_movement_reaches_hosts_never_touched(default_events: pd.DataFrame) -> None:
    ev = default_events
    lm = _campaign(ev, "lateral_movement")
    assert 30 <= len(lm) <= 120
    ws0 = lm.iloc[0]["src_host"]
    hops = lm[(lm["event_type"] == "auth") & (lm["label_detail"] == "lateral_movement:lateral_movement")]
    account = hops["user"].iloc[0]
    assert (hops["user"] == account).all() and account.startswith("adm")
    targets = set(hops["dst_host"])
    assert len(targets) >= 8
    benign = _benign(ev)
    seen = benign.loc[(benign["user"] == account) | (benign["src_host"] == ws0), "dst_host"]
    assert not targets & set(seen.dropna())
    assert hops["src_host"].nunique() >= 3  # hops on from compromised hosts, not only from ws0
    assert (hops["auth_type"] == "ntlm").mean() >= 0.4
    assert hops["ts"].dt.hour.between(8, 18).mean() >= 0.7  # mostly ordinary hours
    assert hops["ts"].dt.normalize().nunique() >= 4  # over several days


def test_password_spray_is_one_host_many_accounts_mostly_failing(default_events: pd.DataFrame) -> None:
    spray = _campaign(default_events, "password_spray")
    attempts = spray[spray["label_detail"] != "password_spray:initial_access"]
    assert attempts["src_host"].nunique() == 1 and attempts["dst_host"].nunique() == 1
    assert attempts["user"].nunique() >= 40
    assert (~attempts["success"]).mean() >= 0.9 and 1 <= attempts["success"].sum() <= 3
    # Low and slow: one password per round, each round within an hour, the rounds days apart
    # (one before the test window, one in it).
    rounds = attempts.groupby(attempts["ts"].dt.normalize())["ts"]
    assert rounds.ngroups == 2 and (rounds.max() - rounds.min() <= pd.Timedelta(hours=1)).all()
    assert rounds.min().diff().iloc[1] >= pd.Timedelta(days=1)


def test_insider_misuse_reads_unusual_servers_at_night(default_events: pd.DataFrame) -> None:
    ev = default_events
    insider = _campaign(ev, "insider_misuse")
    user = insider["user"].iloc[0]
    assert (insider["user"] == user).all() and user.startswith("u")
    assert insider["ts"].dt.hour.between(1, 3).all()
    benign = _benign(ev)
    own = benign[benign["user"] == user]
    assert not set(insider["dst_host"].dropna()) & set(own["dst_host"].dropna())
    flows = insider[insider["event_type"] == "network_flow"]
    own_flows = own[own["event_type"] == "network_flow"]
    assert flows["bytes_in"].median() >= 50 * own_flows["bytes_in"].median()


def test_exfiltration_sends_100x_to_a_new_endpoint(default_events: pd.DataFrame) -> None:
    ev = default_events
    exfil = _campaign(ev, "exfiltration")
    flows = exfil[exfil["event_type"] == "network_flow"]
    assert flows["src_host"].nunique() == 1 and flows["dst_host"].nunique() == 1
    assert flows["dst_host"].iloc[0] not in set(_benign(ev)["dst_host"].dropna())
    user = flows["user"].iloc[0]
    norm = _benign(ev).loc[(ev["user"] == user) & (ev["event_type"] == "network_flow"), "bytes_out"].median()
    ratio = flows["bytes_out"] / norm
    assert ratio.between(99, 1001).all(), ratio.describe()


def test_supply_chain_installs_then_beacons_regularly(default_events: pd.DataFrame) -> None:
    sc = _campaign(default_events, "supply_chain")
    installs = sc[sc["process"] == SUPPLY_CHAIN_PROCESS]
    assert installs["src_host"].nunique() >= 3
    assert installs["ts"].max() - installs["ts"].min() <= pd.Timedelta(days=1)
    beacons = sc[sc["event_type"] == "network_flow"]
    assert beacons["dst_host"].nunique() == 1 and (beacons["bytes_out"] < 1000).all()
    gaps = beacons.groupby("src_host")["ts"].apply(lambda s: s.diff().dt.total_seconds().median())
    assert np.allclose(gaps, DEFAULT.beacon_interval_s, rtol=0.02), gaps
    # Dormant after the installation, the implant beacons during working hours of the last days.
    assert beacons["ts"].min() - installs["ts"].max() >= pd.Timedelta(days=2)
    assert beacons["ts"].dt.hour.between(8, 17).all() and len(beacons) >= 20
    assert SUPPLY_CHAIN_PROCESS not in set(_benign(default_events)["process"].dropna())


# -- benign behaviour -----------------------------------------------------------------------


def test_benign_novelty_is_present_with_label_zero(default_events: pd.DataFrame) -> None:
    ev = default_events
    day = (ev["ts"] - START).dt.days
    # Software rollout: a new process on most workstations within a day.
    rollout = ev[ev["process"] == ROLLOUT_PROCESS]
    assert (rollout["label"] == 0).all()
    first_day = day[rollout.index].min()
    assert first_day >= 4  # appears mid-period, a first-seen process for rules trained on the start
    workstations = ev["src_host"].str.fullmatch(r"WS\d{4}").fillna(False).astype(bool)
    on_day = rollout[day[rollout.index] == first_day]
    assert on_day["src_host"].nunique() >= 0.5 * ev.loc[workstations, "src_host"].nunique()
    # Maintenance burst: one admin logs on to >= 25 hosts within one hour (label 0).
    admin_auth = ev[
        (ev["event_type"] == "auth") & ev["user"].str.startswith("adm").fillna(False) & (ev["label"] == 0)
    ]
    assert _max_hosts_per_hour(admin_auth) >= 25
    # Onboarding: new users on new workstations start mid-period and then work normally (label 0;
    # an attack may still target them, e.g. the password spray).
    first_seen = ev[_humans(ev)].groupby("user")["ts"].min()
    new_users = first_seen[_period_fraction(first_seen, DEFAULT.days) >= 0.4]
    assert len(new_users) >= 4
    for user, first in new_users.items():
        own = ev[(ev["user"] == user) & (ev["label"] == 0)]
        assert len(own) >= 20, user
        workstation = own.loc[own["event_type"] == "process_start", "src_host"].mode()[0]
        earlier = ev[ev["ts"] < first.normalize()]  # the machine may boot before the first logon
        assert workstation not in set(earlier["src_host"]) | set(earlier["dst_host"].dropna())


def test_office_rhythm_and_quiet_weekends(default_events: pd.DataFrame) -> None:
    ev = default_events
    hour = ev["ts"].dt.hour
    night, office = hour.between(0, 5), hour.between(9, 16)  # 6 and 8 hours wide
    humans = _humans(ev)
    assert office.sum() / 8 >= 5 * night.sum() / 6  # all traffic, service accounts included
    assert (office & humans).sum() / 8 >= 15 * (night & humans).sum() / 6
    by_hour = hour[humans].value_counts()
    assert by_hour[12] < by_hour[11] and by_hour[12] < by_hour[14]  # lunch dip
    per_day = ev.groupby(ev["ts"].dt.normalize()).size()
    weekend = per_day.index.dayofweek >= 5
    assert weekend.sum() == 2
    assert per_day[weekend].mean() <= 0.3 * per_day[~weekend].mean()


def test_service_accounts_follow_fixed_schedules(default_events: pd.DataFrame) -> None:
    ev = default_events
    backup = ev[(ev["user"] == "svc_backup") & (ev["process"] == "backup_agent.exe")]
    assert len(backup) == DEFAULT.days and (backup["ts"].dt.hour == 2).all()
    pulls = ev[(ev["user"] == "svc_backup") & (ev["event_type"] == "network_flow")]
    assert set(pulls["dst_host"]) >= {"SRV-FILE01", "SRV-DB01"} and pulls["bytes_in"].median() >= 1e8
    dc_kerberos = ev[(ev["event_type"] == "auth") & ev["dst_host"].str.startswith("DC").fillna(False)]
    assert len(dc_kerberos) >= 3000 and (dc_kerberos["auth_type"] == "kerberos").mean() >= 0.95


# -- drift and switches ---------------------------------------------------------------------


def test_drift_switch_reorganises_hosts_hours_and_volumes(small_events: pd.DataFrame) -> None:
    drift_day = 2
    drifted = generate_events(replace(SMALL, drift_start_day=drift_day))
    cut = START + pd.Timedelta(days=drift_day)
    # Nothing changes before the drift day.
    pd.testing.assert_frame_equal(
        drifted[drifted["ts"] < cut].reset_index(drop=True),
        small_events[small_events["ts"] < cut].reset_index(drop=True),
    )
    before, after = drifted[drifted["ts"] < cut], drifted[drifted["ts"] >= cut]

    def hosts(frame: pd.DataFrame) -> pd.Series:
        return pd.Series(pd.concat([frame["src_host"], frame["dst_host"]]).dropna().unique())

    assert not hosts(before).str.match(r"SRV2-|WSN").any()
    assert hosts(after).str.match(r"SRV2-|WSN").sum() >= 20  # new server range and workstations
    assert not hosts(after).str.fullmatch(r"WS\d{4}").any()  # users moved off their old machines
    users_before, users_after = (
        before[_humans(before) & (before["label"] == 0)],
        after[_humans(after) & (after["label"] == 0)],
    )
    assert users_after["ts"].dt.hour.mean() - users_before["ts"].dt.hour.mean() >= 1.5
    assert users_after["bytes_out"].median() >= 2 * users_before["bytes_out"].median()
    assert set(campaign_summary(drifted)["campaign"]) == set(CAMPAIGNS)


def test_switches_turn_off_attacks_and_novelty() -> None:
    quiet = generate_events(replace(SMALL, attacks=False, benign_novelty=False))
    assert (quiet["label"] == 0).all() and quiet["label_detail"].isna().all()
    assert ROLLOUT_PROCESS not in set(quiet["process"].dropna())
    summary = campaign_summary(quiet)
    assert summary.empty and list(summary.columns) == [
        "campaign",
        "n_events",
        "first_ts",
        "last_ts",
        "stages",
    ]


@pytest.mark.parametrize(
    "overrides",
    [
        {"n_users": 5},
        {"n_servers": 4},
        {"days": 2},
        {"drift_start_day": 0},
        {"drift_start_day": 4},
        {"start": "soon"},
    ],
)
def test_rejects_unusable_configs(overrides: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="invalid SyntheticConfig"):
        replace(SMALL, **overrides)
