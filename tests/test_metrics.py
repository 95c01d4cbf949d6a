import numpy as np
import pytest

from tlexp.metrics import evaluate_predictions, gaps, metric_safe, overfit_verdict


def one_hot(labels, classes, confidence=0.9):
    probabilities = np.full((len(labels), classes), (1 - confidence) / (classes - 1))
    probabilities[np.arange(len(labels)), labels] = confidence
    return probabilities


def test_scores_match_a_worked_example():
    # 3 classes; class 2 is rare and always missed.
    y_true = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
    y_pred = np.array([0, 0, 0, 1, 1, 1, 1, 0, 0, 1])
    evaluation = evaluate_predictions("val", y_true, one_hot(y_pred, 3), ("a", "b", "c"))
    assert evaluation.scores["accuracy"] == pytest.approx(0.6)
    # precision: a 3/5, b 3/5, c 0 -> 0.4 ; recall: a 3/4, b 3/4, c 0 -> 0.5
    assert evaluation.scores["precision_macro"] == pytest.approx(0.4)
    assert evaluation.scores["recall_macro"] == pytest.approx(0.5)
    f1_ab = 2 * 0.6 * 0.75 / (0.6 + 0.75)
    assert evaluation.scores["f1_macro"] == pytest.approx(2 * f1_ab / 3)
    assert evaluation.scores["f1_weighted"] == pytest.approx(0.8 * f1_ab)
    assert evaluation.scores["loss"] == pytest.approx(-(6 * np.log(0.9) + 4 * np.log(0.05)) / 10)
    assert evaluation.per_class["recall"] == {"a": 0.75, "b": 0.75, "c": 0.0}
    assert evaluation.confusion.tolist() == [[3, 1, 0], [1, 3, 0], [1, 1, 0]]
    assert evaluation.confusion_json() == {"labels": ["a", "b", "c"], "matrix": [[3, 1, 0], [1, 3, 0], [1, 1, 0]]}
    assert evaluation.per_class_metrics()["val_f1_c"] == 0.0
    report = evaluation.report()
    assert report["c"]["support"] == 2 and report["a"]["recall"] == pytest.approx(0.75)


def test_gap_and_overfit_flag():
    labels = np.array([0, 1, 0, 1])
    train = evaluate_predictions("train", labels, one_hot(labels, 2), ("x", "y"))
    val = evaluate_predictions("val", labels, one_hot(np.array([0, 0, 0, 1]), 2), ("x", "y"))
    gap = gaps(train, val)
    assert gap["f1_gap"] == pytest.approx(1.0 - val.scores["f1_macro"])
    assert gap["loss_gap"] > 0
    flagged = overfit_verdict(gap["f1_gap"], threshold=0.1)
    assert flagged.overfit and "> threshold 0.100" in flagged.reason
    assert not overfit_verdict(0.05, threshold=0.1).overfit


def test_class_names_become_safe_metric_names():
    assert metric_safe("golden retriever/puppy?") == "golden_retriever_puppy_"


def test_worked_binary_example_from_a_confusion_matrix():
    # [[40, 10], [5, 45]], rows = actual (positive, negative): TP 40, FN 10, FP 5, TN 45.
    positive, negative = 0, 1
    y_true = np.array([positive] * 50 + [negative] * 50)
    y_pred = np.array([positive] * 40 + [negative] * 10 + [positive] * 5 + [negative] * 45)
    evaluation = evaluate_predictions("val", y_true, one_hot(y_pred, 2), ("positive", "negative"))
    assert evaluation.confusion.tolist() == [[40, 10], [5, 45]]
    assert round(evaluation.per_class["precision"]["positive"], 3) == 0.889
    assert round(evaluation.per_class["recall"]["positive"], 3) == 0.800
    assert round(evaluation.per_class["f1"]["positive"], 3) == 0.842
    assert round(evaluation.scores["accuracy"], 3) == 0.850
    assert evaluation.scores["balanced_accuracy"] == pytest.approx((0.8 + 0.9) / 2)


