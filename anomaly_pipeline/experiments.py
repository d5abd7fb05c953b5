"""Reproducible quality runs: every detector over several seeds and data sets, and the paper's ablations.

Both follow the evaluation protocol of ``anomaly_pipeline.evaluation`` (time-ordered split,
thresholds on validation scores only, metrics on the later test window) and repeat it over seeds,
so the spread says how much of a difference is luck:

* synthetic: seed ``s`` generates the data (``SyntheticConfig(seed=s)``) *and* seeds every
  detector, so three seeds are three data sets with matching model seeds;
* darpa98, lanl_style, zeek008: the data stay fixed and every seeded part changes (network
  initialisation, negative sampling, subsampling in Isolation Forest / One-Class SVM, MIDAS hash
  functions).

``benchmarks/bench_quality.py`` (``make bench-quality``) and ``benchmarks/ablation.py``
(``make ablation``, also the Dagster job ``ablation_job``) are thin wrappers around this module;
they write ``docs/RESULTS.md`` / ``docs/results.json`` and ``docs/ABLATION.md`` /
``docs/ablation.json`` from the run.
"""

from __future__ import annotations

import copy
import hashlib
import json
import resource
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from anomaly_pipeline.detectors import (
    Detector,
    HybridDetector,
    IsolationForestDetector,
    lstm_only_detector,
    static_gnn_detector,
)
from anomaly_pipeline.evaluation import evaluate_detectors
from anomaly_pipeline.graph import GraphWindows, WindowConfig, build_graph_windows
from anomaly_pipeline.models.hybrid import HybridConfig
from anomaly_pipeline.training import SCORE_PARTS, TrainConfig, score_components

Log = Callable[[str], None]
METRICS = ("roc_auc", "average_precision")
THRESHOLD_METRICS = ("tpr", "fpr", "precision", "recall", "f1")
DEFAULT_FPRS = (0.001, 0.01)
HYBRID = "hybrid_gnn_lstm"

# Published figures next to ours (ROC-AUC on the whole DARPA 1998 stream). MIDAS and MIDAS-R as
# published (Bhatia et al., AAAI 2020); MIDAS-F from the authors' C++ code, measured on a 2-core
# x86-64 machine (darpa98/SOURCE.md).
PUBLISHED = {
    "darpa98": {
        "midas": {"roc_auc": 0.91, "source": "published (Bhatia et al. 2020)"},
        "midas_r": {"roc_auc": 0.95, "source": "published (Bhatia et al. 2020); authors' C++ here: 0.951"},
        "midas_f": {"roc_auc": 0.986, "source": "authors' C++ code, 2-core x86-64"},
    }
}


# ---------------------------------------------------------------------------------------------
# Detectors by name
# ---------------------------------------------------------------------------------------------

# The hybrid's model scored with another combination of its parts (``HybridDetector.combination``).
# In a run that also has ``hybrid_gnn_lstm`` they are views of the very model it trained (no
# second training, the parts scored once); alone they train their own.
COMBINATION_VARIANTS = {"hybrid_tail_sum": "tail_sum", "hybrid_surprisal": "surprisal"}


def _train_config(seed: int, epochs_per_stage: int | None) -> TrainConfig:
    train = TrainConfig(seed=seed)
    return train if epochs_per_stage is None else train.with_epochs_per_stage(epochs_per_stage)


def make_detector(name: str, seed: int, epochs_per_stage: int | None = None) -> Detector:
    """A fresh, unfitted detector by its report name, seeded."""
    from anomaly_pipeline.baselines import HeuristicRulesDetector, MidasDetector, OneClassSVMDetector
    from anomaly_pipeline.baselines.rules import RULES

    train = _train_config(seed, epochs_per_stage)
    if name == HYBRID:
        return HybridDetector(train_config=train)
    if name in COMBINATION_VARIANTS:
        det = HybridDetector(train_config=train, combination=COMBINATION_VARIANTS[name])
        det.name = name
        return det
    if name == "static_gnn":
        return static_gnn_detector(train)
    if name == "lstm_only":
        return lstm_only_detector(train)
    if name == "heuristic_rules":
        return HeuristicRulesDetector()
    if name.startswith("rule_") and name[5:] in RULES:
        return HeuristicRulesDetector([name[5:]])
    if name == "isolation_forest":
        return IsolationForestDetector(seed=seed)
    if name == "one_class_svm":
        return OneClassSVMDetector(seed=seed)
    if name in ("midas", "midas_r", "midas_f"):
        return MidasDetector(name, seed=seed)
    raise ValueError(f"unknown detector {name!r}; choose from {', '.join(all_detector_names())}")


def all_detector_names() -> list[str]:
    from anomaly_pipeline.baselines.rules import RULES

    return [HYBRID, *COMBINATION_VARIANTS, "static_gnn", "lstm_only", "heuristic_rules",
            *(f"rule_{r}" for r in RULES), "isolation_forest", "one_class_svm", "midas", "midas_r", "midas_f"]


def _is_rule(name: str) -> bool:
    return name == "heuristic_rules" or name.startswith("rule_")


def _seeded(name: str) -> bool:
    """Rules are deterministic: on fixed data one run stands for every seed (spread 0 by construction)."""
    return not _is_rule(name)


def _hybrid_family(name: str) -> bool:
    """The hybrid and its own score variants: not baselines in the targets."""
    return name == HYBRID or name in COMBINATION_VARIANTS


def default_detectors(events: pd.DataFrame) -> list[str]:
    """Every detector the data support, the hybrid first: the heuristic rules (all four combined,
    then each rule alone) only where there are authentication or process events for them, then
    the hybrid's own ablations (static GNN, LSTM only) and the unsupervised baselines."""
    from anomaly_pipeline.baselines.rules import RULES

    types = set(events["event_type"].astype("string").dropna().unique()) if len(events) else set()
    needs = {"first_seen_logon": "auth", "failure_burst": "auth", "rare_process": "process_start"}
    names = [HYBRID, "static_gnn", "lstm_only"]
    if types & {"auth", "process_start"}:
        names += ["heuristic_rules", *(f"rule_{r}" for r in RULES if needs.get(r) in types or r not in needs)]
    return names + ["isolation_forest", "one_class_svm", "midas_r", "midas_f"]


# ---------------------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------------------

DATASETS = ("synthetic", "darpa98", "lanl_style", "zeek008")
DARPA_TRAIN_FRACTION = 0.2  # the `anomaly-pipeline detect` split used for DARPA (train 16 %, early stop 4 %)
ZEEK_TRAIN_FRACTION = 0.3  # as `make bench-zeek` (train 24 %, early stop 6 %)
LANL_DATA_SEED = 0  # bench_lanl_style.py's default: the LANL-style file is the same for every model seed
LANL_BASE_USERS, LANL_BASE_COMPUTERS = 1000, 2000  # background at scale 1.0 (~0.83M lines)


