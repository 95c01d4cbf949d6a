"""Matplotlib figures for a run (training curves) and a sweep (validation F1 and gap against depth)."""

from __future__ import annotations

from typing import Sequence


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def training_curves_figure(history: dict[str, list[float]], *, finetune_starts_at: int, title: str):
    """Loss and accuracy per epoch across both phases, with the start of fine-tuning marked."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, metric in zip(axes, ("loss", "accuracy")):
        for key, label in ((metric, "train"), (f"val_{metric}", "validation")):
            values = history.get(key, [])
            axis.plot(range(1, len(values) + 1), values, marker="o", label=label)
        axis.axvline(finetune_starts_at + 0.5, color="grey", linestyle="--", label="fine-tuning starts")
        axis.set_xlabel("epoch")
        axis.set_ylabel(metric)
        axis.legend()
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def depth_summary_figure(
    depths: Sequence[str], val_f1: Sequence[float], f1_gap: Sequence[float], *, threshold: float
):
    """Validation macro-F1 and the train/validation F1 gap for each unfreeze depth."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(7, 4))
    positions = range(len(depths))
    axis.plot(positions, val_f1, marker="o", label="val_f1_macro")
    axis.plot(positions, f1_gap, marker="s", label="f1_gap (train - val)")
    axis.axhline(threshold, color="red", linestyle=":", label=f"overfit threshold {threshold:g}")
    axis.set_xticks(list(positions), list(depths))
    axis.set_xlabel("unfreeze depth (top layers trainable)")
    axis.set_ylabel("macro F1")
    axis.legend()
    figure.tight_layout()
    return figure
