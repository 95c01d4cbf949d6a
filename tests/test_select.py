"""compare and select read real MLflow stores; select registers in the real Model Registry."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from tlexp.cli import main
from tlexp.data import ImageFormat, load_dataset
from tlexp.select import SelectionError, select_best_run
from tlexp.tracking import Tracker


def invoke(*args):
    return CliRunner().invoke(main, list(args))


def test_select_register_then_load_champion_reproduces_val_f1(sweep):
    import mlflow
    from sklearn.metrics import f1_score

    from tlexp import backbone as bb

    result, client, _, config = sweep
    outcome = invoke(
        "select", "--experiment", "sweep-test", "--tracking-uri", config.tracking_uri,
        "--register", "digits", "--alias", "champion", "--format", "json",
    )
    assert outcome.exit_code == 0, outcome.output
    chosen = json.loads(outcome.stdout)
    assert chosen["run_id"] == result.best.run_id  # the store's ranking agrees with the sweep's
    assert chosen["registered_model_uri"] == "models:/digits@champion"
    version = client.get_model_version_by_alias("digits", "champion")
    assert version.run_id == chosen["run_id"]
    mlflow.set_tracking_uri(config.tracking_uri)
    model = mlflow.pyfunc.load_model("models:/digits@champion")
    dataset = load_dataset("demo", ImageFormat(28, 1), seed=0, val_fraction=0.25, test_fraction=0.25, demo_images_per_class=8)
    predicted = np.asarray(model.predict(bb.preprocess(bb.backbone_spec("demo"), dataset.val.x))).argmax(axis=1)
    logged = client.get_run(chosen["run_id"]).data.metrics["val_f1_macro"]
    assert f1_score(dataset.val.y, predicted, average="macro", zero_division=0) == pytest.approx(logged)


def test_compare_lists_each_depth_in_sweep_order(sweep):
    result, _, _, config = sweep
    outcome = invoke("compare", "--experiment", "sweep-test", "--tracking-uri", config.tracking_uri, "--format", "json")
    assert outcome.exit_code == 0, outcome.output
    document = json.loads(outcome.stdout)
    assert document["sweep_id"] == result.sweep_id
    assert [row["unfreeze_layers"] for row in document["rows"]] == ["0", "5", "all"]
    assert document["rows"][0]["val_f1_macro"] == pytest.approx(result.results[0].val_f1_macro)
    assert set(document["rows"][0]) >= {"f1_gap", "overfit", "verdict", "val_recall_rarest", "run_id"}
    as_csv = invoke("compare", "--experiment", "sweep-test", "--tracking-uri", config.tracking_uri, "--format", "csv")
    assert as_csv.output.splitlines()[0].startswith("unfreeze_layers,status,run_id,")
    assert len(as_csv.output.splitlines()) == 4
    table = invoke("compare", "--experiment", "sweep-test", "--tracking-uri", config.tracking_uri)
    assert table.exit_code == 0 and result.sweep_id in table.output


@pytest.fixture
def ranked_store(store_uri):
    """Depth runs with chosen metrics and tags, written through MlflowClient like a sweep would."""
    client = MlflowClient(tracking_uri=store_uri)
    experiment_id = client.create_experiment("ranked")
    sweep = client.create_run(experiment_id, tags={"tlexp.kind": "sweep"}).info.run_id
    client.set_terminated(sweep)
    rows = [  # depth, val_f1, gap, params, overfit, val_loss
        ("0", 0.80, 0.02, 100, "false", 0.50),
        ("2", 0.95, 0.30, 300, "true", 0.20),
        ("4", 0.90, 0.05, 400, "false", 0.30),
        ("6", 0.90, 0.05, 200, "false", 0.40),
    ]
    ids = {}
    for depth, f1, gap, params, overfit, loss in rows:
        tags = {"tlexp.kind": "depth", "tlexp.sweep_id": sweep, "tlexp.overfit": overfit, "mlflow.parentRunId": sweep}
        run = client.create_run(experiment_id, tags=tags).info.run_id
        client.log_param(run, "unfreeze_layers", depth)
        for name, value in (("val_f1_macro", f1), ("f1_gap", gap), ("trainable_params", params), ("val_loss", loss)):
            client.log_metric(run, name, value)
        client.set_terminated(run)
        ids[depth] = run
    return Tracker(store_uri, "ranked", create=False), ids


def test_selection_by_query_with_filters_and_tie_breaks(ranked_store):
    tracker, ids = ranked_store
    assert select_best_run(tracker).run.run_id == ids["2"]
    # Without the overfit run, depths 4 and 6 tie on F1 and gap: fewer parameters wins.
    assert select_best_run(tracker, exclude_overfit=True).run.run_id == ids["6"]
    assert select_best_run(tracker, metric="val_loss").run.run_id == ids["2"]  # *_loss: lowest first
    assert select_best_run(tracker, where="metrics.trainable_params >= 300", exclude_overfit=True).run.run_id == ids["4"]
    assert select_best_run(tracker, sweep="latest").run.run_id == ids["2"]
    with pytest.raises(SelectionError, match="no run matches"):
        select_best_run(tracker, where="metrics.val_f1_macro > 0.99")


def test_select_never_returns_an_overfit_run_when_excluded(ranked_store):
    tracker, _ = ranked_store
    for metric in ("val_f1_macro", "f1_gap", "val_loss", "trainable_params"):
        assert select_best_run(tracker, metric=metric, exclude_overfit=True).run.tags["tlexp.overfit"] == "false"


def test_select_errors_are_one_line(ranked_store, store_uri):
    cases = [
        (["--where", "metrics.val_f1_macro > 0.99"], "Error: no run matches"),
        (["--where", "metrics.val_f1_macro >>> 1"], "Error: MLflow cannot run the query"),
        (["--metric", "val_f1_micro"], "Error: no matching run has metric 'val_f1_micro'"),
        (["--experiment", "nope"], "Error: experiment 'nope' does not exist"),
        (["--sweep", "0123"], "Error: run '0123' does not exist"),
    ]
    for args, start in cases:
        outcome = invoke("select", "--tracking-uri", store_uri, "--experiment", "ranked", *args)
        assert outcome.exit_code == 1, args
        last = outcome.output.strip().splitlines()[-1]
        assert last.startswith(start), (args, last)


def test_compare_a_sweep_that_has_no_depth_run_yet(store_uri):
    client = MlflowClient(tracking_uri=store_uri)
    experiment_id = client.create_experiment("early")
    client.create_run(experiment_id, tags={"tlexp.kind": "sweep"})
    for output_format in ("table", "json", "csv"):
        outcome = invoke("compare", "--experiment", "early", "--tracking-uri", store_uri, "--format", output_format)
        assert outcome.exit_code == 0, outcome.output
    assert json.loads(invoke("compare", "--experiment", "early", "--tracking-uri", store_uri, "--format", "json").stdout)["rows"] == []