@dataclass
class DataOptions:
    """How much of each quality dataset to use; the defaults are the protocols' full sizes.

    max_edges: darpa98 / zeek008: the first N lines of the file only. every: darpa98: every
    k-th line of the stream (with max_edges: of its first max_edges lines), a subset that keeps
    the whole time span and so the protocol's split. synthetic: ``SyntheticConfig`` fields to
    change besides the seed (quick runs). lanl_*: the LANL-style background's size
    (``bench_lanl_style.py --scale``) and density.
    """

    max_edges: int | None = None
    every: int = 1
    synthetic: dict[str, Any] = field(default_factory=dict)
    lanl_scale: float = 1.0
    lanl_events_per_user_day: float = 20.0
    lanl_machine_events_per_computer_day: float = 4.0

    def subset(self, dataset: str) -> str:
        """What differs from the protocol's full size, in words ("" when nothing does)."""
        parts = []
        if dataset == "synthetic" and self.synthetic:
            parts.append("SyntheticConfig(" + ", ".join(f"{k}={v!r}" for k, v in self.synthetic.items()) + ")")
        if dataset in ("darpa98", "zeek008") and self.max_edges:
            parts.append(f"first {self.max_edges:,} lines")
        if dataset == "darpa98" and self.every > 1:
            parts.append(f"every {_ordinal(self.every)} line")
        if dataset == "lanl_style":
            if self.lanl_scale != 1.0:
                parts.append(f"background scale {self.lanl_scale:g}")
            if self.lanl_events_per_user_day != 20.0 or self.lanl_machine_events_per_computer_day != 4.0:
                parts.append(f"{self.lanl_events_per_user_day:g} events per user-day, "
                             f"{self.lanl_machine_events_per_computer_day:g} per computer-day")
        return ", ".join(parts)


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def euler_window_config(events: pd.DataFrame, first_red_time_s: int, stride_hours: float = 1.0,
                        validation_share: float = 0.15) -> tuple[WindowConfig, int, int]:
    """The LANL-style (Euler) split of ``benchmarks/bench_lanl_style.py``: train + validation
    buckets are exactly those before the first red-team event's bucket (validation = the last
    ``validation_share`` of them, at least one bucket); every later event is test."""
    from anomaly_pipeline.sources.lanl import DEFAULT_EPOCH

    stride = pd.Timedelta(hours=stride_hours)
    t0 = events["ts"].min().floor(stride)
    n_buckets = int((events["ts"].max() - t0) // stride) + 1
    attack_bucket = int((DEFAULT_EPOCH + pd.Timedelta(seconds=first_red_time_s) - t0) // stride)
    val_buckets = max(1, int(round(validation_share * attack_bucket)))
    train_buckets = attack_bucket - val_buckets
    if train_buckets < 1:
        raise ValueError("the first red-team event leaves no training period")
    # build_graph_windows cuts at ceil(n * fraction): aim half a bucket low to be exact.
    config = WindowConfig(stride_hours=stride_hours, train_fraction=(train_buckets - 0.5) / n_buckets,
                          validation_fraction=val_buckets / n_buckets)
    return config, train_buckets, val_buckets


def _find(name: str, hint: str) -> Path:
    from anomaly_pipeline.detect import dataset_search_dirs, find_dataset

    path = find_dataset(name)
    if path is None:
        raise ValueError(f"{hint}: {name} not found in {', '.join(map(str, dataset_search_dirs()))}; run "
                         f"`anomaly-pipeline datasets download {name}` or set ANOMALY_PIPELINE_DATA_DIR; or leave "
                         "the dataset out (--datasets)")
    return path


def _load_synthetic(seed: int, options: DataOptions, log: Log) -> tuple[pd.DataFrame, WindowConfig, dict]:
    from anomaly_pipeline.sources.synthetic import SyntheticConfig, generate_events
    from anomaly_pipeline.validation import validate_events

    config = SyntheticConfig(**{**options.synthetic, "seed": seed})
    events = generate_events(config)
    result = validate_events(events)
    log(f"synthetic seed {seed}: {len(events):,} events generated, {result.rows_valid:,} valid after Great "
        "Expectations")
    return result.valid, WindowConfig(), {"source": f"SyntheticConfig(seed={seed})", "rows_read": len(events),
                                          "rows_valid": result.rows_valid}


def _strided(path: Path, fmt: str, policy: Any, every: int, max_rows: int | None) -> tuple[pd.DataFrame, int, str]:
    """Every ``every``-th line of ``path`` (of its first ``max_rows``), validated: valid rows,
    lines scanned and the quarantine line."""
    from anomaly_pipeline.sources.formats import iter_events
    from anomaly_pipeline.validation import validate_events

    kept, scanned = [], 0
    for chunk in iter_events(path, fmt):
        if max_rows is not None:
            chunk = chunk.iloc[: max(0, max_rows - scanned)]
        offset = (-scanned) % every  # the next multiple of `every` in stream position
        kept.append(chunk.iloc[offset::every])
        scanned += len(chunk)
        if max_rows is not None and scanned >= max_rows:
            break
    frame = pd.concat(kept, ignore_index=True)
    result = validate_events(frame, policy)
    reasons = "; ".join(f"{k}: {v:,}" for k, v in list(result.reason_counts.items())[:5])
    text = f"{result.rows_quarantined:,} of {result.rows_read:,} kept lines quarantined" + (
        f"; top reasons: {reasons}" if reasons else "")
    return result.valid, scanned, text


def _load_darpa(options: DataOptions, log: Log) -> tuple[pd.DataFrame, WindowConfig, dict]:
    from anomaly_pipeline.detect import DEFAULT_TS_MIN, read_validated, window_config_for
    from anomaly_pipeline.validation import ValidationPolicy

    path = _find("darpa98", "darpa98")
    policy = ValidationPolicy(ts_min=pd.Timestamp(DEFAULT_TS_MIN, tz="UTC"))
    if options.every > 1:
        valid, scanned, quarantine = _strided(path, "darpa", policy, options.every, options.max_edges)
    else:
        data = read_validated(path, "darpa", policy=policy, max_rows=options.max_edges)
        valid, scanned, quarantine = data.valid, data.rows_read, data.quarantine_line()
    subset = options.subset("darpa98")
    log(f"darpa98: {scanned:,} lines read from {path}{f' ({subset})' if subset else ''}, {len(valid):,} valid; "
        f"{quarantine}")
    return valid, window_config_for(DARPA_TRAIN_FRACTION), {
        "source": str(path), "rows_read": scanned, "rows_valid": len(valid), "quarantine": quarantine,
        "split": f"detect protocol, train fraction {DARPA_TRAIN_FRACTION}"}


def _load_zeek(options: DataOptions, log: Log) -> tuple[pd.DataFrame, WindowConfig, dict]:
    from anomaly_pipeline.detect import read_validated, window_config_for

    path = _find("stratosphere-008-mixed", "zeek008")
    data = read_validated(path, "zeek", max_rows=options.max_edges)
    log(f"zeek008: {data.rows_read:,} lines read from {path}, {data.rows_valid:,} valid; {data.quarantine_line()}")
    return data.valid, window_config_for(ZEEK_TRAIN_FRACTION), {
        "source": str(path), "rows_read": data.rows_read, "rows_valid": data.rows_valid,
        "quarantine": data.quarantine_line(), "split": f"detect protocol, train fraction {ZEEK_TRAIN_FRACTION}"}


def _load_lanl_style(options: DataOptions, log: Log) -> tuple[pd.DataFrame, WindowConfig, dict]:
    from anomaly_pipeline.sources.lanl import DEFAULT_EPOCH, read_lanl
    from anomaly_pipeline.sources.lanl_style import generate_lanl_style_auth, read_redteam_lines
    from anomaly_pipeline.validation import ValidationPolicy, validate_events

    redteam = _find("lanl-redteam", "lanl_style")
    with tempfile.TemporaryDirectory(prefix="lanl_style_") as tmp:
        path = Path(tmp) / "auth.txt.gz"
        summary = generate_lanl_style_auth(
            path, redteam, seed=LANL_DATA_SEED,
            background_users=max(10, int(LANL_BASE_USERS * options.lanl_scale)),
            background_computers=max(20, int(LANL_BASE_COMPUTERS * options.lanl_scale)),
            events_per_user_day=options.lanl_events_per_user_day,
            machine_events_per_computer_day=options.lanl_machine_events_per_computer_day,
        )
        raw = read_lanl(path, kind="auth", redteam=redteam)
    policy = ValidationPolicy(ts_min=DEFAULT_EPOCH - pd.Timedelta(days=1),
                              ts_max=DEFAULT_EPOCH + pd.Timedelta(days=summary["days"] + 1))
    result = validate_events(raw, policy)
    config, train_b, val_b = euler_window_config(result.valid, int(read_redteam_lines(redteam)["time"].min()))
    labelled = int((raw["label"] == 1).sum())
    log(f"lanl_style: {summary['lines']:,} LANL-format lines generated ({summary['background_lines']:,} background, "
        f"{summary['redteam_lines']} red-team, {labelled} labelled by the adapter's join), {result.rows_valid:,} "
        f"valid; Euler split: train {train_b} h, validation {val_b} h, test the rest")
    return result.valid, config, {
        "source": f"generate_lanl_style_auth(seed={LANL_DATA_SEED}) around {redteam}",
        "rows_read": int(summary["lines"]), "rows_valid": result.rows_valid, "redteam_labelled": labelled,
        "split": f"Euler: train {train_b} h, validation {val_b} h before the first red-team event, test after"}


class QualityData:
    """A quality dataset: its events per seed (synthetic) or once for every seed, and its windows.

    Holds at most one set of windows (the last seed's), so a per-seed dataset never has two in
    memory; ``release()`` drops them.
    """

    def __init__(self, name: str, per_seed: bool, loader: Callable[[int], tuple[pd.DataFrame, WindowConfig, dict]],
                 subset: str = "") -> None:
        self.name = name
        self.per_seed = per_seed
        self.subset = subset
        self.sources: dict[int | None, dict] = {}  # what each load read (rows read / valid, source)
        self._loader = loader
        self._events: tuple[int | None, pd.DataFrame, WindowConfig] | None = None
        self._windows: tuple[int | None, GraphWindows] | None = None

    @classmethod
    def from_windows(cls, name: str, windows: GraphWindows) -> QualityData:
        """Fixed, already built windows (the same for every seed)."""
        def missing(seed: int) -> tuple[pd.DataFrame, WindowConfig, dict]:
            raise RuntimeError("QualityData.from_windows holds windows only")

        data = cls(name, per_seed=False, loader=missing)
        data._windows = (None, windows)
        return data

    def _key(self, seed: int) -> int | None:
        return seed if self.per_seed else None

    def events(self, seed: int) -> tuple[pd.DataFrame, WindowConfig]:
        """Validated events and the protocol's window config for ``seed`` (cached: the last one)."""
        key = self._key(seed)
        if self._events is None or self._events[0] != key:
            self._events = None
            events, config, source = self._loader(seed)
            self.sources[key] = source
            self._events = (key, events, config)
        return self._events[1], self._events[2]

    def windows(self, seed: int, window: WindowConfig | None = None) -> GraphWindows:
        """Graph windows for ``seed`` with the protocol's split (``window`` replaces the config);
        ValueError when a split is empty or the test window lacks attacks or benign events."""
        key = self._key(seed)
        if window is None and self._windows is not None and self._windows[0] == key:
            return self._windows[1]
        self._windows = None
        events, config = self.events(seed)
        windows = check_windows(build_graph_windows(events, window or config), self.name + (
            f" ({self.subset})" if self.subset else ""))
        if window is None:
            self._windows = (key, windows)
        if not self.per_seed and window is None:
            self._events = None  # fixed data: the windows hold the events; drop the raw table
        return windows

    def release(self) -> None:
        self._events = None
        self._windows = None


def check_windows(windows: GraphWindows, what: str) -> GraphWindows:
    """The windows, or a ValueError saying which split is empty or what the test window lacks."""
    counts = {s: len(windows.split_index(s)) for s in ("train", "validation", "test")}
    empty = [s for s, n in counts.items() if n == 0]
    if empty:
        raise ValueError(f"{what}: the {' and '.join(empty)} split holds no events ({windows.n_buckets} buckets; "
                         f"train {counts['train']:,}, validation {counts['validation']:,}, test {counts['test']:,}); "
                         "use more of the data")
    y = windows.labels[windows.split_index("test")]
    attacks, known = int(np.nansum(y)), int(np.isfinite(y).sum())
    if attacks == 0 or attacks == known:
        raise ValueError(f"{what}: the test window holds {attacks:,} attacks among {known:,} labelled events; "
                         "ROC-AUC and AP need both classes: use more of the data")
    return windows


def quality_data(dataset: str, options: DataOptions | None = None, log: Log = print) -> QualityData:
    """A quality dataset by name (``DATASETS``), loaded lazily.

    synthetic: ``SyntheticConfig(seed=s)`` (plus ``options.synthetic``) per seed ``s``, default windows
    (60 / 20 / 20 % of the span). darpa98: the DARPA 1998 stream read in place, the ``anomaly-pipeline
    detect`` split (train fraction 0.2). lanl_style: ``bench_lanl_style.py``'s file (seed 0, scale 1.0 by
    default) and its Euler split. zeek008: Stratosphere 008 read with the zeek adapter, validated as
    ``detect`` does, train fraction 0.3.
    """
    options = options or DataOptions()
    if dataset == "synthetic":
        return QualityData(dataset, True, lambda seed: _load_synthetic(seed, options, log), options.subset(dataset))
    loaders = {"darpa98": _load_darpa, "lanl_style": _load_lanl_style, "zeek008": _load_zeek}
    if dataset not in loaders:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")
    load = loaders[dataset]
    return QualityData(dataset, False, lambda seed: load(options, log), options.subset(dataset))


def dataset_events(dataset: str, max_edges: int | None = None, log: Log = print,
                   seed: int = 0) -> tuple[pd.DataFrame, WindowConfig]:
    """Validated events of a quality dataset (for ``seed`` where the data depend on it) and the
    window config of its protocol."""
    return quality_data(dataset, DataOptions(max_edges=max_edges), log).events(seed)


# ---------------------------------------------------------------------------------------------
# Scoring the hybrid once for every view of it
# ---------------------------------------------------------------------------------------------


class _PartsCache:
    """Score parts of one trained model per (windows, positions): validation and test are scored
    once, whatever number of combinations and per-part metrics read them."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self._store: dict[tuple[int, str], np.ndarray] = {}

    def parts(self, windows: GraphWindows, idx: np.ndarray) -> np.ndarray:
        idx = np.ascontiguousarray(idx)
        key = (id(windows), hashlib.blake2b(idx.tobytes(), digest_size=16).hexdigest())
        if key not in self._store:
            self._store[key] = score_components(self.model, windows, idx)
        return self._store[key]


class CachedHybrid:
    """A fitted ``HybridDetector`` scored through a ``_PartsCache``, optionally with another
    combination of its parts (the same trained model scored another way). Evaluation only: a view
    with another combination has no fitted alert threshold of its own (``threshold_`` None); the
    evaluation takes thresholds from validation scores anyway."""

    def __init__(self, detector: HybridDetector, cache: _PartsCache, combination: str | None = None,
                 name: str | None = None) -> None:
        if combination is not None and combination != detector.combination:
            detector = copy.copy(detector)
            detector.combination = combination
            self.threshold_: float | None = None
        else:
            self.threshold_ = detector.threshold_
        self.detector = detector
        self.cache = cache
        self.name = name or detector.name

    def fit(self, windows: GraphWindows, idx: np.ndarray) -> CachedHybrid:
        return self  # already fitted

    def parts(self, windows: GraphWindows, idx: np.ndarray) -> np.ndarray:
        return self.cache.parts(windows, idx)

    def decision_function(self, windows: GraphWindows, idx: np.ndarray) -> np.ndarray:
        return self.detector.combine(self.cache.parts(windows, idx))


def labelled_test_index(windows: GraphWindows) -> np.ndarray:
    """Test positions with a label: the events ``evaluate_detectors`` scores its metrics on."""
    test_idx = windows.split_index("test")
    return test_idx[np.isfinite(windows.labels[test_idx])]


def campaigns_of_test_window(windows: GraphWindows) -> np.ndarray | None:
    """Per labelled test event (``labelled_test_index``), its campaign: the part of
    ``label_detail`` before ``:`` on attacks (``"<campaign>:<stage>"``), "" on benign events; None
    when the data name fewer than two campaigns (nothing to break down)."""
    if "label_detail" not in windows.events:
        return None
    idx = labelled_test_index(windows)
    detail = windows.events["label_detail"].to_numpy()[idx]
    y = windows.labels[idx] == 1
    camp = np.array([str(d).split(":")[0] if a and isinstance(d, str) else "" for d, a in zip(detail, y, strict=True)],
                    dtype=object)
    return camp if len(set(camp[y])) > 1 else None


def campaign_metrics(detector: Any, windows: GraphWindows, campaigns: np.ndarray) -> list[dict[str, Any]]:
    """Per campaign of the test window: its attacks against every benign test event, the AP of the
    detector's score (which attacks a detector finds, and which it leaves to chance)."""
    idx = labelled_test_index(windows)
    y = windows.labels[idx].astype(int)
    scores = np.asarray(detector.decision_function(windows, idx), dtype=float)
    rows = []
    for name in sorted(set(campaigns[y == 1])):
        keep = (campaigns == name) | (y == 0)
        rows.append({"campaign": name, "attacks": int((campaigns == name).sum()),
                     "average_precision": float(average_precision_score(y[keep], scores[keep]))})
    return rows


def part_metrics(view: CachedHybrid, windows: GraphWindows) -> list[dict[str, Any]]:
    """Per score part (``training.SCORE_PARTS``) on the labelled test events: ROC-AUC and AP of the
    part's raw value alone, and ``lead_share``: the share of test attacks whose largest Fisher term
    (-log of the part's calibrated tail probability) is this part's, i.e. which part carries the
    detection. ``constant``: the part takes one value on the test window (off, e.g. the
    supervised head without labels)."""
    idx = labelled_test_index(windows)
    y = windows.labels[idx].astype(int)
    parts = np.nan_to_num(np.asarray(view.parts(windows, idx), dtype=float))
    terms = -np.log(view.detector.part_pvalues(parts)[y == 1])
    lead = np.where(terms.max(axis=1) > 0, terms.argmax(axis=1), -1)
    rows = []
    for j, part in enumerate(SCORE_PARTS):
        col = parts[:, j]
        rows.append({"part": part, "roc_auc": float(roc_auc_score(y, col)),
                     "average_precision": float(average_precision_score(y, col)),
                     "lead_share": float((lead == j).mean()) if len(lead) else float("nan"),
                     "constant": bool(np.ptp(col) == 0)})
    return rows


# ---------------------------------------------------------------------------------------------
# Every detector over seeds
# ---------------------------------------------------------------------------------------------


@dataclass
class QualityRun:
    """Per (seed, detector, target FPR) one row of metrics with fit and score seconds; per
    (seed, part) the hybrid's score parts' own metrics on the test window."""

    dataset: str
    rows: pd.DataFrame
    seeds: tuple[int, ...]
    target_fprs: tuple[float, ...]
    info: dict = field(default_factory=dict)
    parts: pd.DataFrame = field(default_factory=pd.DataFrame)
    campaigns: pd.DataFrame = field(default_factory=pd.DataFrame)  # per (seed, detector, campaign): AP

    def campaigns_summary(self) -> pd.DataFrame:
        """AP per (detector, campaign): mean and standard deviation over seeds, mean attack count."""
        if self.campaigns.empty:
            return pd.DataFrame()
        grouped = self.campaigns.groupby(["detector", "campaign"], sort=False)
        out = grouped["average_precision"].agg(["mean", "std"]).fillna(0.0)
        out["attacks"] = grouped["attacks"].mean()
        return out.reset_index()

    def summary(self) -> pd.DataFrame:
        """Mean and standard deviation over seeds per (detector, target FPR)."""
        cols = [*METRICS, *THRESHOLD_METRICS, "alerts_per_day", "fit_seconds", "score_seconds"]
        cols = [c for c in cols if c in self.rows]
        grouped = self.rows.groupby(["detector", "target_fpr"], sort=False)[cols]
        mean, std = grouped.mean(), grouped.std(ddof=0).fillna(0.0)
        out = mean.add_suffix("_mean").join(std.add_suffix("_std")).reset_index()
        out["seeds"] = grouped.size().to_numpy()
        return out

    def parts_summary(self) -> pd.DataFrame:
        """Mean and standard deviation over seeds per (detector, part); empty without parts."""
        if self.parts.empty:
            return pd.DataFrame()
        grouped = self.parts.groupby(["detector", "part"], sort=False)
        cols = ["roc_auc", "average_precision", "lead_share"]
        mean, std = grouped[cols].mean(), grouped[cols].std(ddof=0).fillna(0.0)
        out = mean.add_suffix("_mean").join(std.add_suffix("_std"))
        out["constant"] = grouped["constant"].all()
        out["seeds"] = grouped.size()
        return out.reset_index()

    def to_json(self) -> dict:
        """``{model: {roc_auc: {mean, std}, average_precision: {...}, at_fpr: {fpr: {tpr: {...}}},
        score_parts: {part: {roc_auc: {...}, ...}}}}``."""
        s = self.summary()
        ps = self.parts_summary()

        def ms(row: pd.Series, m: str) -> dict[str, float]:
            return {"mean": float(row[f"{m}_mean"]), "std": float(row[f"{m}_std"])}

        models: dict[str, dict] = {}
        for det, rows in s.groupby("detector", sort=False):
            first = rows.iloc[0]
            entry: dict[str, Any] = {m: ms(first, m) for m in METRICS}
            entry["seeds"] = int(first["seeds"])
            for m in ("fit_seconds", "score_seconds"):
                if f"{m}_mean" in first:
                    entry[m] = ms(first, m)
            entry["at_fpr"] = {f"{float(r['target_fpr']):g}": {m: ms(r, m) for m in THRESHOLD_METRICS}
                               for _, r in rows.iterrows()}
            if not ps.empty and det in set(ps["detector"]):
                entry["score_parts"] = {
                    str(r["part"]): {**{m: ms(r, m) for m in ("roc_auc", "average_precision", "lead_share")},
                                     "constant": bool(r["constant"])}
                    for _, r in ps[ps["detector"] == det].iterrows()}
            if det in PUBLISHED.get(self.dataset, {}):
                entry["published"] = PUBLISHED[self.dataset][det]
            models[str(det)] = entry
        cs = self.campaigns_summary()
        for _, r in cs.iterrows():
            models[str(r["detector"])].setdefault("campaigns", {})[str(r["campaign"])] = {
                "average_precision": {"mean": float(r["mean"]), "std": float(r["std"])},
                "attacks": float(r["attacks"])}
        return {"dataset": self.dataset, "seeds": list(self.seeds), "target_fprs": list(self.target_fprs),
                "info": self.info, "models": models}


def _data_counts(windows: GraphWindows) -> dict[str, int]:
    y = windows.labels[labelled_test_index(windows)]
    return {"events": int(len(windows.events)), "train_events": int(len(windows.split_index("train"))),
            "validation_events": int(len(windows.split_index("validation"))), "test_events": int(len(y)),
            "test_attacks": int(y.sum()), "buckets": int(windows.n_buckets)}


def run_quality(
    dataset: str,
    data: GraphWindows | QualityData,
    detectors: list[str],
    seeds: tuple[int, ...] = (0, 1, 2),
    target_fprs: tuple[float, ...] = DEFAULT_FPRS,
    epochs_per_stage: int | None = None,
    log: Log = print,
    part_detectors: tuple[str, ...] = (HYBRID,),
) -> QualityRun:
    """Fit and evaluate every named detector once per seed on the same split.

    ``data``: fixed windows, or a ``QualityData`` (per-seed data such as synthetic build their
    windows per seed, one set at a time). Rules run once on fixed data (deterministic) and once
    per seed on per-seed data. Combination variants of the hybrid (``COMBINATION_VARIANTS``) reuse
    the hybrid's model of the same seed when it is in the run. For ``part_detectors``, each score
    part's ROC-AUC / AP / lead share on the test window (``part_metrics``) goes to ``run.parts``.
    """
    source = data if isinstance(data, QualityData) else QualityData.from_windows(dataset, data)
    # The hybrid trains first so its combination variants can score its model.
    order = sorted(detectors, key=lambda d: d != HYBRID)
    rows: list[pd.DataFrame] = []
    part_rows: list[dict] = []
    campaign_rows: list[dict] = []
    first_seed_rows: dict[str, pd.DataFrame] = {}
    counts: dict[int, dict[str, int]] = {}
    started = time.perf_counter()
    for seed in seeds:
        t = time.perf_counter()
        windows = source.windows(seed)
        if source.per_seed or seed == seeds[0]:
            counts[seed] = _data_counts(windows)
            c = counts[seed]
            log(f"[{dataset} seed {seed}] data ready in {time.perf_counter() - t:.1f} s: {c['events']:,} events, "
                f"train {c['train_events']:,} / validation {c['validation_events']:,} / test {c['test_events']:,} "
                f"({c['test_attacks']:,} attacks)")
        trained: dict[str, tuple[HybridDetector, _PartsCache, float]] = {}
        campaigns = campaigns_of_test_window(windows)
        for name in order:
            if not source.per_seed and not _seeded(name) and seed != seeds[0]:
                rows.append(first_seed_rows[name].assign(seed=seed))  # deterministic on fixed data
                continue
            t = time.perf_counter()
            det: Any
            if name in COMBINATION_VARIANTS and HYBRID in trained:
                hybrid, cache, _ = trained[HYBRID]
                det = CachedHybrid(hybrid, cache, COMBINATION_VARIANTS[name], name=name)
                fit_s = 0.0  # the hybrid's model, not trained again
            else:
                det = make_detector(name, seed, epochs_per_stage)
                det.fit(windows, windows.split_index("train"))
                fit_s = time.perf_counter() - t
                if isinstance(det, HybridDetector):
                    cache = _PartsCache(det.model)
                    trained[name] = (det, cache, fit_s)
                    det = CachedHybrid(det, cache)
            t = time.perf_counter()
            report = evaluate_detectors(windows, [det], target_fprs)
            if name in part_detectors and isinstance(det, CachedHybrid):
                part_rows += [{"detector": name, "seed": seed, **r} for r in part_metrics(det, windows)]
            score_s = time.perf_counter() - t
            if campaigns is not None:
                campaign_rows += [{"detector": name, "seed": seed, **r}
                                  for r in campaign_metrics(det, windows, campaigns)]
            table = report.table.assign(seed=seed, fit_seconds=fit_s, score_seconds=score_s, dataset=dataset)
            rows.append(table)
            if seed == seeds[0]:
                first_seed_rows[name] = table
            first = table.iloc[0]
            at = table[np.isclose(table["target_fpr"], min(target_fprs))].iloc[0]
            log(f"[{dataset} seed {seed}] {name}: ROC-AUC {first['roc_auc']:.4f}, AP {first['average_precision']:.4f}, "
                f"TPR@{min(target_fprs):g} {at['tpr']:.3f}; fit {fit_s:.1f} s, score {score_s:.1f} s "
                f"({time.perf_counter() - started:.0f} s into {dataset})")
        del trained
    source.release()
    frame = pd.concat(rows, ignore_index=True)
    rank = {name: i for i, name in enumerate(detectors)}
    frame = frame.sort_values(["detector", "seed", "target_fpr"], key=lambda c: c.map(rank) if c.name == "detector"
                              else c, kind="stable").reset_index(drop=True)
    c0 = counts[seeds[0]]
    info: dict[str, Any] = {"events": c0["events"], "test_events": c0["test_events"],
                            "test_attacks": c0["test_attacks"], "snapshots": c0["buckets"],
                            "data_per_seed": source.per_seed}
    if source.per_seed:
        info["per_seed"] = {str(s): c for s, c in counts.items()}
    if source.subset:
        info["subset"] = source.subset
    if source.sources:
        info["source"] = next(iter(source.sources.values())) if not source.per_seed else {
            str(k): v for k, v in source.sources.items()}
    if epochs_per_stage is not None:
        info["epochs_per_stage"] = epochs_per_stage
    parts = pd.DataFrame(part_rows)
    return QualityRun(dataset, frame, tuple(seeds), tuple(target_fprs), info, parts, pd.DataFrame(campaign_rows))


# ---------------------------------------------------------------------------------------------
# Targets (the issue's bar, per dataset)
# ---------------------------------------------------------------------------------------------

TARGET_SEEDS = 3
DARPA_AUC_BAR, DARPA_STD_BAR = 0.985, 0.01
ZEEK_AUC_BAR = 0.90
LANL_AP_FACTOR = 1.5
SYNTHETIC_AP_FACTOR = 1.2
SYNTHETIC_TPR_FACTOR, SYNTHETIC_TPR_FPR = 4.0, 0.001


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else (float("inf") if a > 0 else float("nan"))


def _at_least(value: float, bar: float) -> bool:
    """``value >= bar`` up to float noise (a mean of three 0.3s is 0.30000000000000004)."""
    return bool(value >= bar - 1e-9 * max(1.0, abs(bar)))


def _ratio_text(ratio: float) -> str:
    if np.isinf(ratio):
        return "ratio unbounded (the reference is 0)"
    return f"ratio {ratio:.2f}" if np.isfinite(ratio) else "ratio undefined (both 0)"


def _ap_ratio_target(hyb: pd.Series, baselines: pd.DataFrame, factor: float, bar: str, who: str) -> dict:
    """The target "hybrid AP >= ``factor`` x the best baseline's AP" as a report line."""
    ap = float(hyb["average_precision_mean"])
    best = str(baselines["average_precision_mean"].idxmax())
    base = float(baselines.loc[best, "average_precision_mean"])
    ratio = _ratio(ap, base)
    return {"target": f"hybrid AP >= {factor} x {bar}", "value": ap, "best_baseline": best, "baseline": base,
            "ratio": ratio, "met": _at_least(ap, factor * base) and ap > 0,
            "detail": f"hybrid AP {ap:.4f} vs {who} ({best}) {base:.4f}: {_ratio_text(ratio)} (target >= {factor})"}


def check_targets(run: QualityRun) -> list[dict[str, Any]]:
    """The issue's bars on one dataset's run (means over seeds), each with its numbers and
    ``met``; unknown datasets have none.

    * darpa98: hybrid ROC-AUC >= 0.985, its std over seeds <= 0.01, over 3 seeds;
    * zeek008: hybrid ROC-AUC >= 0.90;
    * lanl_style: hybrid AP >= 1.5 x the best baseline's;
    * synthetic: hybrid AP >= 1.2 x every other detector's (the hybrid's own combination variants
      aside), and hybrid TPR at 0.1 % FPR >= 4 x the best single rule's.
    """
    s = run.summary()
    first = s.groupby("detector", sort=False).head(1).set_index("detector")
    n_seeds = len(run.seeds)
    out: list[dict[str, Any]] = []
    if HYBRID not in first.index:
        return [{"target": "hybrid_gnn_lstm in the run", "met": False, "detail": "the hybrid was not run"}] if (
            run.dataset in DATASETS) else []
    hyb = first.loc[HYBRID]
    baselines = first.drop(index=[d for d in first.index if _hybrid_family(d)])
    seeds_note = "" if n_seeds >= TARGET_SEEDS else f"; only {n_seeds} seed(s) run, the bar asks for {TARGET_SEEDS}"
    if run.dataset == "darpa98":
        auc, std = float(hyb["roc_auc_mean"]), float(hyb["roc_auc_std"])
        met = _at_least(auc, DARPA_AUC_BAR) and _at_least(DARPA_STD_BAR, std) and n_seeds >= TARGET_SEEDS
        out.append({"target": f"hybrid ROC-AUC >= {DARPA_AUC_BAR} (mean over {TARGET_SEEDS} seeds), std <= "
                              f"{DARPA_STD_BAR}", "value": auc, "std": std, "seeds": n_seeds, "met": bool(met),
                    "detail": f"hybrid ROC-AUC {auc:.4f} ± {std:.4f} over {n_seeds} seed(s) (target mean >= "
                              f"{DARPA_AUC_BAR}, std <= {DARPA_STD_BAR}){seeds_note}"})
    elif run.dataset == "zeek008":
        auc, std = float(hyb["roc_auc_mean"]), float(hyb["roc_auc_std"])
        out.append({"target": f"hybrid ROC-AUC >= {ZEEK_AUC_BAR}", "value": auc, "std": std, "seeds": n_seeds,
                    "met": _at_least(auc, ZEEK_AUC_BAR),
                    "detail": f"hybrid ROC-AUC {auc:.4f} ± {std:.4f} over {n_seeds} seed(s) (target >= {ZEEK_AUC_BAR})"})
    elif run.dataset == "lanl_style":
        if len(baselines):
            out.append(_ap_ratio_target(hyb, baselines, LANL_AP_FACTOR, "best baseline AP", "best baseline"))
    elif run.dataset == "synthetic":
        if len(baselines):
            out.append(_ap_ratio_target(hyb, baselines, SYNTHETIC_AP_FACTOR, "every other detector's",
                                        "the best other detector"))
        at = s[np.isclose(s["target_fpr"], SYNTHETIC_TPR_FPR)].set_index("detector")
        rules = [d for d in at.index if d.startswith("rule_")] or [d for d in at.index if d == "heuristic_rules"]
        if HYBRID in at.index and rules:
            best = max(rules, key=lambda d: at.loc[d, "tpr_mean"])
            r_tpr, tpr = float(at.loc[best, "tpr_mean"]), float(at.loc[HYBRID, "tpr_mean"])
            ratio = _ratio(tpr, r_tpr)
            out.append({"target": f"hybrid TPR at {SYNTHETIC_TPR_FPR:g} FPR >= {SYNTHETIC_TPR_FACTOR:g} x the best "
                                  "single rule's", "fpr": SYNTHETIC_TPR_FPR, "value": tpr, "best_rule": best,
                        "rule_tpr": r_tpr, "ratio": ratio, "met": _at_least(tpr, SYNTHETIC_TPR_FACTOR * r_tpr) and tpr > 0,
                        "detail": f"hybrid TPR at {SYNTHETIC_TPR_FPR:g} FPR {tpr:.3f} vs the best single rule "
                                  f"({best}) {r_tpr:.3f}: {_ratio_text(ratio)} (target >= {SYNTHETIC_TPR_FACTOR:g})"})
        elif HYBRID in at.index:
            out.append({"target": f"hybrid TPR at {SYNTHETIC_TPR_FPR:g} FPR >= {SYNTHETIC_TPR_FACTOR:g} x the best "
                                  "single rule's", "met": False,
                        "detail": f"no rule (or no {SYNTHETIC_TPR_FPR:g} FPR) in the run to compare with"})
    return out


def targets_markdown(dataset: str, targets: list[dict[str, Any]]) -> str:
    if not isinstance(targets, list):  # results.json of an older version of bench_quality.py (--merge)
        return f"- {dataset}: targets in an older format; rerun this dataset for the current bar"
    return "\n".join(f"- {dataset}: {t['detail']}: **{'met' if t['met'] else 'missed'}**" for t in targets)


# ---------------------------------------------------------------------------------------------
# Ablations
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ablation:
    """One ablation: the claimed variant against the alternative.

    ``better`` / ``worse`` override the defaults: ``{"model": {...}}`` (``HybridConfig``),
    ``{"window": {...}}`` (``WindowConfig``), ``{"train": {...}}`` (``TrainConfig``) or
    ``{"score": {"combination": ...}}`` (how the trained model's parts are combined: variants that
    differ only there share one trained model, scored both ways).
    """

    name: str
    claim: str  # the paper's claimed change, as written in the issue; "ours" for our own components
    better: dict
    worse: dict


OURS = "ours"
FULL: dict = {}
ABLATIONS: tuple[Ablation, ...] = (
    Ablation("attention vs plain GCN", "+25%", FULL, {"model": {"attention": False}}),
    Ablation("3 hops vs 1 hop", "+15%", {"model": {"hops": 3}}, {"model": {"hops": 1}}),
    Ablation("heterogeneous vs homogeneous", "+30%", FULL, {"model": {"heterogeneous": False}}),
    Ablation("bidirectional vs unidirectional", "+20%", FULL, {"model": {"bidirectional": False}}),
    Ablation("multi-scale vs single-scale", "+18%", FULL, {"model": {"multi_scale": False}}),
    Ablation("late vs early fusion", "+12%", FULL, {"model": {"fusion": "early"}}),
    Ablation("cross-attention vs concatenation", "+22%", FULL, {"model": {"fusion": "concat"}}),
    Ablation("joint vs sequential training", "+8%", FULL, {"train": {"joint": False}}),
    # Window sizes: the paper finds 24 h windows best; ours against 2 h (default) and 6 h windows.
    Ablation("24 h vs 2 h windows", "24 h best", {"window": {"stride_hours": 12.0, "window_hours": 24.0,
                                                             "history": 4, "coarse_stride_hours": None}},
             {"window": {"coarse_stride_hours": None}}),
    Ablation("24 h vs 6 h windows", "24 h best", {"window": {"stride_hours": 12.0, "window_hours": 24.0,
                                                             "history": 4, "coarse_stride_hours": None}},
             {"window": {"stride_hours": 3.0, "window_hours": 6.0, "coarse_stride_hours": None}}),
    # Our own components (no paper claim): the rate head against the filtered mean alone as the
    # expected count, and Fisher's combination of the parts against the sum of their tail CDFs.
    Ablation("rate head vs filtered mean only", OURS, FULL, {"model": {"rate_head": False}}),
    Ablation("Fisher vs tail_sum combination", OURS, FULL, {"score": {"combination": "tail_sum"}}),
)


def ablation_names() -> list[str]:
    return [a.name for a in ABLATIONS]


def _variant_key(overrides: dict) -> str:
    return json.dumps(overrides, sort_keys=True)


def _training_overrides(overrides: dict) -> dict:
    """What has to be trained: everything but the score combination."""
    return {k: v for k, v in overrides.items() if k != "score" and v}


def _combination(overrides: dict) -> str:
    return overrides.get("score", {}).get("combination", "fisher")


def run_ablation(
    dataset: str,
    events: pd.DataFrame | Callable[[int], pd.DataFrame] | QualityData,
    base_window: WindowConfig | None = None,
    ablations: tuple[Ablation, ...] = ABLATIONS,
    seeds: tuple[int, ...] = (0, 1, 2),
    target_fpr: float = 0.01,
    epochs_per_stage: int | None = None,
    log: Log = print,
    note: str = "",
) -> pd.DataFrame:
    """Train every distinct variant once per seed (shared variants, e.g. the full model, are trained
    once; variants differing only in the score combination share one trained model, scored each
    way), then one row per ablation: metric means and spreads of both variants and the relative
    change, next to the paper's claim.

    ``events``: a fixed event table, a function of the seed (per-seed data), or a ``QualityData``
    (its events and, when ``base_window`` is None, its window config). Windows are built once per
    window configuration (per seed for per-seed data) and dropped before the next, so only one set
    is in memory.
    """
    if isinstance(events, QualityData):
        source = events
    elif callable(events):
        fn = events
        source = QualityData(dataset, True, lambda seed: (fn(seed), base_window or WindowConfig(), {}))
    else:
        fixed = events
        source = QualityData(dataset, False, lambda seed: (fixed, base_window or WindowConfig(), {}))
    # Distinct trainings, grouped by window configuration; each with the combinations to score.
    groups: dict[str, dict[str, dict]] = {}
    combos: dict[str, set[str]] = {}
    for ab in ablations:
        for side in (ab.better, ab.worse):
            train_over = _training_overrides(side)
            wkey, tkey = _variant_key(train_over.get("window", {})), _variant_key(train_over)
            groups.setdefault(wkey, {})[tkey] = train_over
            combos.setdefault(tkey, set()).add(_combination(side))
    n_trainings = sum(len(g) for g in groups.values()) * len(seeds)
    # Per-seed data: seed outer (each seed's events generated once); fixed data: window
    # configuration outer (each set of windows built once). Either way one set of windows at a time.
    plan = ([(seed, wkey) for seed in seeds for wkey in groups] if source.per_seed
            else [(seed, wkey) for wkey in groups for seed in seeds])
    results: dict[tuple[str, str], list[dict]] = {}
    done, started, n_events = 0, time.perf_counter(), 0
    windows, built_for = None, None
    for seed, wkey in plan:
        tkeys = groups[wkey]
        window_over = next(iter(tkeys.values())).get("window", {})
        if built_for != (seed if source.per_seed else None, wkey):
            windows = None
            ev, config = source.events(seed)
            window = replace(base_window or config, **window_over)
            t = time.perf_counter()
            windows = check_windows(build_graph_windows(ev, window),
                                    dataset + (f" ({source.subset})" if source.subset else ""))
            built_for = (seed if source.per_seed else None, wkey)
            n_events = max(n_events, len(ev))
            log(f"[{dataset} seed {seed}] windows ({_describe_window(window_over)}): {windows.n_buckets} buckets, "
                f"{len(windows.events):,} events, built in {time.perf_counter() - t:.1f} s")
        for tkey, over in tkeys.items():
            train = replace(_train_config(seed, epochs_per_stage), **over.get("train", {}))
            det = HybridDetector(HybridConfig(**over.get("model", {})), train)
            t = time.perf_counter()
            det.fit(windows)
            fit_s = time.perf_counter() - t
            cache = _PartsCache(det.model)
            views = [CachedHybrid(det, cache, c, name=c) for c in sorted(combos[tkey])]
            t = time.perf_counter()
            table = evaluate_detectors(windows, views, (target_fpr,)).table
            score_s = time.perf_counter() - t
            done += 1
            for view in views:
                r = table[table["detector"] == view.name].iloc[0]
                results.setdefault((tkey, view.name), []).append(
                    {"seed": seed, "roc_auc": r["roc_auc"], "average_precision": r["average_precision"],
                     "tpr": r["tpr"], "f1": r["f1"], "fit_seconds": fit_s, "score_seconds": score_s})
                log(f"[{dataset} seed {seed}] [{done}/{n_trainings}] {_describe(over)}"
                    f"{'' if view.name == 'fisher' else f', scored {view.name}'}: AP {r['average_precision']:.4f}, "
                    f"ROC-AUC {r['roc_auc']:.4f}, TPR {r['tpr']:.3f}; fit {fit_s:.1f} s, score {score_s:.1f} s "
                    f"({time.perf_counter() - started:.0f} s in)")
            del det, cache, views
    del windows
    source.release()
    out = []
    for ab in ablations:
        b = pd.DataFrame(results[(_variant_key(_training_overrides(ab.better)), _combination(ab.better))])
        w = pd.DataFrame(results[(_variant_key(_training_overrides(ab.worse)), _combination(ab.worse))])
        row: dict[str, Any] = {"ablation": ab.name, "paper_claim": ab.claim,
                               "claimed_better": _describe(ab.better), "alternative": _describe(ab.worse)}
        for m in ("average_precision", "roc_auc", "tpr"):
            row[f"{m}_better_mean"] = float(b[m].mean())
            row[f"{m}_better_std"] = float(b[m].std(ddof=0))
            row[f"{m}_alternative_mean"] = float(w[m].mean())
            row[f"{m}_alternative_std"] = float(w[m].std(ddof=0))
            base = float(w[m].mean())
            row[f"{m}_change_pct"] = 100.0 * (float(b[m].mean()) - base) / base if base > 0 else float("nan")
        row["fit_seconds_better"] = float(b["fit_seconds"].mean())
        row["fit_seconds_alternative"] = float(w["fit_seconds"].mean())
        out.append(row)
    table = pd.DataFrame(out)
    table.attrs.update({"dataset": dataset, "seeds": list(seeds), "target_fpr": target_fpr, "events": int(n_events),
                        "data_per_seed": source.per_seed, "subset": source.subset,
                        "epochs_per_stage": epochs_per_stage, "note": note,
                        "seconds": round(time.perf_counter() - started, 1)})
    return table


def _describe_window(window_over: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in window_over.items()) or "protocol default"


def _describe(overrides: dict) -> str:
    parts = [f"{k}={v}" for section in ("model", "window", "train", "score") for k, v in overrides.get(section, {}).items()]
    return ", ".join(parts) or "full model (defaults)"


# ---------------------------------------------------------------------------------------------
# Wall time and peak memory per dataset
# ---------------------------------------------------------------------------------------------


def _proc_status_gb(key: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / (1 << 20)  # kB -> GiB
    except (OSError, ValueError, IndexError):
        pass
    return None


def process_peak_rss_gb() -> float:
    """This process's peak resident memory since it started, GiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20)


class Measured:
    """Wall time and peak resident memory of a stretch of work (``with Measured() as m: ...``).

    On Linux the process's high-water mark is reset at the start (``/proc/self/clear_refs``), so
    ``peak_gb`` is the peak during the stretch, memory the process already held (``start_gb``)
    included; elsewhere it is the process's peak so far (``since_start`` False).
    """

    def __enter__(self) -> Measured:
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.since_start = _proc_status_gb("VmHWM") is not None
        except OSError:
            self.since_start = False
        self.start_gb = _proc_status_gb("VmRSS") or 0.0
        self._t = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._t
        hwm = _proc_status_gb("VmHWM") if self.since_start else None
        self.peak_gb = hwm if hwm is not None else process_peak_rss_gb()

    def as_dict(self) -> dict[str, Any]:
        return {"seconds": round(self.seconds, 1), "peak_rss_gb": round(self.peak_gb, 2),
                "rss_at_start_gb": round(self.start_gb, 2), "peak_is_since_start": self.since_start}


# ---------------------------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------------------------


def _pm(mean: float, std: float, digits: int = 4) -> str:
    if mean is None or not np.isfinite(mean):
        return "n/a"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _data_line(run: QualityRun) -> str:
    info = run.info
    seeds = ", ".join(map(str, run.seeds))
    if info.get("per_seed"):
        per = [info["per_seed"][str(s)] for s in run.seeds if str(s) in info["per_seed"]]
        def joined(key: str) -> str:
            return " / ".join(f"{c[key]:,}" for c in per)

        text = (f"{len(per)} data sets, seed s generating the data and seeding every detector (seeds {seeds}): "
                f"{joined('events')} events; test windows {joined('test_events')} events of which "
                f"{joined('test_attacks')} attacks (mean ± standard deviation over the seeds, across data sets "
                "and models).")
    else:
        text = (f"{info.get('events', 0):,} events; test window {info.get('test_events', 0):,} events of which "
                f"{info.get('test_attacks', 0):,} attacks; seeds {seeds} (mean ± standard deviation over seeds; the "
                "data fixed; rules are deterministic).")
    source = info.get("source")
    if isinstance(source, dict) and "split" in source:
        text += f" Split: {source['split']}."
    if info.get("subset"):
        text += f" **Subset: {info['subset']}** (not the protocol's full size)."
    if info.get("epochs_per_stage") is not None:
        text += f" **{info['epochs_per_stage']} epoch(s) per curriculum stage** (not the default)."
    if "seconds" in info:
        text += f" Wall time {info['seconds']:,.0f} s, peak memory {info.get('peak_rss_gb', 'n/a')} GB."
    return text


def quality_markdown(run: QualityRun) -> str:
    """One section per dataset: ranking metrics and, per target FPR, the threshold metrics; then
    the hybrid's score parts on the test window."""
    s = run.summary()
    lines = [f"### {run.dataset}", "", _data_line(run), ""]
    published = PUBLISHED.get(run.dataset, {})
    head = "| model | ROC-AUC | AP | " + " | ".join(
        f"TPR @ {f:g} FPR | FPR @ {f:g} | precision @ {f:g} | F1 @ {f:g}" for f in run.target_fprs
    ) + " | fit s | score s | published ROC-AUC |"
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for det, rows in s.groupby("detector", sort=False):
        first = rows.iloc[0]
        cells = [str(det), _pm(first["roc_auc_mean"], first["roc_auc_std"]),
                 _pm(first["average_precision_mean"], first["average_precision_std"])]
        for f in run.target_fprs:
            r = rows[np.isclose(rows["target_fpr"], f)].iloc[0]
            cells += [_pm(r[f"{m}_mean"], r[f"{m}_std"], 3) for m in ("tpr", "fpr", "precision", "f1")]
        cells.append(f"{first['fit_seconds_mean']:.1f}")
        cells.append(f"{first['score_seconds_mean']:.1f}" if "score_seconds_mean" in first else "")
        pub = published.get(str(det))
        cells.append(f"{pub['roc_auc']} ({pub['source']})" if pub else "")
        lines.append("| " + " | ".join(cells) + " |")
    for det, pub in published.items():
        if det not in set(s["detector"]):
            lines.append(f"| {det} (not run here) | | | " + " | " * (4 * len(run.target_fprs)) +
                         f" | | {pub['roc_auc']} ({pub['source']}) |")
    ps = run.parts_summary()
    for det, rows in (ps.groupby("detector", sort=False) if not ps.empty else []):
        lines += ["", f"{det} score parts on the test window: each part's own value as a score (ROC-AUC, AP), "
                  "and the share of test attacks whose largest Fisher term (-log of the part's calibrated tail "
                  "probability) is this part's.", "",
                  "| part | ROC-AUC | AP | leads on attacks |", "|---|---|---|---|"]
        for _, r in rows.iterrows():
            note = " (constant: off)" if r["constant"] else ""
            lines.append(f"| {r['part']}{note} | {_pm(r['roc_auc_mean'], r['roc_auc_std'])} | "
                         f"{_pm(r['average_precision_mean'], r['average_precision_std'])} | "
                         f"{_pm(r['lead_share_mean'], r['lead_share_std'], 3)} |")
    cs = run.campaigns_summary()
    if not cs.empty:
        names = list(dict.fromkeys(cs["campaign"]))
        attacks = cs.groupby("campaign", sort=False)["attacks"].first()
        lines += ["", "Per campaign: AP of each model's score with that campaign's test attacks against every "
                  "benign test event (mean attacks per seed in brackets): which attacks a model finds, and "
                  "which it leaves to chance (AP near the attack share).", "",
                  "| model | " + " | ".join(f"{c} ({attacks[c]:.0f})" for c in names) + " |",
                  "|---|" + "---|" * len(names)]
        for det, rows in cs.groupby("detector", sort=False):
            by = rows.set_index("campaign")
            lines.append(f"| {det} | " + " | ".join(
                _pm(by.loc[c, "mean"], by.loc[c, "std"], 3) if c in by.index else "" for c in names) + " |")
    return "\n".join(lines)


def ablation_markdown(table: pd.DataFrame) -> str:
    a = table.attrs
    if a.get("data_per_seed"):
        data = f"Dataset {a.get('dataset')} (data generated per seed, up to {a.get('events', 0):,} events each)"
    else:
        data = f"Dataset {a.get('dataset')} ({a.get('events', 0):,} events)"
    lines = [f"{data}, seeds {a.get('seeds')}; metrics on the test window, TPR at {a.get('target_fpr')} FPR with "
             "the threshold from validation scores. Change = (claimed-better − alternative) / alternative, on the "
             "means. Paper claim \"ours\": our own component, no claim in the paper."]
    if a.get("subset"):
        lines[0] += f" **Subset: {a['subset']}.**"
    if a.get("epochs_per_stage") is not None:
        lines[0] += f" **{a['epochs_per_stage']} epoch(s) per curriculum stage** (default: 2)."
    if a.get("note"):
        lines[0] += f" {a['note']}"
    if a.get("seconds") is not None:
        lines[0] += f" Ran in {a['seconds']:,.0f} s."
    lines += ["", "| ablation | paper claims | ours: AP change | AP claimed-better | AP alternative | ROC-AUC change "
              "| ROC-AUC claimed-better | ROC-AUC alternative | TPR change | variants |",
              "|---|---|---|---|---|---|---|---|---|---|"]

    def pct(r: pd.Series, m: str) -> str:
        v = r[f"{m}_change_pct"]
        return f"{v:+.1f}%" if np.isfinite(v) else "n/a"

    for _, r in table.iterrows():
        lines.append(
            f"| {r['ablation']} | {r['paper_claim']} | {pct(r, 'average_precision')} | "
            f"{_pm(r['average_precision_better_mean'], r['average_precision_better_std'])} | "
            f"{_pm(r['average_precision_alternative_mean'], r['average_precision_alternative_std'])} | "
            f"{pct(r, 'roc_auc')} | {_pm(r['roc_auc_better_mean'], r['roc_auc_better_std'])} | "
            f"{_pm(r['roc_auc_alternative_mean'], r['roc_auc_alternative_std'])} | {pct(r, 'tpr')} | "
            f"{r['claimed_better']} vs {r['alternative']} |"
        )
    return "\n".join(lines)


def _finite(value: Any) -> Any:
    """``value`` with every NaN / infinite float as None (strict JSON), recursively."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def write_json(path: str | Path, payload: dict) -> Path:
    """``payload`` as strict JSON (NaN and infinities as null)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite(payload), indent=2, allow_nan=False, default=str) + "\n")
    return path


# ---------------------------------------------------------------------------------------------
# One dataset end to end, optionally in its own process (what the benchmark scripts call)
# ---------------------------------------------------------------------------------------------


def timestamped(line: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)


def quality_report(dataset: str, options: DataOptions | None = None, seeds: tuple[int, ...] = (0, 1, 2),
                   detectors: list[str] | None = None, target_fprs: tuple[float, ...] = DEFAULT_FPRS,
                   epochs_per_stage: int | None = None, log: Log | None = None) -> dict[str, Any]:
    """``bench_quality.py``'s work on one dataset: every detector it supports (or those of
    ``detectors`` it supports: rules need authentication or process events), over ``seeds``;
    returns ``QualityRun.to_json()`` plus ``targets``, ``markdown`` and ``measured`` (wall time and
    peak memory of the whole dataset, loading included). ValueError when the data are missing or
    too small to split."""
    log = log or timestamped
    with Measured() as measured:
        data = quality_data(dataset, options, log)
        supported = default_detectors(data.windows(seeds[0]).events)
        chosen = supported if detectors is None else [d for d in detectors if d in supported or not _is_rule(d)]
        log(f"{dataset}: detectors {', '.join(chosen)}")
        run = run_quality(dataset, data, chosen, seeds, target_fprs, epochs_per_stage, log)
        del data
    run.info.update(measured.as_dict())
    log(f"== {dataset} done in {measured.seconds:.0f} s, peak memory {measured.peak_gb:.2f} GB")
    return {**run.to_json(), "targets": check_targets(run), "markdown": quality_markdown(run),
            "measured": measured.as_dict()}


def ablation_report(dataset: str, options: DataOptions | None = None, ablations: list[str] | None = None,
                    seeds: tuple[int, ...] = (0, 1, 2), epochs_per_stage: int | None = None, note: str = "",
                    log: Log | None = None) -> dict[str, Any]:
    """``ablation.py``'s work on one dataset: the named ablations (None: all) over ``seeds``;
    returns the table's attributes, ``rows``, ``markdown`` and ``measured``."""
    log = log or timestamped
    chosen = tuple(a for a in ABLATIONS if ablations is None or a.name in ablations)
    with Measured() as measured:
        table = run_ablation(dataset, quality_data(dataset, options, log), None, chosen, seeds,
                             epochs_per_stage=epochs_per_stage, log=log, note=note)
    log(f"== {dataset} done in {measured.seconds:.0f} s, peak memory {measured.peak_gb:.2f} GB")
    table.attrs["seconds"] = round(measured.seconds, 1)  # loading the data included
    return {**table.attrs, "peak_rss_gb": round(measured.peak_gb, 2), "measured": measured.as_dict(),
            "markdown": ablation_markdown(table), "rows": table.to_dict("records")}


def run_isolated(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` in a fresh Python process (spawned), so that its peak memory is its
    own and not what an earlier dataset left allocated in this one; exceptions come back as raised."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args, **kwargs).result()
