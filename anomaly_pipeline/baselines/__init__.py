"""Baseline detectors behind the same interface as the hybrid model (``detectors.Detector``).

* ``HeuristicRulesDetector``: first-seen logon, rare process, fan-out and failure-burst rules
  (each also usable alone), as a security team writes them.
* ``OneClassSVMDetector``: One-Class SVM on the standardised per-event features.
* ``MidasDetector``: MIDAS, MIDAS-R and MIDAS-F (Bhatia et al.) on the stream of scored edges;
  ``midas_scores`` is the underlying edge-stream function.

Isolation Forest lives in ``anomaly_pipeline.detectors``.
"""

from anomaly_pipeline.baselines.midas import (
    VARIANTS,
    CountMinSketch,
    EdgeStream,
    MidasDetector,
    midas_scores,
    read_darpa_edges,
)
from anomaly_pipeline.baselines.one_class_svm import OneClassSVMDetector
from anomaly_pipeline.baselines.rules import (
    RULES,
    HeuristicRulesDetector,
    distinct_destinations,
    failure_burst,
    fan_out,
    first_seen_logon,
    rare_process,
    recent_failures,
)

__all__ = [
    "RULES",
    "VARIANTS",
    "CountMinSketch",
    "EdgeStream",
    "HeuristicRulesDetector",
    "MidasDetector",
    "OneClassSVMDetector",
    "distinct_destinations",
    "failure_burst",
    "fan_out",
    "first_seen_logon",
    "midas_scores",
    "rare_process",
    "read_darpa_edges",
    "recent_failures",
]
