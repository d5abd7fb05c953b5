"""From canonical events to typed graph snapshots over sliding windows, with behavioural features.

Every event becomes one *scored* edge between typed nodes (a logon is user -> host, a process
start host -> process, a flow host -> host or host -> external) plus a *context* node (the source
host of a logon, the user of a process start or flow). Time is cut into buckets of ``stride``;
snapshot ``k`` holds the events of the window of length ``window`` that ends where bucket ``k``
ends, so consecutive snapshots overlap by ``window - stride``. An event in bucket ``b`` is scored
against snapshots ``b - history .. b - 1`` only: its own window never leaks into its score.

Features describe behaviour, not identity, so a trained model moves to a new environment:
node features are activity counts, distinct peers, failure and volume statistics per window plus
the node's cumulative hour-of-day profile; event features are time of day and week, outcome,
authentication protocol, volume, and causal pair-history (first-seen, prior count).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from anomaly_pipeline.rates import ASPECTS, RateConfig, RateState, node_hash
from anomaly_pipeline.schema import PROTOCOLS

NODE_TYPES: tuple[str, ...] = ("user", "host", "process", "external")

# (source node type, relation, destination node type) for the scored edge of each event kind.
RELATIONS: tuple[tuple[str, str, str], ...] = (
    ("user", "logs_on", "host"),
    ("host", "auth_to", "host"),
    ("host", "runs", "process"),
    ("user", "starts", "process"),
    ("host", "flows_to", "host"),
    ("host", "flows_to_ext", "external"),
)
RELATION_INDEX = {rel[1]: i for i, rel in enumerate(RELATIONS)}
SCORED_RELATIONS = ("logs_on", "runs", "flows_to", "flows_to_ext")
HOUR_BINS = 8  # 3-hour bins of the day for the cumulative hour profile
HOUR_PRIOR_DAYS = 1.0  # pseudo-days at a source's overall rate in each bin of its hour profile
# Pseudo-connections of the backoff at each level of the service profile (``service_share``): a
# destination's services back off to the services of every destination, those to uniform.
SERVICE_PRIOR = 1.0
# Distinct service codes ((port + 1) * 8 + protocol code): the uniform base of the service profile.
SERVICE_CODES = 65537 * 8

NODE_FEATURES: tuple[str, ...] = (
    "log_out_events",
    "log_in_events",
    "log_out_peers",
    "log_in_peers",
    "auth_failure_share",
    "log_bytes_out",
    "log_bytes_in",
    "first_seen_share",
    "log_auth_events",
    "log_process_events",
    "log_flow_events",
    *(f"hour_profile_{i}" for i in range(HOUR_BINS)),
    "log_history_events",
    *(f"is_{t}" for t in NODE_TYPES),
    "window_hour_sin",
    "window_hour_cos",
    "window_weekend",
)
EVENT_FEATURES: tuple[str, ...] = (
    "hour_sin",
    "hour_cos",
    "is_weekend",
    "auth_failed",
    "auth_ntlm",
    "auth_kerberos",
    "proto_udp",
    "proto_icmp",
    "log_bytes_out",
    "log_bytes_in",
    "log_duration_s",
    "log_packets",
    "pair_first_seen",
    "context_pair_first_seen",
    "dst_first_seen",
    "src_first_seen",
    "service_first_seen",
    "src_hour_profile_share",
    "service_open_share",
    "log_pair_gap_s",
    "pair_gap_irregularity",
    "pair_prior_mean_log_bytes_out",
    "pair_prior_mean_log_bytes_in",
    "pair_prior_mean_log_duration_s",
)
# The event's likelihood factorises as p(hour | source) * p(destination | source, time, history)
# * p(attributes | source, destination, history) * p(rates | context); these name the features each
# factor sees. No count or burst feature is an input of the link or attribute heads: bursts are
# scored by the rate parts (``anomaly_pipeline.rates``), and a count that is scored is never also
# an input that explains the same burst away. Novelty (first-seen) and time stay inputs.
LINK_INPUTS: tuple[str, ...] = (
    "hour_sin",
    "hour_cos",
    "is_weekend",
    "pair_first_seen",
    "context_pair_first_seen",
    "dst_first_seen",
    "src_first_seen",
    "service_first_seen",
)
ATTRIBUTE_CONTEXT: tuple[str, ...] = (
    "hour_sin",
    "hour_cos",
    "pair_prior_mean_log_bytes_out",
    "pair_prior_mean_log_bytes_in",
    "pair_prior_mean_log_duration_s",
    "pair_first_seen",
    "context_pair_first_seen",
    "dst_first_seen",
    "src_first_seen",
    "service_first_seen",
)
BINARY_ATTRIBUTES: tuple[str, ...] = ("auth_failed", "auth_ntlm", "auth_kerberos", "proto_udp", "proto_icmp")
# One-sided flags: only the value 1 (a failed logon, an unanswered or rejected connection) can be
# surprising; success is never evidence of an attack.
ONE_SIDED_FLAGS: tuple[str, ...] = ("auth_failed",)
CONTINUOUS_ATTRIBUTES: tuple[str, ...] = (
    "log_bytes_out",
    "log_bytes_in",
    "log_duration_s",
    "log_packets",
    "log_pair_gap_s",
    "pair_gap_irregularity",
)
# Upper-sided volumes: more bytes, packets or time than expected is surprising, less is not.
UPPER_SIDED: tuple[str, ...] = ("log_bytes_out", "log_bytes_in", "log_duration_s", "log_packets")
ATTRIBUTE_TARGETS: tuple[str, ...] = BINARY_ATTRIBUTES + CONTINUOUS_ATTRIBUTES
# Features whose distribution should hold still while the enterprise does: drift monitoring
# watches these. Left out on purpose: cumulative counts (they grow with history by construction)
# and is_weekend (a one-day window is all weekday or all weekend).
DRIFT_MONITORED_FEATURES: tuple[str, ...] = (
    "hour_sin",
    "hour_cos",
    "auth_failed",
    "auth_ntlm",
    "auth_kerberos",
    "log_bytes_out",
    "log_bytes_in",
    "log_duration_s",
    "pair_first_seen",
    "dst_first_seen",
    "log_pair_gap_s",
)
NO_PREVIOUS_GAP_S = 30 * 86400.0  # gap assumed for a pair's first event
EDGE_FEATURES: tuple[str, ...] = ("log_count", "failure_share", "log_bytes")
SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class WindowConfig:
    """How time is cut: bucket ``stride``, window length (>= stride) and history depth, in hours."""

    stride_hours: float = 1.0
    window_hours: float = 2.0
    history: int = 6
    train_fraction: float = 0.6
    validation_fraction: float = 0.2
    # Adaptive mode: when set, the stride is sized from the data's event density so that a bucket
    # holds about this many events on average (window and overlap keep their ratio to the stride).
    adaptive_events_per_bucket: int | None = None
    # Second, coarse time scale (multi-scale windows): snapshots of ``coarse_stride_hours`` (one
    # day by default), of which the temporal encoder sees the last ``coarse_history`` completed
    # ones next to the fine history. None = single scale.
    coarse_stride_hours: float | None = 24.0
    coarse_history: int = 7

    def __post_init__(self) -> None:
        if self.window_hours < self.stride_hours:
            raise ValueError(
                f"window_hours ({self.window_hours}) must be >= stride_hours ({self.stride_hours}); "
                "windows overlap by window - stride"
            )
        if self.coarse_stride_hours is not None and self.coarse_stride_hours < self.window_hours:
            raise ValueError(
                f"coarse_stride_hours ({self.coarse_stride_hours}) must be >= window_hours ({self.window_hours}): "
                "the coarse scale is the longer one; set it to None for a single scale"
            )
        if self.coarse_history < 1:
            raise ValueError(f"coarse_history must be >= 1, got {self.coarse_history}")
        if not 0 < self.train_fraction < 1 or not 0 <= self.validation_fraction < 1 - self.train_fraction:
            raise ValueError("need 0 < train_fraction and train_fraction + validation_fraction < 1")

    @property
    def overlap_buckets(self) -> int:
        return int(round(self.window_hours / self.stride_hours)) - 1

    def adapted_to(self, ts: pd.Series) -> WindowConfig:
        """This config with the stride sized by event density (adaptive mode), else unchanged.

        The stride is rounded to whole minutes (at least 1) and the window and the coarse scale
        keep their multiples of the stride, so the overlap in buckets is the same at any density.
        """
        if not self.adaptive_events_per_bucket:
            return self
        span_h = max((ts.max() - ts.min()).total_seconds() / 3600.0, 1 / 60)
        stride_h = max(round(span_h * self.adaptive_events_per_bucket / max(len(ts), 1) * 60), 1) / 60
        ratio = self.window_hours / self.stride_hours
        from dataclasses import replace

        coarse = None if self.coarse_stride_hours is None else stride_h * self.coarse_stride_hours / self.stride_hours
        return replace(self, stride_hours=stride_h, window_hours=stride_h * ratio, coarse_stride_hours=coarse,
                       adaptive_events_per_bucket=None)


@dataclass
class CoarseSnapshots:
    """The coarse time scale: non-overlapping snapshots of ``stride_hours`` with the same sparse
    layout and feature schema as the fine ones (``act_*``, ``snap_*``), and for every fine bucket
    the index of the coarse snapshot it falls in (``of_bucket`` [K]); a fine bucket's coarse
    history is the completed coarse snapshots before that one, so nothing later leaks in."""

    stride_hours: float
    n_snapshots: int
    of_bucket: np.ndarray
    act_ptr: np.ndarray
    act_node: np.ndarray
    act_x: np.ndarray
    snap_ptr: np.ndarray
    snap_rel: np.ndarray
    snap_src: np.ndarray
    snap_dst: np.ndarray
    snap_attr: np.ndarray
    snap_src_row: np.ndarray
    snap_dst_row: np.ndarray


@dataclass
class EventRates:
    """Rate state of every event (``anomaly_pipeline.rates``): ``count`` and ``total`` [n, S, A]
    float32 (S time scales, A aspects), ``t`` [n, S] the tick numbers, ``state`` the sketches
    after the last event."""

    count: np.ndarray
    total: np.ndarray
    t: np.ndarray
    state: RateState | None = None


@dataclass
class GraphWindows:
    """Snapshots, node features and per-event scored edges for one stretch of events.

    Shapes (K snapshots, N nodes, R active (snapshot, node) rows, E snapshot edges):
    ``act_x`` [R, len(NODE_FEATURES)] float32 with ``act_node`` [R] and ``act_ptr`` [K + 1]
    (rows of snapshot k are ``act_ptr[k]:act_ptr[k + 1]``, sorted by node id); ``snap_*`` [E]
    edge arrays with ``snap_ptr`` [K + 1], endpoints as global node ids and as rows within their
    snapshot (``snap_src_row``, ``snap_dst_row``);
    ``event_*`` arrays have one entry per event, aligned with ``events`` (sorted by ts).
    """

    config: WindowConfig
    t0: pd.Timestamp
    n_buckets: int
    nodes: pd.DataFrame  # node_id, name, node_type, type_index (position within its type)
    events: pd.DataFrame  # canonical columns + bucket, split, relation
    act_ptr: np.ndarray
    act_node: np.ndarray
    act_x: np.ndarray
    snap_ptr: np.ndarray
    snap_rel: np.ndarray
    snap_src: np.ndarray
    snap_dst: np.ndarray
    snap_attr: np.ndarray
    snap_src_row: np.ndarray
    snap_dst_row: np.ndarray
    event_src: np.ndarray
    event_dst: np.ndarray
    event_ctx: np.ndarray  # -1 where an event has no context node
    event_rel: np.ndarray
    event_bucket: np.ndarray
    event_x: np.ndarray
    labels: np.ndarray  # float, NaN where unknown
    split: np.ndarray  # 0 train, 1 validation, 2 test
    meta: dict = field(default_factory=dict)
    coarse: CoarseSnapshots | None = None  # the second time scale (multi-scale windows)
    # Per event, time scale and aspect (``rates.ASPECTS``): decayed current count, filtered total, tick.
    rates: EventRates | None = None
    # Per event, the code of its service (destination port and protocol; -1 for none), for the
    # service novelty of corrupted negatives.
    event_service: np.ndarray | None = None

    @property
    def n_nodes(self) -> int:
        return len(self.nodes)

    def split_index(self, name: str) -> np.ndarray:
        """Positions of the events of split ``name`` (train, validation, test)."""
        return np.flatnonzero(self.split == SPLITS.index(name))

    def nodes_of_type(self, node_type: str) -> np.ndarray:
        return self.nodes.index[self.nodes["node_type"] == node_type].to_numpy()

    def summary(self) -> dict:
        counts = self.nodes["node_type"].value_counts().to_dict()
        rel_counts = pd.Series(self.event_rel).map(lambda r: RELATIONS[r][1]).value_counts().to_dict()
        return {
            "snapshots": int(self.n_buckets),
            "nodes": int(self.n_nodes),
            **{f"nodes_{t}": int(counts.get(t, 0)) for t in NODE_TYPES},
            "snapshot_edges": int(len(self.snap_src)),
            "active_node_rows": int(len(self.act_node)),
            "events": int(len(self.event_src)),
            **{f"events_{r}": int(c) for r, c in rel_counts.items()},
            **{f"events_{s}": int((self.split == i).sum()) for i, s in enumerate(SPLITS)},
            "window_hours": self.config.window_hours,
            "stride_hours": self.config.stride_hours,
            "history_snapshots": self.config.history,
            "coarse_stride_hours": self.coarse.stride_hours if self.coarse is not None else None,
            "coarse_snapshots": self.coarse.n_snapshots if self.coarse is not None else 0,
            "node_features": len(NODE_FEATURES),
            "event_features": len(EVENT_FEATURES),
        }


_INTERNAL_NETWORKS = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7", "fe80::/10")
)


def _is_internal_address(name: str) -> bool:
    """RFC 1918 / unique-local / link-local addresses are inside the enterprise."""
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    return any(address in net for net in _INTERNAL_NETWORKS if net.version == address.version)


_TYPE_CODE = {t: i for i, t in enumerate(NODE_TYPES)}


@dataclass
class _EdgeArrays:
    """Per event, the scored edge as arrays: name codes (positions in ``names``, the distinct
    names; -1 where absent), node type codes (index into ``NODE_TYPES``, -1 where absent) and the
    relation index (-1: no edge)."""

    names: np.ndarray
    src: np.ndarray
    src_type: np.ndarray
    dst: np.ndarray
    dst_type: np.ndarray
    rel: np.ndarray
    ctx: np.ndarray
    ctx_type: np.ndarray

    @property
    def usable(self) -> np.ndarray:
        return (self.rel >= 0) & (self.src >= 0) & (self.dst >= 0)

    def take(self, mask: np.ndarray) -> _EdgeArrays:
        return _EdgeArrays(self.names, *(getattr(self, f)[mask] for f in
                                         ("src", "src_type", "dst", "dst_type", "rel", "ctx", "ctx_type")))

    def name_of(self, codes: np.ndarray) -> np.ndarray:
        """Names of ``codes`` as an object array, None where a code is -1."""
        return np.append(self.names, None)[codes]


def _as_category(column: pd.Series) -> pd.Series:
    """A text column as a categorical of str (a no-op for the compact columns ``detect`` reads)."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        return column
    return column.astype("string").astype("category")


