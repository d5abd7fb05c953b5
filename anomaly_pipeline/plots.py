"""Small matplotlib figures for the Dagster UI and MLflow (PNG, headless)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_training_history(history: Sequence, path: str | Path) -> Path:
    """Training and validation loss, and validation link-prediction AUC, per epoch."""
    path = Path(path)
    epochs = [h.epoch for h in history]
    fig, (ax_loss, ax_auc) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax_loss.plot(epochs, [h.train_loss for h in history], "o-", label="train")
    ax_loss.plot(epochs, [h.validation_loss for h in history], "s-", label="validation")
    ax_loss.set(xlabel="epoch", ylabel="loss (link BCE + attribute NLL)", title="Loss")
    ax_loss.legend()
    ax_auc.plot(epochs, [h.validation_link_auc for h in history], "o-", color="tab:green")
    ax_auc.set(xlabel="epoch", ylabel="ROC-AUC", title="Validation link prediction (real vs corrupted)")
    for ax in (ax_loss, ax_auc):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
