"""The `tlexp` command line: options become a SweepConfig, one library call does the work."""

from __future__ import annotations

import functools
import os
import time

import click

from tlexp.config import BACKBONES, SweepConfig, load_config, parse_depths
from tlexp.errors import TlexpError


def _config_options(command):
    """Options shared by `sweep` and `run`; each overrides the same key of the config file."""
    options = [
        click.argument("config_file", required=False, type=click.Path(dir_okay=False)),
        click.option("--data", help="'demo', a folder of class folders (<dir>/<class>/*.png|jpg) or an .npz file with x and y."),
        click.option("--backbone", type=click.Choice(BACKBONES), help="Pretrained backbone to fine-tune."),
        click.option("--weights", help="Backbone weights: 'imagenet' (keras.applications), 'pretrained' (demo), 'none' (random init) or a weights file PATH."),
        click.option("--image-size", type=int, help="Square input size in pixels [default: 28 for demo, 224 otherwise]."),
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


def _build_config(config_file: str | None, options: dict) -> SweepConfig:
    try:
        return load_config(config_file, **options)
    except TlexpError as error:
        raise click.ClickException(str(error)) from None


@click.group()
@click.version_option(package_name="tlexp")
def main() -> None:
    """Fine-tune a pretrained Keras backbone at several unfreeze depths and track every run in MLflow."""
    # Quiets TensorFlow's C++ log chatter (oneDNN notices, graph warnings); set before TensorFlow
    # is first imported. Python-side errors still surface as exceptions.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@main.command()
@click.option("--unfreeze", help="Depths to sweep, e.g. 0,2,4,all: the top n backbone layers are made trainable [default: 0,2,4,all].")
@_config_options
def sweep(config_file: str | None, unfreeze: str | None, **options) -> None:
    """Train one model per unfreeze depth, each a nested MLflow run under one sweep run.

    CONFIG_FILE is an optional YAML or TOML file (see experiments/); options override it.

    \b
    Example:
      tlexp sweep experiments/demo.yaml
      tlexp sweep --data ./flowers --backbone mobilenet_v2 --unfreeze 0,20,50,all
    """
    from tlexp.sweep import format_summary, run_sweep

    config = _build_config(config_file, {**options, "unfreeze": unfreeze})
    started = time.monotonic()
    try:
        result = run_sweep(config, progress=click.echo)
    except TlexpError as error:
        raise click.ClickException(str(error)) from None
    click.echo("")
    click.echo(format_summary(result.results))
    if result.best is not None:
        click.echo(f"\nbest depth: {result.best.depth} (val_f1_macro {result.best.val_f1_macro:.3f}, run {result.best.run_id})")
    click.echo(f"sweep run {result.sweep_id} in {time.monotonic() - started:.0f}s; store {result.tracking_uri}")
    click.echo(f"open it with: mlflow ui --backend-store-uri {result.tracking_uri}")
    if result.failed:
        raise click.ClickException(f"{len(result.failed)} of {len(result.results)} depths failed")


@main.command()
@click.option("--unfreeze", required=True, help="The one depth to train: a number of top backbone layers, or 'all'.")
@_config_options
def run(config_file: str | None, unfreeze: str, **options) -> None:
    """Train and track a single unfreeze depth as one MLflow run.

    \b
    Example:
      tlexp run experiments/demo.yaml --unfreeze 4
    """
    from tlexp.sweep import format_summary, run_single

    config = _build_config(config_file, options)
    try:
        depths = parse_depths(unfreeze)
        if len(depths) != 1:
            raise click.ClickException(f"--unfreeze takes one depth, got {unfreeze!r}")
        result = run_single(config, depths[0], progress=click.echo)
    except TlexpError as error:
        raise click.ClickException(str(error)) from None
    click.echo(format_summary([result]))
    if result.status != "FINISHED":
        raise click.ClickException(f"unfreeze depth {result.depth} failed")
    click.echo(f"run {result.run_id}; model {result.model_uri}")


if __name__ == "__main__":
    main()
