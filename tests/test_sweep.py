"""A real (tiny) demo sweep into a real MLflow store, read back as a user would, with MlflowClient."""

import json

import numpy as np
import pytest
from mlflow import MlflowClient

from tlexp.data import ImageFormat, load_dataset
from tlexp.sweep import best_result, run_single, run_sweep

SHARED_PARAMS = {
    "backbone", "weights", "backbone_weights_path", "backbone_weights_sha256", "image_size",
    "learning_rate_head", "learning_rate_finetune", "epochs_head", "epochs_finetune", "batch_size",
    "dropout", "early_stopping_patience", "seed", "dataset", "num_classes", "class_names", "n_train",
    "n_val", "n_test", "val_fraction", "test_fraction", "overfit_threshold", "mixed_precision",
}
FINAL_METRICS = {
    f"{split}_{name}"
    for split in ("train", "val")
    for name in ("accuracy", "precision_macro", "recall_macro", "f1_macro", "f1_weighted", "loss")
} | {"f1_gap", "loss_gap", "trainable_params", "trainable_layers", "total_params", "epochs_trained"}
CURVES = {"epoch_loss", "epoch_accuracy", "epoch_val_loss", "epoch_val_accuracy"}


def children_of(client, result):
    runs = client.search_runs(
        [result.experiment_id], f"tags.mlflow.parentRunId = '{result.sweep_id}'"
    )
    return {run.data.params["unfreeze_layers"]: run for run in runs}


def test_one_finished_child_per_depth_under_one_parent(sweep):
    result, client, lines, _ = sweep
    parent = client.get_run(result.sweep_id)
    assert parent.info.status == "FINISHED"
    children = children_of(client, result)
    assert set(children) == {"0", "5", "all"}
    assert all(run.info.status == "FINISHED" for run in children.values())
    assert sum(line.startswith("[") for line in lines) == 3  # a progress line per depth


def test_child_runs_carry_the_whole_schema(sweep):
    result, client, _, _ = sweep
    for depth, run in children_of(client, result).items():
        assert SHARED_PARAMS | {"unfreeze_layers"} <= set(run.data.params)
        per_class = {f"val_{m}_{digit}" for m in ("precision", "recall", "f1") for digit in "56789"}
        assert FINAL_METRICS | per_class | CURVES <= set(run.data.metrics)
        tags = run.data.tags
        assert tags["tlexp.overfit"] in ("true", "false") and "f1_gap" in tags["tlexp.overfit_reason"]
        assert tags["tlexp.sweep_id"] == result.sweep_id
        assert tags["tlexp.device"] == "CPU"
        metrics = run.data.metrics
        assert metrics["f1_gap"] == pytest.approx(metrics["train_f1_macro"] - metrics["val_f1_macro"])
        # Overfit: a gap over the threshold that is also outside the validation F1's noise.
        outside_noise = metrics["train_f1_macro"] > metrics["val_f1_macro_ci_high"]
        assert (tags["tlexp.overfit"] == "true") == (metrics["f1_gap"] > 0.10 and outside_noise)
        artifacts = {a.path for folder in ("confusion_matrix", "classification_report") for a in client.list_artifacts(run.info.run_id, folder)}
        assert {
            "confusion_matrix/val.png", "confusion_matrix/val.json", "confusion_matrix/train.png",
            "confusion_matrix/train.json", "classification_report/val.json",
        } <= artifacts
        assert "training_curves.png" in {a.path for a in client.list_artifacts(run.info.run_id)}


def test_depths_unfreeze_more_parameters(sweep):
    result, client, _, _ = sweep
    children = children_of(client, result)
    params = [children[d].data.metrics["trainable_params"] for d in ("0", "5", "all")]
    assert params[0] < params[1] < params[2]
    assert children["0"].data.metrics["trainable_layers"] == 0


def test_curves_span_both_phases_with_increasing_steps(sweep):
    result, client, _, config = sweep
    run = children_of(client, result)["all"]
    history = client.get_metric_history(run.info.run_id, "epoch_val_loss")
    assert sorted(m.step for m in history) == list(range(config.epochs_head + config.epochs_finetune))


