"""Graph state of the recent windows for the streaming scorer, bounded by time, not stream length.

Two parts:

* ``StreamState`` keeps a buffer of the recent events: exactly the buckets the model looks at
  when it scores the newest event (its fine history, the window overlap, the coarse history
  when the model is multi-scale, plus ``lookback_buckets``). Each micro-batch is appended, the
  buckets that fell out of the horizon are evicted, and ``graph.build_graph_windows`` runs over
  what is left, so the features are the model's own, not a re-implementation.
  With ``incremental=True`` (the scorer, for a single-scale model) the embeddings of closed
  snapshots are cached (``streaming.incremental.SnapshotCache``), so the buffer keeps only the
  window overlap before the oldest snapshot that is open or changed: each micro-batch rebuilds
  its new events plus one overlap, not the model's history, and computes no buffer-local rates.
  An event older than that overlap is refused as late (``lookback_buckets`` widens it).
* ``HistoryMemory`` keeps what the evicted events leave behind that the features still need:
  per pair, context pair, source, destination, service (destination, port, protocol) and node,
  the count of earlier events, the last two times a pair was seen, running sums of its volumes,
  a node's hour-of-day counts and, per source and per (source, 3-hour bin), its events on
  completed UTC days, each with its last-seen time, dropped ``memory_days`` after it was last
  seen. It patches the cumulative features (first-seen, pair rhythm, prior means, the daily-causal
  hour profile share, node hour profiles) of the buffer's windows so that they equal a batch run
  over the whole stream (as long as no key expired), while memory stays bounded by the number of
  keys active in ``memory_days``.
* One ``rates.RateState`` for the whole stream: each micro-batch continues it with the new events
  only (the first event the stream ever saw sets its tick origin, as in a batch run), and their
  rate values replace the buffer-local ones in the rebuilt windows (on the first step the buffer
  is the whole stream, so the rebuild's rate state is taken as it is: a warm start's replay of
  the training history computes its rates once). Only the new events' rates are
  stream-exact; the older buffer rows keep the rebuild's buffer-local values and are never scored
  again.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from anomaly_pipeline.graph import (
    EVENT_FEATURES,
    HOUR_BINS,
    NO_PREVIOUS_GAP_S,
    NODE_FEATURES,
    RELATION_INDEX,
    EventRates,
    GraphWindows,
    WindowConfig,
    _group_cumcount,
    _group_prior_sum,
    build_graph_windows,
    covered_before,
    event_rates,
    hour_profile,
    service_profile_share,
    source_day_hours,
)
from anomaly_pipeline.rates import ASPECTS, RateConfig, RateState, node_hash

_F = {name: i for i, name in enumerate(EVENT_FEATURES)}
_N = {name: i for i, name in enumerate(NODE_FEATURES)}
_HOUR_COLS = [_N[f"hour_profile_{i}"] for i in range(HOUR_BINS)]
SEQ = "_stream_seq"  # arrival number of an event in the stream: joins buffer rows to new events
_SEP_NODE, _SEP_PAIR = "\x1f", "\x1e"


@dataclass(frozen=True)
class StreamConfig:
    """How much of the past the streaming state keeps.

    ``lookback_buckets``: extra fine buckets kept beyond what the model looks at (0 is enough
    for the model's features: every cumulative one is patched from the history memory).
    ``memory_days``: how long a pair, node or account is remembered after it was last seen (the
    first-seen look-back: "first logon from A to B in 30 days").
    ``rate``: the rate state's configuration (``rates.RateConfig``; the one the model's windows
    were built with, the default unless stated otherwise).
    """

    window: WindowConfig
    lookback_buckets: int = 0
    memory_days: float = 30.0
    rate: RateConfig = RateConfig()

    def __post_init__(self) -> None:
        if self.window.adaptive_events_per_bucket:
            raise ValueError(
                "streaming needs a fixed bucket size: the model's WindowConfig has adaptive_events_per_bucket "
                "set; use the stride the model was trained with (WindowConfig.adapted_to on its training data)"
            )
        if self.lookback_buckets < 0 or self.memory_days <= 0:
            raise ValueError("lookback_buckets must be >= 0 and memory_days > 0")

    @property
    def stride_s(self) -> float:
        return self.window.stride_hours * 3600.0

    @property
    def horizon_buckets(self) -> int:
        """Fine buckets before the newest event's bucket that the model reads (and we keep)."""
        w = self.window
        fine = w.history + w.overlap_buckets + self.lookback_buckets
        coarse_hours = getattr(w, "coarse_stride_hours", None)
        if coarse_hours is None:
            return fine
        # The completed coarse snapshots, plus the coarse snapshot in progress.
        per_coarse = int(math.ceil(coarse_hours / w.stride_hours))
        return max(fine, (int(getattr(w, "coarse_history", 0)) + 1) * per_coarse)


