"""Per-epoch training history: the CSV file and the loss-curve plot."""

from __future__ import annotations

import csv
from pathlib import Path

HISTORY = "history.csv"
FIELDS = ("epoch", "train_loss", "val_loss", "val_dsb", "val_ap50", "lr", "train_images_per_s", "seconds")


def plot_history(history: list[dict], path: Path) -> None:
    """Loss curves (train and validation) with the validation DSB score on a second axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .atomic import atomic_path

    epochs = [int(r["epoch"]) for r in history]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(epochs, [float(r["train_loss"]) for r in history], label="train loss")
    ax.plot(epochs, [float(r["val_loss"]) for r in history], label="validation loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax2 = ax.twinx()
    per_set = [k for k in history[-1] if k.startswith("val_dsb_")] if history else []
    mean_label = "validation DSB score" + (" (mean over datasets)" if per_set else "")
    ax2.plot(epochs, [float(r["val_dsb"]) for r in history], "g--o", ms=3, label=mean_label)
    for key in per_set:
        ax2.plot(epochs, [float(r[key]) if r.get(key) not in (None, "") else float("nan") for r in history],
                 ":", lw=1, label=f"DSB {key[8:]}")
    ax2.set_ylabel("DSB score")
    ax2.set_ylim(0, 1)
    lines = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax.legend(lines, [ln.get_label() for ln in lines], loc="center right", fontsize="small")
    ax.set_title("nucleiseg training")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def write_history(history: list[dict], path: Path) -> None:
    """Write the per-epoch rows as CSV (atomically)."""
    from .atomic import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        extra = sorted({k for row in history for k in row} - set(FIELDS))  # per-dataset scores
        writer = csv.DictWriter(f, FIELDS + tuple(extra))
        writer.writeheader()
        writer.writerows(history)


def read_history(path: Path) -> list[dict]:
    """Rows of a history CSV ([] when there is none yet)."""
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