def test_confusion_matrix_json_rows_are_actual_classes(sweep, tmp_path):
    result, client, _, _ = sweep
    run = children_of(client, result)["5"]
    path = client.download_artifacts(run.info.run_id, "confusion_matrix/val.json", str(tmp_path))
    document = json.loads(open(path).read())
    assert document["labels"] == ["5", "6", "7", "8", "9"]
    matrix = np.array(document["matrix"])
    assert matrix.sum(axis=1).tolist() == [2] * 5  # n_val = 10, stratified: 2 actual images per class
    accuracy = np.trace(matrix) / matrix.sum()
    assert accuracy == pytest.approx(run.data.metrics["val_accuracy"])


def test_logged_model_predicts_and_reproduces_val_f1(sweep):
    import mlflow
    from sklearn.metrics import f1_score

    from tlexp import backbone as bb

    result, client, _, config = sweep
    run = children_of(client, result)["all"]
    mlflow.set_tracking_uri(config.tracking_uri)
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    assert model.metadata.signature is not None
    dataset = load_dataset(
        "demo", ImageFormat(28, 1), seed=config.seed, val_fraction=0.25, test_fraction=0.25,
        demo_images_per_class=8,
    )
    probabilities = np.asarray(model.predict(bb.preprocess(bb.backbone_spec("demo"), dataset.val.x)))
    assert probabilities.shape == (len(dataset.val), 5)
    f1 = f1_score(dataset.val.y, probabilities.argmax(axis=1), average="macro", zero_division=0)
    assert f1 == pytest.approx(run.data.metrics["val_f1_macro"])


def test_parent_has_summary_plot_and_best_depth(sweep, tmp_path):
    result, client, _, _ = sweep
    parent = client.get_run(result.sweep_id)
    assert parent.data.tags["tlexp.best_depth"] == str(result.best.depth)
    assert parent.data.tags["tlexp.best_run_id"] == result.best.run_id
    assert parent.data.params["unfreeze_depths"] == "0,5,all"
    names = {a.path for a in client.list_artifacts(result.sweep_id, "summary")}
    assert names == {"summary/summary.json", "summary/summary.csv", "summary/depth_vs_f1.png"}
    summary = json.loads(open(client.download_artifacts(result.sweep_id, "summary/summary.json", str(tmp_path))).read())
    assert [row["unfreeze_layers"] for row in summary["rows"]] == ["0", "5", "all"]
    best_val = max(row["val_f1_macro"] for row in summary["rows"])
    assert parent.data.metrics["best_val_f1_macro"] == pytest.approx(best_val)


def test_demo_backbone_pretraining_is_a_run_and_is_recorded(sweep):
    result, client, _, _ = sweep
    pretraining = client.search_runs([result.experiment_id], "tags.`tlexp.kind` = 'backbone-pretraining'")
    child = children_of(client, result)["0"]
    if pretraining:  # the session's cache may have been filled by another test's store
        assert pretraining[0].data.metrics["source_val_accuracy"] > 0.9
        assert child.data.tags["tlexp.backbone_pretrain_run_id"] == pretraining[0].info.run_id
    from tlexp.backbone import file_sha256

    params = child.data.params
    assert file_sha256(params["backbone_weights_path"]) == params["backbone_weights_sha256"]


def test_best_depth_tie_breaks_on_smaller_gap_then_fewer_params():
    from tlexp.sweep import DepthResult

    def finished(depth, run_id, params, gap):
        return DepthResult(depth, run_id, "FINISHED", depth, params, val_f1_macro=0.8, f1_gap=gap)

    a, b, c = finished(0, "a", 10, 0.1), finished(2, "b", 50, 0.05), finished(4, "c", 20, 0.05)
    failed = DepthResult(6, "d", "FAILED", 6, 5)
    assert best_result([a, b, c, failed]).run_id == "c"
    assert best_result([failed]) is None


def test_a_failing_depth_is_recorded_and_the_sweep_goes_on(tiny_config, client):
    # A learning rate near float32 max overflows the weights; TerminateOnNaN stops that depth.
    config = tiny_config(unfreeze=("all",), learning_rate_finetune=1e38, epochs_head=1, epochs_finetune=3)
    result = run_sweep(config)
    (depth,) = result.results
    assert depth.status == "FAILED" and "finite loss" in depth.error
    run = client.get_run(depth.run_id)
    assert run.info.status == "FAILED" and "finite loss" in run.data.tags["tlexp.error"]
    assert client.get_run(result.sweep_id).info.status == "FINISHED"
    assert result.failed == (depth,)


