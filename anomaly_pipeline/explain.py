"""Why did the model score this event as it did? Explanations taken from the model itself.

For each event: the score split into its parts (hour, link, attributes, rates, supervised), the time
steps (past windows) the temporal attention of its source weighed most, the neighbouring edges
the graph attention (GAT, layer 1) weighed most in the source's most attended window, and plain
reasons in words ("first logon from u12 to SRV-DB03 in the data so far", "bytes_out 1.2 GB where
about 3.1 MB was expected").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import torch

from anomaly_pipeline.graph import (
    CONTINUOUS_ATTRIBUTES,
    EVENT_FEATURES,
    HOUR_BINS,
    RELATIONS,
    GraphWindows,
)
from anomaly_pipeline.models.hybrid import HybridGNNLSTM
from anomaly_pipeline.rates import ASPECTS, expected_count
from anomaly_pipeline.training import (
    SCORE_PARTS,
    GraphTensors,
    _decode_rows,
    decoded_parts,
    log_expected_rates,
)

_F = {name: i for i, name in enumerate(EVENT_FEATURES)}
_LOG_UNITS = {"log_bytes_out": "bytes", "log_bytes_in": "bytes", "log_duration_s": "s", "log_pair_gap_s": "s"}


@dataclass
class EventExplanation:
    event_id: str
    ts: str
    score: float
    parts: dict[str, float]
    reasons: list[str]
    time_attention: list[dict] = field(default_factory=list)  # window_end, weight, active
    neighbours: list[dict] = field(default_factory=list)  # window_end, relation, peer, direction, events, attention

    def to_dict(self) -> dict:
        return asdict(self)


def _human(value: float, unit: str) -> str:
    if unit == "bytes":
        for suffix, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
            if value >= size:
                return f"{value / size:.1f} {suffix}"
        return f"{value:.0f} B"
    if unit == "s":
        return f"{value / 3600:.1f} h" if value >= 3600 else f"{value:.0f} s"
    return f"{value:.3g}"


@torch.no_grad()
def explain_events(
    model: HybridGNNLSTM, windows: GraphWindows, idx: np.ndarray, top_k: int = 5
) -> list[EventExplanation]:
    """Explanations for events ``idx`` (positions in ``windows.events``), in the order given."""
    model.eval()
    idx = np.asarray(idx)
    device = next(model.parameters()).device
    gt = GraphTensors(windows, device)
    w = windows
    L = model.config.history
    stride = pd.Timedelta(hours=w.config.stride_hours)
    names = w.nodes["name"].to_numpy()
    if len(idx):
        # The coarse (daily) snapshots are embedded once for all events, as in scoring
        # (``score_components``), not again for every event explained.
        gt.freeze_coarse(model, int(w.event_bucket[idx].min()), int(w.event_bucket[idx].max()))
    out: list[EventExplanation] = []
    for i in idx:
        b = int(w.event_bucket[i])
        batch = gt.snapshot_embeddings(model, b - L, b)
        rows = (w.event_bucket[[i]], w.event_src[[i]], w.event_dst[[i]], w.event_ctx[[i]], w.event_rel[[i]],
                w.event_x[[i]].astype(np.float32))
        dec = _decode_rows(model, gt, batch, *rows, log_rate=log_expected_rates(w, np.array([i])))
        parts = dict(zip(SCORE_PARTS, map(float, decoded_parts(model, w, np.array([i]), dec)[0]), strict=True))
        src, dst = int(w.event_src[i]), int(w.event_dst[i])
        relation = RELATIONS[int(w.event_rel[i])][1]
        event = w.events.iloc[i]

        # Temporal attention of the source over its last L windows.
        weights = dec["time_attention"][0, 0].cpu().numpy()
        keys = set(gt.fine.act_key.cpu().numpy()[int(w.act_ptr[max(b - L, 0)]): int(w.act_ptr[b])]) if b > 0 else set()
        time_attention = []
        for j, weight in enumerate(weights):
            k = b - L + j
            time_attention.append(
                {"window_end": str(w.t0 + (k + 1) * stride), "weight": round(float(weight), 4),
                 "active": bool(k >= 0 and k * w.n_nodes + src in keys)}
            )
        top_step = int(np.argmax(weights))
        neighbours = _neighbour_attention(model, gt, b - L + top_step, src, names, w, stride, top_k)

        out.append(
            EventExplanation(
                # Windows built without ids (``detect`` drops them once duplicates are checked) name
                # the event by where it was read, or else by its position.
                event_id=str(event.get("event_id", event.get("raw_ref", i))),
                ts=str(event["ts"]),
                score=float(sum(parts.values())),
                parts={k: round(v, 3) for k, v in parts.items()},
                reasons=_reasons(model, w, i, dec, names[src], names[dst], relation, parts),
                time_attention=time_attention,
                neighbours=neighbours,
            )
        )
    return out


def _neighbour_attention(
    model: HybridGNNLSTM, gt: GraphTensors, k: int, node: int, names: np.ndarray, w: GraphWindows,
    stride: pd.Timedelta, top_k: int,
) -> list[dict]:
    """Edges into ``node`` in snapshot ``k`` ranked by the first GAT layer's attention."""
    if k < 0 or model.config.hops == 0 or not model.config.attention:
        return []
    e0, e1 = int(w.snap_ptr[k]), int(w.snap_ptr[k + 1])
    r0 = int(w.act_ptr[k])
    src, dst, rel = w.snap_src[e0:e1], w.snap_dst[e0:e1], w.snap_rel[e0:e1]
    involved = np.flatnonzero((src == node) | (dst == node))
    if len(involved) == 0:
        return []
    spatial = model.spatial
    hetero = spatial.convs[0]
    node_types = w.nodes["node_type"].to_numpy()
    src_row, dst_row = w.snap_src_row[e0:e1], w.snap_dst_row[e0:e1]
    # Messages into ``node`` travel on the relation where it is the destination ("in"), or on the
    # reverse relation where it is the source ("out").
    by_relation: dict[tuple[str, str, str], list[tuple[int, int, int, str]]] = {}
    for e in involved:
        s_t, name, d_t = RELATIONS[int(rel[e])]
        if dst[e] == node:
            item = (int(e), int(src[e]), int(src_row[e]), "in")
            by_relation.setdefault((s_t, name, d_t), []).append(item)
        else:
            item = (int(e), int(dst[e]), int(dst_row[e]), "out")
            by_relation.setdefault((d_t, f"rev_{name}", s_t), []).append(item)
    node_row = r0 + int(dst_row[involved[0]] if dst[involved[0]] == node else src_row[involved[0]])
    h_node = torch.relu(spatial.input_proj[node_types[node]](gt.fine.act_x[node_row].unsqueeze(0)))
    results = []
    for key, items in by_relation.items():
        edges = [it[0] for it in items]
        h_peer = torch.relu(spatial.input_proj[key[0]](gt.fine.act_x[[r0 + it[2] for it in items]]))
        edge_index = torch.stack([torch.arange(len(items)), torch.zeros(len(items), dtype=torch.long)])
        attr = gt.fine.snap_attr[e0:e1][edges]
        _, (_, alpha) = hetero.convs[key]((h_peer, h_node), edge_index, attr, return_attention_weights=True)
        for (e, peer, _, direction), a in zip(items, alpha.mean(dim=1).cpu().numpy(), strict=True):
            results.append(
                {"window_end": str(w.t0 + (k + 1) * stride), "relation": key[1], "peer": str(names[peer]),
                 "direction": direction, "events": int(round(np.expm1(w.snap_attr[e0 + e, 0]))),
                 "attention": round(float(a), 4)}
            )
    return sorted(results, key=lambda r: -r["attention"])[:top_k]


