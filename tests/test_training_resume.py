"""A training killed with ``kill -9`` resumes from its last epoch checkpoint (issue 13, Runs).

The hybrid_model asset on a real Dagster instance and state folder: a subprocess trains and is
killed once a checkpoint exists; a rerun with ``resume`` starts at the next epoch and says so; a
checkpoint of another training is never used.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
import torch

from anomaly_pipeline import settings
from anomaly_pipeline.training import checkpoint_epochs, train_hybrid
from assets.resources import StateResource
from assets.runner import dagster_instance
from assets.training import CHECKPOINTS, _checkpoint_for

REPO = Path(__file__).resolve().parent.parent
EPOCHS = 4
TRAINING = {
    "hidden": 8, "chunk_buckets": 24, "max_events_per_chunk": 512, "min_steps_per_epoch": 2, "patience": 10,
    "curriculum": [{"name": "short", "epochs": EPOCHS, "negatives": "random", "history": 2, "multi_scale": False}],
}

# Materializes hybrid_model alone; graph_windows is read from the state folder, as in the UI.
TRAIN = """
import json, sys
import dagster as dg
from anomaly_pipeline import settings
from assets.runner import dagster_instance
from assets.training import hybrid_model
from definitions import local_resources

home, config = sys.argv[1], json.loads(sys.argv[2])
resources = local_resources(home)
dg.materialize([dg.SourceAsset("graph_windows"), hybrid_model], resources=resources,
               instance=dagster_instance(settings.state_paths(home)), run_config={"ops": {"hybrid_model": {"config": config}}})
"""


def _materialize(home: Path, config: dict) -> dg.ExecuteInProcessResult:
    from assets.training import hybrid_model
    from definitions import local_resources

    return dg.materialize([dg.SourceAsset("graph_windows"), hybrid_model], resources=local_resources(str(home)),
                          instance=dagster_instance(settings.state_paths(home)),
                          run_config={"ops": {"hybrid_model": {"config": config}}})


def test_a_killed_training_resumes_at_the_next_epoch(small_windows, tmp_path: Path):
    home = tmp_path / "home"
    paths = settings.state_paths(home).ensure()
    with (paths.data_dir / "graph_windows.pickle").open("wb") as fh:  # as the IO manager stores it
        pickle.dump(small_windows, fh, protocol=pickle.HIGHEST_PROTOCOL)

    proc = subprocess.Popen([sys.executable, "-c", TRAIN, str(home), json.dumps(TRAINING)], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL,
                            stderr=(tmp_path / "train.log").open("w"))
    deadline = time.monotonic() + 300
    while not list(paths.checkpoints_dir.glob(f"{CHECKPOINTS}/*/checkpoint.pt")):
        assert proc.poll() is None, (tmp_path / "train.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    (folder,) = [p.parent for p in paths.checkpoints_dir.glob(f"{CHECKPOINTS}/*/checkpoint.pt")]
    done = checkpoint_epochs(folder)
    assert 1 <= done < EPOCHS

    # A checkpoint of another training is never used: not counted, and refused if handed over.
    other = "0" * 64
    assert checkpoint_epochs(folder, other) is None
    with pytest.raises(ValueError, match="belongs to another training"):
        train_hybrid(small_windows, checkpoint_dir=folder, fingerprint=other)
    # Without resume the unfinished training is discarded, and the log says how to keep it.
    copy = tmp_path / "copy"
    shutil.copytree(home / "checkpoints", copy / "checkpoints")
    fingerprint = torch.load(folder / "checkpoint.pt", map_location="cpu", weights_only=True)["fingerprint"]
    assert fingerprint.startswith(folder.name)
    discarded_dir, start, note = _checkpoint_for(StateResource(home=str(copy)), fingerprint, resume=False)
    assert start == 0 and not discarded_dir.exists() and f"reached epoch {done}; discarded" in note
    assert "--resume" in note

    result = _materialize(home, {**TRAINING, "resume": True})
    meta = result.asset_materializations_for_node("hybrid_model")[0].metadata
    assert meta["resumed_from_epoch"].value == done
    assert meta["checkpoint"].value.startswith(f"resumed from epoch {done}")
    assert meta["epochs_run"].value == EPOCHS  # the epochs before the kill are in the history, not redone
    trained = result.output_for_node("hybrid_model")
    assert [h.epoch for h in trained.history] == list(range(1, EPOCHS + 1))
    assert not folder.exists(), "a finished training leaves no checkpoint to resume"
    logs = [e.user_message for e in dagster_instance(paths).all_logs(result.run_id)]
    assert any(f"resumed from epoch {done}" in m for m in logs)
    assert any(f"epoch {done + 1}/{EPOCHS}" in m for m in logs) and not any(f"epoch {done}/{EPOCHS} " in m for m in logs)

