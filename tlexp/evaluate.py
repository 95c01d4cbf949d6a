"""Evaluating a selected model on the held-out test split: the only place tlexp reads that split.

The split is rebuilt from the training run's own params (seed, fractions, image size), so the user
passes only the data; the result is a run nested under the model's training run.
"""

from __future__ import annotations

from dataclasses import dataclass

from tlexp import backbone as bb
from tlexp.config import load_config
from tlexp.data import ImageFormat, load_configured_dataset, split_digest
from tlexp.errors import DataError, TrackingError
from tlexp.metrics import Evaluation, ThresholdChoice, confusion_matrix_figure, evaluate_predictions
from tlexp.tracking import RunRecord, Tracker
from tlexp.train import predict_probabilities


@dataclass(frozen=True)
class TestResult:
    run_id: str  # the evaluation run
    training_run_id: str
    evaluation: Evaluation


def evaluate_on_test(tracking_uri: str | None, model_uri: str, data: str) -> TestResult:
    tracker = Tracker(tracking_uri, None)
    training = tracker.get_run(tracker.run_id_of_model(model_uri))
    if training.tags.get("tlexp.kind") != "depth":
        raise TrackingError(
            f"model {model_uri!r} comes from run {training.run_id}, which is not a tlexp depth run; "
            "expected a model logged by tlexp sweep or tlexp run"
        )
    tracker.experiment_id = training.experiment_id
    params = training.params
    config = load_config(
        None,
        data=data,
        backbone=params["backbone"],
        image_size=int(params["image_size"]),
        seed=int(params["seed"]),
        val_fraction=float(params["val_fraction"]),
        test_fraction=float(params["test_fraction"]),
        demo_images_per_class=int(params.get("demo_images_per_class", 60)),
    )
    spec = bb.backbone_spec(config.backbone, config.image_size)
    dataset = load_configured_dataset(config, ImageFormat(spec.image_size, spec.channels))
    if ",".join(dataset.class_names) != params["class_names"]:
        raise DataError(
            f"data {data!r} has classes {', '.join(dataset.class_names)}; expected the classes the "
            f"model was trained on: {params['class_names'].replace(',', ', ')}"
        )
    model = tracker.load_keras_model(model_uri)
    probabilities = predict_probabilities(model, bb.preprocess(spec, dataset.test.x), batch_size=64)
    evaluation = evaluate_predictions(
        "test", dataset.test.y, probabilities, dataset.class_names, threshold=_training_threshold(training, dataset.class_names)
    )
    tags = {
        "tlexp.kind": "evaluation",
        "tlexp.evaluated_run_id": training.run_id,
        "tlexp.model_uri": model_uri,
        # Nests the evaluation under the training run in the MLflow UI.
        "mlflow.parentRunId": training.run_id,
    }
    with tracker.run(f"test-{training.run_name}", tags=tags) as run_id:
        tracker.log_params({"model_uri": model_uri, "data": data, "dataset": dataset.name, "n_test": len(dataset.test)})
        tracker.log_split(dataset.test.x, dataset.test.y, name=f"{dataset.name}-test", digest=split_digest(dataset.test), context="test")
        tracker.log_metrics({**evaluation.prefixed_scores(), **evaluation.per_class_metrics()})
        tracker.log_json(evaluation.confusion_json(), "confusion_matrix/test.json")
        tracker.log_figure(confusion_matrix_figure(evaluation), "confusion_matrix/test.png")
        tracker.log_json(evaluation.report(), "classification_report/test.json")
    return TestResult(run_id, training.run_id, evaluation)


def _training_threshold(training: RunRecord, class_names: tuple[str, ...]) -> ThresholdChoice | None:
    """The decision threshold the training run chose on validation (binary tasks), reused as is."""
    if "decision_threshold" not in training.metrics:
        return None
    positive = class_names.index(training.params["positive_class"])
    return ThresholdChoice(
        positive,
        training.metrics["decision_threshold"],
        training.params.get("threshold_rule", "max_f1"),
        None,
        True,
        "chosen on validation by the training run",
    )