def _epoch_s(ts: pd.Series) -> np.ndarray:
    return ts.astype("int64").to_numpy() / 1e9 if len(ts) else np.zeros(0)


def _utc_day(t: np.ndarray) -> np.ndarray:
    """UTC day number of epoch seconds (``graph.build_graph_windows``'s ``day``)."""
    return np.floor(t / 86400.0).astype(np.int64)


@dataclass
class _Keys:
    """Name-based keys of the events of a window set (node ids change between rebuilds)."""

    pair: np.ndarray
    ctx_pair: np.ndarray  # "" where no context node
    src: np.ndarray
    dst: np.ndarray
    src_hour: np.ndarray
    service: np.ndarray  # destination, port and protocol by name; "" where the port is null
    port: np.ndarray  # port and protocol (the service on any destination); "" where the port is null
    nodes: np.ndarray  # key per node id

    def take(self, rows: np.ndarray) -> _Keys:
        """The keys of the events ``rows`` (node keys stay per node id)."""
        return _Keys(self.pair[rows], self.ctx_pair[rows], self.src[rows], self.dst[rows], self.src_hour[rows],
                     self.service[rows], self.port[rows], self.nodes)


def _node_keys(nodes: pd.DataFrame) -> np.ndarray:
    return (nodes["node_type"].astype(str) + _SEP_NODE + nodes["name"].astype(str)).to_numpy(dtype=object)


