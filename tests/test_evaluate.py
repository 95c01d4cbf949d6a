"""evaluate: the held-out test split, rebuilt from the training run, logged under that run."""

import json

import numpy as np
from click.testing import CliRunner

from tlexp.cli import main
from tlexp.select import select_best_run
from tlexp.tracking import Tracker


def test_evaluate_a_registered_model_on_the_test_split(sweep, tmp_path):
    result, client, _, config = sweep
    selection = select_best_run(Tracker(config.tracking_uri, "sweep-test", create=False), register="digits-eval")
    outcome = CliRunner().invoke(
        main, ["evaluate", selection.registered.uri, "--data", "demo", "--tracking-uri", config.tracking_uri]
    )
    assert outcome.exit_code == 0, outcome.output
    training = client.get_run(selection.run.run_id)
    (evaluation,) = client.search_runs(
        [result.experiment_id], f"tags.`tlexp.evaluated_run_id` = '{training.info.run_id}'"
    )
    assert evaluation.data.tags["mlflow.parentRunId"] == training.info.run_id
    assert evaluation.data.tags["tlexp.kind"] == "evaluation"
    assert evaluation.data.params["n_test"] == training.data.params["n_test"] == "10"
    metrics = evaluation.data.metrics
    assert {"test_accuracy", "test_f1_macro", "test_precision_macro", "test_recall_macro", "test_loss", "test_f1_5"} <= set(metrics)
    path = client.download_artifacts(evaluation.info.run_id, "confusion_matrix/test.json", str(tmp_path))
    matrix = np.array(json.loads(open(path).read())["matrix"])
    assert matrix.sum() == 10 and np.trace(matrix) / 10 == metrics["test_accuracy"]
    (test_input,) = evaluation.inputs.dataset_inputs
    logged_by_sweep = {i.dataset.name: i.dataset.digest for i in training.inputs.dataset_inputs}
    assert test_input.dataset.digest == logged_by_sweep["demo-test-held-out"]


def test_the_sweep_never_evaluates_on_the_test_split(sweep):
    result, client, _, _ = sweep
    for depth in result.results:
        run = client.get_run(depth.run_id)
        assert not [name for name in run.data.metrics if name.startswith("test_")]
        # Every image the sweep scored (train and validation) is distinct from the test images.
        digests = {i.dataset.name: i.dataset.digest for i in run.inputs.dataset_inputs}
        assert len(set(digests.values())) == 3


def test_evaluate_rejects_other_data_and_bad_uris(sweep):
    result, _, _, config = sweep
    run_uri = f"runs:/{result.best.run_id}/model"
    cases = [
        ([run_uri, "--data", "demo-rare"], "Error: data 'demo-rare' has classes other, 9; expected the classes the model was trained on: 5, 6, 7, 8, 9"),
        (["s3://bucket/model", "--data", "demo"], "Error: model URI 's3://bucket/model' is not one tlexp can evaluate; expected runs:/RUN_ID/model or models:/NAME@ALIAS"),
        (["models:/missing@champion", "--data", "demo"], "Error: model 'models:/missing@champion' is not registered"),
    ]
    for args, start in cases:
        outcome = CliRunner().invoke(main, ["evaluate", *args, "--tracking-uri", config.tracking_uri])
        assert outcome.exit_code == 1, args
        assert outcome.output.strip().splitlines()[-1].startswith(start), outcome.output


def test_evaluate_refuses_a_run_that_is_not_a_depth_run(sweep):
    result, _, _, config = sweep
    outcome = CliRunner().invoke(
        main, ["evaluate", f"runs:/{result.sweep_id}/model", "--data", "demo", "--tracking-uri", config.tracking_uri]
    )
    assert outcome.exit_code == 1
    assert f"comes from run {result.sweep_id}, which is not a tlexp depth run" in outcome.output.strip().splitlines()[-1]
