"""The `tlexp` command line: options become a SweepConfig, one library call does the work."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import time

import click

from tlexp.config import BACKBONES, UNFREEZE_UNITS, SweepConfig, load_config, parse_depths
from tlexp.errors import TlexpError, forget_received_interrupt, interrupt_on_signal, received_interrupt


def _config_options(command):
    """Options shared by `sweep` and `run`; each overrides the same key of the config file."""
    options = [
        click.argument("config_file", required=False, type=click.Path(dir_okay=False)),
        click.option("--data", help="'demo', 'demo-rare', a folder of class folders (<dir>/<class>/*.png|jpg) or an .npz file with x and y."),
        click.option("--demo-images-per-class", type=int, help="Target-task images per class for --data demo and demo-rare [default: 60]."),
        click.option("--backbone", type=click.Choice(BACKBONES), help="Pretrained backbone to fine-tune."),
        click.option("--weights", help="Backbone weights: 'imagenet' (keras.applications), 'pretrained' (demo), 'none' (random init) or a weights file PATH."),
        click.option("--image-size", type=int, help="Square input size in pixels [default: 28 for demo, 224 otherwise]."),
        click.option("--unfreeze-unit", type=click.Choice(UNFREEZE_UNITS), help="What a depth counts: layers (base.layers[-n:]) or the architecture's own blocks [default: layers]."),
        click.option("--augment/--no-augment", default=None, help="Random rotations, shifts and zooms of training images (turns the feature cache off) [default: off]."),
        click.option("--feature-cache/--no-feature-cache", default=None, help="Train each depth's top on frozen-layer outputs computed once per cut point [default: on]."),
        click.option("--feature-cache-memory-mb", type=int, help="Frozen-feature caches larger than this go to disk under --cache-dir; 0 always [default: 2048]."),
        click.option("--epochs-head", type=int, help="Epochs training the head with the backbone frozen [default: 5]."),
        click.option("--epochs-finetune", type=int, help="Epochs fine-tuning after unfreezing [default: 5]."),
        click.option("--batch-size", type=int, help="Batch size [default: 32]."),
        click.option("--lr-head", "learning_rate_head", type=float, help="Learning rate of the head phase [default: 1e-3]."),
        click.option("--lr-finetune", "learning_rate_finetune", type=float, help="Learning rate of fine-tuning [default: 1e-4]."),
        click.option("--dropout", type=float, help="Dropout before the classification layer [default: 0.2]."),
        click.option("--early-stopping-patience", type=int, help="Stop a phase after this many epochs without a better val_loss, keeping the best weights [default: off]."),
        click.option("--seed", type=int, help="Seed for splits, initialisation and shuffling [default: 0]."),
        click.option("--val-fraction", type=float, help="Share of images in the validation split [default: 0.2]."),
        click.option("--test-fraction", type=float, help="Share of images held out as the test split [default: 0.2]."),
        click.option("--overfit-threshold", type=float, help="Flag a run as overfit when train minus val macro-F1 exceeds this [default: 0.10]."),
        click.option("--positive-class", help="Binary tasks: the positive class name [default: the second class in sorted order]."),
        click.option("--threshold-rule", type=click.Choice(["max_f1", "min_recall", "min_precision"]), help="Binary tasks: how the decision threshold is chosen on validation [default: max_f1]."),
        click.option("--threshold-target", type=float, help="The recall (min_recall) or precision (min_precision) the threshold must reach."),
        click.option("--class-weight", type=click.Choice(["none", "balanced"]), help="Weight classes inversely to their frequency in training [default: none]."),
        click.option("--bootstrap-resamples", type=int, help="Bootstrap resamples for the 95% confidence intervals [default: 1000]."),
        click.option("--allow-overlap/--no-allow-overlap", default=None, help="Train even when an image occurs in more than one split (tagged tlexp.overlap_warning) instead of stopping."),
        click.option("--mixed-precision/--no-mixed-precision", default=None, help="Train in mixed_float16 on a GPU (ignored on the CPU)."),
        click.option("--experiment", help="MLflow experiment name [default: tlexp]."),
        click.option("--tracking-uri", help="MLflow tracking URI [default: $MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db]."),
        click.option("--cache-dir", help="Where the demo backbone is cached [default: $TLEXP_CACHE_DIR, else ~/.cache/tlexp]."),
    ]
    return functools.reduce(lambda decorated, option: option(decorated), reversed(options), command)


@contextlib.contextmanager
def _one_line_errors():
    """Library errors, and a store that fails mid-command, become one `Error:` line and exit 1."""
    try:
        yield
    except TlexpError as error:
        raise click.ClickException(str(error)) from None
    except Exception as error:
        from tlexp.tracking import store_failure

        failure = store_failure(error)
        if failure is None:
            raise
        raise click.ClickException(str(failure)) from None


def _build_config(config_file: str | None, options: dict) -> SweepConfig:
    with _one_line_errors():
        return load_config(config_file, **options)


@click.group()
@click.version_option(package_name="tlexp")
def main() -> None:
    """Fine-tune a pretrained Keras backbone at several unfreeze depths and track every run in MLflow."""
    # Quiets TensorFlow's C++ log chatter (oneDNN notices, graph warnings); set before TensorFlow
    # is first imported. Python-side errors still surface as exceptions.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@contextlib.contextmanager
def _interrupts_end_runs_killed():
    """Ctrl+C and SIGTERM interrupt: runs end KILLED, the exit code is 128 + signal."""
    previous = {number: signal.signal(number, interrupt_on_signal) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            yield
        except Exception as error:
            interrupt = received_interrupt()
            if interrupt is None:
                raise
            raise interrupt from error  # an interrupt that TensorFlow turned into another error
    except KeyboardInterrupt as interrupt:
        partial = getattr(interrupt, "partial_results", ())
        if partial:
            from tlexp.sweep import format_summary

            click.echo("\n" + format_summary(partial))
        click.echo("Interrupted: the current runs are marked KILLED; run the same command again to resume.", err=True)
        raise SystemExit(getattr(interrupt, "exit_code", 130)) from None
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        forget_received_interrupt()


@main.command()
@click.option("--unfreeze", help="Depths to sweep, e.g. 0,2,4,all: the top n backbone layers (or blocks, with --unfreeze-unit blocks) are made trainable [default: 0,2,4,all].")
@click.option("--restart", is_flag=True, help="Start a fresh sweep instead of resuming an interrupted identical one.")
@_config_options
def sweep(config_file: str | None, unfreeze: str | None, restart: bool, **options) -> None:
    """Train one model per unfreeze depth, each a nested MLflow run under one sweep run.

    CONFIG_FILE is an optional YAML or TOML file (see experiments/); options override it.
    Running the same sweep again after a crash or an interrupt resumes it: finished depths are
    skipped. Ctrl+C or SIGTERM ends the runs KILLED (exit code 130 or 143).

    \b
    Example:
      tlexp sweep experiments/demo.yaml
      tlexp sweep --data ./flowers --backbone mobilenet_v2 --unfreeze 0,20,50,all
    """
    from tlexp.sweep import format_summary, run_sweep

    config = _build_config(config_file, {**options, "unfreeze": unfreeze})
    started = time.monotonic()
    with _one_line_errors(), _interrupts_end_runs_killed():
        result = run_sweep(config, progress=click.echo, restart=restart)
    click.echo("")
    click.echo(format_summary(result.results))
    if result.best is not None:
        click.echo(f"\nbest depth: {result.best.depth} (val_f1_macro {result.best.val_f1_macro:.3f}, run {result.best.run_id})")
    click.echo(f"sweep run {result.sweep_id} in {time.monotonic() - started:.0f}s; store {result.tracking_uri}")
    if result.tracking_uri.startswith(("http://", "https://")):
        click.echo(f"open it in a browser: {result.tracking_uri}")
    else:
        click.echo(f"open it with: tlexp ui --tracking-uri {result.tracking_uri}   (then http://127.0.0.1:5000)")
    if result.failed:
        raise click.ClickException(f"{len(result.failed)} of {len(result.results)} depths failed")


@main.command()
@click.option("--unfreeze", required=True, help="The one depth to train: a number of top backbone layers (or blocks), or 'all'.")
@_config_options
def run(config_file: str | None, unfreeze: str, **options) -> None:
    """Train and track a single unfreeze depth as one MLflow run.

    \b
    Example:
      tlexp run experiments/demo.yaml --unfreeze 4
    """
    from tlexp.sweep import format_summary, run_single

    config = _build_config(config_file, options)
    with _one_line_errors():
        depths = parse_depths(unfreeze)
    if len(depths) != 1:
        raise click.ClickException(f"--unfreeze takes one depth, got {unfreeze!r}")
    with _one_line_errors(), _interrupts_end_runs_killed():
        result = run_single(config, depths[0], progress=click.echo)
    click.echo(format_summary([result]))
    if result.status != "FINISHED":
        raise click.ClickException(f"unfreeze depth {result.depth} failed")
    click.echo(f"run {result.run_id}; model {result.model_uri}")


def _tracking_option(command):
    return click.option(
        "--tracking-uri",
        help="MLflow tracking URI [default: $MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db].",
    )(command)


def _experiment_option(command):
    return click.option("--experiment", default="tlexp", show_default=True, help="MLflow experiment name.")(command)


@main.command()
@_experiment_option
@click.option("--sweep", default="latest", show_default=True, help="Sweep run id, or 'latest'.")
@click.option("--format", "output_format", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
@_tracking_option
def compare(experiment: str, sweep: str, output_format: str, tracking_uri: str | None) -> None:
    """Compare the depths of a sweep: one row per depth, read back from MLflow.

    \b
    Example:
      tlexp compare --experiment tlexp-demo
      tlexp compare --experiment tlexp-demo --sweep latest --format json
    """
    import csv
    import json
    import sys

    from tlexp.select import COMPARE_COLUMNS, compare_rows
    from tlexp.tracking import Tracker

    with _one_line_errors():
        sweep_id, rows = compare_rows(Tracker(tracking_uri, experiment, create=False), sweep)
    if output_format == "json":
        click.echo(json.dumps({"sweep_id": sweep_id, "experiment": experiment, "rows": rows}, indent=2))
    elif output_format == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=COMPARE_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    else:
        click.echo(f"sweep {sweep_id} in experiment {experiment!r}")
        click.echo(_table(rows, ("unfreeze_layers", "status", "trainable_params", "train_f1_macro", "val_f1_macro", "val_recall_rarest", "f1_gap", "overfit", "verdict", "run_id")))


def _table(rows: list[dict], columns: tuple[str, ...]) -> str:
    def cell(value) -> str:
        if isinstance(value, float):
            return str(int(value)) if value.is_integer() and abs(value) >= 1 else f"{value:.3f}"
        return "" if value is None else str(value)

    cells = [[cell(row[column]) for column in columns] for row in rows]
    widths = [max([len(column), *(len(line[i]) for line in cells)]) for i, column in enumerate(columns)]
    lines = ["  ".join(column.ljust(width) for column, width in zip(columns, widths))]
    lines += ["  ".join(value.ljust(width) for value, width in zip(line, widths)) for line in cells]
    return "\n".join(lines)


@main.command()
@click.option("--metric", default="val_f1_macro", show_default=True, help="Metric to rank by; *_loss and *_gap rank lowest first, others highest first.")
@_experiment_option
@click.option("--sweep", help="Restrict to one sweep: a sweep run id or 'latest' [default: every sweep of the experiment].")
@click.option("--exclude-overfit", is_flag=True, help="Skip runs tagged tlexp.overfit = true.")
@click.option("--where", help="An extra MLflow filter, e.g. \"metrics.val_recall_rarest >= 0.9\".")
@click.option("--register", "register_name", metavar="NAME", help="Register the selected run's model under NAME.")
@click.option("--alias", default="champion", show_default=True, help="Registry alias pointed at the new version.")
@click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@_tracking_option
def select(metric, experiment, sweep, exclude_overfit, where, register_name, alias, output_format, tracking_uri) -> None:
    """Select the best depth run by an MLflow query, and optionally register its model.

    Ties on the metric go to the smaller f1_gap, then to fewer trainable parameters.

    \b
    Example:
      tlexp select --experiment tlexp-demo --exclude-overfit --register demo-digits --alias champion
      tlexp select --experiment tlexp-demo-rare --where "metrics.val_recall_rarest >= 0.9" --format json
    """
    import json

    from tlexp.select import select_best_run
    from tlexp.tracking import Tracker

    with _one_line_errors():
        selection = select_best_run(
            Tracker(tracking_uri, experiment, create=False),
            metric=metric,
            sweep=sweep,
            exclude_overfit=exclude_overfit,
            where=where,
            register=register_name,
            alias=alias,
        )
    summary = selection.as_dict()
    if output_format == "json":
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo(
        f"selected run {summary['run_id']} (unfreeze {summary['unfreeze_layers']}): "
        f"{metric} = {summary['value']:.4f}, f1_gap = {summary['f1_gap']:.4f}, overfit = {summary['overfit']}, verdict = {summary['verdict']}"
    )
    click.echo(f"model: {summary['model_uri']}")
    if selection.registered:
        click.echo(f"registered: {selection.registered.uri} (version {selection.registered.version})")


@main.command()
@click.argument("model_uri")
@click.option("--data", required=True, help="The data the model was trained on: 'demo', 'demo-rare', a folder or an .npz file.")
@_tracking_option
def evaluate(model_uri: str, data: str, tracking_uri: str | None) -> None:
    """Evaluate a model on the held-out test split of its training data.

    MODEL_URI is runs:/RUN_ID/model or models:/NAME@ALIAS. The test split is rebuilt from the
    training run's seed and fractions; the result is logged as test_* metrics in a run nested
    under the training run. This is the only command that reads the test split.

    \b
    Example:
      tlexp evaluate models:/demo-digits@champion --data demo
    """
    from tlexp.evaluate import evaluate_on_test

    with _one_line_errors():
        result = evaluate_on_test(tracking_uri, model_uri, data)
    scores = result.evaluation.scores
    click.echo(
        f"test: accuracy {scores['accuracy']:.3f}, f1_macro {scores['f1_macro']:.3f}, "
        f"precision_macro {scores['precision_macro']:.3f}, recall_macro {scores['recall_macro']:.3f} "
        f"on {len(result.evaluation.y_true)} images"
    )
    click.echo(f"logged as run {result.run_id}, under training run {result.training_run_id}")


@main.command()
@click.option("--port", default=5000, show_default=True, type=int)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind; anything but 127.0.0.1 exposes the store to the network.")
@_tracking_option
def ui(port: int, host: str, tracking_uri: str | None) -> None:
    """Start the MLflow UI on the tracking store, bound to 127.0.0.1.

    \b
    Example:
      tlexp ui --port 5000
    """
    import subprocess
    import sys

    from tlexp.tracking import ui_command

    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"Warning: binding {host}: anyone who can reach it can read and change the store.", err=True)
    with _one_line_errors():
        command = ui_command(tracking_uri, host=host, port=port)
    click.echo(f"MLflow UI on http://{host}:{port} (Ctrl+C to stop)")
    try:
        raise SystemExit(subprocess.call([sys.executable, "-m", "mlflow", *command]))
    except KeyboardInterrupt:
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
