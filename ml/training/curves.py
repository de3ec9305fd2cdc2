"""The training curve: loss and validation mAP per epoch, one shade per ensemble member."""

from __future__ import annotations

from pathlib import Path

__all__ = ["plot_history"]


def plot_history(history, target: Path) -> None:
    """Training curve PNG: loss (left axis) and validation mAP@100 (right axis) per epoch.

    ``history``: one run's list of epoch records, or a list of such lists (ensemble members, one
    colour shade each)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = history if history and isinstance(history[0], list) else [history]
    runs = [r for r in runs if r]
    if not runs:
        return
    fig, ax1 = plt.subplots(figsize=(7, 4))
    ax2 = ax1.twinx()
    for k, run in enumerate(runs):
        suffix = f" (member {k + 1})" if len(runs) > 1 else ""
        shade = 1.0 - 0.25 * k
        ax1.plot([h["epoch"] for h in run], [h["loss"] for h in run], color=(0, 0, shade), label="loss" + suffix)
        vals = [(h["epoch"], h["val_map"]) for h in run if h.get("val_map") is not None]
        if vals:
            ax2.plot([e for e, _ in vals], [v for _, v in vals], "-o", ms=3, color=(0, 0.5 * shade, 0),
                     label="val mAP@100 (snapshot→items)" + suffix)
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("training loss", color="b")
    ax2.set_ylabel("validation mAP@100 (plain cosine)", color="g")
    lines = ax1.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    if len(runs) > 1:
        fig.set_size_inches(7, 5)
        ax1.legend(lines, [line.get_label() for line in lines], fontsize=7, ncol=2, loc="upper center",
                   bbox_to_anchor=(0.5, -0.14))
    ax1.set_title("CGD head training" + (f", {len(runs)} ensemble members" if len(runs) > 1 else ""))
    fig.tight_layout()
    fig.savefig(target, dpi=100)
    plt.close(fig)

