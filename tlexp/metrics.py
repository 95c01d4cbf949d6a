"""Classification metrics, confusion matrices and the overfitting flag, all computed by scikit-learn."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from sklearn import metrics as skm

from tlexp.config import SweepConfig
from tlexp.errors import ConfigError


@dataclass(frozen=True)
class ThresholdChoice:
    """The decision threshold of a binary task, chosen on the validation set."""

    positive_index: int
    value: float
    rule: str
    target: float | None
    met: bool
    note: str

    def apply(self, probabilities: np.ndarray) -> np.ndarray:
        negative_index = 1 - self.positive_index
        return np.where(probabilities[:, self.positive_index] >= self.value, self.positive_index, negative_index)


def choose_threshold(
    y_true: np.ndarray, probabilities: np.ndarray, positive_index: int, *, rule: str, target: float | None
) -> ThresholdChoice:
    """Pick the threshold on the validation precision-recall curve by `rule`: max_f1, or
    min_recall (reach the target recall with the best precision), or min_precision (reach the
    target precision with the best recall). When the target cannot be met, the closest point is
    taken and `met` is False."""
    is_positive = y_true == positive_index
    if not is_positive.any():
        return ThresholdChoice(positive_index, 0.5, rule, target, False, "no positive images in the validation split; threshold 0.5")
    precision, recall, thresholds = skm.precision_recall_curve(is_positive, probabilities[:, positive_index])
    # The curve's last point (precision 1, recall 0) has no threshold.
    precision, recall = precision[:-1], recall[:-1]
    if rule == "max_f1":
        f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(precision), where=precision + recall > 0)
        best = int(np.argmax(f1))
        note = f"best validation F1 {f1[best]:.3f}"
        return ThresholdChoice(positive_index, float(thresholds[best]), rule, None, True, note)
    reached, optimised = (recall, precision) if rule == "min_recall" else (precision, recall)
    reached_name = "recall" if rule == "min_recall" else "precision"
    feasible = np.flatnonzero(reached >= target)
    if feasible.size:
        best = int(feasible[np.argmax(optimised[feasible])])
        note = f"validation {reached_name} {reached[best]:.3f} >= target {target:.3f}"
        return ThresholdChoice(positive_index, float(thresholds[best]), rule, target, True, note)
    best = int(np.argmax(reached))
    note = f"target {reached_name} {target:.3f} not reachable on validation; best {reached[best]:.3f}"
    return ThresholdChoice(positive_index, float(thresholds[best]), rule, target, False, note)


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
    split: str,
    y_true: np.ndarray,
    probabilities: np.ndarray,
    class_names: tuple[str, ...],
    *,
    threshold: ThresholdChoice | None = None,
) -> Evaluation:
    """Scores of predicted class probabilities against true labels (class indices). A binary task
    predicts its positive class where that probability reaches the threshold; otherwise argmax."""
    labels = list(range(len(class_names)))
    y_pred = np.argmax(probabilities, axis=1) if threshold is None else threshold.apply(probabilities)
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
        **ranking_scores(y_true, probabilities, labels, positive=threshold.positive_index if threshold else 1),
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


def ranking_scores(
    y_true: np.ndarray, probabilities: np.ndarray, labels: list[int], *, positive: int = 1
) -> dict[str, float]:
    """ROC-AUC and average precision (PR-AUC) from the probabilities, for the `positive` class of a
    binary task; one-vs-rest macro averages for more classes. NaN when a class is absent."""
    present = np.isin(labels, y_true)
    if not present.all():
        return {"roc_auc": float("nan"), "average_precision": float("nan")}
    if len(labels) == 2:
        is_positive, scores = y_true == positive, probabilities[:, positive]
        return {
            "roc_auc": skm.roc_auc_score(is_positive, scores),
            "average_precision": skm.average_precision_score(is_positive, scores),
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


def overfit_verdict(
    f1_gap: float,
    *,
    threshold: float,
    train_f1: float | None = None,
    val_f1_ci: tuple[float, float] | None = None,
) -> OverfitVerdict:
    """Overfit when train macro-F1 exceeds validation macro-F1 by more than `threshold` and,
    given the validation F1's confidence interval, the train F1 lies above it: a gap inside the
    noise of a small validation set is not called overfitting, and the reason says so."""
    if f1_gap <= threshold:
        return OverfitVerdict(False, f"f1_gap {f1_gap:.3f} <= threshold {threshold:.3f}")
    if val_f1_ci is None or train_f1 is None or not np.isfinite(val_f1_ci[1]):
        return OverfitVerdict(True, f"f1_gap {f1_gap:.3f} > threshold {threshold:.3f}")
    interval = f"val F1 95% CI [{val_f1_ci[0]:.3f}, {val_f1_ci[1]:.3f}]"
    if train_f1 <= val_f1_ci[1]:
        return OverfitVerdict(
            False,
            f"f1_gap {f1_gap:.3f} > threshold {threshold:.3f} but within validation noise: "
            f"train F1 {train_f1:.3f} is inside the {interval}",
        )
    return OverfitVerdict(
        True, f"f1_gap {f1_gap:.3f} > threshold {threshold:.3f}; train F1 {train_f1:.3f} is above the {interval}"
    )


def bootstrap_intervals(
    y_true: np.ndarray, y_pred: np.ndarray, n_classes: int, rarest: int, *, resamples: int, seed: int
) -> tuple[tuple[float, float], tuple[float, float]]:
    """95% percentile-bootstrap intervals of macro-F1 and of the rarest class's recall, from the
    same resampled (true, predicted) pairs."""
    from scipy.stats import bootstrap

    def statistic(t: np.ndarray, p: np.ndarray, axis: int = -1) -> np.ndarray:
        recall, f1 = per_class_recall_and_f1(np.atleast_2d(t), np.atleast_2d(p), n_classes)
        # sklearn's macro average is the unweighted mean over the given labels.
        values = np.stack([f1.mean(axis=1), recall[:, rarest]])
        return values if t.ndim > 1 else values[:, 0]

    result = bootstrap(
        (y_true, y_pred),
        statistic,
        paired=True,
        vectorized=True,
        batch=BOOTSTRAP_BATCH,
        n_resamples=resamples,
        confidence_level=0.95,
        method="percentile",
        random_state=seed,
    )
    low, high = result.confidence_interval
    return (float(low[0]), float(high[0])), (float(low[1]), float(high[1]))


# Resamples scored per scikit-learn call: bounds memory at BOOTSTRAP_BATCH x the validation size.
BOOTSTRAP_BATCH = 250


def per_class_recall_and_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's per-class recall and F1 of every row of (rows, n) label arrays in one call:
    row r's classes become labels r * n_classes + c, so each (row, class) pair is scored alone.
    One call instead of one per resample makes a 1,000-resample interval take milliseconds."""
    rows = y_true.shape[0]
    offset = (np.arange(rows) * n_classes)[:, None]
    _, recall, f1, _ = skm.precision_recall_fscore_support(
        (y_true + offset).ravel(),
        (y_pred + offset).ravel(),
        labels=np.arange(rows * n_classes),
        average=None,
        zero_division=0,
    )
    return recall.reshape(rows, n_classes), f1.reshape(rows, n_classes)


