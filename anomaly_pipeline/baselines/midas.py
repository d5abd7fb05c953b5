"""MIDAS, MIDAS-R and MIDAS-F: microcluster anomaly scores for edge streams, with count-min sketches.

Bhatia, Hooi, Yoon, Shin, Faloutsos, "MIDAS: Microcluster-Based Detector of Anomalies in Edge
Streams", AAAI 2020; Bhatia, Liu, Hooi, Yoon, Shin, Faloutsos, "Real-Time Anomaly Detection in
Edge Streams", TKDD 2022 (MIDAS-F). This is a vectorised re-implementation of the authors' C++
(github.com/Stream-AD/MIDAS, ``src/{CountMinSketch,NormalCore,RelationalCore,FilteringCore}.hpp``)
that reproduces its arithmetic: the same hash (32-bit signed integer wrap-around, C remainder),
the same hash parameters for a seed (glibc ``srand(seed)``/``rand()``, emulated here), float32
counts and the same operation order in the scores.

Stream semantics (as in the C++): edges are processed in the given order; a new tick starts when
an edge's time exceeds the largest time seen so far (the state starts at time 1). For an edge
``(u, v)`` at time ``t`` the sketches hold ``a`` (count in the current tick, after adding the edge)
and ``s`` (count over all ticks), and the score is the chi-squared statistic of the current count
against the mean rate ``s / t``:

    score(a, s, t) = ((a - s / t) * t)^2 / (s * (t - 1))          (0 where s = 0 or t = 1)

* MIDAS ("midas"): one sketch pair over edges; current counts are cleared at each new tick.
* MIDAS-R ("midas_r"): current counts are multiplied by ``alpha`` at each new tick instead of
  cleared (temporal relations), and sources and destinations get their own sketch pairs; the
  score is the max of the edge, source and destination scores.
* MIDAS-F ("midas_f"): as MIDAS-R, but the totals ``s`` exclude the current tick and are updated
  only when a tick ends: a sketch cell whose last written score is below ``threshold`` adds its
  current count to its total; a cell at or above it adds ``total / (t_prev - 1)`` instead (its
  own mean, so an anomalous burst does not become "normal"). As in the C++, every cell takes
  part in that merge, touched in the tick or not (an idle cell adds its decayed current count),
  and a cell keeps the last score written to it, by the last edge hashed there, until the next.
  With ``s`` excluding the current tick the score becomes ``(a + s - a * t)^2 / (s * (t - 1))``.

Edges of the same tick see each other cumulatively, exactly as the sequential C++ does: the
``k``-th copy of a cell within a tick sees ``k`` in its current count. The implementation sorts
each sketch row once (radix sort) to get those within-tick counts and totals, then walks the
ticks in a loop of small vectorised updates (MIDAS-R and MIDAS-F only; MIDAS needs no loop).

Known differences from the C++: MIDAS scores are bit-identical. In MIDAS-R and MIDAS-F the
``k`` copies of a cell within a tick are added to the (fractional, decayed) float32 current count
in one addition instead of ``k`` additions of 1, which can round differently in the last bit
(on DARPA: 99.5% / 99.0% of scores bit-identical, the rest within 2e-6 / 1.2e-5 relative, the same
ROC-AUC to 4 decimals). Integer totals are exact here, where the C++'s float counters would stop
growing at 2^24 = 16,777,216 hits of one cell.
"""

from __future__ import annotations

import weakref
import zipfile
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import pandas as pd

from anomaly_pipeline.baselines._common import fitted_threshold
from anomaly_pipeline.graph import GraphWindows

Variant = Literal["midas", "midas_r", "midas_f"]
VARIANTS: tuple[str, ...] = ("midas", "midas_r", "midas_f")
HASH_PRIME = 104729  # the C++ CountMinSketch::m, combines source and destination into one key
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


def glibc_rand(seed: int, count: int) -> list[int]:
    """The first ``count`` values of glibc's ``rand()`` after ``srand(seed)`` (TYPE_3 generator).

    The authors' C++ draws its hash parameters with ``rand()``; emulating glibc makes a seed here
    give the same hash functions as the C++ built on Linux with the same ``srand`` seed.
    ``srand(0)`` behaves as ``srand(1)``, as in glibc.
    """
    seed = int(seed) & 0xFFFFFFFF
    if seed == 0:
        seed = 1
    state = [0] * (344 + count)
    state[0] = seed - 2**32 if seed >= 2**31 else seed
    for i in range(1, 31):
        # Schrage's method for 16807 * x mod (2^31 - 1), with C's truncating division.
        prev = state[i - 1]
        hi = prev // 127773 if prev >= 0 else -(-prev // 127773)
        lo = prev - hi * 127773
        word = 16807 * lo - 2836 * hi
        state[i] = word + 2147483647 if word < 0 else word
    for i in range(31, 34):
        state[i] = state[i - 31]
    for i in range(34, 344 + count):
        state[i] = (state[i - 31] + state[i - 3]) & 0xFFFFFFFF
    return [x >> 1 for x in state[344:]]