_RATE_WORDS = {
    "edge": "{src} -> {dst}",
    "source": "events from {src}",
    "destination": "events to {dst}",
    "source_relation": "{relation} events from {src}",
}
RATE_REASON_MIN = 9.0  # nats: a count with a Poisson tail probability below about 1e-4
SERVICE_REASON_MAX = 1e-3  # share of the destination's service profile below which the service is named


def service_reason(port: object, protocol: object, dst: str, share: float) -> str | None:
    """The reason for a connection to a service its destination was not seen to offer
    (``graph.service_share`` below ``SERVICE_REASON_MAX``), else None."""
    if not share < SERVICE_REASON_MAX or pd.isna(port):
        return None
    proto = f"/{protocol}" if isinstance(protocol, str) and protocol else ""
    return (f"port {port}{proto} on {dst}: a service {dst} was not seen to answer before (probability "
            f"{share:.1g} from the connections it and every other destination answered; refused or unanswered "
            "attempts never count)")


def _reasons(
    model: HybridGNNLSTM, w: GraphWindows, i: int, dec: dict, src: str, dst: str, relation: str,
    parts: dict[str, float] | None = None,
) -> list[str]:
    x = w.event_x[i]
    reasons = []
    if parts is not None and w.rates is not None:
        ticks = w.rates.state.config.tick_seconds if w.rates.state is not None else (60.0,)
        expected = expected_count(w.rates.total[i], w.rates.t[i])  # [S, A]
        for j, aspect in enumerate(ASPECTS):
            if parts.get(f"rate_{aspect}", 0.0) >= RATE_REASON_MIN:
                what = _RATE_WORDS[aspect].format(src=src, dst=dst, relation=relation)
                scale = int(np.argmax(w.rates.count[i, :, j] / np.maximum(expected[:, j], 1e-9)))
                tick = _human(float(ticks[scale]), "s")
                reasons.append(
                    f"burst: {what} at {w.rates.count[i, scale, j]:.0f} per {tick} (decayed count) where about "
                    f"{expected[scale, j]:.2g} per {tick} is usual"
                )
    if x[_F["pair_first_seen"]] == 1:
        reasons.append(f"first {relation} from {src} to {dst} in the data so far")
    if x[_F["dst_first_seen"]] == 1:
        reasons.append(f"first time anyone reached {dst}")
    share = x[_F["src_hour_profile_share"]]
    if share < 0.05:
        hour = pd.Timestamp(w.events["ts"].iloc[i]).hour
        width = 24 // HOUR_BINS
        start = hour // width * width
        reasons.append(
            f"{src} is rarely active between {start:02d}:00 and {start + width:02d}:00 "
            f"({share:.1%} of its activity on earlier days falls in these hours, counting only hours the data covered)"
        )
    if x[_F["src_first_seen"]] == 1:
        reasons.append(f"first event from {src} in the data so far")
    port, protocol = w.events["dst_port"].iloc[i], w.events["protocol"].iloc[i]
    closed = service_reason(port, protocol, dst, float(x[_F["service_open_share"]]))
    if closed:
        reasons.append(closed)
    elif x[_F["service_first_seen"]] == 1 and x[_F["pair_first_seen"]] != 1:
        reasons.append(f"first use of port {port} on {dst}")
    if x[_F["auth_failed"]] == 1:
        reasons.append("connection not established" if w.events["event_type"].iloc[i] != "auth"
                       else "authentication failed")
    nll = dec["attribute_nll"][0].cpu().numpy()
    mean = dec["attribute_mean"][0].cpu().numpy()
    mu = model.event_mean.cpu().numpy()
    sd = model.event_std.cpu().numpy()
    for j in np.argsort(-nll)[:2]:
        if nll[j] < 4.0:  # nats: only clearly surprising attributes
            continue
        name = CONTINUOUS_ATTRIBUTES[j]
        f = _F[name]
        observed, expected = x[f], mean[j] * sd[f] + mu[f]
        if name in _LOG_UNITS:
            unit = _LOG_UNITS[name]
            label = name.removeprefix("log_")
            reasons.append(
                f"{label} {_human(np.expm1(observed), unit)} where about {_human(np.expm1(max(expected, 0)), unit)} "
                f"was expected for {src} -> {dst}"
            )
        elif name == "pair_gap_irregularity" and observed < expected:
            reasons.append(f"machine-like regular rhythm between {src} and {dst}")
        else:
            reasons.append(f"unusual {name}: {observed:.3g} (expected about {expected:.3g})")
    return reasons