def test_single_run_is_top_level(tiny_config, client):
    result = run_single(tiny_config(), "all")
    run = client.get_run(result.run_id)
    assert "mlflow.parentRunId" not in run.data.tags
    assert run.data.params["unfreeze_layers"] == "all" and run.info.status == "FINISHED"


def test_rare_class_sweep_logs_threshold_intervals_verdict_and_inputs(tiny_config, client, tmp_path):
    from tlexp.data import split_digest

    config = tiny_config(
        data="demo-rare", demo_images_per_class=20, unfreeze=(1,), positive_class="9",
        threshold_rule="min_recall", threshold_target=0.9, class_weight="balanced",
        bootstrap_resamples=200, epochs_head=2,
    )
    result = run_sweep(config)
    (depth,) = result.results
    assert depth.status == "FINISHED", depth.error
    run = client.get_run(depth.run_id)
    params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
    assert (params["positive_class"], params["class_weight"], params["threshold_rule"], params["threshold_target"]) == ("9", "balanced", "min_recall", "0.9")
    assert params["class_names"] == "other,9"
    assert 0 < metrics["decision_threshold"] < 1 and metrics["decision_threshold"] == pytest.approx(depth.decision_threshold)
    assert tags["tlexp.rarest_class"] == "9"
    assert metrics["val_recall_rarest"] == metrics["val_recall_9"]
    assert metrics["val_recall_rarest_ci_low"] <= metrics["val_recall_rarest"] <= metrics["val_recall_rarest_ci_high"]
    assert metrics["val_f1_macro_ci_low"] <= metrics["val_f1_macro"] <= metrics["val_f1_macro_ci_high"]
    assert {"val_roc_auc", "val_average_precision", "val_balanced_accuracy"} <= set(metrics)
    assert tags["tlexp.verdict"] in ("good", "bad") and tags["tlexp.verdict_reasons"]
    assert tags["tlexp.threshold_target_met"] in ("true", "false") and tags["tlexp.threshold_note"]
    assert "pr_curve/val.png" in {a.path for a in client.list_artifacts(run.info.run_id, "pr_curve")}
    # Thresholded predictions drive the confusion matrix: its positive column matches the recall.
    path = client.download_artifacts(run.info.run_id, "confusion_matrix/val.json", str(tmp_path))
    matrix = np.array(json.loads(open(path).read())["matrix"])
    assert matrix[1, 1] / matrix[1].sum() == pytest.approx(metrics["val_recall_9"])
    dataset = load_dataset("demo-rare", ImageFormat(28, 1), seed=0, val_fraction=0.25, test_fraction=0.25, demo_images_per_class=20)
    logged = {i.dataset.name: i.dataset.digest for i in run.inputs.dataset_inputs}
    assert logged == {
        "demo-rare-train": split_digest(dataset.train),
        "demo-rare-validation": split_digest(dataset.val),
        "demo-rare-test-held-out": split_digest(dataset.test),
    }
    assert 0.05 < dataset.train.y.mean() < 0.15  # the positive class is about 10% of the images


def test_the_same_seed_gives_identical_metrics_on_cpu(sweep, tmp_path):
    import dataclasses

    first, client, _, config = sweep
    again_uri = f"sqlite:///{tmp_path / 'again.db'}"
    again = run_sweep(dataclasses.replace(config, tracking_uri=again_uri))
    again_client = MlflowClient(tracking_uri=again_uri)
    for one, two in zip(first.results, again.results):
        assert one.depth == two.depth
        metrics_one = client.get_run(one.run_id).data.metrics
        metrics_two = again_client.get_run(two.run_id).data.metrics
        assert metrics_one == metrics_two


def test_credentials_never_reach_the_store(tiny_config, store_uri, tmp_path, monkeypatch):
    secret = "tlexp-secret-0d1f7c"
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", secret)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", secret + "-token")
    run_sweep(tiny_config(unfreeze=(0,)))
    store = tmp_path / "mlruns"
    files = [path for path in store.rglob("*") if path.is_file()]
    assert any(path.name == "mlflow.db" for path in files) and len(files) > 10
    assert not [path for path in files if secret.encode() in path.read_bytes()]
