"""Classification metrics, confusion matrices and the overfitting flag, all computed by scikit-learn."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from sklearn import metrics as skm


@dataclass(frozen=True)
class Evaluation:
    """How a model did on one split."""

    split: str
    class_names: tuple[str, ...]
    y_true: np.ndarray
    y_pred: np.ndarray
    scores: dict[str, float]  # unprefixed, e.g. "f1_macro"
    per_class: dict[str, dict[str, float]]  # metric -> class name -> value
    confusion: np.ndarray  # rows = actual, columns = predicted

    def prefixed_scores(self) -> dict[str, float]:
        return {f"{self.split}_{name}": value for name, value in self.scores.items()}

    def per_class_metrics(self) -> dict[str, float]:
        return {
            f"{self.split}_{metric}_{metric_safe(name)}": value
            for metric, by_class in self.per_class.items()
            for name, value in by_class.items()
        }

    def confusion_json(self) -> dict:
        return {"labels": list(self.class_names), "matrix": self.confusion.tolist()}

    def report(self) -> dict:
        return skm.classification_report(
            self.y_true,
            self.y_pred,
            labels=list(range(len(self.class_names))),
            target_names=list(self.class_names),
            output_dict=True,
            zero_division=0,
        )


def evaluate_predictions(
    split: str, y_true: np.ndarray, probabilities: np.ndarray, class_names: tuple[str, ...]
) -> Evaluation:
    """Scores of predicted class probabilities against true labels (class indices)."""
    labels = list(range(len(class_names)))
    y_pred = np.argmax(probabilities, axis=1)
    precision, recall, f1, _ = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average="macro", zero_division=0
    )
    scores = {
        "accuracy": skm.accuracy_score(y_true, y_pred),
        "precision_macro": precision,
        "recall_macro": recall,
        "f1_macro": f1,
        "f1_weighted": skm.f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0),
        "loss": skm.log_loss(y_true, probabilities, labels=labels),
        "balanced_accuracy": skm.balanced_accuracy_score(y_true, y_pred),
        **ranking_scores(y_true, probabilities, labels),
    }
    class_precision, class_recall, class_f1, _ = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average=None, zero_division=0
    )
    per_class = {
        metric: dict(zip(class_names, map(float, values)))
        for metric, values in (("precision", class_precision), ("recall", class_recall), ("f1", class_f1))
    }
    return Evaluation(
        split=split,
        class_names=tuple(class_names),
        y_true=np.asarray(y_true),
        y_pred=y_pred,
        scores={name: float(value) for name, value in scores.items()},
        per_class=per_class,
        confusion=skm.confusion_matrix(y_true, y_pred, labels=labels),
    )


def ranking_scores(y_true: np.ndarray, probabilities: np.ndarray, labels: list[int]) -> dict[str, float]:
    """ROC-AUC and average precision (PR-AUC) from the probabilities; one-vs-rest macro averages
    for more than two classes. NaN when undefined (a class absent from y_true)."""
    present = np.isin(labels, y_true)
    if not present.all():
        return {"roc_auc": float("nan"), "average_precision": float("nan")}
    if len(labels) == 2:
        scores = probabilities[:, 1]
        return {
            "roc_auc": skm.roc_auc_score(y_true, scores),
            "average_precision": skm.average_precision_score(y_true, scores),
        }
    from sklearn.preprocessing import label_binarize

    return {
        "roc_auc": skm.roc_auc_score(y_true, probabilities, multi_class="ovr", labels=labels),
        "average_precision": skm.average_precision_score(
            label_binarize(y_true, classes=labels), probabilities, average="macro"
        ),
    }


@dataclass(frozen=True)
class OverfitVerdict:
    overfit: bool
    reason: str


def gaps(train: Evaluation, val: Evaluation) -> dict[str, float]:
    return {
        "f1_gap": train.scores["f1_macro"] - val.scores["f1_macro"],
        "loss_gap": val.scores["loss"] - train.scores["loss"],
    }


def overfit_verdict(f1_gap: float, *, threshold: float) -> OverfitVerdict:
    """Overfit when train macro-F1 exceeds validation macro-F1 by more than `threshold`."""
    if f1_gap > threshold:
        return OverfitVerdict(True, f"f1_gap {f1_gap:.3f} > threshold {threshold:.3f}")
    return OverfitVerdict(False, f"f1_gap {f1_gap:.3f} <= threshold {threshold:.3f}")


def metric_safe(name: str) -> str:
    """A class name as it may appear inside an MLflow metric name."""
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", name)


def confusion_matrix_figure(evaluation: Evaluation):
    """scikit-learn's confusion matrix plot of an evaluation, as a matplotlib figure."""
    import matplotlib

    matplotlib.use("Agg")
    display = skm.ConfusionMatrixDisplay(
        evaluation.confusion, display_labels=list(evaluation.class_names)
    )
    display.plot(cmap="Blues", colorbar=False)
    display.ax_.set_title(f"{evaluation.split} confusion matrix (rows = actual)")
    return display.figure_
