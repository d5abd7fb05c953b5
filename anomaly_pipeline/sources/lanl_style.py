"""A LANL-style authentication log around the real LANL red-team events (a benchmark background).

``generate_lanl_style_auth(out_path, redteam_path)`` writes an ``auth.txt`` in the exact format of
LANL's "Comprehensive, Multi-Source Cyber-Security Events" (Kent, 2015)::

    time,source user@domain,destination user@domain,source computer,destination computer,
    authentication type,logon type,authentication orientation,success/failure

(no header, sorted by time, gzip when ``out_path`` ends in ``.gz``) so that
``anomaly_pipeline.sources.lanl.iter_lanl(out_path, kind="auth", redteam=redteam_path)`` reads
it and labels the red-team lines by its own join, exactly as on the real data. The real LANL
background (about 1 billion lines) is not redistributable here; this file is a synthetic stand-in
with the real attack lines.

Background (label 0), time in whole seconds from 0 (LANL style), days 0 .. ``days - 1``:

* Names as in LANL: users ``U123@DOM1`` (plus the red-team file's local accounts such as
  ``U8168@C685``, kept as they are), computers ``C1234``, machine accounts ``C1234$@DOM1``,
  ``ANONYMOUS LOGON@C586``, ``SYSTEM@C1234`` / ``LOCAL SERVICE@C1234`` / ``NETWORK SERVICE@C1234``.
* Every user has a home workstation, a handful of habitual servers (heavy-tailed popularity) and
  a daily activity level (log-normal around ``events_per_user_day``); every computer has its
  machine account and local service accounts. Events: Kerberos TGT / TGS to the domain
  controllers and habitual servers, network logons (Kerberos, NTLM, Negotiate), interactive,
  unlock, cached-interactive, batch and service logons, LogOff lines (``?`` auth type), AuthMap,
  ANONYMOUS LOGON NTLM network logons; about 1.5 % failures (more for NTLM).
* Rhythm: human activity peaks in office hours (about 07:00-19:00) with a night floor, weekends
  at ~25 %; weekend days are those that fall on a Saturday or Sunday when time 0 is the lanl
  adapter's default epoch (2026-01-01, a Thursday), i.e. days with ``(day + 3) % 7 >= 5``.
  Machine accounts run around the clock.
* Coverage: EVERY user and computer that appears in the red-team file is part of the background
  population: red-team users are ordinary users (with their own home workstation and habitual
  servers, active at least ``min_events_per_user_day`` times on each weekday), red-team source
  and destination computers are ordinary workstations or servers (each is someone's home or
  habitual server and has its machine account). Whether a red-team (user, destination) pair is
  also habitual is left to chance, as in the real data where most red-team pairs are new.

Red team (label 1): each of the red-team file's lines (749 in the real file, 715 distinct tuples)
becomes one auth line at its real time with its user, source and destination computer; the
destination user is the same user. Its (authentication type, logon type, orientation, outcome)
is drawn, with the generator's seed, from the background's own remote authentications by user
accounts (source computer != destination computer, which is not a domain controller like every
red-team destination here; orientation LogOn, TGS or TGT, the latter only ever to a domain
controller; ``redteam_auth_pool`` selects them):
Kerberos / NTLM / Negotiate network logons and Kerberos TGS companions, mostly Success, like the
red-team lines of the real auth.txt, so that no constant auth field singles the attack lines out
(the real lines' auth fields are not in the red-team file). With the default mix that is about
58 % Kerberos TGS, 42 % network logons (Kerberos 75 %, NTLM 15 %, Negotiate 10 % of them), 1-2 %
failures. Background lines that happen to share a red-team (time, user, source,
destination) tuple are removed, so the adapter labels exactly the written red-team lines.

Size: about ``(background_users + red-team users) * events_per_user_day * days * 0.8`` human lines
plus ``computers * machine_events_per_computer_day * days`` machine lines; the defaults (1000
users, 2000 computers, 20 events per user-day, 4 per computer-day, days 0-30) give roughly
0.8 million lines (~15 MB gzip) in a few seconds on 2 cores. Everything derives from
``np.random.default_rng(seed)``: the same arguments give a byte-identical file.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["generate_lanl_style_auth", "read_redteam_lines", "redteam_auth_pool"]

DOMAIN = "DOM1"
DAY = 86400
#: Orientations of the background lines red-team auth fields are drawn from (not LogOff, AuthMap).
REDTEAM_ORIENTATIONS = ("LogOn", "TGS", "TGT")
_SERVICE_ACCOUNTS = ("SYSTEM", "LOCAL SERVICE", "NETWORK SERVICE")

# Human event kinds: (weight, auth types, auth-type probabilities, logon type, orientation,
# destination: "server" (habitual server), "dc" (a domain controller) or "home").
_HUMAN_KINDS: tuple[tuple[float, tuple[str, ...], tuple[float, ...], str, str, str], ...] = (
    (0.30, ("Kerberos",), (1.0,), "Network", "TGS", "server"),
    (0.06, ("Kerberos",), (1.0,), "?", "TGT", "dc"),
    (0.22, ("Kerberos", "NTLM", "Negotiate"), (0.75, 0.15, 0.10), "Network", "LogOn", "server"),
    (0.05, ("Kerberos",), (1.0,), "Network", "LogOn", "dc"),
    (0.18, ("?",), (1.0,), "Network", "LogOff", "server"),
    (0.07, ("Negotiate", "Kerberos"), (0.6, 0.4), "Interactive", "LogOn", "home"),
    (0.04, ("Negotiate", "Kerberos"), (0.7, 0.3), "Unlock", "LogOn", "home"),
    (0.02, ("Kerberos", "Negotiate"), (0.5, 0.5), "CachedInteractive", "LogOn", "home"),
    (0.02, ("Negotiate",), (1.0,), "Batch", "LogOn", "home"),
    (0.04, ("?",), (1.0,), "?", "AuthMap", "home"),
)
# Machine / service account event kinds: (weight, account kind, auth types, probabilities,
# logon type, orientation, destination: "self", "dc" or "server").
_MACHINE_KINDS: tuple[tuple[float, str, tuple[str, ...], tuple[float, ...], str, str, str], ...] = (
    (0.28, "machine", ("Kerberos",), (1.0,), "Network", "TGS", "dc"),
    (0.10, "machine", ("Kerberos",), (1.0,), "?", "TGT", "dc"),
    (0.17, "machine", ("Kerberos", "Negotiate"), (0.8, 0.2), "Network", "LogOn", "dc"),
    (0.15, "machine", ("?",), (1.0,), "Network", "LogOff", "self"),
    (0.18, "service", ("Negotiate",), (1.0,), "Service", "LogOn", "self"),
    (0.07, "anonymous", ("NTLM",), (1.0,), "Network", "LogOn", "server"),
    (0.05, "anonymous", ("?",), (1.0,), "Network", "LogOff", "server"),
)


def read_redteam_lines(path: str | Path) -> pd.DataFrame:
    """The red-team file's lines in file order: columns time (int64), user, src, dst."""
    path = Path(path)
    frame = pd.read_csv(
        path,
        header=None,
        names=["time", "user", "src", "dst"],
        dtype={"time": np.int64, "user": str, "src": str, "dst": str},
        compression="infer",
    )
    return frame