class CountMinSketch:
    """Count-min sketch with ``rows`` hash rows of ``buckets`` float32 counters (Cormode, Muthukrishnan).

    Keys are (a, b) pairs of C ``int`` (b = 0 for a single node). Row ``i`` hashes with
    ``((a + 104729 * b) * p1[i] + p2[i]) mod buckets`` in 32-bit signed arithmetic, as the C++
    does. A query returns the minimum over rows, which never under-counts the true total added
    under that key (collisions only add).
    """

    def __init__(self, rows: int, buckets: int, param1: np.ndarray, param2: np.ndarray) -> None:
        if rows < 1 or buckets < 1:
            raise ValueError(f"a count-min sketch needs rows >= 1 and buckets >= 1, got {rows} x {buckets}")
        if len(param1) != rows or len(param2) != rows:
            raise ValueError(f"need {rows} hash parameters per kind, got {len(param1)} and {len(param2)}")
        self.rows = rows
        self.buckets = buckets
        self.param1 = np.asarray(param1, dtype=np.int64)
        self.param2 = np.asarray(param2, dtype=np.int64)
        self.data = np.zeros(rows * buckets, dtype=np.float32)

    @classmethod
    def seeded(cls, rows: int, buckets: int, seed: int = 0) -> CountMinSketch:
        """A sketch whose hash parameters are the C++'s after ``srand(seed)``."""
        return cls.from_rand(rows, buckets, iter(glibc_rand(seed, 2 * rows)))

    @classmethod
    def from_rand(cls, rows: int, buckets: int, rand: object) -> CountMinSketch:
        """A sketch taking its parameters from the ``rand()`` stream ``rand`` (an iterator), in the
        C++ constructor's order: ``p1[i] = rand() + 1`` (never 0), then ``p2[i] = rand()``, per row."""
        p1, p2 = [], []
        for _ in range(rows):
            p1.append(next(rand) + 1)  # type: ignore[call-overload]
            p2.append(next(rand))  # type: ignore[call-overload]
        return cls(rows, buckets, np.array(p1), np.array(p2))

    def columns(self, a: np.ndarray, b: np.ndarray | int = 0) -> np.ndarray:
        """Bucket of each key in each row, shape [n, rows], values in [0, buckets)."""
        a = _as_c_int(a, "a")
        b = _as_c_int(np.broadcast_to(np.asarray(b), a.shape), "b")
        key = _wrap32(a + HASH_PRIME * b)
        out = np.empty((len(a), self.rows), dtype=np.int64)
        for i in range(self.rows):
            h = _wrap32(_wrap32(key * self.param1[i]) + self.param2[i])
            r = np.fmod(h, self.buckets)  # C remainder: takes the dividend's sign
            out[:, i] = r + (r < 0) * self.buckets
        return out

    def index(self, a: np.ndarray, b: np.ndarray | int = 0) -> np.ndarray:
        """Flat positions in ``data`` (row * buckets + column), shape [n, rows]."""
        return self.columns(a, b) + np.arange(self.rows) * self.buckets

    def add(self, a: np.ndarray, b: np.ndarray | int = 0, by: float | np.ndarray = 1.0) -> None:
        """Add ``by`` to every key (repeated keys add up)."""
        idx = self.index(a, b)
        weights = np.broadcast_to(np.asarray(by, dtype=np.float64), (len(idx),))
        counts = np.bincount(idx.ravel(), weights=np.repeat(weights, self.rows), minlength=len(self.data))
        self.data += counts.astype(np.float32)

    def query(self, a: np.ndarray, b: np.ndarray | int = 0) -> np.ndarray:
        """Estimated count of each key: the minimum over rows (>= the true count)."""
        return self.data[self.index(a, b)].min(axis=1)


def _wrap32(x: np.ndarray) -> np.ndarray:
    """Two's-complement wrap of int64 values to the int32 range (what C int overflow does in practice)."""
    return x.astype(np.int32).astype(np.int64)


