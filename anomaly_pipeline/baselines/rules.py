"""Heuristic detection rules as a security team writes them, over the canonical event table.

Each rule is a pure function ``rule(events, ...) -> np.ndarray[bool]`` with one hit flag per
event. ``events`` are canonical events (``anomaly_pipeline.schema``) sorted by ``ts``; every rule
is causal: an event's flag depends only on that event and the events before it in the table, so
appending later events never changes an earlier flag. All rules are vectorised (sort, group,
cumulative sums, binary search): O(n log n), about a second for a few 100k events.

* ``first_seen_logon``: an authentication of an account to a host it has never successfully
  authenticated to before (account = ``user``, else the source host; host = ``dst_host``).
* ``rare_process``: a process starting for the first time on a host while it has run on fewer
  than ``max_hosts`` other hosts before (host = ``src_host``, the host the process runs on).
* ``fan_out``: a source (``src_host``, else ``user``) that has reached more than
  ``max_destinations`` distinct destination hosts within the trailing ``window_s`` seconds,
  this event included: lateral movement, scanning.
* ``failure_burst``: an authentication from a source (``src_host``, else ``user``) that has
  had at least ``min_failures`` failed authentications within the trailing ``window_s``
  seconds, this event included: brute force, password spraying (and the success after it).

``HeuristicRulesDetector`` scores an event by the weighted sum of its rule hits; with one rule it
is that rule alone.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from anomaly_pipeline.baselines._common import fitted_threshold
from anomaly_pipeline.graph import GraphWindows

RULES: tuple[str, ...] = ("first_seen_logon", "rare_process", "fan_out", "failure_burst")


def _check_sorted(events: pd.DataFrame) -> None:
    if not events["ts"].is_monotonic_increasing:
        raise ValueError(
            "rules need events sorted by ts (causal order); sort with events.sort_values('ts', kind='stable')"
        )


def _codes(values: pd.Series) -> np.ndarray:
    """Integer code per row, -1 where the value is missing or empty."""
    s = values.astype("string")
    s = s.mask(s == "")
    return pd.factorize(s, use_na_sentinel=True)[0].astype(np.int64)


def _seconds(events: pd.DataFrame) -> np.ndarray:
    ts = events["ts"]
    if len(ts) == 0:
        return np.zeros(0)
    return (ts - ts.iloc[0]).dt.total_seconds().to_numpy(dtype=float)


def _source_codes(events: pd.DataFrame) -> np.ndarray:
    """The acting source of an event: the source host, else the user; -1 where neither is known."""
    src = events["src_host"].astype("string")
    return _codes(src.mask(src == "").fillna(events["user"].astype("string")))


def _count_at_or_before(
    group: np.ndarray, t: np.ndarray, query_group: np.ndarray, query_t: np.ndarray
) -> np.ndarray:
    """For each query, how many (group, t) items share its group and have ``t <= query_t``."""
    if len(group) == 0:
        return np.zeros(len(query_group), dtype=np.int64)
    t_min = min(t.min(), query_t.min()) if len(query_t) else t.min()
    span = float(max(t.max(), query_t.max() if len(query_t) else t.max()) - t_min + 1.0)
    key = np.sort(group * span + (t - t_min))
    # Group g's items occupy keys [g * span, (g + 1) * span): count from the group's first key.
    group_start = np.searchsorted(key, query_group * span, side="left")
    return np.searchsorted(key, query_group * span + (query_t - t_min), side="right") - group_start


def first_seen_logon(events: pd.DataFrame) -> np.ndarray:
    """Authentications of an account to a host with no earlier successful authentication of that pair.

    History counts successful (or outcome-unknown) authentications only: a failed attempt does
    not make a pair familiar. Failed first-time attempts fire too.
    """
    _check_sorted(events)
    is_auth = (events["event_type"].astype("string") == "auth").fillna(False).to_numpy()
    account = events["user"].astype("string")
    account = account.mask(account == "").fillna(events["src_host"].astype("string"))
    target = events["dst_host"].astype("string")
    pair = _codes(account.str.cat(target, sep="\x1f"))  # NA where either side is missing
    ok = is_auth & (pair >= 0)
    succeeded = (events["success"].astype("boolean") != False).fillna(True).to_numpy()  # noqa: E712
    history = (ok & succeeded).astype(np.int64)
    prior = pd.Series(history).groupby(pair).cumsum().to_numpy() - history
    return ok & (prior == 0)


def rare_process(events: pd.DataFrame, *, max_hosts: int = 3) -> np.ndarray:
    """Process starts that are the first of their process on this host, while the process has run
    on fewer than ``max_hosts`` distinct other hosts before."""
    _check_sorted(events)
    is_proc = (events["event_type"].astype("string") == "process_start").fillna(False).to_numpy()
    host = _codes(events["src_host"])
    process = _codes(events["process"].astype("string").str.lower())
    ok = is_proc & (host >= 0) & (process >= 0)
    pair = np.where(ok, process * (host.max() + 2) + host, -1)
    first_on_host = ok & (pd.Series(pair).groupby(pair).cumcount().to_numpy() == 0)
    first = first_on_host.astype(np.int64)
    proc_group = np.where(ok, process, -1)
    prior_hosts = pd.Series(first).groupby(proc_group).cumsum().to_numpy() - first
    return first_on_host & (prior_hosts < max_hosts)


def distinct_destinations(events: pd.DataFrame, *, window_s: float = 600.0) -> np.ndarray:
    """Per event, distinct destination hosts its source reached within the trailing ``window_s``
    seconds, this event included (0 where the event has no source or destination).

    A destination counts for event ``i`` if the source reached it at a position ``<= i`` and time
    ``> t_i - window_s``. Each (source, destination) pair's occurrences form runs whose gaps are
    shorter than the window; a run counts from its first event until ``window_s`` after its last,
    so the count is (runs started so far) minus (runs expired by ``t_i``).
    """
    _check_sorted(events)
    source = _source_codes(events)
    dest = _codes(events["dst_host"])
    ok = (source >= 0) & (dest >= 0)
    out = np.zeros(len(events), dtype=np.int64)
    if not ok.any():
        return out
    s, d, t = source[ok], dest[ok], _seconds(events)[ok]
    pair = s * (d.max() + 1) + d
    by_pair = pd.Series(t).groupby(pair)
    prev_t = by_pair.shift(1).to_numpy()
    next_t = by_pair.shift(-1).to_numpy()
    run_start = np.isnan(prev_t) | (t - prev_t >= window_s)
    run_end = np.isnan(next_t) | (next_t - t >= window_s)
    started = pd.Series(run_start.astype(np.int64)).groupby(s).cumsum().to_numpy()
    expired = _count_at_or_before(s[run_end], t[run_end] + window_s, s, t)
    out[ok] = started - expired
    return out


def fan_out(events: pd.DataFrame, *, max_destinations: int = 20, window_s: float = 600.0) -> np.ndarray:
    """Events whose source reached more than ``max_destinations`` distinct destinations within the
    trailing ``window_s`` seconds (see ``distinct_destinations``)."""
    return distinct_destinations(events, window_s=window_s) > max_destinations


def recent_failures(events: pd.DataFrame, *, window_s: float = 300.0) -> np.ndarray:
    """Per event, failed authentications from its source at positions ``<= i`` with time ``> t_i - window_s``."""
    _check_sorted(events)
    source = _source_codes(events)
    is_auth = (events["event_type"].astype("string") == "auth").fillna(False).to_numpy()
    failed = is_auth & (events["success"].astype("boolean") == False).fillna(False).to_numpy()  # noqa: E712
    failed &= source >= 0
    t = _seconds(events)
    f = failed.astype(np.int64)
    so_far = pd.Series(f).groupby(source).cumsum().to_numpy()
    # Failures at or before t_i - window_s are all at earlier positions: subtract them.
    old = _count_at_or_before(source[failed], t[failed], source, t - window_s)
    return np.where(source >= 0, so_far - old, 0)


def failure_burst(events: pd.DataFrame, *, min_failures: int = 5, window_s: float = 300.0) -> np.ndarray:
    """Authentications (failed or not) from a source with at least ``min_failures`` failed
    authentications within the trailing ``window_s`` seconds, this event included."""
    is_auth = (events["event_type"].astype("string") == "auth").fillna(False).to_numpy()
    return is_auth & (recent_failures(events, window_s=window_s) >= min_failures)


class HeuristicRulesDetector:
    """Rule hits as a detector: score = sum over rules of ``weight * hit`` (0/1 per rule).

    ``rules`` picks the rules and their weights: a mapping rule -> weight, a sequence of rule names
    (weight 1 each) or None for all four with weight 1, so the default score is the number of
    rules an event trips. With a single rule the detector is that rule alone, named
    ``rule_<rule>``; otherwise it is ``heuristic_rules``. Fitting learns only the alert threshold
    (the score exceeded by a fraction ``fit_fpr`` of the fit events; with sparse hits that is
    usually 0, i.e. any hit alerts).
    """

    def __init__(
        self,
        rules: Mapping[str, float] | Sequence[str] | None = None,
        *,
        rare_process_max_hosts: int = 3,
        fan_out_destinations: int = 20,
        fan_out_window_s: float = 600.0,
        failure_burst_count: int = 5,
        failure_burst_window_s: float = 300.0,
        fit_fpr: float = 0.01,
    ) -> None:
        if rules is None:
            weights = dict.fromkeys(RULES, 1.0)
        elif isinstance(rules, Mapping):
            weights = {str(k): float(v) for k, v in rules.items()}
        else:
            weights = dict.fromkeys((str(r) for r in rules), 1.0)
        unknown = sorted(set(weights) - set(RULES))
        if unknown or not weights:
            raise ValueError(f"unknown or no rules {unknown}; choose from {', '.join(RULES)}")
        self.weights = weights
        self.rare_process_max_hosts = rare_process_max_hosts
        self.fan_out_destinations = fan_out_destinations
        self.fan_out_window_s = fan_out_window_s
        self.failure_burst_count = failure_burst_count
        self.failure_burst_window_s = failure_burst_window_s
        self.fit_fpr = fit_fpr
        self.name = "heuristic_rules" if len(weights) > 1 else f"rule_{next(iter(weights))}"
        self.threshold_: float | None = None
        self._cache: tuple[weakref.ref, np.ndarray] | None = None

    def __getstate__(self) -> dict:
        """Pickle without the per-windows score cache (a weak reference cannot be pickled)."""
        return {**self.__dict__, "_cache": None}

    def rule_hits(self, events: pd.DataFrame) -> pd.DataFrame:
        """One boolean column per selected rule, one row per event of ``events`` (sorted by ts)."""
        compute = {
            "first_seen_logon": lambda: first_seen_logon(events),
            "rare_process": lambda: rare_process(events, max_hosts=self.rare_process_max_hosts),
            "fan_out": lambda: fan_out(
                events, max_destinations=self.fan_out_destinations, window_s=self.fan_out_window_s
            ),
            "failure_burst": lambda: failure_burst(
                events, min_failures=self.failure_burst_count, window_s=self.failure_burst_window_s
            ),
        }
        return pd.DataFrame({rule: compute[rule]() for rule in self.weights}, index=events.index)

    def score_events(self, events: pd.DataFrame) -> np.ndarray:
        """Weighted sum of rule hits per event."""
        hits = self.rule_hits(events)
        return hits.to_numpy(dtype=float) @ np.array([self.weights[r] for r in hits.columns])

    def _scores(self, windows: GraphWindows) -> np.ndarray:
        # Rules look at all history, so score the whole stream once per windows object.
        if self._cache is not None and self._cache[0]() is windows:
            return self._cache[1]
        scores = self.score_events(windows.events)
        self._cache = (weakref.ref(windows), scores)
        return scores

    def fit(self, windows: GraphWindows, idx: np.ndarray) -> HeuristicRulesDetector:
        self.threshold_ = fitted_threshold(self._scores(windows)[idx], self.fit_fpr)
        return self

    def decision_function(self, windows: GraphWindows, idx: np.ndarray) -> np.ndarray:
        return self._scores(windows)[idx]
