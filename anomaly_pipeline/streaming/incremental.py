"""Node embeddings of closed buckets, computed once and reused by every later micro-batch.

An event in fine bucket ``b`` is scored against snapshots ``b - history .. b - 1`` only
(``graph`` module docstring). Snapshot ``k`` holds the events of buckets ``k - overlap .. k``,
so once the stream has moved past bucket ``k`` (and no out-of-order event lands in it) its
node features, and therefore the spatial encoder's embedding of each of its active nodes, never
change. ``SnapshotCache`` keeps those embeddings by absolute bucket and node *name* (node ids are
renumbered by every rebuild), together with what the model's explanation reads of the snapshot
(its active rows' features and edges, for the graph attention over a node's neighbours).

With the cache, the ``StreamState`` buffer only has to hold the buckets the *open* snapshots
need (``StreamState(incremental=True)``: ``overlap`` buckets before the oldest new event), not
the model's whole history: each micro-batch rebuilds features over its new events plus one
window overlap, embeds the snapshots that changed, and decodes the new events against cached
node states. Single time scale only: a multi-scale model reads daily snapshots that a short
buffer cannot rebuild, so the scorer keeps the full-buffer path for it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from anomaly_pipeline.graph import NODE_TYPES, RELATIONS, GraphWindows
from anomaly_pipeline.training import (
    GraphTensors,
    SnapshotBatch,
    _decode_rows,
    decoded_parts,
    log_expected_rates,
)

_SEP = "\x1f"


def node_keys(windows: GraphWindows) -> np.ndarray:
    """Per node id: ``type <sep> name`` (stable across rebuilds)."""
    nodes = windows.nodes
    return (nodes["node_type"].astype(str) + _SEP + nodes["name"].astype(str)).to_numpy(dtype=object)


def uses_incremental(model: object) -> bool:
    """Whether the scorer can stream ``model`` (a ``ChampionModel``) on cached embeddings: its
    detector reads the fine time scale only."""
    net = getattr(getattr(model, "detector", None), "model", None)
    config = getattr(net, "config", None)
    if config is None:
        return False
    return not (config.multi_scale and getattr(model.window, "coarse_stride_hours", None) is not None)


@dataclass
class CachedSnapshot:
    """One closed fine snapshot: its active nodes (keys, type ids), their embeddings [R, d] and
    input features [R, F], and its edges (rows into the active nodes, relation, attributes)."""

    keys: np.ndarray
    types: np.ndarray
    emb: torch.Tensor
    act_x: torch.Tensor
    edge_src: np.ndarray
    edge_dst: np.ndarray
    edge_rel: np.ndarray
    edge_attr: torch.Tensor
    window_end: pd.Timestamp

    def row_of(self, key: str) -> int:
        pos = int(np.searchsorted(self._sorted_keys, key))
        order = self._order
        return int(order[pos]) if pos < len(order) and self._sorted_keys[pos] == key else -1

    def __post_init__(self) -> None:
        self._order = np.argsort(self.keys, kind="stable")
        self._sorted_keys = self.keys[self._order]


class SnapshotCache:
    """Embeddings of closed fine snapshots by absolute bucket (module docstring)."""

    def __init__(self, model: torch.nn.Module, stride_s: float) -> None:
        self.model = model
        self.stride_s = stride_s
        self.history = int(model.config.history)
        self.device = next(model.parameters()).device
        self.snapshots: dict[int, CachedSnapshot] = {}
        self.embedded = 0  # snapshots embedded so far (each closed one once, unless an event arrives late)

    def base_bucket(self, windows: GraphWindows) -> int:
        """Absolute bucket number (epoch / stride) of the windows' bucket 0."""
        return int(round(windows.t0.value / 1e9 / self.stride_s))

    @torch.no_grad()
    def update(self, windows: GraphWindows, first_changed: int, newest: int) -> GraphTensors:
        """Embed the snapshots of ``windows`` from absolute bucket ``first_changed`` up to (not
        including) the open bucket ``newest``, replacing what was cached for them, and forget
        what no later event can read. Returns the windows as tensors (for decoding)."""
        self.model.eval()
        gt = GraphTensors(windows, self.device)
        base = self.base_bucket(windows)
        k0, k1 = max(first_changed - base, 0), min(newest - base, windows.n_buckets)
        if k1 > k0:
            self._embed(gt, windows, base, k0, k1)
        # Events of this step lie in buckets >= first_changed; later ones in buckets >= newest.
        for k in [k for k in self.snapshots if k < first_changed - self.history]:
            del self.snapshots[k]
        return gt

    def _embed(self, gt: GraphTensors, w: GraphWindows, base: int, k0: int, k1: int) -> None:
        batch = gt.fine.embed(self.model, k0, k1, None, gt.generator)
        keys_all = node_keys(w)
        r_base = int(w.act_ptr[k0])
        stride = pd.Timedelta(seconds=self.stride_s)
        for k in range(k0, k1):
            r0, r1 = int(w.act_ptr[k]), int(w.act_ptr[k + 1])
            e0, e1 = int(w.snap_ptr[k]), int(w.snap_ptr[k + 1])
            nodes = w.act_node[r0:r1]
            self.snapshots[base + k] = CachedSnapshot(
                keys=keys_all[nodes],
                types=gt.node_type[torch.from_numpy(nodes)].cpu().numpy(),
                emb=batch.emb[r0 - r_base:r1 - r_base].clone(),
                act_x=gt.fine.act_x[r0:r1].clone(),
                edge_src=w.snap_src_row[e0:e1].copy(),
                edge_dst=w.snap_dst_row[e0:e1].copy(),
                edge_rel=w.snap_rel[e0:e1].copy(),
                edge_attr=gt.fine.snap_attr[e0:e1].clone(),
                window_end=w.t0 + (k + 1) * stride,
            )
            self.embedded += 1

    def batch_for(self, windows: GraphWindows, lo: int, hi: int, origin: int) -> SnapshotBatch:
        """The cached snapshots of absolute buckets ``lo .. hi`` as a ``SnapshotBatch`` in the node
        ids of ``windows``, bucket ``k`` at step ``k - origin``."""
        index = pd.Index(node_keys(windows))
        n = windows.n_nodes
        keys, embs = [], []
        for k in range(lo, hi + 1):
            snap = self.snapshots.get(k)
            if snap is None:
                continue
            ids = index.get_indexer(snap.keys)
            ok = ids >= 0
            keys.append((k - origin) * n + ids[ok])
            embs.append(snap.emb[torch.from_numpy(np.flatnonzero(ok))])
        d = self.model.config.hidden
        if keys:
            key = np.concatenate(keys)
            order = np.argsort(key, kind="stable")
            emb = torch.cat(embs)[torch.from_numpy(order)]
            key = key[order]
        else:
            key, emb = np.zeros(0, np.int64), torch.zeros(0, d, device=self.device)
        return SnapshotBatch(emb=torch.cat([emb, self.model.spatial.absent], dim=0),
                             keys=torch.from_numpy(key.astype(np.int64)).to(self.device))

    @torch.no_grad()
    def score(self, gt: GraphTensors, windows: GraphWindows, idx: np.ndarray) -> tuple[np.ndarray, dict, np.ndarray]:
        """Score parts of events ``idx`` of ``windows`` against the cached snapshots of their
        history: (parts [len(idx), parts], the decoder's outputs, the events' absolute buckets)."""
        model, w = self.model, windows
        b_abs = w.event_bucket[idx] + self.base_bucket(w)
        lo, hi = int(b_abs.min()) - self.history, int(b_abs.max()) - 1
        origin = lo - 1  # every step index the lookup sees is >= 0: "before the data" is a missing key
        batch = self.batch_for(w, lo, hi, origin)
        out = _decode_rows(model, gt, batch, (b_abs - origin).astype(np.int64), w.event_src[idx], w.event_dst[idx],
                           w.event_ctx[idx], w.event_rel[idx], w.event_x[idx].astype(np.float32),
                           log_rate=log_expected_rates(w, idx))
        return decoded_parts(model, w, idx, out), out, b_abs

    @torch.no_grad()
    def neighbour_attention(self, k: int, key: str, top_k: int = 5) -> list[dict]:
        """Edges of node ``key`` in the cached snapshot of absolute bucket ``k``, ranked by the first
        GAT layer's attention (``explain._neighbour_attention`` on the cached snapshot)."""
        model = self.model
        snap = self.snapshots.get(k)
        if snap is None or model.config.hops == 0 or not model.config.attention:
            return []
        row = snap.row_of(key)
        if row < 0:
            return []
        involved = np.flatnonzero((snap.edge_src == row) | (snap.edge_dst == row))
        if len(involved) == 0:
            return []
        spatial = model.spatial
        hetero = spatial.convs[0]
        by_relation: dict[tuple[str, str, str], list[tuple[int, int, str]]] = {}
        for e in involved:
            s_t, name, d_t = RELATIONS[int(snap.edge_rel[e])]
            if snap.edge_dst[e] == row:
                by_relation.setdefault((s_t, name, d_t), []).append((int(e), int(snap.edge_src[e]), "in"))
            else:
                by_relation.setdefault((d_t, f"rev_{name}", s_t), []).append((int(e), int(snap.edge_dst[e]), "out"))
        node_type = NODE_TYPES[int(snap.types[row])]
        h_node = torch.relu(spatial.input_proj[node_type](snap.act_x[row].unsqueeze(0)))
        results = []
        for rel_key, items in by_relation.items():
            edges = [it[0] for it in items]
            h_peer = torch.relu(spatial.input_proj[rel_key[0]](snap.act_x[[it[1] for it in items]]))
            edge_index = torch.stack([torch.arange(len(items)), torch.zeros(len(items), dtype=torch.long)])
            attr = snap.edge_attr[edges]
            _, (_, alpha) = hetero.convs[rel_key]((h_peer, h_node), edge_index, attr, return_attention_weights=True)
            for (e, peer, direction), a in zip(items, alpha.mean(dim=1).cpu().numpy(), strict=True):
                results.append({
                    "window_end": str(snap.window_end), "relation": rel_key[1],
                    "peer": str(snap.keys[peer]).split(_SEP, 1)[1], "direction": direction,
                    "events": int(round(np.expm1(float(snap.edge_attr[e, 0])))), "attention": round(float(a), 4),
                })
        return sorted(results, key=_rank)[:top_k]

    @torch.no_grad()
    def neighbour_attention_many(self, requests: list[tuple[int, str]], top_k: int = 5) -> dict[tuple[int, str], list[dict]]:
        """``neighbour_attention`` for many (absolute bucket, node key) requests at once: one GAT
        call per relation for all of them (each request's node is its own target, so the
        attention softmax runs over the same edges as one request at a time)."""
        model = self.model
        results: dict[tuple[int, str], list[dict]] = {r: [] for r in requests}
        if model.config.hops == 0 or not model.config.attention:
            return results
        spatial = model.spatial
        hetero = spatial.convs[0]
        # Per relation key: peer feature rows, target feature rows, edge attributes, and per edge
        # (request, snapshot, edge, peer row, direction).
        groups: dict[tuple[str, str, str], dict[str, list]] = {}
        for request in dict.fromkeys(requests):
            k, key = request
            snap = self.snapshots.get(k)
            row = snap.row_of(key) if snap is not None else -1
            if row < 0:
                continue
            involved = np.flatnonzero((snap.edge_src == row) | (snap.edge_dst == row))
            targets: dict[tuple[str, str, str], int] = {}
            for e in involved:
                s_t, name, d_t = RELATIONS[int(snap.edge_rel[e])]
                if snap.edge_dst[e] == row:
                    rel_key, peer, direction = (s_t, name, d_t), int(snap.edge_src[e]), "in"
                else:
                    rel_key, peer, direction = (d_t, f"rev_{name}", s_t), int(snap.edge_dst[e]), "out"
                g = groups.setdefault(rel_key, {"peer_x": [], "target_x": [], "target": [], "attr": [], "items": []})
                if rel_key not in targets:
                    targets[rel_key] = len(g["target_x"])
                    g["target_x"].append(snap.act_x[row])
                g["peer_x"].append(snap.act_x[peer])
                g["attr"].append(snap.edge_attr[int(e)])
                g["target"].append(targets[rel_key])
                g["items"].append((request, snap, int(e), peer, direction))
        for rel_key, g in groups.items():
            h_peer = torch.relu(spatial.input_proj[rel_key[0]](torch.stack(g["peer_x"])))
            h_node = torch.relu(spatial.input_proj[rel_key[2]](torch.stack(g["target_x"])))
            edge_index = torch.stack([torch.arange(len(g["items"])), torch.tensor(g["target"], dtype=torch.long)])
            _, (_, alpha) = hetero.convs[rel_key]((h_peer, h_node), edge_index, torch.stack(g["attr"]),
                                                  return_attention_weights=True)
            for (request, snap, e, peer, direction), a in zip(g["items"], alpha.mean(dim=1).cpu().numpy(), strict=True):
                results[request].append({
                    "window_end": str(snap.window_end), "relation": rel_key[1],
                    "peer": str(snap.keys[peer]).split(_SEP, 1)[1], "direction": direction,
                    "events": int(round(np.expm1(float(snap.edge_attr[e, 0])))), "attention": round(float(a), 4),
                })
        return {r: sorted(found, key=_rank)[:top_k] for r, found in results.items()}


def _rank(neighbour: dict) -> tuple:
    """Highest attention first; ties (a single edge of a relation weighs 1) by relation and peer."""
    return (-neighbour["attention"], neighbour["relation"], neighbour["peer"], neighbour["direction"])