def _as_c_int(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.size and not np.issubdtype(x.dtype, np.integer):
        raise TypeError(f"MIDAS node ids must be integers, got {what} with dtype {x.dtype}")
    x = x.astype(np.int64)
    if x.size and (x.min() < _INT32_MIN or x.max() > _INT32_MAX):
        raise ValueError(f"MIDAS node ids must fit a 32-bit C int; {what} spans [{x.min()}, {x.max()}]")
    return x


def _chi2_score(a: np.ndarray, s: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``((a - s / t) * t)^2 / (s * (t - 1))`` with the C++'s float32 steps; 0 where s = 0 or t = 1."""
    with np.errstate(divide="ignore", invalid="ignore"):
        q = (a - s / t) * t  # float32, same order as the C++
        den = (s * (t - np.float32(1))).astype(np.float64)
        out = (q.astype(np.float64) ** 2 / den).astype(np.float32)
    return np.where((s == 0) | (t == 1), np.float32(0), out)


def _chi2_score_filtering(a: np.ndarray, s: np.ndarray, t: np.ndarray) -> np.ndarray:
    """MIDAS-F's form with ``s`` excluding the current tick: ``(a + s - a t)^2 / (s (t - 1))``; 0 where s = 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        q = (a + s) - a * t
        den = (s * (t - np.float32(1))).astype(np.float64)
        out = (q.astype(np.float64) ** 2 / den).astype(np.float32)
    return np.where(s == 0, np.float32(0), out)


def _tick_runs(col: np.ndarray, tick: np.ndarray, buckets: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per edge, for one sketch row with bucket ``col``: (count of the bucket so far including
    this edge, count within the edge's tick so far including this edge, whether this edge is the
    bucket's last in its tick). Edges are in stream order; ``tick`` is non-decreasing."""
    n = len(col)
    key = col.astype(np.uint16 if buckets <= 2**16 else np.uint32)
    order = np.argsort(key, kind="stable")  # radix sort for 16-bit keys; stable keeps stream order
    c, k = key[order], tick[order]
    pos = np.arange(n, dtype=np.int32)
    new_bucket = np.ones(n, dtype=bool)
    np.not_equal(c[1:], c[:-1], out=new_bucket[1:])
    new_run = new_bucket.copy()
    new_run[1:] |= k[1:] != k[:-1]
    bucket_start = np.maximum.accumulate(np.where(new_bucket, pos, 0))
    run_start = np.maximum.accumulate(np.where(new_run, pos, 0))
    last = np.ones(n, dtype=bool)
    last[:-1] = new_run[1:]
    total, within, is_last = np.empty(n, np.int32), np.empty(n, np.int32), np.empty(n, dtype=bool)
    total[order] = pos - bucket_start + 1
    within[order] = pos - run_start + 1
    is_last[order] = last
    return total, within, is_last


def _row_min(x: np.ndarray, n_kinds: int, rows: int) -> np.ndarray:
    """Count-min query over a [n, kinds * rows] array: the minimum over each kind's rows, [n, kinds]."""
    x = x.reshape(len(x), n_kinds, rows)
    out = x[:, :, 0].copy()
    for i in range(1, rows):  # a loop over the (few) rows beats a reduction over a short axis
        np.minimum(out, x[:, :, i], out=out)
    return out


def midas_scores(
    src: np.ndarray,
    dst: np.ndarray,
    t: np.ndarray,
    *,
    variant: Variant = "midas_r",
    rows: int = 2,
    buckets: int = 2719,
    alpha: float = 0.5,
    threshold: float = 1e3,
    seed: int = 0,
) -> np.ndarray:
    """Anomaly score of every edge of a stream, higher = more anomalous (see the module docstring).

    Args:
        src, dst: node ids per edge (integers that fit a C ``int``).
        t: integer time tick per edge, in stream order (the C++ starts at tick 1; ticks <= 1
            score 0). Out-of-order ticks are treated like the C++ does: they join the current tick.
        variant: "midas", "midas_r" or "midas_f".
        rows, buckets: count-min sketch shape (the C++ demo uses 2 x 1024; its wrappers 2 x 2719).
        alpha: decay of current counts at each new tick (MIDAS-R, MIDAS-F); ignored by MIDAS.
        threshold: MIDAS-F score at or above which a cell's current tick is not merged into its total.
        seed: ``srand`` seed of the hash parameters (glibc ``rand()`` emulated; 0 behaves as 1).

    Returns:
        float64 array of shape [n] with the C++'s float32 score values.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown MIDAS variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    src, dst = _as_c_int(src, "src"), _as_c_int(dst, "dst")
    t = np.asarray(t)
    if not (src.shape == dst.shape == t.shape) or src.ndim != 1:
        raise ValueError(
            f"src, dst and t must be 1-D and of equal length, got {src.shape}, {dst.shape}, {t.shape}"
        )
    t = _as_c_int(t, "t")
    n = len(src)
    if n == 0:
        return np.zeros(0, dtype=np.float64)

    # Hash parameters drawn in the C++ member order: edge, then source, then destination sketch
    # (the total/score sketches copy their current sketch's parameters).
    rand = iter(glibc_rand(seed, 2 * rows * 3))
    sketches = [CountMinSketch.from_rand(rows, buckets, rand) for _ in range(1 if variant == "midas" else 3)]
    keys = [(src, dst), (src, 0), (dst, 0)][: len(sketches)]
    n_kinds = len(sketches)
    width = n_kinds * rows  # sketch rows over all kinds: one column each below

    # A new tick starts where t exceeds the running maximum (the C++ state starts at tick 1).
    running = np.maximum.accumulate(np.maximum(t, 1))
    starts_tick = np.empty(n, dtype=bool)
    starts_tick[0] = t[0] > 1
    starts_tick[1:] = running[1:] > running[:-1]
    tick = np.cumsum(starts_tick, dtype=np.int32 if n < 2**31 else np.int64)

    # Per edge and sketch row (one column per kind x row): position in the stacked sketch data,
    # total count so far, count within the tick so far (both including the edge, as float32
    # like the C++ counters) and whether the edge is its cell's last in the tick.
    flat = np.empty((n, width), dtype=np.int32 if width * buckets < 2**31 else np.int64)
    total = np.empty((n, width), dtype=np.float32)
    within = np.empty((n, width), dtype=np.float32)
    is_last = np.empty((n, width), dtype=bool)
    for k, (sketch, (a, b)) in enumerate(zip(sketches, keys, strict=True)):
        cols = sketch.columns(a, b)
        for i in range(rows):
            j = k * rows + i
            flat[:, j] = j * buckets + cols[:, i]
            total[:, j], within[:, j], is_last[:, j] = _tick_runs(cols[:, i], tick, buckets)
    del cols

    tf = t.astype(np.float32)
    if variant == "midas":
        cur, tot = _row_min(within, 1, rows)[:, 0], _row_min(total, 1, rows)[:, 0]
        return _chi2_score(cur, tot, tf).astype(np.float64)

    bounds = np.concatenate([[0], np.flatnonzero(starts_tick[1:]) + 1, [n]]).tolist()
    factor = np.float32(alpha)
    cur_state = np.zeros(width * buckets, dtype=np.float32)

    if variant == "midas_r":
        # The loop only carries the decayed current counts from tick to tick; the scores are
        # vectorised over the whole stream afterwards.
        carry = np.empty((n, width), dtype=np.float32)  # current count at the tick's start
        for a_, b_ in zip(bounds[:-1], bounds[1:], strict=True):
            if starts_tick[a_]:
                cur_state *= factor
            idx = flat[a_:b_]
            carry[a_:b_] = cur_state[idx]
            last = is_last[a_:b_]
            cur_state[idx[last]] += within[a_:b_][last]
        carry += within
        scores = _chi2_score(_row_min(carry, n_kinds, rows), _row_min(total, n_kinds, rows), tf[:, None])
        return scores.max(axis=1).astype(np.float64)

    # MIDAS-F: totals change only at tick ends, conditioned on each cell's last score.
    del total
    total_state = np.zeros_like(cur_state)
    score_state = np.zeros_like(cur_state)
    reciprocal = np.float32(0)
    thr = np.float32(threshold)
    out = np.empty(n, dtype=np.float32)
    for a_, b_ in zip(bounds[:-1], bounds[1:], strict=True):
        if starts_tick[a_]:
            total_state += np.where(score_state < thr, cur_state, total_state * reciprocal)
            cur_state *= factor
            reciprocal = np.float32(1) / np.float32(t[a_] - 1)
        idx = flat[a_:b_]
        cur = _row_min(cur_state[idx] + within[a_:b_], n_kinds, rows)
        tot = _row_min(total_state[idx], n_kinds, rows)
        scores = _chi2_score_filtering(cur, tot, tf[a_:b_, None])  # [edges of the tick, kinds]
        out[a_:b_] = scores.max(axis=1)
        last = is_last[a_:b_]
        score_state[idx[last]] = np.repeat(scores, rows, axis=1)[last]
        cur_state[idx[last]] += within[a_:b_][last]
    return out.astype(np.float64)


class EdgeStream(NamedTuple):
    """An edge stream in the MIDAS authors' processed form: int node ids, int ticks from 1, 0/1 labels."""

    src: np.ndarray
    dst: np.ndarray
    t: np.ndarray
    label: np.ndarray


def read_darpa_edges(path: str | Path, nrows: int | None = None) -> EdgeStream:
    """Read the MIDAS authors' DARPA 1998 edge stream (``darpa_original.csv`` or a zip holding it).

    Rows are ``src_ip,dst_ip,MM/DD/YYYY-HH:MM,label`` without a header; a zip is streamed in place.
    The mapping is the authors' ``util/PreprocessData.py``: node id = rank of the IP string among
    all sorted source and destination strings; tick = rank of the time string among the sorted
    distinct time strings, plus 1 (one tick per minute that has traffic; the file's strings sort
    chronologically, and include days such as ``07/32/1998`` that no date parser accepts);
    label = 0 for ``-`` (normal), else 1.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"DARPA edge stream not found at {path}; set ANOMALY_PIPELINE_DATA_DIR")
    names = ["src", "dst", "ts", "label"]
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as archive:
            members = [m for m in archive.namelist() if m.endswith(".csv")]
            if len(members) != 1:
                raise ValueError(f"{path}: expected one .csv member, found {members}")
            with archive.open(members[0]) as handle:
                frame = pd.read_csv(handle, header=None, names=names, dtype=str, nrows=nrows)
    else:
        frame = pd.read_csv(path, header=None, names=names, dtype=str, nrows=nrows)
    n = len(frame)
    nodes = pd.Categorical(pd.concat([frame["src"], frame["dst"]], ignore_index=True)).codes.astype(np.int64)
    ticks = pd.Categorical(frame["ts"]).codes.astype(np.int64) + 1
    label = (frame["label"] != "-").to_numpy().astype(np.int8)
    return EdgeStream(nodes[:n], nodes[n:], ticks, label)


class MidasDetector:
    """MIDAS / MIDAS-R / MIDAS-F over the scored edges of ``GraphWindows`` as a detector.

    The stream is every event of the windows in time order, edge ``event_src -> event_dst`` (node
    ids), tick ``floor((ts - first ts) / tick_seconds) + 1`` (minutes since the start, counted
    from 1 as in the C++). The whole stream is scored once per windows object (MIDAS is online and
    causal: an edge's score depends only on the edges before it) and ``idx`` picks the events.
    Fitting learns only the alert threshold: the score exceeded by a fraction ``fit_fpr`` of the
    fit events.
    """

    def __init__(
        self,
        variant: Variant = "midas_r",
        *,
        rows: int = 2,
        buckets: int = 2719,
        alpha: float = 0.5,
        threshold: float = 1e3,
        tick_seconds: float = 60.0,
        fit_fpr: float = 0.01,
        seed: int = 0,
    ) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"unknown MIDAS variant {variant!r}; choose one of {', '.join(VARIANTS)}")
        if tick_seconds <= 0:
            raise ValueError(f"tick_seconds must be > 0, got {tick_seconds}")
        self.variant = variant
        self.name = variant
        self.rows = rows
        self.buckets = buckets
        self.alpha = alpha
        self.threshold = threshold
        self.tick_seconds = tick_seconds
        self.fit_fpr = fit_fpr
        self.seed = seed
        self.threshold_: float | None = None
        self._cache: tuple[weakref.ref, np.ndarray] | None = None

    def __getstate__(self) -> dict:
        """Pickle without the per-windows score cache (a weak reference cannot be pickled)."""
        return {**self.__dict__, "_cache": None}

    def ticks(self, windows: GraphWindows) -> np.ndarray:
        """Tick of each event: whole ``tick_seconds`` since the first event, plus 1."""
        ts = windows.events["ts"]
        if len(ts) == 0:
            return np.zeros(0, dtype=np.int64)
        seconds = (ts - ts.iloc[0]).dt.total_seconds().to_numpy(dtype=float)
        return np.floor(seconds / self.tick_seconds).astype(np.int64) + 1

    def stream_scores(self, windows: GraphWindows) -> np.ndarray:
        """Scores of all events of ``windows``, cached per windows object."""
        if self._cache is not None and self._cache[0]() is windows:
            return self._cache[1]
        scores = midas_scores(
            windows.event_src,
            windows.event_dst,
            self.ticks(windows),
            variant=self.variant,
            rows=self.rows,
            buckets=self.buckets,
            alpha=self.alpha,
            threshold=self.threshold,
            seed=self.seed,
        )
        self._cache = (weakref.ref(windows), scores)
        return scores

    def fit(self, windows: GraphWindows, idx: np.ndarray) -> MidasDetector:
        self.threshold_ = fitted_threshold(self.stream_scores(windows)[idx], self.fit_fpr)
        return self

    def decision_function(self, windows: GraphWindows, idx: np.ndarray) -> np.ndarray:
        return self.stream_scores(windows)[idx]
