"""CUDA paths: training with bfloat16 autocast and scoring on the GPU. Skipped without a GPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anomaly_pipeline.models.hybrid import HybridConfig
from anomaly_pipeline.training import CurriculumStage, TrainConfig, score_events, train_hybrid

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_training_and_scoring_on_cuda_with_mixed_precision(small_windows):
    cfg = TrainConfig(stages=(CurriculumStage("one", epochs=1),), device="cuda")
    model, history = train_hybrid(small_windows, HybridConfig(hidden=16), cfg)
    assert next(model.parameters()).is_cuda
    assert np.isfinite(history[0].train_loss)
    scores = score_events(model, small_windows, small_windows.split_index("test"))
    assert np.isfinite(scores).all()
