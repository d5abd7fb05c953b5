"""Deterministic synthetic enterprise security telemetry: the project's embedded default source.

``generate_events(SyntheticConfig(seed=...))`` returns a canonical event table (see
``anomaly_pipeline.schema``) for a small Windows-domain enterprise over a few days:

* Entities: regular users (``u0042``), admins (``adm003``), service accounts (``svc_backup``,
  ``svc_sql``, ...), the ``SYSTEM`` account; one workstation per human (``WS0042``), servers by
  role (``SRV-FILE01``, ``SRV-DB02``, ``SRV-WEB03``, ``SRV-APP01``, the backup server
  ``SRV-BKP01``), domain controllers (``DC01``), external endpoints (``203.0.113.7``,
  ``ext-cdn-17.example``).
* Event types: ``auth`` (user, src_host, dst_host, auth_type, logon_type, success),
  ``process_start`` (user, src_host = host the process runs on, process) and ``network_flow``
  (src_host, dst_host, dst_port, protocol, bytes_out, bytes_in, packets, duration_s; user set
  when the flow belongs to a user's session).
* Benign behaviour: office-hours rhythm (local time equals UTC; peak 9-17 h with a lunch dip,
  little at night, weekends much lower), per-user habits (own workstation, a few usual servers,
  usual processes, usual external sites with heavy-tailed popularity), ~2 % benign logon typos,
  night-shift workers, service accounts on fixed schedules (``svc_backup`` at 02:00 pulling
  hundreds of MB from every file and database server), Kerberos ticket traffic to the DCs.
* Benign novelty (label 0) that fools first-seen rules: onboarding of new users with new
  workstations, an admin maintenance burst (one admin logs on to every server within an hour),
  a software rollout (``agent_update.exe`` appears on most hosts within a day).
* Attack campaigns (label 1, ``label_detail = "<campaign>:<stage>"``): ``lateral_movement``,
  ``password_spray``, ``insider_misuse``, ``exfiltration``, ``supply_chain``. They are placed for
  the default time-ordered evaluation split (``graph.WindowConfig``: first 60 % of the period
  train, next 20 % validation, last 20 % test): every campaign acts in the test window and none
  makes up more than about 35 % of its attack events (default config, any seed), while most
  campaigns also act earlier, so training sees some attacks (unlabelled): lateral movement runs
  from about the middle to the end (two thirds of its hops in the test window), the password
  spray tries one password before the test window and one in it, the insider reads data on one
  night before and up to two nights in it, the supply-chain implant is installed well before and
  beacons in the last two days only, the exfiltration happens in the test window.
* Optional drift (``drift_start_day``): a reorganisation moves users to new workstations
  (``WSN0042``), migrates file/db/app/backup servers to a new range (``SRV2-FILE01``), shifts
  working hours later, changes usual servers and makes flows heavier.

Everything is drawn from ``np.random.default_rng(seed)`` (one child stream per component, so a
component's draws do not depend on the others), without global state or wall-clock values: the
same config gives an identical table. The default config yields about 108k events (0.25 % of
them attacks, about 170 of them in the test window) in about half a second on a 2-core CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from anomaly_pipeline.schema import conform

__all__ = [
    "CAMPAIGNS",
    "ROLLOUT_PROCESS",
    "SUPPLY_CHAIN_PROCESS",
    "SYSTEM_ACCOUNT",
    "SyntheticConfig",
    "campaign_summary",
    "generate_events",
]

CAMPAIGNS: tuple[str, ...] = (
    "lateral_movement",
    "password_spray",
    "insider_misuse",
    "exfiltration",
    "supply_chain",
)
ROLLOUT_PROCESS = "agent_update.exe"  # benign software rollout (label 0)
SUPPLY_CHAIN_PROCESS = "updsvc.exe"  # trojanised updater (label 1)
SYSTEM_ACCOUNT = "SYSTEM"
SOURCE_NAME = "synthetic"

_DAY_S = 86_400.0
_HOUR_S = 3_600.0
# Campaigns are placed for the project's default time-ordered evaluation split (graph.WindowConfig:
# first 60 % of the period train, next 20 % validation, last 20 % test): every campaign acts in
# the test window, most also earlier (the model trains on some attack events, unlabelled).
_EVAL_TEST_START = 0.8
# Hours (local = UTC) in which the supply-chain implant beacons, like a C2 agent's "working hours"
# setting (PowerShell Empire's WorkingHours): its traffic hides in the office-hours traffic.
_BEACON_HOURS = (8.0, 18.0)

# Relative activity of an office worker per local hour 0..23: peak 9-17 h, lunch dip at 12 h,
# almost nothing at night.
_OFFICE_PROFILE = np.array(
    [0.25, 0.15, 0.10, 0.10, 0.15, 0.30, 0.80, 2.5, 6.5, 9.5, 10.0, 9.5,
     5.5, 8.0, 9.5, 9.5, 8.5, 6.0, 3.0, 1.6, 1.1, 0.8, 0.55, 0.35]
)  # fmt: skip
_OFFICE_CDF = np.cumsum(_OFFICE_PROFILE) / _OFFICE_PROFILE.sum()

# Server roles: share of the servers (the backup server is always one extra), the service port
# users reach them on, and which roles move to the SRV2 range in a reorganisation.
_ROLE_SHARES: dict[str, float] = {"FILE": 0.25, "DB": 0.20, "WEB": 0.25, "APP": 0.30}
_ROLE_PORT: dict[str, int] = {"FILE": 445, "DB": 1433, "WEB": 443, "APP": 8443, "BKP": 10000}
_MIGRATED_ROLES: tuple[str, ...] = ("FILE", "DB", "APP", "BKP")
# How likely a user's usual servers are of each role, before and after a reorganisation.
_USER_ROLE_WEIGHT: dict[str, float] = {"FILE": 3.0, "DB": 0.6, "WEB": 2.5, "APP": 2.0, "BKP": 0.0}
_USER_ROLE_WEIGHT_DRIFT: dict[str, float] = {"FILE": 2.0, "DB": 1.5, "WEB": 1.0, "APP": 3.0, "BKP": 0.0}
# (log median, log sd) of bytes_in and bytes_out of a user's flow to a server of each role.
_ROLE_BYTES: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "FILE": ((np.log(2e6), 1.6), (np.log(5e4), 1.2)),
    "DB": ((np.log(2e5), 1.3), (np.log(1e4), 1.0)),
    "WEB": ((np.log(1.5e5), 1.2), (np.log(5e3), 1.0)),
    "APP": ((np.log(6e4), 1.2), (np.log(8e3), 1.0)),
    "BKP": ((np.log(1e5), 1.0), (np.log(1e4), 1.0)),
}
_EXTERNAL_BYTES = ((np.log(8e4), 1.5), (np.log(4e3), 1.0))
_DNS_BYTES = ((np.log(180.0), 0.3), (np.log(80.0), 0.2))

# Workstation applications: (name, popularity among regular users, popularity among admins).
_APPS: tuple[tuple[str, float, float], ...] = (
    ("chrome.exe", 10, 6), ("outlook.exe", 9, 8), ("teams.exe", 8, 6), ("explorer.exe", 7, 7),
    ("msedge.exe", 5, 3), ("excel.exe", 5, 2), ("winword.exe", 5, 2), ("onedrive.exe", 3, 1),
    ("acrord32.exe", 2.5, 1), ("notepad.exe", 2, 3), ("powerpnt.exe", 2, 0.5), ("slack.exe", 1.5, 1),
    ("zoom.exe", 1.5, 1), ("code.exe", 1, 2), ("python.exe", 0.6, 1.5), ("cmd.exe", 0.6, 6),
    ("powershell.exe", 0.5, 12), ("rundll32.exe", 0.4, 0.8), ("mstsc.exe", 0.3, 8), ("putty.exe", 0.3, 3),
    ("ssms.exe", 0.3, 3), ("net.exe", 0.15, 2), ("mmc.exe", 0.0, 6), ("wireshark.exe", 0.0, 1),
)  # fmt: skip
_APP_NAMES = np.array([a[0] for a in _APPS], dtype=object)
_APP_WEIGHT_USER = np.array([a[1] for a in _APPS], dtype=float)
_APP_WEIGHT_ADMIN = np.array([a[2] for a in _APPS], dtype=float)

# Processes the operating system starts as SYSTEM, with relative frequency.
_WS_SYSTEM_PROCS = (
    ("svchost.exe", 10),
    ("msmpeng.exe", 3),
    ("taskhostw.exe", 3),
    ("searchindexer.exe", 2),
    ("wuauclt.exe", 1),
    ("conhost.exe", 2),
    ("backgroundtaskhost.exe", 2),
)
_SERVER_SYSTEM_PROCS = (
    ("svchost.exe", 10),
    ("msmpeng.exe", 3),
    ("wmiprvse.exe", 3),
    ("taskhostw.exe", 2),
    ("conhost.exe", 2),
)
_ROLE_SYSTEM_PROC: dict[str, str] = {
    "WEB": "w3wp.exe",
    "APP": "java.exe",
    "DB": "sqlagent.exe",
    "FILE": "dfsrs.exe",
    "BKP": "vssvc.exe",
    "DC": "lsass.exe",
}

_SERVICE_ACCOUNTS = (
    "svc_backup",
    "svc_sql",
    "svc_monitor",
    "svc_deploy",
    "svc_web",
    "svc_print",
    "svc_crm",
    "svc_reporting",
    "svc_av",
    "svc_hr_sync",
)
_EXTERNAL_CATEGORIES = ("cdn", "saas", "news", "mail", "api", "social", "video", "docs")
_EXTERNAL_IP_PREFIXES = ("203.0.113.", "198.51.100.")  # documentation ranges (RFC 5737)
# Endpoints only attacks or the rollout use: categories and ranges no benign site is drawn from.
_C2_LATERAL = "192.0.2.44"
_EXFIL_DROP = "ext-filedrop-9001.example"
_C2_BEACON = "ext-telemetry-9002.example"
_VENDOR_UPDATE = "ext-vendorupdate-1.example"
_SPRAY_EXTRA_ACCOUNTS = ("administrator", "guest", "test")


@dataclass(frozen=True)
class SyntheticConfig:
    """Size, calendar and behaviour of the synthetic enterprise.

    Counts are entities; ``days`` are calendar days starting at ``start`` (00:00 UTC; local time
    equals UTC). ``events_per_user_day`` is the average number of events a regular user
    generates on a weekday. Rates are probabilities per event unless stated otherwise.
    """

    seed: int = 7
    n_users: int = 120  # regular users; admins (~5 %) and service accounts (~4 %) are derived, >= 2 each
    n_servers: int = 30  # file, db, web, app servers plus one backup server
    n_domain_controllers: int = 3
    n_external: int = 200  # external endpoints used by benign traffic; attacks add a few rare ones
    days: int = 10
    start: str = "2026-01-05"  # a Monday, UTC
    events_per_user_day: float = 60.0
    attacks: bool = True
    drift_start_day: int | None = None  # from this day on, the reorganisation (module docstring)
    benign_novelty: bool = True  # onboarding, maintenance burst, software rollout
    auth_failure_rate: float = 0.02  # benign typos: failed logon shortly before a successful one
    novelty_rate: float = 0.04  # share of a user's server choices outside their habits (sites: 1.5x)
    night_shift_share: float = 0.03  # share of regular users working ~18:00-04:00
    weekend_activity: float = 0.35  # activity of a user who works on a weekend day, vs a weekday
    absence_rate: float = 0.04  # chance a user is absent on a weekday
    system_event_ratio: float = 0.45  # SYSTEM events on a workstation per user event there
    server_events_per_hour: float = 1.0  # SYSTEM background events per server or DC per hour
    beacon_interval_s: float = 3600.0  # supply-chain implant's beacon period, seconds
    drift_hour_shift: float = 3.0  # hours by which working hours move later after the drift
    drift_bytes_factor: float = 3.0  # multiplier on users' flow volumes after the drift

    def __post_init__(self) -> None:
        problems = []
        if self.n_users < 10:
            problems.append("n_users must be >= 10 (campaigns need distinct victims)")
        if self.n_servers < 5:
            problems.append("n_servers must be >= 5 (one per role: file, db, web, app, backup)")
        if self.n_domain_controllers < 1:
            problems.append("n_domain_controllers must be >= 1")
        if self.n_external < 10:
            problems.append("n_external must be >= 10")
        if self.days < 3:
            problems.append("days must be >= 3 (campaigns act before and in the last 20 %)")
        if self.events_per_user_day <= 0:
            problems.append("events_per_user_day must be > 0")
        if self.beacon_interval_s < 60:
            problems.append("beacon_interval_s must be >= 60")
        if self.drift_start_day is not None and not 1 <= self.drift_start_day < self.days:
            problems.append(f"drift_start_day must be in [1, {self.days - 1}] or None")
        for name in ("auth_failure_rate", "novelty_rate", "night_shift_share", "absence_rate"):
            if not 0.0 <= getattr(self, name) < 0.5:
                problems.append(f"{name} must be in [0, 0.5)")
        try:
            pd.Timestamp(self.start)
        except ValueError:
            problems.append(f"start {self.start!r} is not a date")
        if problems:
            raise ValueError("invalid SyntheticConfig: " + "; ".join(problems))


# --------------------------------------------------------------------------------------------
# Event blocks: column arrays, concatenated once at the end (no per-event Python objects).

_Block = dict[str, np.ndarray]
_STRING_FIELDS = (
    "user",
    "src_host",
    "dst_host",
    "process",
    "protocol",
    "auth_type",
    "logon_type",
    "label_detail",
)
_FLOAT_FIELDS = ("dst_port", "bytes_out", "bytes_in", "packets", "duration_s")


def _objects(value: object, n: int) -> np.ndarray:
    """``value`` (None, a scalar or an array of length n) as an object array of length n."""
    if value is None or isinstance(value, str | bool | np.bool_):
        return np.full(n, value, dtype=object)
    arr = np.asarray(value, dtype=object)
    if arr.ndim == 0:
        return np.full(n, arr.item(), dtype=object)
    if len(arr) != n:
        raise ValueError(f"field has {len(arr)} values for {n} events")
    return arr


def _block(t_s: object, event_type: str, **fields: object) -> _Block:
    """Events at ``t_s`` (seconds since the period start) with the given contract fields."""
    t = np.atleast_1d(np.asarray(t_s, dtype=float))
    n = len(t)
    out: _Block = {"t_s": t, "event_type": np.full(n, event_type, dtype=object)}
    for name in _STRING_FIELDS:
        out[name] = _objects(fields.pop(name, None), n)
    for name in _FLOAT_FIELDS:
        value = fields.pop(name, None)
        out[name] = (
            np.full(n, np.nan) if value is None else np.broadcast_to(np.asarray(value, float), (n,)).copy()
        )
    out["success"] = _objects(fields.pop("success", None), n)
    out["label"] = np.full(n, int(fields.pop("label", 0)), dtype=np.int8)  # type: ignore[call-overload]
    if fields:
        raise TypeError(f"unknown event fields: {sorted(fields)}")
    return out


def _auth(
    t_s: object,
    user: object,
    src: object,
    dst: object,
    *,
    auth_type: object = "kerberos",
    logon_type: object = "network",
    success: object = True,
    detail: str | None = None,
) -> _Block:
    """Authentication events; ``detail`` set means an attack event (label 1)."""
    return _block(
        t_s,
        "auth",
        user=user,
        src_host=src,
        dst_host=dst,
        auth_type=auth_type,
        logon_type=logon_type,
        success=success,
        label=detail is not None,
        label_detail=detail,
    )


def _proc(t_s: object, user: object, host: object, process: object, *, detail: str | None = None) -> _Block:
    """Process starts on ``host``; ``detail`` set means an attack event (label 1)."""
    return _block(
        t_s,
        "process_start",
        user=user,
        src_host=host,
        process=process,
        label=detail is not None,
        label_detail=detail,
    )


def _flow(
    rng: np.random.Generator,
    t_s: object,
    src: object,
    dst: object,
    port: object,
    bytes_out: object,
    bytes_in: object,
    *,
    protocol: object = "tcp",
    user: object = None,
    throughput_bps: float = 5e6,
    detail: str | None = None,
) -> _Block:
    """Network flows; packets and duration (s) follow from the volume (bytes) and a throughput."""
    t = np.atleast_1d(np.asarray(t_s, dtype=float))
    n = len(t)
    b_out = np.broadcast_to(np.asarray(bytes_out, float), (n,))
    b_in = np.broadcast_to(np.asarray(bytes_in, float), (n,))
    packets, duration = _flow_shape(rng.random(n), rng.standard_normal(n), b_out + b_in, throughput_bps)
    return _block(
        t,
        "network_flow",
        user=user,
        src_host=src,
        dst_host=dst,
        dst_port=port,
        protocol=protocol,
        bytes_out=np.round(b_out),
        bytes_in=np.round(b_in),
        packets=packets,
        duration_s=duration,
        label=detail is not None,
        label_detail=detail,
    )


def _flow_shape(
    u: np.ndarray, z: np.ndarray, total_bytes: np.ndarray, throughput_bps: float
) -> tuple[np.ndarray, np.ndarray]:
    """Packets (~1200 bytes each plus handshake) and duration in seconds for flows of ``total_bytes``."""
    packets = np.ceil(total_bytes / 1200.0) + 2 + np.floor(u * 8)
    duration = total_bytes / (throughput_bps * np.exp(0.6 * z)) + 0.02 + 0.3 * u
    return packets, np.round(duration, 3)


def _lognormal(z: np.ndarray, params: tuple[float, float]) -> np.ndarray:
    """exp(mu + sd * z) for standard normals ``z`` and (mu, sd) = (log median, log sd)."""
    return np.exp(params[0] + params[1] * z)


# --------------------------------------------------------------------------------------------
# The world: entities, calendar, habits and the cast of the scenarios.


@dataclass(frozen=True)
class _Cast:
    """Who plays which part in the scenarios (indices into the humans)."""

    patient_zero: int  # lateral movement: phished user whose workstation is the foothold
    stolen_admin: int  # lateral movement: admin whose credentials are used
    insider: int
    exfil_victim: int
    spray_host: int  # password spray comes from this user's workstation
    supply_chain_hosts: tuple[int, ...]  # workstations that receive the trojanised updater
    maintenance_admin: int  # benign maintenance burst


@dataclass
class _World:
    """Everything drawn once per config: who exists, their habits, the calendar, the cast."""

    cfg: SyntheticConfig
    humans: np.ndarray  # account names: regular users, admins, onboarded users
    is_admin: np.ndarray
    is_new: np.ndarray  # onboarded mid-period
    first_day: np.ndarray  # first day the account is active
    workstations: np.ndarray  # one per human, same index
    services: tuple[str, ...]
    servers: np.ndarray  # pre-reorganisation names; migrated by _rename_after_drift
    server_role: np.ndarray
    dcs: np.ndarray
    externals: np.ndarray
    external_popularity: np.ndarray  # heavy-tailed (Zipf), sums to 1
    is_weekday: np.ndarray  # per day
    drift_day: int  # days if no drift
    renames: dict[str, str]  # host -> host after the reorganisation
    # habits (index = human)
    activity: np.ndarray
    hour_shift: np.ndarray  # hours added to the office profile
    night_shift: np.ndarray
    weekend_prob: np.ndarray
    volume: np.ndarray  # multiplier on flow bytes
    home_dc: np.ndarray
    usual_servers: tuple[np.ndarray, np.ndarray]  # (indices, cumulative weights), before drift
    usual_servers_drift: tuple[np.ndarray, np.ndarray]  # after drift
    usual_apps: tuple[np.ndarray, np.ndarray]
    usual_sites: tuple[np.ndarray, np.ndarray]
    cast: _Cast | None = None

    def role_servers(self, role: str) -> np.ndarray:
        """Server names of one role (pre-reorganisation names)."""
        return self.servers[self.server_role == role]

    def usual_server_names(self, human: int) -> set[str]:
        """Every server the human uses by habit, before or after the reorganisation."""
        names: set[str] = set()
        for idx, cum in (self.usual_servers, self.usual_servers_drift):
            used = np.diff(np.concatenate([[0.0], cum[human]])) > 0
            names.update(self.servers[idx[human][used]])
        return names

    def business_day(self, fraction: float) -> int:
        """The weekday nearest to ``fraction`` of the period (earlier on ties)."""
        return _nearest_weekday(
            self.is_weekday, min(max(int(fraction * self.cfg.days), 0), self.cfg.days - 1)
        )

    @property
    def test_start_s(self) -> float:
        """Where the default evaluation split's test window starts, in seconds since the start."""
        return _test_start_s(self.cfg.days)

    def early_business_day(self, fraction: float) -> int:
        """The weekday nearest to ``fraction`` of the period among the days that end before the
        test window starts (earlier on ties); the last such day if none is a weekday."""
        last = max(int(self.test_start_s // _DAY_S) - 1, 0)
        target = min(max(int(fraction * self.cfg.days), 0), last)
        return _nearest_weekday(self.is_weekday[: last + 1], target)

    def late_business_day(self, fraction: float) -> int:
        """The weekday nearest to ``fraction`` of the period among the days that reach into the
        test window (earlier on ties); the nearest such day if none is a weekday."""
        first = int(self.test_start_s // _DAY_S)
        target = min(max(int(fraction * self.cfg.days), first), self.cfg.days - 1)
        return first + _nearest_weekday(self.is_weekday[first:], target - first)

    def late_business_days(self) -> list[int]:
        """The weekdays that reach into the test window (all its days if none is a weekday)."""
        first = int(self.test_start_s // _DAY_S)
        days = [d for d in range(first, self.cfg.days) if self.is_weekday[d]]
        return days or list(range(first, self.cfg.days))

    def in_test_window(self, t_s: np.ndarray | float, margin_s: float) -> np.ndarray | float:
        """``t_s`` moved to at least ``margin_s`` after the test window's start."""
        return np.maximum(t_s, self.test_start_s + margin_s)

    @property
    def roles(self) -> _Cast:
        """The scenario cast (set once the world is built)."""
        assert self.cast is not None
        return self.cast


def _allocate_roles(n_servers: int) -> list[str]:
    """Role of each server: one backup server, the rest split by _ROLE_SHARES (>= 1 each)."""
    rest = n_servers - 1
    roles = list(_ROLE_SHARES)
    raw = np.array([_ROLE_SHARES[r] for r in roles]) * rest
    counts = np.maximum(np.floor(raw).astype(int), 1)
    while counts.sum() < rest:
        counts[int(np.argmax(raw - counts))] += 1
    while counts.sum() > rest:
        counts[int(np.argmax(np.where(counts > 1, counts - raw, -np.inf)))] -= 1
    return [r for r, c in zip(roles, counts, strict=True) for _ in range(c)] + ["BKP"]


def _external_names(n: int) -> np.ndarray:
    """Benign external endpoints: a third IPs from documentation ranges, the rest domains."""
    names, n_ip = [], 0
    for i in range(n):
        if i % 3 == 1 and n_ip < 254 * len(_EXTERNAL_IP_PREFIXES):
            names.append(f"{_EXTERNAL_IP_PREFIXES[n_ip // 254]}{n_ip % 254 + 1}")
            n_ip += 1
        else:
            names.append(f"ext-{_EXTERNAL_CATEGORIES[i % len(_EXTERNAL_CATEGORIES)]}-{i}.example")
    return np.array(names, dtype=object)


def _habit_table(
    rng: np.random.Generator,
    base_weight: np.ndarray,
    rows_weight: np.ndarray | None,
    k_lo: np.ndarray,
    k_hi: np.ndarray,
    concentration: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-row usual subsets of items and preference weights, as (indices, cumulative weights).

    Each row draws k in [k_lo, k_hi] distinct items in proportion to ``base_weight`` (per row:
    ``rows_weight``), via the Gumbel top-k trick, and a Dirichlet-like preference over them.
    """
    weights = (
        np.broadcast_to(base_weight, (len(k_lo), len(base_weight))) if rows_weight is None else rows_weight
    )
    n_rows, n_items = weights.shape
    positive = (weights > 0).sum(axis=1)
    k = np.minimum(rng.integers(k_lo, k_hi + 1), positive)
    k_max = int(k.max())
    keys = np.log(np.where(weights > 0, weights, 1e-300)) + rng.gumbel(size=(n_rows, n_items))
    idx = np.argsort(-keys, axis=1, kind="stable")[:, :k_max]
    pref = rng.gamma(concentration, size=(n_rows, k_max)) * np.take_along_axis(weights, idx, axis=1)
    pref[np.arange(k_max)[None, :] >= k[:, None]] = 0.0
    cum = np.cumsum(pref, axis=1) / pref.sum(axis=1, keepdims=True)
    cum[np.arange(k_max)[None, :] >= (k - 1)[:, None]] = 1.0  # exact 1 from each row's last item on
    return idx, cum


def _pick_habit(table: tuple[np.ndarray, np.ndarray], rows: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Item index each row's habit picks for uniforms ``u`` (inverse CDF over its usual set)."""
    idx, cum = table
    col = (u[:, None] >= cum[rows]).sum(axis=1)
    return idx[rows, np.minimum(col, idx.shape[1] - 1)]


def _inverse_cdf(weights: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Index drawn in proportion to ``weights`` for each uniform in ``u``."""
    cum = np.cumsum(weights) / weights.sum()
    cum[-1] = 1.0
    return np.searchsorted(cum, u, side="right")


def _build_world(rng: np.random.Generator, cfg: SyntheticConfig) -> _World:
    """Draw the enterprise: accounts, hosts, habits, calendar and who plays which scenario role."""
    n_admins = max(2, round(0.05 * cfg.n_users))
    n_new = max(2, round(0.03 * cfg.n_users)) if cfg.benign_novelty else 0
    n_services = max(2, round(0.04 * cfg.n_users))
    humans = np.array(
        [f"u{i:04d}" for i in range(cfg.n_users)]
        + [f"adm{i:03d}" for i in range(n_admins)]
        + [f"u{cfg.n_users + i:04d}" for i in range(n_new)],
        dtype=object,
    )
    n_h = len(humans)
    is_admin = np.zeros(n_h, bool)
    is_admin[cfg.n_users : cfg.n_users + n_admins] = True
    is_new = np.zeros(n_h, bool)
    is_new[cfg.n_users + n_admins :] = True
    workstations = np.array([f"WS{i:04d}" for i in range(n_h)], dtype=object)
    services = tuple(_SERVICE_ACCOUNTS[:n_services]) + tuple(
        f"svc_app{i:02d}" for i in range(max(0, n_services - len(_SERVICE_ACCOUNTS)))
    )

    roles = _allocate_roles(cfg.n_servers)
    per_role: dict[str, int] = {}
    server_names = []
    for role in roles:
        per_role[role] = per_role.get(role, 0) + 1
        server_names.append(f"SRV-{role}{per_role[role]:02d}")
    servers = np.array(server_names, dtype=object)
    server_role = np.array(roles, dtype=object)
    dcs = np.array([f"DC{i + 1:02d}" for i in range(cfg.n_domain_controllers)], dtype=object)

    externals = _external_names(cfg.n_external)
    popularity = 1.0 / (rng.permutation(cfg.n_external) + 1.0) ** 1.1
    popularity /= popularity.sum()

    start = pd.Timestamp(cfg.start)
    is_weekday = (start.dayofweek + np.arange(cfg.days)) % 7 < 5
    drift_day = cfg.drift_start_day if cfg.drift_start_day is not None else cfg.days
    renames = {s: "SRV2-" + s[4:] for s, r in zip(servers, roles, strict=True) if r in _MIGRATED_ROLES}
    renames.update({ws: "WSN" + ws[2:] for ws in workstations})

    # Onboarded users start on weekdays spread over the middle of the period.
    first_day = np.zeros(n_h, int)
    for j, frac in enumerate(np.linspace(0.5, 0.8, n_new)):
        first_day[cfg.n_users + n_admins + j] = _nearest_weekday(is_weekday, int(frac * cfg.days))

    activity = rng.lognormal(-0.5 * 0.45**2, 0.45, n_h) * np.where(is_admin, 1.2, 1.0)
    hour_shift = np.clip(rng.normal(0.0, 0.7, n_h), -2.0, 2.0)
    regular = np.flatnonzero(~is_admin & ~is_new)
    n_night = round(cfg.night_shift_share * cfg.n_users)
    night_shift = np.zeros(n_h, bool)
    night_shift[rng.choice(regular, n_night, replace=False)] = True
    hour_shift[night_shift] += 10.0  # peak moves from ~10-16 h to ~20-02 h
    weekend_prob = np.where(is_admin, rng.beta(2, 6, n_h), rng.beta(1, 11, n_h))
    volume = rng.lognormal(0.0, 0.4, n_h)
    home_dc = rng.integers(0, len(dcs), n_h)

    srv_w_user = np.array([_USER_ROLE_WEIGHT[r] for r in roles])
    srv_w_drift = np.array([_USER_ROLE_WEIGHT_DRIFT[r] for r in roles])
    srv_rows = np.where(is_admin[:, None], 1.0, srv_w_user[None, :])
    srv_rows_drift = np.where(is_admin[:, None], 1.0, srv_w_drift[None, :])
    k_lo_srv = np.where(is_admin, 6, 2)
    k_hi_srv = np.where(is_admin, 12, 5)
    usual_servers = _habit_table(rng, srv_w_user, srv_rows, k_lo_srv, k_hi_srv, 1.0)
    usual_servers_drift = _habit_table(rng, srv_w_drift, srv_rows_drift, k_lo_srv, k_hi_srv, 1.0)
    app_rows = np.where(is_admin[:, None], _APP_WEIGHT_ADMIN[None, :], _APP_WEIGHT_USER[None, :])
    usual_apps = _habit_table(
        rng, _APP_WEIGHT_USER, app_rows, np.where(is_admin, 7, 5), np.where(is_admin, 12, 9), 1.0
    )
    usual_sites = _habit_table(rng, popularity, None, np.full(n_h, 8), np.full(n_h, 30), 0.7)

    world = _World(
        cfg=cfg,
        humans=humans,
        is_admin=is_admin,
        is_new=is_new,
        first_day=first_day,
        workstations=workstations,
        services=services,
        servers=servers,
        server_role=server_role,
        dcs=dcs,
        externals=externals,
        external_popularity=popularity,
        is_weekday=is_weekday,
        drift_day=drift_day,
        renames=renames,
        activity=activity,
        hour_shift=hour_shift,
        night_shift=night_shift,
        weekend_prob=weekend_prob,
        volume=volume,
        home_dc=home_dc,
        usual_servers=usual_servers,
        usual_servers_drift=usual_servers_drift,
        usual_apps=usual_apps,
        usual_sites=usual_sites,
    )

    # Distinct victims, so campaigns do not blur into each other. The insider works days and is
    # the one with the most file/database servers outside their habits (small estates have few).
    day_workers = [int(h) for h in rng.permutation(np.flatnonzero(~is_admin & ~is_new & ~night_shift))]
    admins = rng.permutation(np.flatnonzero(is_admin))
    data_servers = set(world.role_servers("FILE")) | set(world.role_servers("DB"))
    unusual = [len(data_servers - world.usual_server_names(h)) for h in day_workers[1:]]
    insider = day_workers[1 + int(np.argmax(unusual))]
    others = [h for h in day_workers[1:] if h != insider]
    world.cast = _Cast(
        patient_zero=day_workers[0],
        stolen_admin=int(admins[0]),
        insider=insider,
        exfil_victim=others[0],
        spray_host=others[1],
        supply_chain_hosts=tuple(others[2:8]),
        maintenance_admin=int(admins[1]),
    )
    return world


def _test_start_s(days: int) -> float:
    """Start of the test window of the default evaluation split, in seconds since the period start.

    The split is ``graph.WindowConfig``'s default, computed as ``build_graph_windows`` does: 1 h
    buckets from the first event (about 00:00 on day 0), the first 60 % of the buckets train, the
    next 20 % validation, the last 20 % test, i.e. the test window starts at bucket
    ``ceil(0.8 * n_buckets)`` with ``n_buckets = 24 * days``.
    """
    return float(np.ceil(round(_EVAL_TEST_START * days * 24, 9))) * _HOUR_S


def _nearest_weekday(is_weekday: np.ndarray, target: int) -> int:
    """The weekday index nearest to ``target`` (earlier on ties); ``target`` if there is none."""
    weekdays = np.flatnonzero(is_weekday)
    return target if len(weekdays) == 0 else int(weekdays[np.argmin(np.abs(weekdays - target))])


def _office_times(rng: np.random.Generator, w: _World, human: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Seconds since the period start for events of ``human`` on ``day``, following its rhythm."""
    n = len(human)
    hour = np.searchsorted(_OFFICE_CDF, rng.random(n), side="right").astype(float)
    shift = w.hour_shift[human] + np.where(day >= w.drift_day, w.cfg.drift_hour_shift, 0.0)
    local = np.mod(hour + rng.random(n) + shift, 24.0)
    return day * _DAY_S + local * _HOUR_S


# --------------------------------------------------------------------------------------------
# Benign activity.


def _daily_counts(rng: np.random.Generator, w: _World) -> np.ndarray:
    """Events per (human, day): weekday/weekend rhythm, absences, onboarding start days."""
    cfg = w.cfg
    n_h, n_days = len(w.humans), cfg.days
    present = rng.random((n_h, n_days)) >= cfg.absence_rate
    works_weekend = rng.random((n_h, n_days)) < w.weekend_prob[:, None]
    factor = np.where(
        w.is_weekday[None, :], present / (1.0 - cfg.absence_rate), works_weekend * cfg.weekend_activity
    )
    factor = factor * rng.lognormal(-0.5 * 0.25**2, 0.25, (n_h, n_days))  # day-to-day variation
    factor[np.arange(n_days)[None, :] < w.first_day[:, None]] = 0.0
    return rng.poisson(cfg.events_per_user_day * w.activity[:, None] * factor)


def _expand(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(human, day) index per event for a (human, day) count matrix."""
    n_h, n_days = counts.shape
    flat = counts.ravel()
    return np.repeat(np.repeat(np.arange(n_h), n_days), flat), np.repeat(
        np.tile(np.arange(n_days), n_h), flat
    )


def _human_activity(rng: np.random.Generator, w: _World, counts: np.ndarray) -> list[_Block]:
    """Users' and admins' own events (auth, process starts, flows) plus their benign logon typos.

    All uniforms are drawn for every event up front, so whether drift is on changes only the
    events from the drift day on, never the draws before it.
    """
    cfg = w.cfg
    human, day = _expand(counts)
    n = len(human)
    t = _office_times(rng, w, human, day)
    u_kind, u_sub, u_nov, u_pick, u_alt, u_var, u_type, u_typo = rng.random((8, n))
    z_in, z_out, z_dur = rng.standard_normal((3, n))
    admin = w.is_admin[human]
    drifted = day >= w.drift_day

    is_auth = u_kind < np.where(admin, 0.30, 0.22)
    is_proc = ~is_auth & (u_kind < np.where(admin, 0.30, 0.22) + 0.28)
    is_flow = ~is_auth & ~is_proc

    # Server this event would touch: a usual one, or (novelty) any server weighted by role.
    usual = np.where(
        drifted,
        _pick_habit(w.usual_servers_drift, human, u_pick),
        _pick_habit(w.usual_servers, human, u_pick),
    )
    role_w = np.array([_USER_ROLE_WEIGHT[r] for r in w.server_role])
    novel = _inverse_cdf(role_w, u_alt)
    server = np.where(u_nov < cfg.novelty_rate, novel, usual)
    server_name = w.servers[server]
    server_role = w.server_role[server]

    ws = w.workstations[human]
    user = w.humans[human]
    src = ws.copy()
    dst = np.full(n, None, dtype=object)
    process = np.full(n, None, dtype=object)
    auth_type = np.full(n, None, dtype=object)
    logon_type = np.full(n, None, dtype=object)
    success = np.full(n, None, dtype=object)
    port = np.full(n, np.nan)
    protocol = np.full(n, None, dtype=object)

    # auth: workstation logon/unlock, network logon to a server, Kerberos ticket from the home DC.
    local = is_auth & (u_sub < np.where(admin, 0.20, 0.35))
    to_dc = is_auth & (u_sub >= np.where(admin, 0.80, 0.75))
    to_server = is_auth & ~local & ~to_dc
    dst[local] = ws[local]
    logon_type[local] = np.where(u_var[local] < 0.6, "unlock", "interactive")
    auth_type[local] = np.where(
        u_type[local] < 0.90, "kerberos", np.where(u_type[local] < 0.97, "negotiate", "ntlm")
    )
    dst[to_server] = server_name[to_server]
    logon_type[to_server] = np.where(
        admin[to_server] & (u_var[to_server] < 0.35), "remote_interactive", "network"
    )
    auth_type[to_server] = np.where(
        u_type[to_server] < 0.86, "kerberos", np.where(u_type[to_server] < 0.98, "ntlm", "negotiate")
    )
    dc = np.where(u_var < 0.8, w.home_dc[human], np.floor(u_type * len(w.dcs)).astype(int))
    dst[to_dc] = w.dcs[dc[to_dc]]
    logon_type[to_dc] = "network"
    auth_type[to_dc] = "kerberos"
    success[is_auth] = True

    # process_start: a usual application (rarely any other); admins also run tools on servers.
    app = np.where(
        u_nov < cfg.novelty_rate / 2,
        _inverse_cdf(_APP_WEIGHT_USER, u_alt),
        _pick_habit(w.usual_apps, human, u_pick),
    )
    process[is_proc] = _APP_NAMES[app[is_proc]]
    on_server = is_proc & admin & (u_sub < 0.3)
    src[on_server] = server_name[on_server]

    # network_flow: external web (usual sites, sometimes a new one), internal server, DNS.
    external = is_flow & (u_sub < 0.6)
    internal = is_flow & (u_sub >= 0.6) & (u_sub < 0.9)
    dns = is_flow & (u_sub >= 0.9)
    site = np.where(
        u_nov < 1.5 * cfg.novelty_rate,
        _inverse_cdf(w.external_popularity, u_alt),
        _pick_habit(w.usual_sites, human, u_pick),
    )
    dst[external] = w.externals[site[external]]
    port[external] = np.where(u_var[external] < 0.95, np.where(u_var[external] < 0.83, 443, 80), 443)
    protocol[external] = np.where(u_var[external] < 0.95, "tcp", "udp")  # QUIC
    dst[internal] = server_name[internal]
    role_port = np.array([_ROLE_PORT[r] for r in server_role])
    port[internal] = np.where(
        (server_role[internal] == "WEB") & (u_var[internal] < 0.15), 80, role_port[internal]
    )
    protocol[internal] = "tcp"
    dst[dns] = w.dcs[dc[dns]]
    port[dns] = 53
    protocol[dns] = "udp"

    mu_in, sd_in, mu_out, sd_out = (np.zeros(n) for _ in range(4))
    for mask, (p_in, p_out) in [(external, _EXTERNAL_BYTES), (dns, _DNS_BYTES)]:
        mu_in[mask], sd_in[mask], mu_out[mask], sd_out[mask] = p_in[0], p_in[1], p_out[0], p_out[1]
    for role, (p_in, p_out) in _ROLE_BYTES.items():
        mask = internal & (server_role == role)
        mu_in[mask], sd_in[mask], mu_out[mask], sd_out[mask] = p_in[0], p_in[1], p_out[0], p_out[1]
    scale = w.volume[human] * np.where(drifted, cfg.drift_bytes_factor, 1.0)
    bytes_in = np.where(is_flow, np.round(np.exp(mu_in + sd_in * z_in) * scale), np.nan)
    bytes_out = np.where(is_flow, np.round(np.exp(mu_out + sd_out * z_out) * scale), np.nan)
    packets, duration = _flow_shape(u_type, z_dur, np.nan_to_num(bytes_in) + np.nan_to_num(bytes_out), 5e6)

    event_type = np.where(is_auth, "auth", np.where(is_proc, "process_start", "network_flow")).astype(object)
    activity: _Block = {
        "t_s": t,
        "event_type": event_type,
        "user": user,
        "src_host": src,
        "dst_host": dst,
        "process": process,
        "dst_port": port,
        "protocol": protocol,
        "auth_type": auth_type,
        "logon_type": logon_type,
        "success": success,
        "bytes_out": bytes_out,
        "bytes_in": bytes_in,
        "packets": np.where(is_flow, packets, np.nan),
        "duration_s": np.where(is_flow, duration, np.nan),
        "label": np.zeros(n, np.int8),
        "label_detail": np.full(n, None, dtype=object),
    }

    # Typos: a failed attempt a few seconds before some successful logons.
    typo = is_auth & (u_typo < cfg.auth_failure_rate)
    typos = {k: v[typo].copy() for k, v in activity.items()}
    # Same day as the logon, so a typo never crosses into the day before the drift starts.
    typos["t_s"] = np.maximum(
        typos["t_s"] - (3.0 + 25.0 * u_typo[typo] / max(cfg.auth_failure_rate, 1e-9)), day[typo] * _DAY_S
    )
    typos["success"] = np.full(int(typo.sum()), False, dtype=object)
    return [activity, typos]


def _workstation_background(rng: np.random.Generator, w: _World, counts: np.ndarray) -> list[_Block]:
    """SYSTEM processes and machine flows on workstations while they are in use (user rhythm)."""
    human, day = _expand(rng.poisson(w.cfg.system_event_ratio * counts))
    n = len(human)
    t = _office_times(rng, w, human, day)
    u_kind, u_pick, u_var = rng.random((3, n))
    ws = w.workstations[human]
    names = np.array([p for p, _ in _WS_SYSTEM_PROCS], dtype=object)
    weights = np.array([f for _, f in _WS_SYSTEM_PROCS], dtype=float)
    is_proc = u_kind < 0.7
    is_ldap = ~is_proc & (u_pick < 0.5)
    is_update = ~is_proc & ~is_ldap
    top_sites = w.externals[np.argsort(-w.external_popularity, kind="stable")[:3]]  # OS/AV update CDNs
    z = rng.standard_normal((2, n))
    blocks = [_proc(t[is_proc], SYSTEM_ACCOUNT, ws[is_proc], names[_inverse_cdf(weights, u_pick[is_proc])])]
    blocks.append(
        _flow(
            rng,
            t[is_ldap],
            ws[is_ldap],
            w.dcs[w.home_dc[human[is_ldap]]],
            389,
            _lognormal(z[0][is_ldap], (np.log(1500), 0.5)),
            _lognormal(z[1][is_ldap], (np.log(8000), 0.8)),
        )
    )
    blocks.append(
        _flow(
            rng,
            t[is_update],
            ws[is_update],
            top_sites[np.floor(u_var[is_update] * 3).astype(int)],
            443,
            _lognormal(z[0][is_update], (np.log(3000), 0.5)),
            _lognormal(z[1][is_update], (np.log(3e5), 1.5)),
        )
    )
    return blocks


def _server_background(rng: np.random.Generator, w: _World) -> list[_Block]:
    """SYSTEM processes and directory traffic on servers and DCs, round the clock."""
    cfg = w.cfg
    hosts = np.concatenate([w.servers, w.dcs])
    roles = np.concatenate([w.server_role, np.full(len(w.dcs), "DC", dtype=object)])
    counts = rng.poisson(24 * cfg.server_events_per_hour, (len(hosts), cfg.days))
    host, day = _expand(counts)
    n = len(host)
    u_mix, u_hour, u_kind, u_pick, u_dc = rng.random((5, n))
    # Half uniform over the day, half following office hours (servers are busier when people work).
    office_hour = np.searchsorted(_OFFICE_CDF, u_hour, side="right") + rng.random(n)
    hour = np.where(u_mix < 0.5, u_hour * 24.0, office_hour)
    t = day * _DAY_S + hour * _HOUR_S
    names = np.array([p for p, _ in _SERVER_SYSTEM_PROCS] + ["<role>"], dtype=object)
    weights = np.array([f for _, f in _SERVER_SYSTEM_PROCS] + [4.0])
    proc = names[_inverse_cdf(weights, u_pick)]
    role_proc = np.array([_ROLE_SYSTEM_PROC[r] for r in roles], dtype=object)[host]
    proc = np.where(proc == "<role>", role_proc, proc)
    is_proc = u_kind < 0.6
    flow = ~is_proc
    dc = w.dcs[np.floor(u_dc * len(w.dcs)).astype(int)]
    service = np.floor(u_pick * 3).astype(int)  # LDAP, Kerberos or DNS
    port = np.array([389, 88, 53])[service]
    protocol = np.array(["tcp", "tcp", "udp"], dtype=object)[service]
    z = rng.standard_normal((2, n))
    return [
        _proc(t[is_proc], SYSTEM_ACCOUNT, hosts[host[is_proc]], proc[is_proc]),
        _flow(
            rng,
            t[flow],
            hosts[host[flow]],
            dc[flow],
            port[flow],
            _lognormal(z[0][flow], (np.log(600), 0.5)),
            _lognormal(z[1][flow], (np.log(2500), 0.8)),
            protocol=protocol[flow],
        ),
    ]


def _periodic(
    rng: np.random.Generator,
    w: _World,
    account: str,
    src: np.ndarray,
    dst: np.ndarray,
    period_s: float,
    port: int,
    bytes_in: tuple[float, float],
    bytes_out: tuple[float, float],
    auth_every: int = 1,
) -> list[_Block]:
    """A service account's scheduled job: a flow every ``period_s`` seconds per (src, dst) pair,
    preceded by a Kerberos network logon every ``auth_every`` runs; fixed phase, small jitter."""
    ticks = np.arange(0.0, w.cfg.days * _DAY_S, period_s)
    phase = rng.uniform(0.0, period_s, len(src))
    t = ticks[None, :] + phase[:, None] + rng.normal(0.0, 0.003 * period_s, (len(src), len(ticks)))
    run = np.broadcast_to(np.arange(len(ticks)), t.shape).ravel()
    s = np.repeat(src, len(ticks))
    d = np.repeat(dst, len(ticks))
    t = t.ravel()
    z = rng.standard_normal((2, len(t)))
    logon = run % auth_every == 0
    return [
        _auth(t[logon] - 1.0, account, s[logon], d[logon]),
        _flow(rng, t, s, d, port, _lognormal(z[1], bytes_out), _lognormal(z[0], bytes_in), user=account),
    ]


def _service_accounts(rng: np.random.Generator, w: _World) -> list[_Block]:
    """Service accounts on fixed schedules (backup at 02:00, SQL jobs hourly, monitoring, ...)."""
    cfg = w.cfg
    blocks: list[_Block] = []
    file_srv, db_srv = w.role_servers("FILE"), w.role_servers("DB")
    web_srv, app_srv = w.role_servers("WEB"), w.role_servers("APP")
    backup_host = w.role_servers("BKP")[0]
    days = np.arange(cfg.days)

    # svc_backup: every night at 02:00 the agent starts and pulls each file/db server in turn.
    start = days * _DAY_S + 2 * _HOUR_S + rng.uniform(0.0, 300.0, cfg.days)  # cron: at or just after 02:00
    blocks.append(_proc(start, "svc_backup", backup_host, "backup_agent.exe"))
    targets = np.concatenate([file_srv, db_srv])
    for i, target in enumerate(targets):
        t_logon = start + 60.0 + 600.0 * i + rng.uniform(0, 60, cfg.days)
        blocks.append(_auth(t_logon, "svc_backup", backup_host, target, logon_type="batch"))
        chunk_t = (t_logon[:, None] + 5.0 + 120.0 * np.arange(4)[None, :]).ravel()
        volume = np.exp(np.log(4e8) + 0.35 * rng.standard_normal(len(chunk_t)))
        port = 445 if target in set(file_srv) else 1433
        blocks.append(
            _flow(
                rng,
                chunk_t,
                backup_host,
                target,
                port,
                volume / 2000.0,
                volume,
                user="svc_backup",
                throughput_bps=6e7,
            )
        )

    # svc_sql: hourly jobs from every app server to its database; sqlservr.exe (re)starts on day 0
    # and after the Sunday patch reboot.
    blocks += _periodic(
        rng,
        w,
        "svc_sql",
        app_srv,
        db_srv[np.arange(len(app_srv)) % len(db_srv)],
        _HOUR_S,
        1433,
        (np.log(3e5), 1.0),
        (np.log(2e4), 0.8),
    )
    restart_days = [0] + [int(d) for d in days[1:] if (pd.Timestamp(cfg.start).dayofweek + d) % 7 == 6]
    for d in restart_days:
        blocks.append(
            _proc(
                d * _DAY_S + 4 * _HOUR_S + rng.uniform(0, 600, len(db_srv)), "svc_sql", db_srv, "sqlservr.exe"
            )
        )

    others = [s for s in w.services if s not in ("svc_backup", "svc_sql")]
    hosts = np.concatenate([w.servers, w.dcs])
    for account in others:
        if account == "svc_monitor":  # polls every server and DC over WinRM every 2 h
            monitor = app_srv[-1]
            polled = hosts[hosts != monitor]
            blocks += _periodic(
                rng,
                w,
                account,
                np.full(len(polled), monitor, dtype=object),
                polled,
                2 * _HOUR_S,
                5985,
                (np.log(6e3), 0.3),
                (np.log(2e3), 0.3),
                auth_every=12,
            )
        elif account == "svc_web":  # web front ends call the app tier
            blocks += _periodic(
                rng,
                w,
                account,
                web_srv,
                app_srv[np.arange(len(web_srv)) % len(app_srv)],
                _HOUR_S,
                8443,
                (np.log(1.5e5), 1.0),
                (np.log(1e4), 0.8),
            )
        elif account == "svc_deploy":  # weekday 21:00 patch pushes to a few workstations
            blocks += _deploy_patches(rng, w, app_srv[0])
        else:  # integration jobs between a fixed pair of servers every two hours
            pair = rng.choice(len(w.servers), 2, replace=False)
            blocks += _periodic(
                rng,
                w,
                account,
                w.servers[pair[:1]],
                w.servers[pair[1:]],
                2 * _HOUR_S,
                445,
                (np.log(1e6), 1.0),
                (np.log(5e4), 0.8),
            )
    return blocks


def _deploy_patches(rng: np.random.Generator, w: _World, deploy_host: str) -> list[_Block]:
    """svc_deploy pushing an installer to ~4 % of active workstations every weekday at 21:00."""
    blocks: list[_Block] = []
    for d in np.flatnonzero(w.is_weekday):
        active = np.flatnonzero(w.first_day <= d)
        chosen = w.workstations[rng.choice(active, max(1, round(0.04 * len(active))), replace=False)]
        t = d * _DAY_S + 21 * _HOUR_S + np.sort(rng.uniform(0, 1800, len(chosen)))
        blocks.append(_auth(t, "svc_deploy", deploy_host, chosen))
        blocks.append(_proc(t + rng.uniform(5, 60, len(chosen)), SYSTEM_ACCOUNT, chosen, "msiexec.exe"))
    return blocks


def _benign_novelty(rng: np.random.Generator, w: _World) -> list[_Block]:
    """Label-0 novelty: software rollout and an admin maintenance burst (onboarding is in the
    world itself: new accounts whose activity starts mid-period)."""
    cfg = w.cfg
    blocks: list[_Block] = []
    deploy_host = w.role_servers("APP")[0]
    deployer = "svc_deploy" if "svc_deploy" in w.services else str(w.humans[w.roles.maintenance_admin])

    # Software rollout: agent_update.exe installed on ~85 % of hosts within one working day,
    # then started daily by each host (workstations in the morning, servers at 03:00).
    day = w.business_day(0.62)
    ws_hosts = w.workstations[w.first_day <= day]
    srv_hosts = np.concatenate([w.servers[w.servers != deploy_host], w.dcs])
    hosts = np.concatenate([ws_hosts, srv_hosts])
    chosen = rng.random(len(hosts)) < 0.85
    hosts, is_ws = (
        hosts[chosen],
        np.concatenate([np.ones(len(ws_hosts), bool), np.zeros(len(srv_hosts), bool)])[chosen],
    )
    n = len(hosts)
    t = day * _DAY_S + 9 * _HOUR_S + rng.uniform(0, 9 * _HOUR_S, n)
    blocks.append(_auth(t, deployer, deploy_host, hosts))
    blocks.append(
        _flow(
            rng,
            t + rng.uniform(5, 10, n),
            hosts,
            deploy_host,
            443,
            rng.lognormal(np.log(2e4), 0.5, n),
            rng.lognormal(np.log(3.5e7), 0.2, n),
            throughput_bps=2e7,
        )
    )
    blocks.append(_proc(t + rng.uniform(30, 90, n), SYSTEM_ACCOUNT, hosts, ROLLOUT_PROCESS))
    blocks.append(
        _flow(
            rng,
            t + rng.uniform(100, 160, n),
            hosts,
            _VENDOR_UPDATE,
            443,
            rng.lognormal(np.log(1500), 0.3, n),
            rng.lognormal(np.log(4000), 0.3, n),
        )
    )
    for d in range(day + 1, cfg.days):
        runs = ~is_ws | bool(w.is_weekday[d])
        hour = np.where(is_ws, 7.5 + rng.uniform(0, 2.5, n), 3.0 + rng.uniform(0, 0.5, n))
        blocks.append(
            _proc((d * _DAY_S + hour * _HOUR_S)[runs], SYSTEM_ACCOUNT, hosts[runs], ROLLOUT_PROCESS)
        )

    # Maintenance burst: one admin logs on to every server and DC within an hour one evening.
    admin = w.roles.maintenance_admin
    day = w.business_day(0.85)
    targets = rng.permutation(np.concatenate([w.servers, w.dcs]))
    n = len(targets)
    t = day * _DAY_S + (19.0 + rng.uniform(0, 0.25)) * _HOUR_S + np.sort(rng.uniform(0, 55 * 60, n))
    rdp = rng.random(n) < 0.6
    account, ws = w.humans[admin], w.workstations[admin]
    blocks.append(
        _auth(
            t,
            account,
            ws,
            targets,
            auth_type=np.where(rng.random(n) < 0.7, "kerberos", "ntlm"),
            logon_type=np.where(rdp, "remote_interactive", "network"),
        )
    )
    blocks.append(
        _flow(
            rng,
            t + 2.0,
            ws,
            targets,
            np.where(rdp, 3389, 5985),
            rng.lognormal(np.log(2e5), 0.8, n),
            rng.lognormal(np.log(1e6), 0.8, n),
            user=account,
        )
    )
    tools = np.array(["powershell.exe", "mmc.exe", "wuauclt.exe"], dtype=object)
    blocks.append(_proc(t + rng.uniform(20, 120, n), account, targets, tools[rng.integers(0, 3, n)]))
    return blocks


# --------------------------------------------------------------------------------------------
# Attack campaigns (label 1).


def _isin(values: np.ndarray, pool: object) -> np.ndarray:
    """Elementwise membership for object arrays that may hold None (np.isin would sort them)."""
    return pd.Series(values, dtype=object).isin(list(pool)).to_numpy()  # type: ignore[call-overload]


def _touched_by(benign: list[_Block], users: list[str], hosts: list[str]) -> set[str]:
    """Hosts ``users`` act on or ``hosts`` connect to anywhere in the benign blocks: the set an
    attack must avoid for its targets to be genuinely first-seen."""
    seen: set[str] = set()
    for block in benign:
        by_user = _isin(block["user"], users)
        from_host = _isin(block["src_host"], hosts)
        seen.update(block["dst_host"][by_user | from_host])
        seen.update(block["src_host"][by_user])
    seen.discard(None)  # type: ignore[arg-type]
    return seen


def _lateral_movement(rng: np.random.Generator, w: _World, benign: list[_Block]) -> list[_Block]:
    """LANL-style red team: a phished workstation, stolen admin credentials, then logons (NTLM
    often) from that workstation to hosts it never touched, hopping on from those, for days.

    ``benign`` is all benign activity: targets exclude every host the victim, its workstation
    or the stolen account touch there (habits, occasional novelty, the rollout alike).
    """
    c = "lateral_movement"
    victim_idx, admin_idx = w.roles.patient_zero, w.roles.stolen_admin
    victim, ws0 = w.humans[victim_idx], w.workstations[victim_idx]
    account = w.humans[admin_idx]
    start_day = w.early_business_day(0.45)
    # Hops on the business days from the foothold until the test window, then (about two thirds
    # of them: the push to the objective) on the business days of the test window.
    test_day0 = int(w.test_start_s // _DAY_S)
    early_days = [int(d) for d in np.flatnonzero(w.is_weekday) if start_day <= d < test_day0] or [start_day]
    late_days = w.late_business_days()
    blocks: list[_Block] = []

    t0 = start_day * _DAY_S + (10.0 + rng.uniform(0, 1.5)) * _HOUR_S
    # A phishing attachment launches PowerShell, which pulls a stager and calls back.
    blocks.append(_proc(t0, victim, ws0, "powershell.exe", detail=f"{c}:initial_access"))
    blocks.append(
        _flow(
            rng,
            [t0 + 8.0, t0 + 75.0],
            ws0,
            _C2_LATERAL,
            443,
            [900.0, 2400.0],
            [2.5e5, 1800.0],
            user=victim,
            detail=f"{c}:initial_access",
        )
    )
    # LSASS dump, then the stolen admin credentials used locally (new-credentials logon).
    t1 = t0 + rng.uniform(30, 60) * 60
    blocks.append(_proc(t1, victim, ws0, "rundll32.exe", detail=f"{c}:credential_access"))
    blocks.append(
        _auth(
            t1 + 300.0,
            account,
            ws0,
            ws0,
            auth_type="ntlm",
            logon_type="other",
            detail=f"{c}:credential_access",
        )
    )
    # Domain discovery with the stolen account.
    t2 = t1 + rng.uniform(20, 40) * 60
    blocks.append(_proc([t2, t2 + 40.0], account, ws0, ["net.exe", "nltest.exe"], detail=f"{c}:discovery"))
    blocks.append(
        _flow(rng, t2 + 60.0, ws0, w.dcs[0], 389, 4e4, 2.5e6, user=account, detail=f"{c}:discovery")
    )

    # Targets: hosts neither the victim's workstation nor the stolen account ever touched.
    touched = (
        {ws0, w.workstations[admin_idx]} | w.usual_server_names(victim_idx) | w.usual_server_names(admin_idx)
    )
    touched |= _touched_by(benign, [victim, account], [ws0])
    eligible_ws = w.workstations[~w.is_new & (np.arange(len(w.humans)) != victim_idx)]
    candidates = np.concatenate([w.servers, w.dcs, eligible_ws])
    weight = np.concatenate(
        [np.full(len(w.servers), 4.0), np.full(len(w.dcs), 1.0), np.ones(len(eligible_ws))]
    )
    weight[_isin(candidates, touched)] = 0.0
    n_hosts = len(w.humans) + len(w.servers) + len(w.dcs)
    n_targets = int(min(np.clip(round(0.08 * n_hosts), 3, 20), (weight > 0).sum()))
    targets = rng.choice(candidates, n_targets, replace=False, p=weight / weight.sum())
    # Spread over those days (the last early day always has one, so the campaign has no long
    # pause before the test window); ordinary hours mostly.
    n_late = (2 * n_targets + 1) // 3

    def spread(days: list[int], n: int) -> np.ndarray:
        return np.array(days, dtype=int)[np.round(np.linspace(len(days) - 1, 0, n)[::-1]).astype(int)]

    target_day = np.concatenate([spread(early_days, n_targets - n_late), spread(late_days, n_late)])
    hour = np.where(
        rng.random(n_targets) < 0.9, 9.5 + rng.uniform(0, 8, n_targets), 19 + rng.uniform(0, 3, n_targets)
    )
    t = target_day * _DAY_S + hour * _HOUR_S
    t[target_day == start_day] = np.maximum(t[target_day == start_day], t2 + 1800.0 + rng.uniform(0, 3600))
    late = np.arange(n_targets) >= n_targets - n_late
    t[late] = w.in_test_window(t[late], rng.uniform(0.5, 1.5, n_late) * _HOUR_S)
    order = np.argsort(t, kind="stable")
    targets, t = targets[order], t[order]

    compromised: list[str] = []
    n_direct = max(2, n_targets // 3)
    tools = {445: "psexesvc.exe", 135: "wmiprvse.exe", 5985: "wsmprovhost.exe"}
    for k in range(n_targets):
        if k < n_direct or rng.random() < 0.3:
            src = ws0
        else:  # hop on from a host compromised earlier
            src = compromised[int(rng.integers(0, len(compromised)))]
        dst, tk = targets[k], t[k]
        auth_type = "ntlm" if rng.random() < 0.6 else "kerberos"
        logon = "network" if rng.random() < 0.85 else "remote_interactive"
        if rng.random() < 0.2:  # a wrong guess before the working credential
            blocks.append(
                _auth(
                    tk - rng.uniform(5, 60),
                    account,
                    src,
                    dst,
                    auth_type=auth_type,
                    logon_type=logon,
                    success=False,
                    detail=f"{c}:lateral_movement",
                )
            )
        blocks.append(
            _auth(
                tk, account, src, dst, auth_type=auth_type, logon_type=logon, detail=f"{c}:lateral_movement"
            )
        )
        port = int(rng.choice([445, 135, 5985], p=[0.5, 0.25, 0.25]))
        blocks.append(
            _flow(
                rng,
                tk + 3.0,
                src,
                dst,
                port,
                rng.lognormal(np.log(4e5), 0.8),
                rng.lognormal(np.log(5e4), 0.8),
                user=account,
                detail=f"{c}:lateral_movement",
            )
        )
        blocks.append(
            _proc(tk + rng.uniform(5, 30), account, dst, tools[port], detail=f"{c}:lateral_movement")
        )
        compromised.append(str(dst))
    return blocks


def _password_spray(rng: np.random.Generator, w: _World) -> list[_Block]:
    """Low and slow: one host tries one common password against many accounts at a DC within a
    few minutes, then a second password days later (the first round before the test window, the
    second in it); nearly all fail, a few weak passwords work in the second round and are used
    at once."""
    c = "password_spray"
    days = (w.early_business_day(0.7), w.late_business_day(0.9))
    src = w.workstations[w.roles.spray_host]
    dc = w.dcs[int(rng.integers(0, len(w.dcs)))]
    existing = np.flatnonzero(w.first_day <= days[0])
    n_accounts = int(np.clip(round(0.4 * len(existing)), 6, 60))
    accounts = np.concatenate(
        [w.humans[rng.choice(existing, n_accounts, replace=False)], _SPRAY_EXTRA_ACCOUNTS]
    )
    rng.shuffle(accounts)
    blocks: list[_Block] = []
    weak = rng.choice(n_accounts, int(np.clip(round(0.05 * n_accounts), 1, 3)), replace=False)
    for round_, day in enumerate(days):
        t0 = day * _DAY_S + (13.0 + rng.uniform(0, 2)) * _HOUR_S
        if round_ == 1:
            t0 = float(w.in_test_window(t0, rng.uniform(0.5, 1.5) * _HOUR_S))
        t = t0 + np.sort(rng.uniform(0, 6 * 60, len(accounts)))
        hit = np.zeros(len(accounts), bool)
        if round_ == 1:
            real = np.flatnonzero(~_isin(accounts, _SPRAY_EXTRA_ACCOUNTS))
            hit[real[weak]] = True
        blocks.append(
            _auth(t[~hit], accounts[~hit], src, dc, auth_type="ntlm", success=False, detail=f"{c}:spray")
        )
        if hit.any():
            blocks.append(
                _auth(t[hit], accounts[hit], src, dc, auth_type="ntlm", detail=f"{c}:valid_account")
            )
            servers = w.servers[rng.integers(0, len(w.servers), int(hit.sum()))]
            blocks.append(
                _auth(
                    t[hit] + rng.uniform(3, 15, int(hit.sum())) * 60,
                    accounts[hit],
                    src,
                    servers,
                    auth_type="ntlm",
                    detail=f"{c}:initial_access",
                )
            )
    return blocks


def _insider_misuse(rng: np.random.Generator, w: _World, benign: list[_Block]) -> list[_Block]:
    """A regular user's credentials used at 01:00-04:00 on a night before the test window and on
    up to two nights in it to read bulk data from file/database servers that user never touches
    in ``benign`` activity. Where no night of the test window lies in it (short periods whose
    test window starts after 01:00 on its first day), the last session is late in the evening."""
    c = "insider_misuse"
    h = w.roles.insider
    user, ws = w.humans[h], w.workstations[h]
    usual = w.usual_server_names(h) | _touched_by(benign, [user], [ws])
    pool = np.concatenate([w.role_servers("FILE"), w.role_servers("DB")])
    fresh = pool[~_isin(pool, usual)]
    if len(fresh) < 2:  # tiny estates: also app servers and the backup server (users never touch it)
        pool = np.concatenate([pool, w.role_servers("APP"), w.role_servers("BKP")])
        fresh = pool[~_isin(pool, usual)]
    n_targets = int(min(np.clip(round(0.1 * w.cfg.n_servers), 2, 4), len(fresh)))
    nights = sorted({w.early_business_day(0.65), w.late_business_day(0.85), w.late_business_day(0.95)})
    blocks: list[_Block] = []
    for night in nights:
        targets = rng.choice(fresh, n_targets, replace=False)
        start_h = 1.0 + rng.uniform(0, 1.0)
        if night >= w.test_start_s // _DAY_S and night * _DAY_S + start_h * _HOUR_S < w.test_start_s:
            start_h = 21.0 + rng.uniform(0, 0.5)  # the test window starts later that day: evening
        t = night * _DAY_S + start_h * _HOUR_S
        blocks.append(_proc(t + 40.0, user, ws, "robocopy.exe", detail=f"{c}:collection"))
        for target in targets:
            blocks.append(_auth(t, user, ws, target, detail=f"{c}:off_hours_access"))
            n_f = 4
            tf = t + np.sort(rng.uniform(60, 1500, n_f))
            role = str(w.server_role[w.servers == target][0])
            blocks.append(
                _flow(
                    rng,
                    tf,
                    ws,
                    target,
                    _ROLE_PORT[role],
                    rng.lognormal(np.log(3e5), 0.8, n_f),
                    rng.lognormal(np.log(2.5e8), 0.6, n_f),
                    user=user,
                    throughput_bps=4e7,
                    detail=f"{c}:collection",
                )
            )
            t = tf[-1] + rng.uniform(60, 600)
    return blocks


def _exfiltration(rng: np.random.Generator, w: _World, human_flows: _Block) -> list[_Block]:
    """One workstation compresses data and uploads it to a never-seen external endpoint, with
    bytes_out 100x-1000x the user's median flow."""
    c = "exfiltration"
    h = w.roles.exfil_victim
    user, ws = w.humans[h], w.workstations[h]
    mine = (human_flows["user"] == user) & (human_flows["event_type"] == "network_flow")
    norm = float(np.median(human_flows["bytes_out"][mine])) if mine.any() else 5e3
    day = w.late_business_day(0.88)
    t0 = float(w.in_test_window(day * _DAY_S + (17.5 + rng.uniform(0, 1)) * _HOUR_S, 0.5 * _HOUR_S))
    n_f = int(np.clip(round(w.cfg.n_users / 15), 4, 10))
    tf = t0 + 20 * 60 + np.sort(rng.uniform(0, 40 * 60, n_f))
    return [
        _proc(t0, user, ws, "7z.exe", detail=f"{c}:staging"),
        _proc(t0 + rng.uniform(5, 15) * 60, user, ws, "rclone.exe", detail=f"{c}:exfiltration"),
        _flow(
            rng,
            tf,
            ws,
            _EXFIL_DROP,
            443,
            norm * np.exp(rng.uniform(np.log(100), np.log(1000), n_f)),
            rng.lognormal(np.log(2e4), 0.5, n_f),
            user=user,
            throughput_bps=1e7,
            detail=f"{c}:exfiltration",
        ),
    ]


def _supply_chain(rng: np.random.Generator, w: _World) -> list[_Block]:
    """A trojanised updater appears on a few hosts over one working day before the test window,
    lies dormant (SUNBURST waited about two weeks), and wakes up on some of them in the test
    window: from then on each beacons to one external endpoint every ``beacon_interval_s``
    (small, regular flows) during the implant's working hours (``_BEACON_HOURS``)."""
    c = "supply_chain"
    n_hosts_total = len(w.humans) + len(w.servers) + len(w.dcs)
    n_inf = int(np.clip(round(0.025 * n_hosts_total), 3, 6))
    hosts = list(w.workstations[list(w.roles.supply_chain_hosts[: n_inf - 1])]) + [w.role_servers("APP")[0]]
    if n_inf < 4:  # small estates: workstations only
        hosts = list(w.workstations[list(w.roles.supply_chain_hosts[:n_inf])])
    day = w.early_business_day(0.35)
    t_install = day * _DAY_S + 9 * _HOUR_S + np.sort(rng.uniform(0, 8 * _HOUR_S, len(hosts)))
    blocks = [
        _proc(
            t_install,
            SYSTEM_ACCOUNT,
            np.array(hosts, dtype=object),
            SUPPLY_CHAIN_PROCESS,
            detail=f"{c}:installation",
        )
    ]
    # The operators wake the implant on about half of the hosts (the interesting ones) for the
    # last two days of the period (all of the test window when it is shorter).
    active = np.sort(rng.choice(len(hosts), max(1, len(hosts) // 2), replace=False))
    wake_day = max(int(w.test_start_s // _DAY_S), w.cfg.days - 2)
    end = w.cfg.days * _DAY_S
    interval = w.cfg.beacon_interval_s
    lo, hi = _BEACON_HOURS
    for k in active:
        first = float(w.in_test_window(wake_day * _DAY_S + (lo + rng.uniform(0, 2)) * _HOUR_S, 0.5 * _HOUR_S))
        n_b = int((end - first) // interval) + 1
        t = first + interval * np.arange(n_b) + rng.normal(0, 0.01 * interval, n_b)
        hour = np.mod(t, _DAY_S) / _HOUR_S
        t = t[(t < end) & (hour >= lo) & (hour < hi)]
        blocks.append(
            _flow(
                rng,
                t,
                hosts[k],
                _C2_BEACON,
                443,
                rng.integers(380, 460, len(t)).astype(float),
                rng.integers(180, 260, len(t)).astype(float),
                detail=f"{c}:command_and_control",
            )
        )
    return blocks


# --------------------------------------------------------------------------------------------
# Assembly.


def _rename_after_drift(w: _World, columns: _Block) -> None:
    """From the drift day on, hosts carry their post-reorganisation names (WSN*, SRV2-*)."""
    if w.drift_day >= w.cfg.days:
        return
    after = columns["t_s"] >= w.drift_day * _DAY_S
    for name in ("src_host", "dst_host"):
        renamed = pd.Series(columns[name][after]).map(w.renames).to_numpy(dtype=object)
        keep = pd.isna(renamed)
        renamed[keep] = columns[name][after][keep]
        columns[name][after] = renamed


def _assemble(w: _World, blocks: list[_Block]) -> pd.DataFrame:
    """Concatenate blocks, sort by time, number the events and conform to the contract."""
    cfg = w.cfg
    columns = {k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]}
    _rename_after_drift(w, columns)
    # Millisecond resolution, clipped into [start, start + days).
    ms = np.round(np.clip(columns.pop("t_s"), 0.0, cfg.days * _DAY_S - 0.001) * 1000.0).astype(np.int64)
    order = np.argsort(ms, kind="stable")
    start_ns = pd.Timestamp(cfg.start, tz="UTC").value
    frame = pd.DataFrame({k: v[order] for k, v in columns.items()})
    frame.insert(0, "ts", pd.to_datetime(start_ns + ms[order] * 1_000_000, utc=True))
    position = pd.Series(np.arange(len(frame))).astype(str)
    frame.insert(0, "event_id", f"synthetic-{cfg.seed}-" + position)
    frame["raw_ref"] = f"synthetic:seed={cfg.seed}:row=" + position
    return conform(frame, source=SOURCE_NAME)


def generate_events(config: SyntheticConfig = SyntheticConfig()) -> pd.DataFrame:  # noqa: B008 (frozen, immutable)
    """Generate the synthetic enterprise's events for ``config`` as a canonical event table.

    Sorted by ``ts``; ``event_id`` is ``synthetic-{seed}-{i}`` and ``raw_ref``
    ``synthetic:seed={seed}:row={i}`` with ``i`` the position after sorting; ``label`` is 0 or 1
    on every row and ``label_detail`` is ``"<campaign>:<stage>"`` on attack rows, null otherwise.
    """
    streams = np.random.default_rng(config.seed).spawn(7)  # one independent stream per component
    world = _build_world(streams[0], config)
    counts = _daily_counts(streams[1], world)
    human = _human_activity(streams[1], world, counts)
    blocks = human + _workstation_background(streams[2], world, counts)
    blocks += _server_background(streams[3], world)
    blocks += _service_accounts(streams[4], world)
    if config.benign_novelty:
        blocks += _benign_novelty(streams[5], world)
    if config.attacks:
        rng, benign = streams[6], list(blocks)
        blocks += _lateral_movement(rng, world, benign)
        blocks += _password_spray(rng, world)
        blocks += _insider_misuse(rng, world, benign)
        blocks += _exfiltration(rng, world, human[0])
        blocks += _supply_chain(rng, world)
    return _assemble(world, blocks)


def campaign_summary(events: pd.DataFrame) -> pd.DataFrame:
    """One row per attack campaign in ``events``: campaign, n_events, first_ts, last_ts (UTC) and
    stages (comma-separated, in order of first appearance); sorted by first_ts."""
    columns = ["campaign", "n_events", "first_ts", "last_ts", "stages"]
    attacks = events.loc[events["label"].fillna(0).astype(int) == 1, ["ts", "label_detail"]].sort_values(
        "ts", kind="stable"
    )
    if attacks.empty:
        return pd.DataFrame(
            {
                c: pd.Series(dtype=d)
                for c, d in zip(
                    columns,
                    ["string", "int64", "datetime64[ns, UTC]", "datetime64[ns, UTC]", "string"],
                    strict=True,
                )
            }
        )
    parts = attacks["label_detail"].fillna("unknown").str.split(":", n=1)
    attacks = attacks.assign(campaign=parts.str[0], stage=parts.str[1].fillna(""))
    rows = []
    for campaign, group in attacks.groupby("campaign", sort=False):
        rows.append(
            {
                "campaign": campaign,
                "n_events": len(group),
                "first_ts": group["ts"].iloc[0],
                "last_ts": group["ts"].iloc[-1],
                "stages": ", ".join(s for s in dict.fromkeys(group["stage"]) if s),
            }
        )
    out = pd.DataFrame(rows, columns=columns).sort_values("first_ts", kind="stable").reset_index(drop=True)
    return out.astype({"campaign": "string", "stages": "string", "n_events": "int64"})