def test_ranking_scores_from_probabilities():
    y_true = np.array([0, 0, 1, 1])
    probabilities = np.array([[0.9, 0.1], [0.4, 0.6], [0.35, 0.65], [0.2, 0.8]])
    evaluation = evaluate_predictions("val", y_true, probabilities, ("a", "b"))
    assert evaluation.scores["roc_auc"] == pytest.approx(1.0)
    assert evaluation.scores["average_precision"] == pytest.approx(1.0)
    three = evaluate_predictions("val", np.array([0, 1, 2]), np.eye(3), ("a", "b", "c"))
    assert three.scores["roc_auc"] == pytest.approx(1.0)
    missing = evaluate_predictions("val", np.array([0, 0]), np.eye(3)[:2], ("a", "b", "c"))
    assert np.isnan(missing.scores["roc_auc"])


from tlexp.config import SweepConfig
from tlexp.metrics import (
    accuracy_paradox,
    assess,
    bootstrap_intervals,
    per_class_recall_and_f1,
    choose_threshold,
    quality_verdict,
)


def binary_scores():
    # Positive class 1. Scores sorted so thresholds trade recall for precision.
    y_true = np.array([0, 0, 0, 0, 0, 0, 1, 0, 1, 1])
    positive = np.array([0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.55, 0.6, 0.8, 0.9])
    return y_true, np.column_stack([1 - positive, positive])


def test_threshold_rules_pick_points_on_the_validation_curve():
    y_true, probabilities = binary_scores()
    best_f1 = choose_threshold(y_true, probabilities, 1, rule="max_f1", target=None)
    assert best_f1.value == pytest.approx(0.55) and best_f1.met  # P 0.75, R 1.0: F1 0.857
    recall = choose_threshold(y_true, probabilities, 1, rule="min_recall", target=1.0)
    assert recall.value == pytest.approx(0.55) and recall.met  # recall 1.0, precision 0.75
    precision = choose_threshold(y_true, probabilities, 1, rule="min_precision", target=0.9)
    assert precision.value == pytest.approx(0.8) and precision.met  # precision 1.0, best recall 0.667
    impossible = choose_threshold(y_true, probabilities[:, ::-1], 1, rule="min_precision", target=0.99)
    assert not impossible.met and "not reachable" in impossible.note
    predicted = recall.apply(probabilities)
    assert predicted.tolist() == [0, 0, 0, 0, 0, 0, 1, 1, 1, 1]


def test_thresholded_metrics_use_the_threshold():
    y_true, probabilities = binary_scores()
    threshold = choose_threshold(y_true, probabilities, 1, rule="min_recall", target=1.0)
    evaluation = evaluate_predictions("val", y_true, probabilities, ("neg", "pos"), threshold=threshold)
    assert evaluation.per_class["recall"]["pos"] == 1.0
    assert evaluation.per_class["precision"]["pos"] == pytest.approx(0.75)
    assert evaluation.confusion.tolist() == [[6, 1], [0, 3]]


def test_bootstrap_intervals_match_one_scikit_learn_call_per_resample():
    from scipy.stats import bootstrap
    from sklearn.metrics import f1_score, recall_score

    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 3, 60)
    y_pred = np.where(rng.random(60) < 0.7, y_true, rng.integers(0, 3, 60))
    f1_ci, recall_ci = bootstrap_intervals(y_true, y_pred, 3, 2, resamples=400, seed=1)
    assert (f1_ci, recall_ci) == bootstrap_intervals(y_true, y_pred, 3, 2, resamples=400, seed=1)

    def reference(statistic):
        result = bootstrap(
            (y_true, y_pred), statistic, paired=True, vectorized=False, n_resamples=400,
            confidence_level=0.95, method="percentile", random_state=1,
        )
        return result.confidence_interval.low, result.confidence_interval.high

    macro_f1 = lambda t, p: f1_score(t, p, labels=[0, 1, 2], average="macro", zero_division=0)  # noqa: E731
    recall_2 = lambda t, p: recall_score(t, p, labels=[2], average="macro", zero_division=0)  # noqa: E731
    assert f1_ci == pytest.approx(reference(macro_f1), abs=1e-12)
    assert recall_ci == pytest.approx(reference(recall_2), abs=1e-12)
    assert f1_ci[0] < macro_f1(y_true, y_pred) < f1_ci[1] and f1_ci[1] - f1_ci[0] > 0.05