def accuracy_paradox(val: Evaluation, *, min_accuracy: float, max_recall: float) -> str | None:
    """A warning when accuracy looks good while some class's recall is poor, with the numbers."""
    accuracy = val.scores["accuracy"]
    poor = {name: recall for name, recall in val.per_class["recall"].items() if recall < max_recall}
    if accuracy < min_accuracy or not poor:
        return None
    recalls = ", ".join(f"{name!r} {recall:.3f}" for name, recall in poor.items())
    return f"val_accuracy {accuracy:.3f} looks good but recall is poor for class {recalls}"


def quality_verdict(
    val: Evaluation,
    *,
    overfit: bool,
    min_accuracy: float,
    min_precision: float,
    min_recall: float,
    max_f1_shortfall: float,
) -> tuple[bool, list[str]]:
    """good when every criterion holds on the validation set; otherwise the reasons it is bad."""
    reasons = []
    if val.scores["accuracy"] < min_accuracy:
        reasons.append(f"accuracy {val.scores['accuracy']:.3f} < {min_accuracy:.2f}")
    for name in val.class_names:
        precision, recall, f1 = (val.per_class[m][name] for m in ("precision", "recall", "f1"))
        if precision < min_precision:
            reasons.append(f"precision of {name!r} {precision:.3f} < {min_precision:.2f}")
        if recall < min_recall:
            reasons.append(f"recall of {name!r} {recall:.3f} < {min_recall:.2f}")
        if f1 < max(precision, recall) - max_f1_shortfall:
            reasons.append(
                f"F1 of {name!r} {f1:.3f} is more than {max_f1_shortfall:.2f} below its "
                f"precision {precision:.3f} or recall {recall:.3f}"
            )
    if overfit:
        reasons.append("overfit")
    return not reasons, reasons


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