def _name_codes(events: pd.DataFrame, columns: tuple[str, ...]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The distinct names of ``columns`` (object array of str) and, per column, each event's name
    as a position in it (int64, -1 where missing). From the categorical codes: no Python object
    per event."""
    cats = {c: _as_category(events[c]) for c in columns}
    categories = {c: pd.Index(cat.cat.categories.astype(str), dtype=object) for c, cat in cats.items()}
    names = pd.Index(np.concatenate([k.to_numpy() for k in categories.values()]), dtype=object).unique()
    codes = {}
    for c, cat in cats.items():
        # Code -1 (missing) picks the appended -1.
        to_name = np.append(names.get_indexer(categories[c]).astype(np.int64), -1)
        codes[c] = to_name[cat.cat.codes.to_numpy()]
    return names.to_numpy(dtype=object), codes


def _edge_arrays(events: pd.DataFrame) -> _EdgeArrays:
    """Vectorised core of ``_scored_edges``: per event, the scored edge as arrays."""
    names, codes = _name_codes(events, ("user", "src_host", "dst_host", "process"))
    user, src_host, dst_host, process = (codes[c] for c in ("user", "src_host", "dst_host", "process"))
    event_type = _as_category(events["event_type"])
    type_names = list(event_type.cat.categories.astype(str))
    type_codes = event_type.cat.codes.to_numpy()

    def of_type(*wanted: str) -> np.ndarray:
        return np.isin(type_codes, [i for i, name in enumerate(type_names) if name in wanted])

    is_auth = of_type("auth")
    # A flow destination is a host when it is ever a source, an auth target or a private address.
    known_host = np.zeros(len(names) + 1, dtype=bool)  # the last entry: code -1
    known_host[src_host] = True
    known_host[dst_host[is_auth]] = True
    internal = np.zeros(len(names) + 1, dtype=bool)
    flow_dst = np.unique(dst_host[of_type("network_flow", "dns") & (dst_host >= 0)])
    internal[flow_dst] = known_host[flow_dst] | np.array(
        [_is_internal_address(names[d]) for d in flow_dst], dtype=bool
    )
    has_user = user >= 0
    has_src = src_host >= 0
    n = len(events)
    out = _EdgeArrays(
        names=names,
        src=np.full(n, -1, np.int64), src_type=np.full(n, -1, np.int8),
        dst=np.full(n, -1, np.int64), dst_type=np.full(n, -1, np.int8),
        rel=np.full(n, -1, np.int8),
        ctx=np.full(n, -1, np.int64), ctx_type=np.full(n, -1, np.int8),
    )

    def assign(mask, src, src_t, dst, dst_t, rel, ctx, ctx_t):
        out.src[mask] = src[mask]
        out.src_type[mask] = _TYPE_CODE[src_t]
        out.dst[mask] = dst[mask]
        out.dst_type[mask] = _TYPE_CODE[dst_t]
        out.rel[mask] = RELATION_INDEX[rel]
        if ctx is not None:
            out.ctx[mask] = ctx[mask]
            out.ctx_type[mask] = _TYPE_CODE[ctx_t]

    # Logon with a known account: user -> destination host, source host as context.
    assign(is_auth & has_user, user, "user", dst_host, "host", "logs_on", src_host, "host")
    # Machine-to-machine authentication without an account name.
    assign(is_auth & ~has_user, src_host, "host", dst_host, "host", "auth_to", None, None)
    is_proc = of_type("process_start")
    assign(is_proc & has_src, src_host, "host", process, "process", "runs", user, "user")
    is_flow = of_type("network_flow", "dns", "file_access")
    dst_internal = internal[dst_host]
    assign(is_flow & dst_internal, src_host, "host", dst_host, "host", "flows_to", user, "user")
    assign(is_flow & ~dst_internal, src_host, "host", dst_host, "external", "flows_to_ext", user, "user")
    # A process start whose host is only known through the user is still a user -> process edge.
    assign(is_proc & ~has_src & has_user, user, "user", process, "process", "starts", None, None)
    out.ctx_type[out.ctx < 0] = -1  # no context node, no context type
    return out


def _scored_edges(events: pd.DataFrame) -> pd.DataFrame:
    """Per event: (src name, src type, dst name, dst type, relation, context name, context type)."""
    e = _edge_arrays(events)
    types = np.array([*NODE_TYPES, ""], dtype=object)  # code -1 -> ""
    relations = np.array([*(r[1] for r in RELATIONS), ""], dtype=object)
    out = pd.DataFrame(
        {
            "src": pd.array(e.name_of(e.src), dtype="string"),
            "src_type": types[e.src_type],
            "dst": pd.array(e.name_of(e.dst), dtype="string"),
            "dst_type": types[e.dst_type],
            "relation": relations[e.rel],
            "ctx": pd.array(e.name_of(e.ctx), dtype="string"),
            "ctx_type": types[e.ctx_type],
        },
        index=events.index,
    )
    return out


def _node_table(e: _EdgeArrays) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """One node per (type, name), sorted by (type in ``NODE_TYPES`` order, name), and the node
    ids of every event's source, destination and context (-1 where none), as int64 arrays.

    Vectorised: the distinct names are ranked by their sort order once, and a node is the
    (type, name rank) pair, so no per-event Python object is made."""
    n = len(e.rel)
    uniques = e.names
    U = len(uniques)
    rank = np.empty(U, dtype=np.int64)
    rank[np.argsort(uniques, kind="stable")] = np.arange(U)
    node_ids = []
    present = np.zeros(len(NODE_TYPES) * max(U, 1), dtype=bool)
    keys = []
    for codes, types in ((e.src, e.src_type), (e.dst, e.dst_type), (e.ctx, e.ctx_type)):
        ok = (codes >= 0) & (types >= 0)
        key = np.where(ok, types.astype(np.int64) * max(U, 1) + rank[np.maximum(codes, 0)] if U else 0, -1)
        present[key[ok]] = True
        keys.append(key)
    node_keys = np.flatnonzero(present)
    id_of_key = np.cumsum(present) - 1
    for key in keys:
        node_ids.append(np.where(key >= 0, id_of_key[np.maximum(key, 0)], -1).astype(np.int64))
    node_type_code = node_keys // max(U, 1)
    by_rank = np.argsort(rank) if U else np.zeros(0, np.int64)  # name at each rank
    node_names = uniques[by_rank[node_keys % max(U, 1)]] if U else np.zeros(0, dtype=object)
    first_of_type = np.searchsorted(node_type_code, node_type_code, side="left")
    nodes = pd.DataFrame({
        "name": pd.array(node_names, dtype="string"),
        "node_type": np.array(NODE_TYPES, dtype=object)[node_type_code],
        "type_index": np.arange(len(node_keys), dtype=np.int64) - first_of_type,
    })
    assert all(len(ids) == n for ids in node_ids)
    return nodes, node_ids[0], node_ids[1], node_ids[2]


def _group_cumcount(keys: np.ndarray) -> np.ndarray:
    """For each position, how many earlier positions share its key (keys in time order)."""
    return pd.Series(keys).groupby(keys).cumcount().to_numpy()


def _prior_mean(values: np.ndarray, key: np.ndarray, fallback_key: np.ndarray) -> np.ndarray:
    """Mean of ``values`` over earlier events with the same ``key`` (events in time order); where a
    key has no history, the same over ``fallback_key`` (e.g. the source), else 0."""

    def expanding(k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        series = pd.Series(values)
        total = series.groupby(k).cumsum().to_numpy() - values
        count = pd.Series(np.ones(len(values))).groupby(k).cumsum().to_numpy() - 1
        return total, count

    total, count = expanding(key)
    fb_total, fb_count = expanding(fallback_key)
    own = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    fallback = np.divide(fb_total, fb_count, out=np.zeros_like(fb_total), where=fb_count > 0)
    return np.where(count > 0, own, fallback)


def hour_profile(prior: np.ndarray, exposure: np.ndarray) -> np.ndarray:
    """[rows, HOUR_BINS]: a source's hour-of-day profile, the share of its activity expected in
    each 3-hour bin, from ``prior`` (its events per bin on earlier days) and ``exposure`` (how
    many earlier days the data covered each bin, i.e. held any event in it).

    Each bin's rate is events per covered day, shrunk towards the source's overall rate by
    ``HOUR_PRIOR_DAYS`` pseudo-days (a Gamma-Poisson posterior mean); a bin the data never covered
    gets the overall rate. A capture that starts at 22:00 therefore does not call the monitored
    host's 10:00 traffic next morning "never seen at this hour": nobody could have seen it then.
    Counting events over days instead (bins the data never covered as zeros) did exactly that,
    and ranked every benign daytime event of a one-day capture above the scans (README, "How
    defaults were chosen"). No earlier activity: the uniform 1 / HOUR_BINS."""
    total = prior.sum(axis=1, keepdims=True)
    covered = exposure.sum(axis=1, keepdims=True)
    mean = np.divide(total, covered, out=np.zeros_like(total, dtype=np.float64), where=covered > 0)
    rate = (prior + HOUR_PRIOR_DAYS * mean) / (exposure + HOUR_PRIOR_DAYS)
    norm = rate.sum(axis=1, keepdims=True)
    return np.where(norm > 0, rate / np.where(norm > 0, norm, 1.0), 1.0 / HOUR_BINS)


def source_day_hours(src: np.ndarray, day: np.ndarray, hour_bin: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per (source, UTC day) row, sorted by source then day: ``(row_src, row_day, counts,
    prior, row_of_event)``: that day's events per hour bin [rows, HOUR_BINS], the source's events
    per bin on its earlier days in this data [rows, HOUR_BINS], and each event's row."""
    src = np.asarray(src, dtype=np.int64)
    day = np.asarray(day, dtype=np.int64)
    d0 = int(day.min()) if len(day) else 0
    span = int(day.max()) - d0 + 1 if len(day) else 1
    rows, row_of_event = np.unique(src * span + (day - d0), return_inverse=True)
    counts = np.bincount(row_of_event * HOUR_BINS + hour_bin, minlength=len(rows) * HOUR_BINS)
    counts = counts.reshape(len(rows), HOUR_BINS).astype(np.float64)
    row_src, row_day = rows // span, rows % span + d0
    before = np.cumsum(counts, axis=0) - counts
    first = np.r_[True, row_src[1:] != row_src[:-1]] if len(rows) else np.zeros(0, dtype=bool)
    prior = before - before[np.maximum.accumulate(np.where(first, np.arange(len(rows)), 0))]
    return row_src, row_day, counts, prior, row_of_event


def covered_before(covered_days: np.ndarray, covered_bins: np.ndarray, days: np.ndarray) -> np.ndarray:
    """[len(days), HOUR_BINS]: per bin, how many of the covered (day, bin) pairs lie on days
    before each of ``days`` (pairs given as two arrays, without repeats)."""
    out = np.zeros((len(days), HOUR_BINS))
    for b in range(HOUR_BINS):
        on = np.sort(covered_days[covered_bins == b])
        out[:, b] = np.searchsorted(on, days, side="left")
    return out


def event_hour_share(src: np.ndarray, day: np.ndarray, hour_bin: np.ndarray) -> np.ndarray:
    """Per event (time order), its bin's share of the source's ``hour_profile`` from earlier days."""
    row_src, row_day, _, prior, row_of_event = source_day_hours(src, day, hour_bin)
    pairs = np.unique(np.asarray(day, dtype=np.int64) * HOUR_BINS + hour_bin)
    exposure = covered_before(pairs // HOUR_BINS, pairs % HOUR_BINS, row_day)
    return hour_profile(prior, exposure)[row_of_event, hour_bin]


def _group_prior_sum(keys: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """For each position, the sum of ``weights`` over earlier positions with its key (time order)."""
    return pd.Series(weights).groupby(keys).cumsum().to_numpy() - weights


def service_share(dst: np.ndarray, service: np.ndarray, opened: np.ndarray) -> np.ndarray:
    """Per event (time order), the probability of its service (``service`` code: port and
    protocol, -1 for none) among the services its destination was seen to offer: the earlier
    connections to that destination that were *not* refused or left unanswered (``opened``),
    backed off (``SERVICE_PRIOR`` pseudo-connections) to the same share over every destination,
    and that to uniform. 1 where the event has no service.

    Attempts known to fail never enter the profile (the conditional merge of MIDAS-F: an anomaly
    does not become the norm), so a scan of closed ports stays unlikely however long it lasts,
    while a server that answered on a port before makes the next connection to it ordinary."""
    has = service >= 0
    w = (has & opened).astype(np.float64)
    own = _group_prior_sum(np.where(has, dst * SERVICE_CODES + service, -1), w)
    own_total = _group_prior_sum(np.where(has, dst, -1), w)
    every = _group_prior_sum(np.where(has, service, -1), w)
    return service_profile_share(has, own, own_total, every, np.cumsum(w) - w)


def service_profile_share(has: np.ndarray, own: np.ndarray, own_total: np.ndarray, every: np.ndarray,
                          every_total: np.ndarray) -> np.ndarray:
    """``service_share`` from the earlier answered connections: to this service of this destination
    (``own``), to any service of it (``own_total``), to this service anywhere (``every``) and in all
    (``every_total``); 1 where the event has no service (``has`` False)."""
    alpha = SERVICE_PRIOR
    base = (every + alpha / SERVICE_CODES) / (every_total + alpha)
    return np.where(has, (own + alpha * base) / (own_total + alpha), 1.0)


_NS_PER_MINUTE = 60 * 10**9


def _utc_minute_of_day(ts: pd.Series) -> np.ndarray:
    """Minutes since UTC midnight (int64), as ``ts.dt.hour * 60 + ts.dt.minute``."""
    return ts.to_numpy(dtype="datetime64[ns]").view(np.int64) // _NS_PER_MINUTE % 1440


def _utc_day_of_week(ts: pd.Series) -> np.ndarray:
    """Day of the week in UTC, Monday 0 (``ts.dt.dayofweek``): 1970-01-01 was a Thursday."""
    return (ts.to_numpy(dtype="datetime64[ns]").view(np.int64) // (_NS_PER_MINUTE * 1440) + 3) % 7


def epoch_seconds(ts: pd.Series) -> np.ndarray:
    """UTC timestamps as float seconds since 1970."""
    return ts.astype("datetime64[ns, UTC]").astype("int64").to_numpy() / 1e9


def event_rates(edges: pd.DataFrame | None, rel: np.ndarray, ts: pd.Series, failed: np.ndarray, novel: np.ndarray,
                config: RateConfig | None = None, state: RateState | None = None, chunk: int = 1_000_000,
                *, hashes: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> EventRates:
    """Rate state of each scored edge (``anomaly_pipeline.rates``; ``failed`` 1 where the event
    failed, ``novel`` 1 where its edge was never seen before), fed in chunks of ``chunk``
    events so memory stays bounded; ``state`` continues an earlier stream (streaming).

    ``hashes`` = (source, destination, actor) ``node_hash`` ids per event, when the caller has
    them (hashed once per node, not per event); else they are hashed from ``edges``."""
    state = state if state is not None else RateState(config or RateConfig())
    if hashes is not None:
        src, dst, actor = hashes
    else:
        src = node_hash(edges["src_type"].astype(str) + ":" + edges["src"].astype(str))
        dst = node_hash(edges["dst_type"].astype(str) + ":" + edges["dst"].astype(str))
        # The acting host: where a logon came from (its context host), else the source.
        from_host = (edges["relation"].to_numpy() == "logs_on") & edges["ctx"].notna().to_numpy()
        actor = np.where(from_host, node_hash(edges["ctx_type"].astype(str) + ":" + edges["ctx"].astype(str)), src)
    seconds = epoch_seconds(ts)
    # Each chunk's state written into arrays of the whole length (no list of chunks concatenated
    # at the end, which held the rate state twice).
    shape = (len(src), len(state.scales), len(ASPECTS))
    out = EventRates(np.zeros(shape, np.float32), np.zeros(shape, np.float32), np.zeros(shape[:2], np.float32), state)
    for lo in range(0, len(src), chunk):
        hi = lo + chunk
        out.count[lo:hi], out.total[lo:hi], out.t[lo:hi] = state.update(
            src[lo:hi], dst[lo:hi], rel[lo:hi], seconds[lo:hi], failed[lo:hi], actor[lo:hi], novel[lo:hi])
    return out


def build_graph_windows(events: pd.DataFrame, config: WindowConfig = WindowConfig(),
                        rate_config: RateConfig | None = None, with_rates: bool = True) -> GraphWindows:
    """Build snapshots, node features and event features from validated canonical events.

    Events without a usable scored edge (for example a logon with no destination host) cannot be
    placed in the graph; they are dropped here and counted in ``meta['events_without_edge']``.
    ``with_rates=False``: no rate state (``rates`` None), for a caller that continues its own
    (the streaming scorer).
    """
    if events.empty:
        raise ValueError("no events to build graph windows from: ingestion or validation produced 0 rows")
    # No copy of the (large) event table unless it must be reordered or filtered: a shallow copy
    # shares the columns, and the columns added below do not reach the caller's frame.
    ts_ns = events["ts"].to_numpy(dtype="datetime64[ns]") if len(events) else np.zeros(0, "datetime64[ns]")
    if len(ts_ns) > 1 and (ts_ns[1:] < ts_ns[:-1]).any():
        events = events.sort_values("ts", kind="stable").reset_index(drop=True)
    elif not isinstance(events.index, pd.RangeIndex) or events.index.start != 0 or events.index.step != 1:
        events = events.reset_index(drop=True)
    else:
        events = events.copy(deep=False)
    e = _edge_arrays(events)
    usable = e.usable
    dropped = int((~usable).sum())
    if dropped:
        events = events[usable].reset_index(drop=True)
        e = e.take(usable)

    # Node table: one node per (type, name), and every event's node ids (int64, -1 for none).
    nodes, src, dst, ctx = _node_table(e)
    rel = e.rel.astype(np.int64)
    n_nodes = len(nodes)

    ts = events["ts"]
    config = config.adapted_to(ts)
    t0 = ts.iloc[0].floor(f"{max(int(round(config.stride_hours * 60)), 1)}min")
    stride_s = config.stride_hours * 3600.0
    seconds = (ts - t0).dt.total_seconds().to_numpy()
    bucket = np.floor(seconds / stride_s).astype(np.int64)
    n_buckets = int(bucket.max()) + 1

    # Time-ordered split by bucket.
    train_end = int(np.ceil(n_buckets * config.train_fraction))
    val_end = int(np.ceil(n_buckets * (config.train_fraction + config.validation_fraction)))
    split = np.where(bucket < train_end, 0, np.where(bucket < val_end, 1, 2)).astype(np.int8)

    # ---- event features (causal: only earlier events are used) ----
    # Per-event arrays the features, the rates and the snapshots share; everything else is made
    # inside the one column that reads it and freed with it (a few million events: each array is
    # tens of MB).
    success = events["success"].astype("boolean")
    auth_failed = (success == False).fillna(False).to_numpy().astype(np.float32)  # noqa: E712
    opened = (success != False).fillna(True).to_numpy()  # noqa: E712
    del success

    def volume(column: str) -> np.ndarray:
        return events[column].astype("Float64").fillna(0).to_numpy(dtype=float).clip(min=0)

    def equals(column: str, value: str) -> np.ndarray:
        return (_as_category(events[column]) == value).fillna(False).to_numpy().astype(np.float32)

    bytes_out, bytes_in = volume("bytes_out"), volume("bytes_in")
    pair_key = src * n_nodes + dst
    first_seen = (_group_cumcount(pair_key) == 0).astype(np.float32)
    # A fixed code per contract protocol (0 for none), so a service code means the same in every build.
    protocol = _as_category(events["protocol"])
    proto_of = np.array([PROTOCOLS.index(p) + 1 if p in PROTOCOLS else 0 for p in protocol.cat.categories] + [0],
                        dtype=np.int64)
    port = events["dst_port"].astype("Int64").fillna(-1).to_numpy(dtype=np.int64)
    service = np.where(port >= 0, (port + 1) * 8 + proto_of[protocol.cat.codes.to_numpy()], -1)
    del port, protocol
    # UTC clock fields from the integer time (``ts.dt`` made several copies of the column each).
    minute = _utc_minute_of_day(ts)
    hour_bin = minute // 60 // (24 // HOUR_BINS)

    # Values two columns share: made for the first, dropped after the last (``last_use``).
    memo: dict[str, tuple[np.ndarray, ...]] = {}

    def once(name: str, make: Callable[[], tuple[np.ndarray, ...]]) -> tuple[np.ndarray, ...]:
        if name not in memo:
            memo[name] = make()
        return memo[name]

    def hour() -> np.ndarray:
        return once("hour", lambda: (minute // 60 + (minute % 60) / 60.0,))[0]

    def first_seen_of(key: np.ndarray, has: np.ndarray | None = None) -> np.ndarray:
        first = _group_cumcount(key) == 0
        return (first if has is None else has & first).astype(np.float32)

    def hour_share() -> np.ndarray:
        # The source's hour-of-day profile counts completed days only, so a burst cannot make its
        # own hour familiar within minutes.
        day = np.floor(epoch_seconds(ts) / 86400.0).astype(np.int64)  # UTC days
        return event_hour_share(src, day, hour_bin)

    def rhythm() -> tuple[np.ndarray, np.ndarray]:
        # Rhythm of the pair: time since its previous event and how much that gap differs from
        # the one before (near 0 for machine-like periodic traffic such as beaconing).
        pair_series = pd.Series(seconds)
        prev = pair_series.groupby(pair_key).shift(1).to_numpy()
        prev2 = pair_series.groupby(pair_key).shift(2).to_numpy()
        log_gap = np.log1p(np.where(np.isnan(prev), NO_PREVIOUS_GAP_S, seconds - prev))
        log_gap_before = np.log1p(np.where(np.isnan(prev2), NO_PREVIOUS_GAP_S, prev - prev2))
        return log_gap, np.where(np.isnan(prev2), np.log1p(NO_PREVIOUS_GAP_S), np.abs(log_gap - log_gap_before))

    # Filled column by column into float32 (each column computed in float64 and rounded once, as
    # before): no [n, features] float64 intermediate.
    columns = [
        lambda: np.sin(2 * np.pi * hour() / 24),
        lambda: np.cos(2 * np.pi * hour() / 24),
        lambda: (_utc_day_of_week(ts) >= 5).astype(np.float32),
        lambda: auth_failed,
        lambda: equals("auth_type", "ntlm"),
        lambda: equals("auth_type", "kerberos"),
        lambda: equals("protocol", "udp"),
        lambda: equals("protocol", "icmp"),
        lambda: np.log1p(bytes_out),
        lambda: np.log1p(bytes_in),
        lambda: np.log1p(volume("duration_s")),
        lambda: np.log1p(volume("packets")),
        lambda: first_seen,
        lambda: first_seen_of(np.where(ctx >= 0, ctx * n_nodes + dst, -1 - np.arange(len(ctx))), ctx >= 0),
        lambda: first_seen_of(dst),
        lambda: first_seen_of(src),
        lambda: first_seen_of(np.where(service >= 0, dst * (65537 * 8) + service, -1 - np.arange(len(dst))),
                              service >= 0),
        hour_share,
        lambda: service_share(dst, service, opened),
        lambda: once("rhythm", rhythm)[0],
        lambda: once("rhythm", rhythm)[1],
        lambda: _prior_mean(np.log1p(bytes_out), pair_key, src),
        lambda: _prior_mean(np.log1p(bytes_in), pair_key, src),
        lambda: _prior_mean(np.log1p(volume("duration_s")), pair_key, src),
    ]
    last_use = {EVENT_FEATURES.index("hour_cos"): "hour", EVENT_FEATURES.index("pair_gap_irregularity"): "rhythm"}
    event_x = np.empty((len(src), len(columns)), dtype=np.float32)
    for j, column in enumerate(columns):
        event_x[:, j] = column()
        memo.pop(last_use.get(j, ""), None)
    # The closures above hold these: unbound here so their memory goes now.
    columns, opened, pair_key, minute = [], None, None, None
    assert event_x.shape[1] == len(EVENT_FEATURES)

    # Rate state per aspect (edge, source, destination, source x relation), by typed node name.
    rates = None
    if with_rates:
        node_h = node_hash(nodes["node_type"].astype(str) + ":" + nodes["name"].astype(str))
        actor = np.where((rel == RELATION_INDEX["logs_on"]) & (ctx >= 0), node_h[np.maximum(ctx, 0)], node_h[src])
        rates = event_rates(None, rel, events["ts"], auth_failed, first_seen.astype(np.int8), rate_config,
                            hashes=(node_h[src], node_h[dst], actor))

    # ---- per-bucket node aggregates, then windows as sums over overlapping buckets ----
    shared = {
        "n_nodes": n_nodes,
        "node_types": nodes["node_type"].to_numpy(),
        "src": src,
        "dst": dst,
        "ctx": ctx,
        "rel": rel,
        "hour_bin": hour_bin,
        "auth_failed": auth_failed,
        "bytes_out": bytes_out,
        "bytes_in": bytes_in,
        "first_seen": first_seen,
        "event_type": events["event_type"].astype("string").fillna("").to_numpy(),
    }
    snap = _snapshot_features(
        n_buckets=n_buckets, bucket=bucket, overlap=config.overlap_buckets, t0=t0, stride_s=stride_s, **shared
    )
    coarse = None
    if config.coarse_stride_hours is not None:
        coarse_s = config.coarse_stride_hours * 3600.0
        t0c = ts.iloc[0].floor(f"{max(int(round(config.coarse_stride_hours * 60)), 1)}min")
        offset = (t0 - t0c).total_seconds()
        coarse_bucket = np.floor((seconds + offset) / coarse_s).astype(np.int64)
        of_bucket = np.floor((np.arange(n_buckets) * stride_s + offset) / coarse_s).astype(np.int64)
        n_coarse = int(max(coarse_bucket.max(), of_bucket.max())) + 1
        coarse = CoarseSnapshots(
            stride_hours=float(config.coarse_stride_hours),
            n_snapshots=n_coarse,
            of_bucket=of_bucket,
            **_snapshot_features(n_buckets=n_coarse, bucket=coarse_bucket, overlap=0, t0=t0c, stride_s=coarse_s,
                                 **shared),
        )

    out_events = events  # already this function's own (shallow) frame
    out_events["bucket"] = bucket
    out_events["split"] = np.array(SPLITS, dtype=object)[split]
    out_events["relation"] = np.array([r[1] for r in RELATIONS], dtype=object)[rel]
    return GraphWindows(
        config=config,
        t0=t0,
        n_buckets=n_buckets,
        nodes=nodes,
        events=out_events,
        event_src=src,
        event_dst=dst,
        event_ctx=ctx,
        event_rel=rel,
        event_bucket=bucket,
        event_x=event_x,
        labels=events["label"].astype("Float64").to_numpy(dtype=float, na_value=np.nan),
        split=split,
        meta={"events_without_edge": dropped, "train_end_bucket": train_end, "validation_end_bucket": val_end},
        coarse=coarse,
        rates=rates,
        event_service=service,
        **snap,
    )


SNAPSHOT_CHUNK_EVENTS = 500_000


def _bucket_pieces(bucket: np.ndarray, size: int) -> list[tuple[int, int]]:
    """``(lo, hi)`` event ranges of about ``size`` events that cover ``bucket`` (non-decreasing)
    and end where the bucket changes: no bucket is split between two pieces."""
    n = len(bucket)
    bounds = [0]
    while bounds[-1] < n:
        cut = bounds[-1] + max(size, 1)
        # The piece ends with the bucket of its ``size``-th event.
        bounds.append(n if cut >= n else int(np.searchsorted(bucket, bucket[cut - 1], side="right")))
    return list(zip(bounds[:-1], bounds[1:], strict=True)) if n else [(0, 0)]


def _bucket_aggregates(
    bucket: np.ndarray, src: np.ndarray, dst: np.ndarray, ctx: np.ndarray, rel: np.ndarray, hour_bin: np.ndarray,
    auth_failed: np.ndarray, bytes_out: np.ndarray, bytes_in: np.ndarray, first_seen: np.ndarray,
    event_type: np.ndarray,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """For one piece of events (``_bucket_pieces``): the per (bucket, node) sums of the node
    features, the (node, bucket) x hour-bin event counts, and the per (bucket, relation, src, dst)
    edge count, failures and bytes (context edges included)."""
    n_ev = len(bucket)
    # Every (event, involved node) pair: source, destination and context roles.
    role_node = np.concatenate([src, dst, ctx])
    role = np.repeat(np.arange(3), n_ev)
    ev = np.tile(np.arange(n_ev), 3)
    ok = role_node >= 0
    role_node, role, ev = role_node[ok], role[ok], ev[ok]
    is_flow = np.isin(event_type, ["network_flow", "dns", "file_access"])
    logon_ctx = (role == 2) & (rel[ev] == RELATION_INDEX["logs_on"])
    # Compact columns: the 0/1 indicators as int32 (their sums are exact counts, as the float64
    # sums were), ids as int32 where they fit; only the byte volumes stay float64.
    id_dtype = np.int32 if max(int(bucket.max(initial=0)), int(role_node.max(initial=0))) < 2**31 - 1 else np.int64
    is_auth_ev = event_type == "auth"
    is_proc_ev = event_type == "process_start"
    frame = pd.DataFrame(
        {
            "b": bucket[ev].astype(id_dtype),
            "n": role_node.astype(id_dtype),
            "out": ((role == 0) | logon_ctx).astype(np.int32),
            "in": (role == 1).astype(np.int32),
            "any": np.ones(len(ev), np.int32),
            "fail": auth_failed[ev].astype(np.int32),
            "first": first_seen[ev].astype(np.int32),
            "auth": is_auth_ev[ev].astype(np.int32),
            "proc": is_proc_ev[ev].astype(np.int32),
            "flow": is_flow[ev].astype(np.int32),
            "bout": np.where(role == 0, bytes_out[ev], 0.0),
            "bin": np.where(role == 0, bytes_in[ev], 0.0),
        }
    )
    del is_auth_ev, is_proc_ev, is_flow, logon_ctx
    per_bucket = frame.groupby(["b", "n"], sort=False).sum().reset_index()
    del frame
    per_bucket[["b", "n"]] = per_bucket[["b", "n"]].astype(np.int64)
    peers_out = (
        pd.DataFrame({"b": bucket, "n": src, "p": dst}).drop_duplicates().groupby(["b", "n"]).size().rename("pout")
    )
    peers_in = (
        pd.DataFrame({"b": bucket, "n": dst, "p": src}).drop_duplicates().groupby(["b", "n"]).size().rename("pin")
    )
    per_bucket = per_bucket.join(peers_out, on=["b", "n"]).join(peers_in, on=["b", "n"]).fillna(0.0)

    hours = pd.DataFrame({"n": role_node, "b": bucket[ev], "h": hour_bin[ev]})
    del role_node, role, ev
    hour_counts = hours.groupby(["n", "b", "h"]).size().unstack("h", fill_value=0)
    hour_counts = hour_counts.reindex(columns=range(HOUR_BINS), fill_value=0)
    del hours

    # Snapshot edges: unique (relation, src, dst) per bucket. Context edges: the source host of a
    # logon authenticated to the destination (auth_to), and the user behind a process start
    # started it (starts).
    edge_frame = pd.DataFrame(
        {"b": bucket, "r": rel, "s": src, "d": dst, "fail": auth_failed, "bytes": bytes_out + bytes_in}
    )
    logon = (ctx >= 0) & (rel == RELATION_INDEX["logs_on"])
    started = (ctx >= 0) & (rel == RELATION_INDEX["runs"])
    ctx_frames = [
        pd.DataFrame({"b": bucket[m], "r": RELATION_INDEX[r], "s": ctx[m], "d": dst[m], "fail": auth_failed[m],
                      "bytes": 0.0})
        for m, r in ((logon, "auth_to"), (started, "starts"))
    ]
    per_b = (
        pd.concat([edge_frame, *ctx_frames], ignore_index=True)
        .groupby(["b", "r", "s", "d"], sort=False)
        .agg(count=("fail", "size"), fail=("fail", "sum"), bytes=("bytes", "sum"))
        .reset_index()
    )
    return per_bucket, hour_counts, per_b


def _snapshot_features(
    *,
    n_buckets: int,
    n_nodes: int,
    node_types: np.ndarray,
    bucket: np.ndarray,
    src: np.ndarray,
    dst: np.ndarray,
    ctx: np.ndarray,
    rel: np.ndarray,
    hour_bin: np.ndarray,
    auth_failed: np.ndarray,
    bytes_out: np.ndarray,
    bytes_in: np.ndarray,
    first_seen: np.ndarray,
    event_type: np.ndarray,
    overlap: int,
    t0: pd.Timestamp,
    stride_s: float,
) -> dict[str, np.ndarray]:
    """Sparse snapshots: only the nodes active in a window get a feature row.

    Memory grows with the number of (window, active node) pairs, not windows x all nodes, so a
    month of a 25,000-address network fits. Rows are sorted by (snapshot, node id).
    """
    K, N = n_buckets, n_nodes
    # Per (bucket, node), per (node, bucket, hour bin) and per (bucket, edge): aggregated over
    # pieces of about ``SNAPSHOT_CHUNK_EVENTS`` events that end at a bucket boundary. A bucket's
    # events are all in one piece, so the pieces' groups are disjoint and concatenating them gives
    # the aggregates of the whole stream, while the [3 n] role frames exist for one piece at a time.
    per_bucket, hour_counts, per_b = [], [], []
    for lo, hi in _bucket_pieces(bucket, SNAPSHOT_CHUNK_EVENTS):
        piece = slice(lo, hi)
        a, h, e = _bucket_aggregates(
            bucket[piece], src[piece], dst[piece], ctx[piece], rel[piece], hour_bin[piece], auth_failed[piece],
            bytes_out[piece], bytes_in[piece], first_seen[piece], event_type[piece],
        )
        per_bucket.append(a)
        hour_counts.append(h)
        per_b.append(e)
    per_bucket = pd.concat(per_bucket, ignore_index=True)
    hour_counts = pd.concat(hour_counts).sort_index()
    per_b = pd.concat(per_b, ignore_index=True)

    # Window k = buckets k - overlap .. k: shift each bucket's rows into the windows that hold it.
    shifted = pd.concat([per_bucket.assign(k=per_bucket["b"] + j) for j in range(overlap + 1)], ignore_index=True)
    shifted = shifted[shifted["k"] < K].drop(columns="b")
    win = shifted.groupby(["k", "n"], sort=True).sum().reset_index()
    act_k = win["k"].to_numpy(np.int64)
    act_node = win["n"].to_numpy(np.int64)
    act_ptr = np.searchsorted(act_k, np.arange(K + 1), side="left").astype(np.int64)

    # Cumulative hour-of-day profile of each node up to and including bucket k.
    hc_node = hour_counts.index.get_level_values("n").to_numpy(np.int64)
    hc_bucket = hour_counts.index.get_level_values("b").to_numpy(np.int64)
    hc_cum = hour_counts.groupby(level="n").cumsum().to_numpy(np.float64)
    hc_key = hc_node * (K + 1) + hc_bucket
    last = np.searchsorted(hc_key, act_node * (K + 1) + act_k, side="right") - 1
    hour_cum = hc_cum[last]
    history = hour_cum.sum(axis=1, keepdims=True)
    hour_profile = (hour_cum + 1.0 / HOUR_BINS) / (history + 1.0)

    bucket_end = t0 + pd.to_timedelta((np.arange(K) + 1) * stride_s, unit="s")
    window_hour = np.asarray(bucket_end.hour, dtype=float)[act_k]
    window_weekend = (np.asarray(bucket_end.dayofweek) >= 5).astype(float)[act_k]
    type_onehot = np.stack([(node_types == t).astype(np.float64) for t in NODE_TYPES], axis=1)[act_node]

    any_w = win["any"].to_numpy()
    act_x = np.column_stack(
        [
            np.log1p(win["out"].to_numpy()),
            np.log1p(win["in"].to_numpy()),
            np.log1p(win["pout"].to_numpy()),
            np.log1p(win["pin"].to_numpy()),
            win["fail"].to_numpy() / any_w,
            np.log1p(win["bout"].to_numpy()),
            np.log1p(win["bin"].to_numpy()),
            win["first"].to_numpy() / any_w,
            np.log1p(win["auth"].to_numpy()),
            np.log1p(win["proc"].to_numpy()),
            np.log1p(win["flow"].to_numpy()),
            hour_profile,
            np.log1p(history),
            type_onehot,
            np.sin(2 * np.pi * window_hour / 24),
            np.cos(2 * np.pi * window_hour / 24),
            window_weekend,
        ]
    ).astype(np.float32)
    assert act_x.shape[1] == len(NODE_FEATURES)

    # Snapshot edges: each window is the union of its buckets' edges (aggregated again), so a
    # window holds every edge seen in its span.
    win_edges = pd.concat([per_b.assign(k=per_b["b"] + j) for j in range(overlap + 1)], ignore_index=True)
    win_edges = win_edges[win_edges["k"] < K]
    win_edges = (
        win_edges.groupby(["k", "r", "s", "d"], sort=True)
        .agg(count=("count", "sum"), fail=("fail", "sum"), bytes=("bytes", "sum"))
        .reset_index()
    )
    k_arr = win_edges["k"].to_numpy(np.int64)
    s_arr = win_edges["s"].to_numpy(np.int64)
    d_arr = win_edges["d"].to_numpy(np.int64)
    act_key = act_k * N + act_node
    s_row = np.searchsorted(act_key, k_arr * N + s_arr) - act_ptr[k_arr]
    d_row = np.searchsorted(act_key, k_arr * N + d_arr) - act_ptr[k_arr]
    count = win_edges["count"].to_numpy(dtype=float)
    return {
        "act_ptr": act_ptr,
        "act_node": act_node,
        "act_x": act_x,
        "snap_ptr": np.searchsorted(k_arr, np.arange(K + 1), side="left").astype(np.int64),
        "snap_rel": win_edges["r"].to_numpy(dtype=np.int64),
        "snap_src": s_arr,
        "snap_dst": d_arr,
        "snap_src_row": s_row.astype(np.int64),
        "snap_dst_row": d_row.astype(np.int64),
        "snap_attr": np.column_stack(
            [np.log1p(count), win_edges["fail"].to_numpy() / count, np.log1p(win_edges["bytes"].to_numpy())]
        ).astype(np.float32),
    }
