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
    # One intra-op thread: multi-threaded scatter sums in message passing add in varying order, and
    # 40 steps per epoch grow those last-bit differences past the tolerance; resume itself is exact.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _train_kill_resume(small_windows, tmp_path)
    finally:
        torch.set_num_threads(threads)


def _train_kill_resume(small_windows, tmp_path):
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


def test_supervised_head_joins_the_score_only_when_trained(small_windows):
    from anomaly_pipeline.training import score_components

    cfg = TrainConfig(stages=(CurriculumStage("one", epochs=1),), max_events_per_chunk=512, chunk_buckets=24)
    unsupervised, _ = train_hybrid(small_windows, MODEL, cfg)
    supervised, _ = train_hybrid(small_windows, MODEL, TrainConfig(**{**cfg.__dict__, "supervised_weight": 1.0}))
    idx = small_windows.split_index("test")
    assert np.allclose(score_components(unsupervised, small_windows, idx)[:, -1], 0.0)
    part = score_components(supervised, small_windows, idx)[:, -1]
    assert (part > 0).all() and np.isfinite(part).all()


def test_sequential_training_freezes_one_path_per_phase():
    from anomaly_pipeline.models.hybrid import HybridGNNLSTM
    from anomaly_pipeline.training import _set_trainable

    model = HybridGNNLSTM(MODEL)
    _set_trainable(model, joint=False, stage_index=0)
    assert all(p.requires_grad for n, p in model.named_parameters() if n.startswith("spatial."))
    assert not any(p.requires_grad for n, p in model.named_parameters() if n.startswith("temporal."))
    _set_trainable(model, joint=False, stage_index=1)
    assert not any(p.requires_grad for n, p in model.named_parameters() if n.startswith("spatial."))
    assert all(p.requires_grad for n, p in model.named_parameters() if n.startswith(("temporal.", "fusion.")))
    _set_trainable(model, joint=True, stage_index=1)
    assert all(p.requires_grad for p in model.parameters())
