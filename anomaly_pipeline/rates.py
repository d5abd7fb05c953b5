"""Rate state per aspect of an event, at a fine tick, in bounded memory, that a burst cannot poison.

Attacks in real telemetry are often floods, scans and bursts. A detector that only measures
familiarity ("how often did this source talk to this destination before?") learns a flood as
normal within minutes, because the flood's own events make the counts. This module keeps, for
every event and each of its ``ASPECTS`` (the edge, its source, its destination and the source
within the event's relation and outcome), two numbers:

* ``count``: the aspect's events in the current tick (``tick_seconds``, one minute by default),
  including this event, plus the earlier ticks' counts decayed by ``alpha`` per tick (MIDAS-R's
  temporal relation);
* ``total``: the aspect's events over all *completed* ticks, where a tick that was anomalous for
  that aspect adds the aspect's mean instead of its count (MIDAS-F's conditional merge, Bhatia et
  al., TKDD 2022), so the history stays what the aspect normally does.

The state is a count-min sketch per aspect (``rows`` x ``buckets`` float32 cells; the MIDAS
arithmetic of ``baselines.midas``), so memory is fixed however long the stream runs, and nodes are
hashed by their typed *name*, so the streaming scorer can carry one ``RateState`` across
micro-batches and get exactly the numbers a batch run over the same events gets.

The expected count of an aspect in a tick is its filtered mean ``total / (t - 1)`` (``t`` the
tick number since the state started); the detector's rate head may correct that expectation from
the graph and sequence context (office hours, busy servers). ``rate_surprise`` is one-sided: only
a count *above* its expectation is surprising, by its Poisson tail.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

ASPECTS: tuple[str, ...] = ("edge", "source", "destination", "source_relation")
# source_relation is keyed by (acting host, relation, outcome, novelty): the acting host is the
# machine a logon came from (its context node) and the source otherwise, so a password spray from
# one host over many accounts is one burst; failed logons or unanswered connections, and events on
# never-seen edges, are their own cells, so a spray, a scan or a sweep to new peers is a burst of
# failures or of novelty even from a host whose other traffic is busy.


@dataclass(frozen=True)
class RateConfig:
    """Tick lengths (seconds; one sketch set per time scale; default one minute: an hour scale
    next to it measured worse on development data, see docs/RESULTS.md), sketch shape, decay of the current count per tick, and the
    chi-squared score at or above which a tick is kept out of an aspect's history (MIDAS-F's
    defaults: 2 rows, alpha 0.5, threshold 1000)."""

    tick_seconds: tuple[float, ...] = (60.0,)
    rows: int = 2
    buckets: int = 4099
    alpha: float = 0.5
    threshold: float = 1e3
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.tick_seconds or min(self.tick_seconds) <= 0:
            raise ValueError(f"tick_seconds must be one or more lengths > 0, got {self.tick_seconds}")
        if not 0 <= self.alpha < 1:
            raise ValueError(f"alpha must lie in [0, 1), got {self.alpha}")


def node_hash(names: pd.Series | np.ndarray) -> np.ndarray:
    """Stable non-negative 31-bit ids of typed node names (the same in every process and run)."""
    values = np.asarray(pd.Series(names).astype(str).to_numpy(dtype=object))
    hashed = pd.util.hash_array(values, categorize=True)
    return (hashed % np.uint64(2**31 - 1)).astype(np.int64)


class RateState:
    """The sketches of every aspect at every time scale (see the module docstring).

    ``update`` takes the next events in time order and returns, per event, ``count`` [n, S, A],
    ``total`` [n, S, A] (S = len(config.tick_seconds) scales, A = len(ASPECTS)) and the tick
    number ``t`` [n, S]; call it on the whole stream at once or on consecutive pieces: the
    results are the same.
    """

    def __init__(self, config: RateConfig = RateConfig()) -> None:
        self.config = config
        self.scales = [_ScaleState(config, tick) for tick in config.tick_seconds]

    @property
    def memory_bytes(self) -> int:
        return sum(scale.memory_bytes for scale in self.scales)

    def update(
        self, src: np.ndarray, dst: np.ndarray, rel: np.ndarray, seconds: np.ndarray, failed: np.ndarray | None = None,
        actor: np.ndarray | None = None, novel: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Add events (node ids from ``node_hash``, relation index, epoch seconds, whether the
        event failed, the acting host's node id (default: the source), whether the edge was never
        seen before; time order)."""
        outs = [scale.update(src, dst, rel, seconds, failed, actor, novel) for scale in self.scales]
        return (np.stack([o[0] for o in outs], axis=1), np.stack([o[1] for o in outs], axis=1),
                np.stack([o[2] for o in outs], axis=1))


