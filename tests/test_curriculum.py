"""Curriculum stages, hard negatives, and resuming a killed training from its checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anomaly_pipeline.models.hybrid import HybridConfig
from anomaly_pipeline.training import CurriculumStage, NegativeSampler, TrainConfig, train_hybrid

STAGES = (
    CurriculumStage("short_random", epochs=1, negatives="random", history=2),
    CurriculumStage("hard", epochs=2, negatives="hard", adversarial_eps=0.05),
)
CONFIG = TrainConfig(stages=STAGES, seed=4, max_events_per_chunk=512, chunk_buckets=24)
MODEL = HybridConfig(hidden=8, decoder_hidden=16)


class Killed(Exception):
    pass


def test_stages_run_in_order_and_are_named_in_the_history(small_windows):
    _, history = train_hybrid(small_windows, MODEL, CONFIG)
    assert [(h.stage, h.stage_epoch) for h in history] == [("short_random", 1), ("hard", 1), ("hard", 2)]
    assert [h.epoch for h in history] == [1, 2, 3]


def test_hard_negatives_favour_popular_destinations(small_windows):
    sampler = NegativeSampler(small_windows, np.random.default_rng(0))
    idx = small_windows.split_index("train")[:5000]
    degree = np.bincount(small_windows.event_dst, minlength=small_windows.n_nodes)
    easy, _ = sampler.corrupt_destination(idx, hard=False)
    hard, hard_x = sampler.corrupt_destination(idx, hard=True)
    assert degree[hard].mean() > 3 * degree[easy].mean()
    types = small_windows.nodes["node_type"].to_numpy()
    assert (types[hard] == types[small_windows.event_dst[idx]]).all()
    assert hard_x.shape == (len(idx), small_windows.event_x.shape[1])


def test_killed_training_resumes_from_the_last_checkpoint(small_windows, tmp_path):
    full_model, full_history = train_hybrid(small_windows, MODEL, CONFIG, checkpoint_dir=tmp_path / "full")

    seen = []

    def kill_after_two_epochs(stats):
        seen.append(stats.epoch)
        if stats.epoch == 2:
            raise Killed

    with pytest.raises(Killed):
        train_hybrid(small_windows, MODEL, CONFIG, on_epoch=kill_after_two_epochs, checkpoint_dir=tmp_path / "run")
    assert (tmp_path / "run" / "checkpoint.pt").exists()

    resumed_epochs = []
    model, history = train_hybrid(
        small_windows, MODEL, CONFIG, on_epoch=lambda s: resumed_epochs.append(s.epoch), checkpoint_dir=tmp_path / "run"
    )
    assert resumed_epochs == [3]  # only the epoch that had not run yet
    assert [h.train_loss for h in history] == pytest.approx([h.train_loss for h in full_history], rel=1e-5)
    for name, value in full_model.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], value, msg=name)


def test_invalid_stage_is_refused():
    with pytest.raises(ValueError, match="negatives must be random, hard or mixed"):
        CurriculumStage("x", epochs=1, negatives="adversarial")