def redteam_auth_pool(srcuser: Any, src: Any, dst: Any, orient: Any, not_to: Any = ()) -> np.ndarray:
    """Which auth lines are remote authentications by a user account: the background lines whose
    (auth type, logon type, orientation, outcome) the red-team lines are drawn from.

    A user account is ``U<n>@<domain>`` (LANL's users, domain or local); remote means source
    computer != destination computer; orientation one of ``REDTEAM_ORIENTATIONS``; destination
    not in ``not_to`` (the generator passes its domain controllers: no red-team destination is
    one, and a ticket-granting (TGT) line to anything else than a DC would single a line out).
    """
    users = pd.Series(np.asarray(srcuser, dtype=object)).str.match(r"U\d+@").to_numpy(dtype=bool)
    src, dst = np.asarray(src, dtype=object), np.asarray(dst, dtype=object)
    remote = (src != dst) & ~np.isin(dst, np.asarray(list(not_to), dtype=object))
    return users & remote & np.isin(np.asarray(orient, dtype=object), REDTEAM_ORIENTATIONS)


def _choice(rng: np.random.Generator, n: int, probs: np.ndarray) -> np.ndarray:
    """Vectorised categorical draws: ``n`` indices into ``probs``."""
    cdf = np.cumsum(probs / probs.sum())
    return np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), len(probs) - 1)