class _ScaleState:
    """One time scale's sketches and tick."""

    def __init__(self, config: RateConfig, tick_seconds: float) -> None:
        self.tick_seconds = float(tick_seconds)
        from anomaly_pipeline.baselines.midas import CountMinSketch, glibc_rand  # the package imports graph

        self.config = config
        rand = iter(glibc_rand(config.seed, 2 * config.rows * len(ASPECTS)))
        self.sketches = [CountMinSketch.from_rand(config.rows, config.buckets, rand) for _ in ASPECTS]
        size = len(ASPECTS) * config.rows * config.buckets
        self.current = np.zeros(size, dtype=np.float32)
        self.total = np.zeros(size, dtype=np.float32)
        self.score = np.zeros(size, dtype=np.float32)
        self.origin_s: float | None = None
        self.tick = 0  # the largest tick seen so far (0: nothing seen)

    @property
    def memory_bytes(self) -> int:
        return int(self.current.nbytes + self.total.nbytes + self.score.nbytes)

    def ticks_of(self, seconds: np.ndarray) -> np.ndarray:
        """Tick number of each time (seconds since the epoch), counted from 1 at the first event."""
        if self.origin_s is None:
            self.origin_s = float(seconds[0])
        return np.floor((np.asarray(seconds, dtype=float) - self.origin_s) / self.tick_seconds).astype(
            np.int64) + 1

    def update(
        self, src: np.ndarray, dst: np.ndarray, rel: np.ndarray, seconds: np.ndarray, failed: np.ndarray | None = None,
        actor: np.ndarray | None = None, novel: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        from anomaly_pipeline.baselines.midas import _chi2_score_filtering, _row_min, _tick_runs

        n = len(src)
        A, rows, buckets = len(ASPECTS), self.config.rows, self.config.buckets
        if n == 0:
            return np.zeros((0, A), np.float32), np.zeros((0, A), np.float32), np.zeros(0, np.float32)
        src, dst, rel = (np.asarray(a, dtype=np.int64) for a in (src, dst, rel))
        tick_raw = self.ticks_of(seconds)
        # Late events join the current tick, as in MIDAS.
        running = np.maximum.accumulate(np.maximum(tick_raw, max(self.tick, 1)))
        starts = np.empty(n, dtype=bool)
        starts[0] = running[0] > self.tick
        starts[1:] = running[1:] > running[:-1]
        local_tick = np.cumsum(starts)  # distinct ticks within this call
        outcome = np.zeros(n, np.int64) if failed is None else (np.asarray(failed) > 0).astype(np.int64)
        actor = src if actor is None else np.asarray(actor, dtype=np.int64)
        new = np.zeros(n, np.int64) if novel is None else (np.asarray(novel) > 0).astype(np.int64)
        keys = [(src, dst), (src, 0), (dst, 0), (actor, (rel + 1) * 4 + outcome * 2 + new)]
        width = A * rows
        flat = np.empty((n, width), dtype=np.int64)
        within = np.empty((n, width), dtype=np.float32)
        is_last = np.empty((n, width), dtype=bool)
        for k, (sketch, (a, b)) in enumerate(zip(self.sketches, keys, strict=True)):
            cols = sketch.columns(a % (2**31 - 1), b)
            for i in range(rows):
                j = k * rows + i
                flat[:, j] = j * buckets + cols[:, i]
                _, within[:, j], is_last[:, j] = _tick_runs(cols[:, i], local_tick, buckets)
        count = np.empty((n, A), dtype=np.float32)
        total = np.empty((n, A), dtype=np.float32)
        t_out = running.astype(np.float32)
        factor = np.float32(self.config.alpha)
        thr = np.float32(self.config.threshold)
        bounds = np.concatenate([[0], np.flatnonzero(starts[1:]) + 1, [n]]).tolist()
        for a_, b_ in zip(bounds[:-1], bounds[1:], strict=True):
            if starts[a_]:
                t_new = int(running[a_])
                if self.tick >= 1:
                    # End of the previous tick: merge it into the totals unless it was anomalous,
                    # then decay the current counts once per elapsed tick.
                    reciprocal = np.float32(1) / np.float32(self.tick - 1) if self.tick > 1 else np.float32(0)
                    self.total += np.where(self.score < thr, self.current, self.total * reciprocal)
                    self.current *= factor ** min(t_new - self.tick, 64)
                self.tick = t_new
            idx = flat[a_:b_]
            cur = _row_min(self.current[idx] + within[a_:b_], A, rows)
            tot = _row_min(self.total[idx], A, rows)
            count[a_:b_], total[a_:b_] = cur, tot
            scores = _chi2_score_filtering(cur, tot, t_out[a_:b_, None])
            last = is_last[a_:b_]
            self.score[idx[last]] = np.repeat(scores, rows, axis=1)[last]
            self.current[idx[last]] += within[a_:b_][last]
        return count, total, t_out


def expected_count(total: np.ndarray, t: np.ndarray) -> np.ndarray:
    """An aspect's filtered mean count per tick, ``total / (t - 1)`` (0 before any history)."""
    t = np.asarray(t, dtype=np.float64)
    t = t[..., None] if np.ndim(total) == np.ndim(t) + 1 else t
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(t > 1, np.asarray(total, dtype=np.float64) / np.maximum(t - 1, 1), 0.0)


def rate_surprise(count: np.ndarray, total: np.ndarray, t: np.ndarray, log_correction: np.ndarray | float = 0.0
                  ) -> np.ndarray:
    """One-sided surprise (nats) of ``count`` against its expectation, per event and aspect.

    With expectation ``mu = exp(log_correction) * total / (t - 1)``: ``-log P(X >= count)`` for
    ``X ~ Poisson(mu)`` where ``count > mu``, else 0; 0 where the aspect has no history yet (its
    novelty is the link part's business). A Poisson tail, not MIDAS's chi-squared statistic
    ``(count - mu)^2 / mu``: the chi-squared one calls two events in a minute on a rarely used
    edge (mu ~ 1e-4) a burst ten thousand times stronger than expected, and ranks that above a
    real flood of a thousand; the tail grows like ``count * log(count / mu)``, so size counts.
    """
    from scipy.special import gammainc, gammaln

    count = np.asarray(count, dtype=np.float64)
    mu = expected_count(total, t) * np.exp(log_correction)
    above = (mu > 0) & (count > mu)
    out = np.zeros(np.broadcast_shapes(count.shape, mu.shape))
    # Only the counts above their expectation (the special functions are the cost).
    a = np.broadcast_to(count, out.shape)[above]
    m = np.broadcast_to(mu, out.shape)[above]
    with np.errstate(divide="ignore", invalid="ignore", under="ignore"):
        # Far in the tail the function underflows: the point mass at a, its leading term, instead.
        leading = gammaln(a + 1) + m - a * np.log(m)
        # P(X >= a) = exp(-leading) * (1 + m / (a + 1) + ...) <= exp(-leading) / (1 - m / (a + 1)):
        # where even that bound is below 1e-250 the leading term is the answer, and the costly
        # incomplete gamma (most of a flood's events) is not computed.
        near = leading + np.log1p(-m / (a + 1)) <= _DEEP_NATS
        exact = leading.copy()
        tail = gammainc(a[near], m[near])  # P(X >= a) for X ~ Poisson(m) (regularised lower incomplete gamma)
        from_tail = -np.log(tail)
        usable = np.isfinite(from_tail) & (tail > 1e-250)
        exact[np.flatnonzero(near)[usable]] = from_tail[usable]
    out[above] = np.maximum(exact, 0.0)
    return out


_DEEP_NATS = 580.0  # just past -log(1e-250) = 575.6: the incomplete gamma's usable range