@dataclass(frozen=True)
class Assessment:
    """Everything tlexp concludes about one trained model from its train and validation predictions."""

    train: Evaluation
    val: Evaluation
    threshold: ThresholdChoice | None
    gaps: dict[str, float]
    f1_ci: tuple[float, float]
    rarest_class: str
    rarest_recall_ci: tuple[float, float]
    overfit: OverfitVerdict
    paradox: str | None
    good: bool
    verdict_reasons: tuple[str, ...]

    @property
    def rarest_recall(self) -> float:
        return self.val.per_class["recall"][self.rarest_class]

    def metrics(self) -> dict[str, float]:
        values = {
            **self.train.prefixed_scores(),
            **self.val.prefixed_scores(),
            **self.val.per_class_metrics(),
            **self.gaps,
            "val_f1_macro_ci_low": self.f1_ci[0],
            "val_f1_macro_ci_high": self.f1_ci[1],
            "val_recall_rarest": self.rarest_recall,
            "val_recall_rarest_ci_low": self.rarest_recall_ci[0],
            "val_recall_rarest_ci_high": self.rarest_recall_ci[1],
        }
        if self.threshold is not None:
            values["decision_threshold"] = self.threshold.value
        return values

    def tags(self) -> dict[str, str]:
        tags = {
            "tlexp.overfit": str(self.overfit.overfit).lower(),
            "tlexp.overfit_reason": self.overfit.reason,
            "tlexp.verdict": "good" if self.good else "bad",
            "tlexp.verdict_reasons": "; ".join(self.verdict_reasons) or "all criteria met",
            "tlexp.rarest_class": self.rarest_class,
        }
        if self.paradox:
            tags["tlexp.accuracy_paradox"] = self.paradox
        if self.threshold is not None:
            tags["tlexp.threshold_note"] = self.threshold.note
            tags["tlexp.threshold_target_met"] = str(self.threshold.met).lower()
        return tags


def positive_index(class_names: tuple[str, ...], positive_class: str | None) -> int | None:
    """The positive class of a binary task (default: the second class); None for more classes."""
    if len(class_names) != 2:
        if positive_class is not None:
            raise ConfigError(
                f"positive_class {positive_class!r} is set but the task has {len(class_names)} "
                "classes; expected a binary task"
            )
        return None
    if positive_class is None:
        return 1
    if positive_class not in class_names:
        raise ConfigError(
            f"positive_class {positive_class!r} is not a class of this data; expected one of "
            f"{', '.join(map(repr, class_names))}"
        )
    return class_names.index(positive_class)


def assess(
    y_train: np.ndarray,
    train_probabilities: np.ndarray,
    y_val: np.ndarray,
    val_probabilities: np.ndarray,
    class_names: tuple[str, ...],
    config: SweepConfig,
) -> Assessment:
    positive = positive_index(class_names, config.positive_class)
    threshold = None
    if positive is not None:
        threshold = choose_threshold(
            y_val, val_probabilities, positive, rule=config.threshold_rule, target=config.threshold_target
        )
    train = evaluate_predictions("train", y_train, train_probabilities, class_names, threshold=threshold)
    val = evaluate_predictions("val", y_val, val_probabilities, class_names, threshold=threshold)
    rarest = int(np.argmin(np.bincount(y_val, minlength=len(class_names))))
    f1_ci, rarest_recall_ci = bootstrap_intervals(
        val.y_true,
        val.y_pred,
        len(class_names),
        rarest,
        resamples=config.bootstrap_resamples,
        seed=config.seed,
    )
    gap = gaps(train, val)
    overfit = overfit_verdict(
        gap["f1_gap"], threshold=config.overfit_threshold, train_f1=train.scores["f1_macro"], val_f1_ci=f1_ci
    )
    good, reasons = quality_verdict(
        val,
        overfit=overfit.overfit,
        min_accuracy=config.verdict_min_accuracy,
        min_precision=config.verdict_min_precision,
        min_recall=config.verdict_min_recall,
        max_f1_shortfall=config.verdict_max_f1_shortfall,
    )
    return Assessment(
        train=train,
        val=val,
        threshold=threshold,
        gaps=gap,
        f1_ci=f1_ci,
        rarest_class=class_names[rarest],
        rarest_recall_ci=rarest_recall_ci,
        overfit=overfit,
        paradox=accuracy_paradox(val, min_accuracy=config.paradox_accuracy, max_recall=config.paradox_recall),
        good=good,
        verdict_reasons=tuple(reasons),
    )


def precision_recall_figure(assessment: Assessment, probabilities: np.ndarray):
    """scikit-learn's precision-recall curve of the positive class, with the chosen threshold."""
    import matplotlib

    matplotlib.use("Agg")
    threshold = assessment.threshold
    positive = threshold.positive_index
    display = skm.PrecisionRecallDisplay.from_predictions(
        assessment.val.y_true == positive,
        probabilities[:, positive],
        name=f"positive class {assessment.val.class_names[positive]!r}",
    )
    precision = assessment.val.per_class["precision"][assessment.val.class_names[positive]]
    recall = assessment.val.per_class["recall"][assessment.val.class_names[positive]]
    display.ax_.plot([recall], [precision], "ro", label=f"threshold {threshold.value:.3f} ({threshold.rule})")
    display.ax_.legend()
    display.ax_.set_title("validation precision-recall")
    return display.figure_