def _computer_names(rng: np.random.Generator, count: int, taken: set[int], hi: int) -> list[int]:
    """``count`` distinct computer numbers in 1..hi not in ``taken``."""
    pool = np.setdiff1d(np.arange(1, hi + 1), np.fromiter(taken, dtype=np.int64, count=len(taken)))
    return sorted(rng.choice(pool, size=count, replace=False).tolist())


def _seconds_in_day(rng: np.random.Generator, n: int, office: float) -> np.ndarray:
    """Second of day: a share ``office`` in office hours (peak ~13:00), the rest uniform."""
    in_office = rng.random(n) < office
    peak = np.clip(rng.normal(13.0 * 3600, 2.6 * 3600, n), 6.5 * 3600, 19.5 * 3600)
    flat = rng.random(n) * DAY
    return np.where(in_office, peak, flat).astype(np.int64) % DAY


def generate_lanl_style_auth(
    out_path: str | Path,
    redteam_path: str | Path,
    *,
    seed: int = 0,
    days: int | None = None,
    background_users: int = 1000,
    background_computers: int = 2000,
    events_per_user_day: float = 20.0,
    machine_events_per_computer_day: float = 4.0,
    min_events_per_user_day: int = 2,
    habitual_servers: int = 6,
    domain_controllers: int = 6,
    failure_rate: float = 0.015,
    compresslevel: int = 1,
) -> dict[str, Any]:
    """Write a LANL-format auth file: synthetic background plus the real red-team lines.

    Args:
        out_path: the file to write (``.gz`` suffix: gzip, deterministic header).
        redteam_path: LANL's redteam.txt[.gz] (``time,user@domain,source,destination``).
        seed: seed of every random draw; same arguments, same bytes.
        days: background length in days from time 0; None: the red-team file's last day + 2.
        background_users: users besides the red-team users (``U<n>@DOM1``).
        background_computers: computers besides the red-team computers (``C<n>``).
        events_per_user_day: mean human auth lines per user per weekday.
        machine_events_per_computer_day: mean machine / service-account lines per computer-day.
        min_events_per_user_day: floor of a red-team user's lines on each weekday (so every
            red-team user is active across the whole period).
        habitual_servers: habitual servers per user (besides the domain controllers).
        domain_controllers: how many computers act as domain controllers.
        failure_rate: share of background lines with ``Fail`` (NTLM fails 3x as often).
        compresslevel: gzip level when compressing.

    Returns:
        A summary: path, lines, background_lines, redteam_lines, redteam_distinct, users,
        computers, days, last_time, seed.
    """
    rng = np.random.default_rng(seed)
    out_path = Path(out_path)
    red = read_redteam_lines(redteam_path)
    if red.empty:
        raise ValueError(f"{redteam_path}: no red-team lines")
    n_days = int(red["time"].max() // DAY) + 2 if days is None else int(days)
    if n_days * DAY <= int(red["time"].max()):
        raise ValueError(f"days={n_days} ends before the last red-team event at {int(red['time'].max())} s")

    # ---- population: red-team entities first, then background ones ----
    red_users = sorted(set(red["user"]), key=lambda u: int(u.split("@")[0][1:]))
    red_user_nums = {int(u.split("@")[0][1:]) for u in red_users}
    red_src = sorted(set(red["src"]), key=lambda c: int(c[1:]))
    red_dst = sorted(set(red["dst"]) - set(red_src), key=lambda c: int(c[1:]))
    red_comp_nums = {int(c[1:]) for c in red_src + red_dst}
    user_nums = _computer_names(rng, background_users, red_user_nums, max(13000, 2 * background_users + 200))
    users = red_users + [f"U{n}@{DOMAIN}" for n in user_nums]
    n_users = len(users)
    is_red_user = np.zeros(n_users, dtype=bool)
    is_red_user[: len(red_users)] = True

    comp_nums = _computer_names(rng, background_computers, red_comp_nums, max(27000, 2 * background_computers + 400))
    computers = red_src + red_dst + [f"C{n}" for n in comp_nums]
    n_comp = len(computers)
    # Roles: red-team source computers are workstations (C17693 is a workstation-class host in
    # LANL), red-team destinations are split between servers and workstations like the rest.
    role_draw = rng.random(n_comp)
    is_server = role_draw < 0.25
    is_server[: len(red_src)] = False
    dc = rng.choice(np.flatnonzero(is_server[len(red_src) + len(red_dst):]) + len(red_src) + len(red_dst),
                    size=domain_controllers, replace=False)
    servers = np.setdiff1d(np.flatnonzero(is_server), dc)
    workstations = np.flatnonzero(~is_server)

    # Home workstation: every workstation is some user's home (round robin over a permutation),
    # users beyond that share workstations.
    # Red-team source computers come first so that each is somebody's home (users are shuffled).
    others = rng.permutation(workstations[len(red_src):])
    perm_ws = np.concatenate([workstations[: len(red_src)], others])
    home = np.empty(n_users, dtype=np.int64)
    home[rng.permutation(n_users)] = perm_ws[np.arange(n_users) % len(perm_ws)]
    # Workstations that got no user (more workstations than users) still appear via machine
    # accounts and as habitual destinations below.
    # Habitual servers: heavy-tailed popularity, and every server is habitual for at least one
    # user; a few workstations are also reached (remote admin / file shares on workstations).
    popularity = rng.pareto(1.2, len(servers)) + 0.05
    habits = servers[_choice(rng, n_users * habitual_servers, popularity)].reshape(n_users, habitual_servers)
    extra = rng.permutation(np.concatenate([servers, workstations[~np.isin(workstations, home)]]))
    habit_extra = np.full((n_users, int(np.ceil(len(extra) / n_users))), -1, dtype=np.int64)
    habit_extra.flat[: len(extra)] = extra
    habits = np.concatenate([habits, habit_extra], axis=1)
    n_habits = (habits >= 0).sum(axis=1)
    habits = np.sort(habits, axis=1)[:, ::-1]  # valid entries first (-1 last)

    # ---- human events ----
    activity = rng.lognormal(0.0, 0.6, n_users)
    activity *= events_per_user_day / activity.mean()
    day_idx = np.arange(n_days)
    weekend = (day_idx + 3) % 7 >= 5
    day_factor = np.where(weekend, 0.25, 1.0) * rng.uniform(0.85, 1.15, n_days)
    counts = rng.poisson(np.outer(activity, day_factor))  # [users, days]
    floor = np.where(weekend, 0, min_events_per_user_day)[None, :] * is_red_user[:, None]
    counts = np.maximum(counts, floor)
    ev_user = np.repeat(np.repeat(np.arange(n_users), n_days), counts.ravel())
    ev_day = np.repeat(np.tile(day_idx, n_users), counts.ravel())
    n_h = len(ev_user)
    h_time = ev_day * DAY + _seconds_in_day(rng, n_h, office=0.85)
    kind_w = np.array([k[0] for k in _HUMAN_KINDS])
    h_kind = _choice(rng, n_h, kind_w)
    h_src = home[ev_user]
    # Habitual server: the first habitual_servers carry 90 % of the traffic (popular first).
    pick_rare = rng.random(n_h) < 0.1
    slot = np.where(
        pick_rare,
        (rng.random(n_h) * n_habits[ev_user]).astype(np.int64),
        (rng.random(n_h) * np.minimum(habitual_servers, n_habits[ev_user])).astype(np.int64),
    )
    h_server = habits[ev_user, slot]
    h_dc = dc[rng.integers(0, len(dc), n_h)]
    target = np.array([k[5] for k in _HUMAN_KINDS])[h_kind]
    h_dst = np.where(target == "server", h_server, np.where(target == "dc", h_dc, h_src))
    h_auth = np.empty(n_h, dtype=object)
    for k, (_, types, probs, _lt, _o, _t) in enumerate(_HUMAN_KINDS):
        m = h_kind == k
        h_auth[m] = np.asarray(types, dtype=object)[_choice(rng, int(m.sum()), np.asarray(probs))] if len(types) > 1 \
            else types[0]
    h_logon = np.array([k[3] for k in _HUMAN_KINDS], dtype=object)[h_kind]
    h_orient = np.array([k[4] for k in _HUMAN_KINDS], dtype=object)[h_kind]
    users_arr = np.asarray(users, dtype=object)
    h_srcuser = users_arr[ev_user]

    # ---- machine / service-account events ----
    m_counts = rng.poisson(machine_events_per_computer_day, (n_comp, n_days))
    m_comp = np.repeat(np.repeat(np.arange(n_comp), n_days), m_counts.ravel())
    m_day = np.repeat(np.tile(day_idx, n_comp), m_counts.ravel())
    n_m = len(m_comp)
    m_time = m_day * DAY + _seconds_in_day(rng, n_m, office=0.3)
    m_kind = _choice(rng, n_m, np.array([k[0] for k in _MACHINE_KINDS]))
    acct_kind = np.array([k[1] for k in _MACHINE_KINDS])[m_kind]
    comp_arr = np.asarray(computers, dtype=object)
    service = np.asarray(_SERVICE_ACCOUNTS, dtype=object)[rng.integers(0, 3, n_m)]
    m_srcuser = np.where(
        acct_kind == "machine",
        comp_arr[m_comp] + f"$@{DOMAIN}",
        np.where(acct_kind == "service", service + "@" + comp_arr[m_comp], "ANONYMOUS LOGON@" + comp_arr[m_comp]),
    )
    m_target = np.array([k[6] for k in _MACHINE_KINDS])[m_kind]
    m_dc = dc[rng.integers(0, len(dc), n_m)]
    # ANONYMOUS LOGON: a workstation's NTLM null session to a popular server.
    m_srv = servers[_choice(rng, n_m, popularity)]
    m_dst = np.where(m_target == "dc", m_dc, np.where(m_target == "server", m_srv, m_comp))
    m_src = np.where(acct_kind == "anonymous", m_comp, m_comp)
    m_auth = np.empty(n_m, dtype=object)
    for k, (_, _a, types, probs, _lt, _o, _t) in enumerate(_MACHINE_KINDS):
        m = m_kind == k
        m_auth[m] = np.asarray(types, dtype=object)[_choice(rng, int(m.sum()), np.asarray(probs))] if len(types) > 1 \
            else types[0]
    m_logon = np.array([k[4] for k in _MACHINE_KINDS], dtype=object)[m_kind]
    m_orient = np.array([k[5] for k in _MACHINE_KINDS], dtype=object)[m_kind]

    # ---- assemble background ----
    time = np.concatenate([h_time, m_time]).astype(np.int64)
    srcuser = np.concatenate([h_srcuser, m_srcuser])
    src = comp_arr[np.concatenate([h_src, m_src])]
    dst = comp_arr[np.concatenate([h_dst, m_dst])]
    auth = np.concatenate([h_auth, m_auth])
    logon = np.concatenate([h_logon, m_logon])
    orient = np.concatenate([h_orient, m_orient])
    # Destination user: the source user, except TGS/LogOn by a machine account to a DC are
    # sometimes on behalf of the DC's own account (as in LANL's C586$@DOM1 lines).
    dstuser = srcuser.copy()
    n_bg = len(time)
    fail_p = np.where(auth == "NTLM", 3 * failure_rate, failure_rate)
    fail_p = np.where(orient == "LogOff", 0.0, fail_p)
    result = np.where(rng.random(n_bg) < fail_p, "Fail", "Success").astype(object)

    # Never let a background line share a red-team tuple (the join would label it).
    red_keys = set(zip(red["time"].tolist(), red["user"].tolist(), red["src"].tolist(), red["dst"].tolist(),
                       strict=True))
    at_red_time = np.flatnonzero(np.isin(time, red["time"].to_numpy()))
    clash = [i for i in at_red_time.tolist() if (int(time[i]), srcuser[i], src[i], dst[i]) in red_keys]
    keep = np.ones(n_bg, dtype=bool)
    keep[clash] = False

    bg = pd.DataFrame(
        {
            "time": time[keep],
            "su": srcuser[keep],
            "du": dstuser[keep],
            "sc": src[keep],
            "dc": dst[keep],
            "at": auth[keep],
            "lt": logon[keep],
            "o": orient[keep],
            "r": result[keep],
            "_red": np.zeros(int(keep.sum()), dtype=np.int8),
        }
    )
    # Red-team auth fields: those of background remote authentications by user accounts, one
    # line drawn at random per red-team line (drawn after the background: it stays as it was).
    dc_names = [computers[i] for i in dc.tolist()]
    pool = np.flatnonzero(redteam_auth_pool(bg["su"], bg["sc"], bg["dc"], bg["o"], not_to=dc_names))
    if len(pool) == 0:
        raise ValueError("the background has no remote user authentications to draw red-team auth fields from")
    like = bg.iloc[pool[rng.integers(0, len(pool), len(red))]]
    rt = pd.DataFrame(
        {
            "time": red["time"].to_numpy(dtype=np.int64),
            "su": red["user"].to_numpy(dtype=object),
            "du": red["user"].to_numpy(dtype=object),
            "sc": red["src"].to_numpy(dtype=object),
            "dc": red["dst"].to_numpy(dtype=object),
            "at": like["at"].to_numpy(dtype=object),
            "lt": like["lt"].to_numpy(dtype=object),
            "o": like["o"].to_numpy(dtype=object),
            "r": like["r"].to_numpy(dtype=object),
            "_red": np.ones(len(red), dtype=np.int8),
        }
    )
    table = pd.concat([bg, rt], ignore_index=True)
    table = table.iloc[np.argsort(table["time"].to_numpy(), kind="stable")].drop(columns="_red")

    out_path.parent.mkdir(parents=True, exist_ok=True)
    text = table.to_csv(header=False, index=False, lineterminator="\n").encode("ascii")
    if out_path.suffix == ".gz":
        with open(out_path, "wb") as raw, gzip.GzipFile(
            filename="", mode="wb", fileobj=raw, compresslevel=compresslevel, mtime=0
        ) as handle:
            handle.write(text)
    else:
        out_path.write_bytes(text)

    return {
        "path": str(out_path),
        "lines": int(len(table)),
        "background_lines": int(keep.sum()),
        "background_removed_clashes": int(len(clash)),
        "redteam_lines": int(len(red)),
        "redteam_distinct": int(len(red_keys)),
        "users": n_users,
        "redteam_users": len(red_users),
        "computers": n_comp,
        "redteam_computers": len(red_src) + len(red_dst),
        "redteam_auth_types": {k: int(v) for k, v in rt["at"].value_counts().sort_index().items()},
        "domain_controllers": [computers[i] for i in dc.tolist()],
        "days": n_days,
        "last_time": int(table["time"].max()),
        "seed": seed,
    }