def _keys_of(windows: GraphWindows, rows: np.ndarray | None = None) -> _Keys:
    """Keys of the events ``rows`` (default all) of ``windows``; ``nodes`` is per node id."""
    nk = _node_keys(windows.nodes)
    sel = slice(None) if rows is None else rows
    src, dst, ctx = nk[windows.event_src[sel]], nk[windows.event_dst[sel]], windows.event_ctx[sel]
    ctx_key = np.where(ctx >= 0, nk[np.maximum(ctx, 0)], "").astype(object)
    ev = windows.events.iloc[sel]
    hour_bin = (ev["ts"].dt.hour.to_numpy() // (24 // HOUR_BINS)).astype(str)
    # The service by name: graph's code ((port + 1) * 8 + protocol code) numbers protocols in order
    # of appearance within one build, which differs between the buffer and the whole stream.
    port = ev["dst_port"].astype("Int64")
    protocol = ev["protocol"].astype("string").fillna("").to_numpy(dtype=object)
    port_text = port.astype("string").fillna("").to_numpy(dtype=object)
    port_key = np.where(port.notna().to_numpy(), port_text + _SEP_PAIR + protocol, "").astype(object)
    service = np.where(port_key != "", dst + _SEP_PAIR + port_key, "").astype(object)
    return _Keys(
        pair=src + _SEP_PAIR + dst,
        ctx_pair=np.where(ctx >= 0, ctx_key + _SEP_PAIR + dst, "").astype(object),
        src=src,
        dst=dst,
        src_hour=src + _SEP_PAIR + hour_bin.astype(object),
        service=service,
        port=port_key,
        nodes=nk,
    )


class _KeyTable:
    """Float columns by string key, in arrays: a dict finds a key's row (a lookup per event is a
    hash probe, not a pandas reindex that hashes the whole table), and each column is one slice of
    a row-major array that grows by doubling, so a micro-batch's upsert costs its own keys only."""

    def __init__(self, columns: tuple[str, ...]) -> None:
        self.col = {name: j for j, name in enumerate(columns)}
        self.index: dict[str, int] = {}
        self.keys: list[str] = []
        self.data = np.zeros((0, len(columns)))

    def __len__(self) -> int:
        return len(self.keys)

    def rows(self, keys: np.ndarray) -> np.ndarray:
        """Row of each of ``keys``, -1 where not remembered."""
        # map over dict.get, no generator: a quarter faster (a million probes per 100k events)
        return np.fromiter(map(self.index.get, keys, itertools.repeat(-1, len(keys))), dtype=np.int64,
                           count=len(keys))

    def get(self, keys: np.ndarray, column: str, missing: float = 0.0, rows: np.ndarray | None = None) -> np.ndarray:
        """``column`` of each of ``keys`` (or of ``rows``, already looked up), ``missing`` where not remembered."""
        rows = self.rows(keys) if rows is None else rows
        values = self.data[np.maximum(rows, 0), self.col[column]] if len(self.keys) else np.zeros(len(rows))
        return np.where(rows >= 0, values, missing)

    def add_keys(self, keys: np.ndarray) -> np.ndarray:
        """Rows of the distinct ``keys``, new ones appended with every column NaN."""
        rows = self.rows(keys)
        new = np.flatnonzero(rows < 0)
        if len(new):
            n = len(self.keys)
            need = n + len(new)
            if need > len(self.data):
                grown = np.full((max(need, 2 * len(self.data), 64), self.data.shape[1]), np.nan)
                grown[:n] = self.data[:n]
                self.data = grown
            self.data[n:need] = np.nan
            rows[new] = np.arange(n, need)
            for k, r in zip(keys[new].tolist(), range(n, need), strict=True):
                self.index[k] = r
            self.keys.extend(keys[new].tolist())
        return rows

    def column(self, name: str) -> np.ndarray:
        """A writable view of column ``name`` over the stored rows."""
        return self.data[: len(self.keys), self.col[name]]

    def expire(self, cutoff: float) -> int:
        """Drop the keys whose ``seen`` is before ``cutoff``; returns how many."""
        keep = self.column("seen") >= cutoff
        dropped = int((~keep).sum())
        if dropped:
            self.data = self.data[: len(self.keys)][keep]
            self.keys = [k for k, ok in zip(self.keys, keep.tolist(), strict=True) if ok]
            self.index = {k: r for r, k in enumerate(self.keys)}
        return dropped


def _last_of(codes: np.ndarray, n_groups: int, positions: np.ndarray | None = None) -> np.ndarray:
    """Per group, the largest of ``positions`` (default: the element's index) among its elements,
    -1 for a group with none: with elements in time order, the last one."""
    out = np.full(n_groups, -1, np.int64)
    np.maximum.at(out, codes, np.arange(len(codes)) if positions is None else positions)
    return out


def _group(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(code per element, distinct keys in order of first appearance)."""
    codes, uniques = pd.factorize(keys)
    return codes, np.asarray(uniques, dtype=object)


@dataclass
class HistoryMemory:
    """What evicted events leave behind, keyed by entity names (see module docstring)."""

    memory_days: float = 30.0
    pairs: _KeyTable = field(default_factory=lambda: _KeyTable(("count", "last", "prev", "bo", "bi", "du", "seen")))
    sources: _KeyTable = field(default_factory=lambda: _KeyTable(("count", "bo", "bi", "du", "seen")))
    counts: dict[str, _KeyTable] = field(
        default_factory=lambda: {k: _KeyTable(("count", "seen")) for k in ("ctx_pair", "dst", "service")}
    )
    # Answered connections (not refused or unanswered) per service, per destination (with a
    # service), per port and protocol, and in all (key ""): the service profile
    # (``graph.service_share``).
    opened: dict[str, _KeyTable] = field(
        default_factory=lambda: {k: _KeyTable(("count", "seen")) for k in ("service", "dst", "port", "all")}
    )
    # Per (source, hour bin) ("src_hour"): events on days before the last remembered day
    # ("done"), that day ("last_day") and its events ("last_count"). Every evicted event is older
    # than the buffer, so the last day's events count for a buffered event of a later day only
    # (the hour profile counts completed days).
    daily: dict[str, _KeyTable] = field(
        default_factory=lambda: {"src_hour": _KeyTable(("done", "last_day", "last_count", "seen"))}
    )
    # The (UTC day, hour bin) pairs that evicted events covered, as day * HOUR_BINS + bin: the
    # hour profile's exposure (``graph.hour_profile``); 8 numbers a day at most, never expired.
    covered: set[int] = field(default_factory=set)
    node_hours: _KeyTable = field(default_factory=lambda: _KeyTable((*map(str, range(HOUR_BINS)), "seen")))

    def _tables(self) -> list[_KeyTable]:
        return [self.pairs, self.sources, *self.counts.values(), *self.opened.values(), *self.daily.values(),
                self.node_hours]

    def n_keys(self) -> int:
        return sum(map(len, self._tables()))

    def absorb(self, windows: GraphWindows, rows: np.ndarray, keys: _Keys | None = None) -> None:
        """Add the events ``rows`` of ``windows`` (about to be evicted, all older than the rest);
        ``keys``: the keys of every event of ``windows`` when the caller has them."""
        if len(rows) == 0:
            return
        keys = _keys_of(windows, rows) if keys is None else keys.take(rows)
        ns = windows.events["ts"].astype("int64").to_numpy()[rows]
        t = ns / 1e9
        x = windows.event_x[rows]
        values = {
            "bo": x[:, _F["log_bytes_out"]].astype(float),
            "bi": x[:, _F["log_bytes_in"]].astype(float),
            "du": x[:, _F["log_duration_s"]].astype(float),
        }
        # Pairs: counts, sums, and the last two times (rows are in time order).
        codes, uniq = _group(keys.pair)
        table, r = self.pairs, self.pairs.add_keys(uniq)
        last_row = _last_of(codes, len(uniq))
        not_last = np.ones(len(codes), dtype=bool)
        not_last[last_row] = False
        second_row = _last_of(codes[not_last], len(uniq), np.flatnonzero(not_last))
        data, col = table.data, table.col
        data[r, col["prev"]] = np.where(second_row >= 0, t[np.maximum(second_row, 0)], data[r, col["last"]])
        data[r, col["last"]] = t[last_row]
        self._add(table, r, codes, values, t[last_row])
        # Sources: counts and sums (the fallback of the prior means).
        codes, uniq = _group(keys.src)
        r = self.sources.add_keys(uniq)
        self._add(self.sources, r, codes, values, t[_last_of(codes, len(uniq))])
        for name, arr in (("ctx_pair", keys.ctx_pair), ("dst", keys.dst), ("service", keys.service)):
            self._count(self.counts[name], arr, arr != "", t)
        opened = (keys.service != "") & (x[:, _F["auth_failed"]] == 0)
        if opened.any():
            for name, arr in (("service", keys.service), ("dst", keys.dst), ("port", keys.port),
                              ("all", np.full(len(rows), "", dtype=object))):
                self._count(self.opened[name], arr, opened, t)
        # Events per (source, hour bin) by UTC day and the (day, bin) pairs covered, for the
        # daily-causal hour profile; the hour bins serve the node hour counts below too.
        day = _utc_day(t).astype(float)
        hour_bin = (ns // 3_600_000_000_000 % 24 // (24 // HOUR_BINS)).astype(np.int64)
        self.covered.update(np.unique(day.astype(np.int64) * HOUR_BINS + hour_bin).tolist())
        table = self.daily["src_hour"]
        codes, uniq = _group(keys.src_hour)
        u = len(uniq)
        r = table.add_keys(uniq)
        data, col = table.data, table.col
        old_last, old_count = data[r, col["last_day"]], np.nan_to_num(data[r, col["last_count"]])
        batch_last = np.full(u, -np.inf)
        np.maximum.at(batch_last, codes, day)
        last_day = np.fmax(old_last, batch_last)
        last_count = np.bincount(codes, weights=day == last_day[codes], minlength=u) + np.where(
            old_last == last_day, old_count, 0.0)
        total = np.bincount(codes, minlength=u) + np.nan_to_num(data[r, col["done"]]) + old_count
        data[r, col["done"]] = total - last_count
        data[r, col["last_day"]] = last_day
        data[r, col["last_count"]] = last_count
        data[r, col["seen"]] = t[_last_of(codes, u)]
        # Node hour-of-day counts over every role an event gives a node (source, destination, context).
        role_nodes = np.concatenate([windows.event_src[rows], windows.event_dst[rows], windows.event_ctx[rows]])
        ok = role_nodes >= 0
        codes, uniq = _group(keys.nodes[role_nodes[ok]])
        u = len(uniq)
        r = self.node_hours.add_keys(uniq)
        counts = np.zeros((u, HOUR_BINS))
        np.add.at(counts, (codes, np.tile(hour_bin, 3)[ok]), 1.0)
        data = self.node_hours.data
        data[r, :HOUR_BINS] = np.nan_to_num(data[r, :HOUR_BINS]) + counts
        seen = np.full(u, -np.inf)
        np.maximum.at(seen, codes, np.tile(t, 3)[ok])
        data[r, self.node_hours.col["seen"]] = seen

    @classmethod
    def _count(cls, table: _KeyTable, keys: np.ndarray, mask: np.ndarray, t: np.ndarray) -> None:
        """Add the events where ``mask`` holds to ``table``'s count per key (``t``: their times)."""
        codes, uniq = _group(keys[mask])
        cls._add(table, table.add_keys(uniq), codes, {}, t[mask][_last_of(codes, len(uniq))])

    @staticmethod
    def _add(table: _KeyTable, r: np.ndarray, codes: np.ndarray, values: dict[str, np.ndarray],
             seen: np.ndarray) -> None:
        """Add the events' count and ``values`` sums per key (rows ``r`` of ``table``) and set when
        each key was last seen."""
        data, col, u = table.data, table.col, len(r)
        data[r, col["count"]] = np.nan_to_num(data[r, col["count"]]) + np.bincount(codes, minlength=u)
        for name, v in values.items():
            data[r, col[name]] = np.nan_to_num(data[r, col[name]]) + np.bincount(codes, weights=v, minlength=u)
        data[r, col["seen"]] = seen

    def expire(self, now_s: float) -> int:
        """Forget keys not seen for ``memory_days``; returns how many were dropped."""
        cutoff = now_s - self.memory_days * 86400.0
        return sum(table.expire(cutoff) for table in self._tables())

    def _prior_days(self, name: str, keys: np.ndarray, day: np.ndarray) -> np.ndarray:
        """Remembered events of ``keys`` on UTC days before ``day`` (all of them are older than
        the buffer, so at most the last remembered day can be ``day`` itself)."""
        table = self.daily[name]
        rows = table.rows(keys)
        last = table.get(keys, "last_day", np.inf, rows)
        return table.get(keys, "done", 0.0, rows) + np.where(last < day, table.get(keys, "last_count", 0.0, rows), 0.0)

    def patch(self, windows: GraphWindows, keys: _Keys | None = None) -> None:
        """Rewrite the cumulative features of ``windows`` (built over the buffer only) in place
        so they count the remembered, evicted events too; ``keys``: those of ``windows``' events
        when the caller has them."""
        if self.n_keys() == 0:
            return
        keys = _keys_of(windows) if keys is None else keys
        w, x = windows, windows.event_x
        n = len(w.event_src)
        t = _epoch_s(w.events["ts"])
        pair_code = w.event_src * w.n_nodes + w.event_dst
        pairs, pair_rows = self.pairs, self.pairs.rows(keys.pair)
        pair_buf = _group_cumcount(pair_code)
        pair_total = pair_buf + pairs.get(keys.pair, "count", 0.0, pair_rows)
        x[:, _F["pair_first_seen"]] = (pair_total == 0).astype(np.float32)
        ctx = w.event_ctx
        ctx_code = np.where(ctx >= 0, ctx * w.n_nodes + w.event_dst, -1 - np.arange(n))
        ctx_total = _group_cumcount(ctx_code) + self.counts["ctx_pair"].get(keys.ctx_pair, "count")
        x[:, _F["context_pair_first_seen"]] = ((ctx >= 0) & (ctx_total == 0)).astype(np.float32)
        dst_total = _group_cumcount(w.event_dst) + self.counts["dst"].get(keys.dst, "count")
        x[:, _F["dst_first_seen"]] = (dst_total == 0).astype(np.float32)
        sources, src_rows = self.sources, self.sources.rows(keys.src)
        src_total = _group_cumcount(w.event_src) + sources.get(keys.src, "count", 0.0, src_rows)
        x[:, _F["src_first_seen"]] = (src_total == 0).astype(np.float32)
        has_service = keys.service != ""
        service_code = pd.factorize(keys.service)[0]
        service_total = _group_cumcount(np.where(has_service, service_code, -1 - np.arange(n))) + (
            self.counts["service"].get(keys.service, "count")
        )
        x[:, _F["service_first_seen"]] = (has_service & (service_total == 0)).astype(np.float32)
        # Service profile: answered connections remembered, then the buffer's earlier ones (only
        # the events with a service take part; the others keep the share 1 of the rebuild).
        sv = np.flatnonzero(has_service)
        w_open = (x[sv, _F["auth_failed"]] == 0).astype(np.float64)
        opened = self.opened

        def prior_open(arr: np.ndarray, name: str) -> np.ndarray:
            return _group_prior_sum(pd.factorize(arr)[0], w_open) + opened[name].get(arr, "count")

        x[sv, _F["service_open_share"]] = service_profile_share(
            np.ones(len(sv), dtype=bool), prior_open(keys.service[sv], "service"), prior_open(keys.dst[sv], "dst"),
            prior_open(keys.port[sv], "port"),
            np.cumsum(w_open) - w_open + opened["all"].get(np.array([""], dtype=object), "count")[0])
        # Hour profile over completed UTC days: the buffer's earlier days plus the memory's, and
        # the (day, bin) pairs either covered.
        hour_bin = (w.events["ts"].dt.hour.to_numpy() // (24 // HOUR_BINS)).astype(np.int64)
        day = _utc_day(t).astype(np.int64)
        row_src, row_day, _, prior, row_of_event = source_day_hours(w.event_src, day, hour_bin)
        row_src_key = keys.nodes[row_src].astype(object)
        for b in range(HOUR_BINS):
            prior[:, b] += self._prior_days("src_hour", row_src_key + (_SEP_PAIR + str(b)), row_day)
        covered = np.union1d(np.fromiter(self.covered, dtype=np.int64, count=len(self.covered)),
                             day * HOUR_BINS + hour_bin)
        exposure = covered_before(covered // HOUR_BINS, covered % HOUR_BINS, row_day)
        x[:, _F["src_hour_profile_share"]] = hour_profile(prior, exposure)[row_of_event, hour_bin]

        # Pair rhythm: the earlier times of a pair are the remembered ones, then the buffer's.
        series = pd.Series(t)
        prev_buf = series.groupby(pair_code).shift(1).to_numpy()
        prev2_buf = series.groupby(pair_code).shift(2).to_numpy()
        mem_last = pairs.get(keys.pair, "last", np.nan, pair_rows)
        mem_prev = pairs.get(keys.pair, "prev", np.nan, pair_rows)
        prev = np.where(pair_buf >= 1, prev_buf, mem_last)
        prev2 = np.where(pair_buf >= 2, prev2_buf, np.where(pair_buf == 1, mem_last, mem_prev))
        log_gap = np.log1p(np.where(np.isnan(prev), NO_PREVIOUS_GAP_S, t - prev))
        log_gap_before = np.log1p(np.where(np.isnan(prev2), NO_PREVIOUS_GAP_S, prev - prev2))
        x[:, _F["log_pair_gap_s"]] = log_gap
        x[:, _F["pair_gap_irregularity"]] = np.where(
            np.isnan(prev2), np.log1p(NO_PREVIOUS_GAP_S), np.abs(log_gap - log_gap_before)
        )
        # Prior means of the pair's volumes, falling back to the source's.
        for feature, mean_feature, col in (
            ("log_bytes_out", "pair_prior_mean_log_bytes_out", "bo"),
            ("log_bytes_in", "pair_prior_mean_log_bytes_in", "bi"),
            ("log_duration_s", "pair_prior_mean_log_duration_s", "du"),
        ):
            v = pd.Series(x[:, _F[feature]].astype(float))
            pair_sum = v.groupby(pair_code).cumsum().to_numpy() - v.to_numpy() + pairs.get(keys.pair, col, 0.0, pair_rows)
            src_sum = v.groupby(w.event_src).cumsum().to_numpy() - v.to_numpy() + sources.get(keys.src, col, 0.0, src_rows)
            own = np.divide(pair_sum, pair_total, out=np.zeros(n), where=pair_total > 0)
            fallback = np.divide(src_sum, src_total, out=np.zeros(n), where=src_total > 0)
            x[:, _F[mean_feature]] = np.where(pair_total > 0, own, fallback)

        first_buf = pair_buf == 0
        first_now = pair_total == 0
        self._patch_snapshots(w, w.event_bucket, w.config.overlap_buckets, w, keys, first_buf, first_now)
        coarse = getattr(w, "coarse", None)
        if coarse is not None:
            self._patch_snapshots(w, coarse.of_bucket[w.event_bucket], 0, coarse, keys, first_buf, first_now)

    def _patch_snapshots(self, w: GraphWindows, bucket: np.ndarray, overlap: int, snaps: object, keys: _Keys,
                         first_buf: np.ndarray, first_now: np.ndarray) -> None:
        """Node features: cumulative hour profile and history size, and the window's share of
        first-seen events, with the remembered events counted."""
        act_node, act_x, act_ptr = snaps.act_node, snaps.act_x, snaps.act_ptr
        if len(act_node) == 0:
            return
        # Hour profile: the buffer's cumulative counts (integers, recovered exactly) + remembered.
        history_buf = np.rint(np.expm1(act_x[:, _N["log_history_events"]].astype(float)))
        hours_buf = np.rint(act_x[:, _HOUR_COLS].astype(float) * (history_buf[:, None] + 1.0) - 1.0 / HOUR_BINS)
        table = self.node_hours
        rows = table.rows(keys.nodes[act_node])
        mem = np.where(rows[:, None] >= 0, table.data[np.maximum(rows, 0), :HOUR_BINS], 0.0) if len(table) else 0.0
        hours = hours_buf + mem
        history = hours.sum(axis=1, keepdims=True)
        act_x[:, _HOUR_COLS] = (hours + 1.0 / HOUR_BINS) / (history + 1.0)
        act_x[:, _N["log_history_events"]] = np.log1p(history[:, 0])
        # First-seen share: events the buffer thought first but the memory has seen before.
        changed = first_buf & ~first_now
        if not changed.any():
            return
        n_ev = len(bucket)
        role_node = np.concatenate([w.event_src, w.event_dst, w.event_ctx])
        ev = np.tile(np.arange(n_ev), 3)
        ok = role_node >= 0
        frame = pd.DataFrame({"b": bucket[ev[ok]], "n": role_node[ok], "any": 1.0, "d": changed[ev[ok]].astype(float)})
        per_bucket = frame.groupby(["b", "n"]).sum().reset_index()
        n_snap = len(act_ptr) - 1
        shifted = pd.concat([per_bucket.assign(k=per_bucket["b"] + j) for j in range(overlap + 1)], ignore_index=True)
        win = shifted[shifted["k"] < n_snap].groupby(["k", "n"])[["any", "d"]].sum()
        win = win[win["d"] > 0]
        act_k = np.repeat(np.arange(n_snap), np.diff(act_ptr))
        pos = pd.Series(np.arange(len(act_node)), index=pd.MultiIndex.from_arrays([act_k, act_node]))
        rows = pos.reindex(win.index).to_numpy()
        ok = ~np.isnan(rows)
        rows = rows[ok].astype(np.int64)
        col = _N["first_seen_share"]
        act_x[rows, col] = act_x[rows, col] - (win["d"].to_numpy()[ok] / win["any"].to_numpy()[ok])


@dataclass
class StepResult:
    """One micro-batch applied to the state: the rebuilt windows, the positions in them of the new
    events (in arrival order), the new events refused as too late, and the new events the graph
    could not place (no source or no destination: ``graph.build_graph_windows`` drops them)."""

    windows: GraphWindows | None
    new_positions: np.ndarray
    late: pd.DataFrame
    evicted: int
    unscorable: int
    unplaced: pd.DataFrame | None = None
    # Absolute fine buckets (epoch / stride): the first whose snapshot this step changed (the
    # oldest new event's, or the open bucket of the step before when that is older) and the newest.
    first_changed: int | None = None
    newest: int | None = None


class StreamState:
    """The buffer of recent events plus the history memory (module docstring)."""

    def __init__(self, config: StreamConfig, *, incremental: bool = False) -> None:
        self.config = config
        # Incremental: the scorer caches the embeddings of closed snapshots
        # (``streaming.incremental``), so the buffer only keeps the window overlap (plus
        # ``lookback_buckets``) before the oldest snapshot that is still open or changed.
        self.incremental = incremental
        self._newest: int | None = None  # absolute fine bucket of the newest event taken in
        self.memory = HistoryMemory(config.memory_days)
        # One rate state for the whole stream, continued by each micro-batch's new events.
        self.rate_state = RateState(config.rate)
        self._frames: deque[pd.DataFrame] = deque()
        self._seq = 0
        self._keep_from: int | None = None  # absolute fine bucket: earlier ones were evicted
        self.windows: GraphWindows | None = None
        self._keys: _Keys | None = None  # of the events of ``windows``
        self.evicted_total = 0
        self._rates_fresh = True  # no event has reached the rate state yet

    # -- sizes --
    @property
    def n_buffered(self) -> int:
        return sum(len(f) for f in self._frames)

    @property
    def buffer(self) -> pd.DataFrame:
        """The buffered events (canonical columns plus the arrival number), oldest first."""
        if not self._frames:
            return pd.DataFrame()
        return pd.concat(list(self._frames), ignore_index=True).sort_values("ts", kind="stable").reset_index(drop=True)

    def frames(self) -> list[pd.DataFrame]:
        """The micro-batch frames the buffer holds (for memory tests: evicted ones are gone)."""
        return list(self._frames)

    def _abs_bucket(self, ts: pd.Series) -> np.ndarray:
        return np.floor(_epoch_s(ts) / self.config.stride_s).astype(np.int64)

    # -- the step --
    def advance(self, events: pd.DataFrame) -> StepResult:
        """Append validated canonical ``events`` (one micro-batch), evict what the horizon no longer
        needs, rebuild the windows and return where the new events are in them."""
        events = events.sort_values("ts", kind="stable").reset_index(drop=True)
        events[SEQ] = np.arange(self._seq, self._seq + len(events), dtype=np.int64)
        self._seq += len(events)
        late = events.iloc[:0]
        if self._keep_from is not None and len(events):
            # Incremental: an event's own snapshot must be rebuildable from the buffer (its window
            # overlap still held), or the cached embeddings could not follow it.
            floor = self._keep_from + (self.config.window.overlap_buckets if self.incremental else 0)
            too_old = self._abs_bucket(events["ts"]) < floor
            late, events = events[too_old], events[~too_old].reset_index(drop=True)
        if len(events) == 0:
            return StepResult(self.windows, np.zeros(0, np.int64), late, 0, 0)
        # The oldest new event decides what the model still needs (out-of-order events inside the
        # horizon are fine).
        oldest = int(self._abs_bucket(events["ts"].iloc[[0]])[0])
        first_changed = oldest if self._newest is None else min(oldest, self._newest)
        newest = int(self._abs_bucket(events["ts"].iloc[[-1]])[0])
        newest = newest if self._newest is None else max(newest, self._newest)
        if self.incremental:
            keep_from = first_changed - self.config.window.overlap_buckets - self.config.lookback_buckets
        else:
            keep_from = oldest - self.config.horizon_buckets
        if self._keep_from is not None:
            keep_from = max(keep_from, self._keep_from)
        evicted = self._evict(keep_from)
        self._newest = newest
        self._frames.append(events)
        buffer = self.buffer
        # Incremental: the rate state is only ever continued with the new events (below), so the
        # rebuild does not compute buffer-local rates that would be thrown away.
        windows = build_graph_windows(buffer, self.config.window, self.config.rate, with_rates=not self.incremental)
        # The events' keys serve the patch now and the memory when they are evicted later.
        self._keys = _keys_of(windows)
        self.memory.patch(windows, self._keys)
        self.windows = windows
        seq = windows.events[SEQ].to_numpy()
        order = np.argsort(seq, kind="stable")
        pos = order[np.searchsorted(seq[order], events[SEQ].to_numpy()).clip(max=len(seq) - 1)]
        found = seq[pos] == events[SEQ].to_numpy()
        if self._rates_fresh and windows.rates is not None:
            # The first step (a warm start's replay, or the first micro-batch): the buffer is the
            # whole stream and the memory is empty, so the rebuild's rates are already the stream's,
            # from the same origin; its rate state is continued from here on instead of recomputed.
            self.rate_state = windows.rates.state
        else:
            self._continue_rates(windows, pos[found])
        self._rates_fresh = False
        unplaced = events[~found].drop(columns=SEQ)
        return StepResult(windows, pos[found], late, evicted, len(unplaced), unplaced, first_changed, newest)

    def _continue_rates(self, windows: GraphWindows, positions: np.ndarray) -> None:
        """Feed the new events (at ``positions`` of ``windows``, features already patched) to the
        stream's rate state in time order and write their rates into ``windows.rates``."""
        rows = np.sort(positions)
        if windows.rates is None and self.incremental:
            shape = (len(windows.event_src), len(self.config.rate.tick_seconds), len(ASPECTS))
            windows.rates = EventRates(np.zeros(shape, np.float32), np.zeros(shape, np.float32),
                                       np.zeros(shape[:2], np.float32), self.rate_state)
        if windows.rates is None or len(rows) == 0:
            return
        # Hashed once per node, not per event (as ``build_graph_windows`` does): the same typed
        # names, so the same ids as a batch run's.
        node_h = node_hash(windows.nodes["node_type"].astype(str) + ":" + windows.nodes["name"].astype(str))
        src, dst, ctx, rel = windows.event_src[rows], windows.event_dst[rows], windows.event_ctx[rows], windows.event_rel[rows]
        actor = np.where((rel == RELATION_INDEX["logs_on"]) & (ctx >= 0), node_h[np.maximum(ctx, 0)], node_h[src])
        x = windows.event_x[rows]
        # As in a batch run: the failure flag and the edge's novelty over the whole stream (the
        # first-seen feature, already patched from the memory).
        new = event_rates(None, rel, windows.events["ts"].iloc[rows].reset_index(drop=True), x[:, _F["auth_failed"]],
                          (x[:, _F["pair_first_seen"]] > 0).astype(np.int8), state=self.rate_state,
                          hashes=(node_h[src], node_h[dst], actor))
        rates = windows.rates
        rates.count[rows], rates.total[rows], rates.t[rows] = new.count, new.total, new.t
        rates.state = self.rate_state

    def _evict(self, keep_from: int) -> int:
        """Drop buffered events of buckets before ``keep_from``; remember what they leave behind."""
        if self._keep_from is not None and keep_from <= self._keep_from:
            return 0
        self._keep_from = keep_from
        if not self._frames or self.windows is None:
            return 0
        cutoff = pd.Timestamp(keep_from * self.config.stride_s, unit="s", tz="UTC")
        w = self.windows
        old = np.flatnonzero((w.events["ts"] < cutoff).to_numpy())
        if len(old) == 0:
            return 0
        self.memory.absorb(w, old, self._keys)
        # Events the graph could not place (no scored edge) are dropped with the rest.
        kept: deque[pd.DataFrame] = deque()
        evicted = 0
        for frame in self._frames:
            mask = (frame["ts"] >= cutoff).to_numpy()
            evicted += int((~mask).sum())
            if mask.all():
                kept.append(frame)
            elif mask.any():
                kept.append(frame[mask].reset_index(drop=True))
        self._frames = kept
        self.evicted_total += evicted
        self.memory.expire(float(cutoff.value) / 1e9)
        return evicted