def test_per_class_scores_of_many_rows_equal_scikit_learn_row_by_row():
    from sklearn.metrics import precision_recall_fscore_support

    rng = np.random.default_rng(3)
    y_true, y_pred = rng.integers(0, 4, (5, 30)), rng.integers(0, 4, (5, 30))
    y_true[0] = 0  # a row where most classes are absent: zero_division applies
    recall, f1 = per_class_recall_and_f1(y_true, y_pred, 4)
    for row in range(5):
        _, r, f, _ = precision_recall_fscore_support(
            y_true[row], y_pred[row], labels=[0, 1, 2, 3], average=None, zero_division=0
        )
        assert recall[row].tolist() == pytest.approx(r.tolist()) and f1[row].tolist() == pytest.approx(f.tolist())


def test_a_gap_inside_validation_noise_is_not_called_overfitting():
    inside = overfit_verdict(0.15, threshold=0.10, train_f1=0.85, val_f1_ci=(0.55, 0.90))
    assert not inside.overfit and "within validation noise" in inside.reason
    above = overfit_verdict(0.15, threshold=0.10, train_f1=0.99, val_f1_ci=(0.70, 0.90))
    assert above.overfit and "above the val F1 95% CI" in above.reason


def test_accuracy_paradox_and_verdict():
    # 98% accuracy, 1 of 2 positives found: recall 0.5 on the rare class.
    y_true = np.array([0] * 98 + [1, 1])
    y_pred = np.array([0] * 98 + [1, 0])
    val = evaluate_predictions("val", y_true, one_hot(y_pred, 2), ("ok", "fraud"))
    warning = accuracy_paradox(val, min_accuracy=0.8, max_recall=0.6)
    assert warning == "val_accuracy 0.990 looks good but recall is poor for class 'fraud' 0.500"
    assert accuracy_paradox(val, min_accuracy=0.995, max_recall=0.6) is None
    good, reasons = quality_verdict(
        val, overfit=False, min_accuracy=0.8, min_precision=0.75, min_recall=0.75, max_f1_shortfall=0.1
    )
    assert not good
    assert "recall of 'fraud' 0.500 < 0.75" in reasons
    assert any(reason.startswith("F1 of 'fraud' 0.667 is more than 0.10 below") for reason in reasons)
    balanced = evaluate_predictions("val", np.array([0, 1] * 10), one_hot(np.array([0, 1] * 10), 2), ("a", "b"))
    assert quality_verdict(balanced, overfit=False, min_accuracy=0.8, min_precision=0.75, min_recall=0.75, max_f1_shortfall=0.1) == (True, [])
    assert quality_verdict(balanced, overfit=True, min_accuracy=0.8, min_precision=0.75, min_recall=0.75, max_f1_shortfall=0.1) == (False, ["overfit"])


def test_assess_a_binary_task_logs_threshold_intervals_and_verdict():
    y_true, probabilities = binary_scores()
    config = SweepConfig(positive_class="pos", threshold_rule="min_recall", threshold_target=1.0, bootstrap_resamples=200)
    assessment = assess(y_true, probabilities, y_true, probabilities, ("neg", "pos"), config)
    metrics, tags = assessment.metrics(), assessment.tags()
    assert metrics["decision_threshold"] == pytest.approx(0.55)
    assert assessment.rarest_class == "pos" and metrics["val_recall_rarest"] == 1.0
    assert metrics["val_f1_macro_ci_low"] <= metrics["val_f1_macro"] <= metrics["val_f1_macro_ci_high"]
    assert tags["tlexp.threshold_target_met"] == "true"
    assert tags["tlexp.verdict"] == "bad"
    assert tags["tlexp.verdict_reasons"] == "F1 of 'pos' 0.857 is more than 0.10 below its precision 0.750 or recall 1.000"
    assert tags["tlexp.rarest_class"] == "pos"


def test_ranking_scores_are_for_the_positive_class_when_it_sorts_first():
    y_true = np.array([0, 0, 1, 1, 1, 1])
    probabilities = np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4], [0.2, 0.8], [0.1, 0.9], [0.4, 0.6]])
    threshold = choose_threshold(y_true, probabilities, 0, rule="max_f1", target=None)
    evaluation = evaluate_predictions("val", y_true, probabilities, ("sick", "well"), threshold=threshold)
    from sklearn.metrics import average_precision_score

    assert evaluation.scores["average_precision"] == pytest.approx(average_precision_score(y_true == 0, probabilities[:, 0]))
