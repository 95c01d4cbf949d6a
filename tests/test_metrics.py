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
