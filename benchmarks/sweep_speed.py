"""What a tlexp sweep costs against the naive loop a Keras user would write, in one process launch.

Both sides get the same data (the demo target task), depths, epochs, learning rates, batch size,
seed and pretrained demo backbone, and log to MLflow stores of their own. The naive reference
follows the Keras transfer-learning guide: for each depth a fresh model on the pretrained backbone,
the head phase with the backbone frozen, then the top layers unfrozen and fine-tuned at a lower
learning rate, with MLflow's own Keras callback logging every epoch and the model logged at the
end. tlexp trains the head once per sweep and each depth's top on cached frozen features, and logs
its whole schema (confusion matrices, intervals, plots, model).

Printed: each side's wall time and best val macro-F1, the ratio, the share of tlexp's sweep time
spent in TensorFlow (fitting, predicting, computing the cache) against everything else, and, with
--memory (instead), the peak memory of a 3-depth and a 12-depth sweep, each in a fresh process.

    .venv/bin/python benchmarks/sweep_speed.py [--config experiments/demo.yaml]
    .venv/bin/python benchmarks/sweep_speed.py --backbone mobilenet_v2 --image-size 64 --unfreeze 0,10,30,all
    .venv/bin/python benchmarks/sweep_speed.py --memory
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

from tlexp import backbone as bb
from tlexp import features, sweep
from tlexp.config import ALL_LAYERS, SweepConfig, load_config
from tlexp.data import ImageFormat, load_configured_dataset
from tlexp.pretrain import resolve_backbone_weights
from tlexp.tracking import Tracker

DEMO_CONFIG = Path(__file__).resolve().parent.parent / "experiments" / "demo.yaml"
# 12 depths against 3 on a backbone deep enough for 12: MobileNetV2 (random init, 32 px, 10
# images of each of 5 classes), depths counted in its blocks.
MEMORY_SWEEP = {
    "backbone": "mobilenet_v2",
    "weights": "none",
    "image_size": 32,
    "unfreeze_unit": "blocks",
    "epochs_head": 2,
    "epochs_finetune": 2,
    "bootstrap_resamples": 200,
}
MEMORY_DEPTHS = {3: (0, 4, ALL_LAYERS), 12: (0, 1, 2, 3, 4, 5, 6, 8, 10, 12, 15, ALL_LAYERS)}


class Stopwatch:
    """Seconds spent per label, summed, for wrapped functions."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def wrap(self, owner, name: str, label: str) -> None:
        original = getattr(owner, name)

        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - started

        setattr(owner, name, timed)


def naive_sweep(config: SweepConfig, uri: str, *, pipeline: str) -> float:
    """The Keras transfer-learning guide's recipe once per depth, tracked by mlflow's Keras
    callback; returns the best val macro-F1. `pipeline` "arrays" feeds fit() the NumPy arrays, as
    most users of small array data do; "tf.data" batches them in a tf.data pipeline first, as the
    guide does with its image datasets."""
    import keras
    import mlflow
    import tensorflow as tf
    from mlflow.models import infer_signature
    from sklearn.metrics import f1_score

    spec = bb.backbone_spec(config.backbone, config.image_size)
    dataset = load_configured_dataset(config, ImageFormat(spec.image_size, spec.channels))
    weights = resolve_backbone_weights(config, spec, Tracker(uri, "naive"), lambda _: None)
    x_train, x_val = bb.preprocess(spec, dataset.train.x), bb.preprocess(spec, dataset.val.x)
    if pipeline == "tf.data":
        train_data = tf.data.Dataset.from_tensor_slices((x_train, dataset.train.y))
        train_data = train_data.shuffle(len(x_train), seed=config.seed).batch(config.batch_size).prefetch(tf.data.AUTOTUNE)
        val_data = tf.data.Dataset.from_tensor_slices((x_val, dataset.val.y)).batch(config.batch_size).prefetch(tf.data.AUTOTUNE)
        data = {"x": train_data, "validation_data": val_data}
    else:
        data = {"x": x_train, "y": dataset.train.y, "batch_size": config.batch_size, "validation_data": (x_val, dataset.val.y)}
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(f"naive-{pipeline}")
    best = 0.0
    for depth in config.unfreeze:
        keras.utils.set_random_seed(config.seed)
        base = bb.build_backbone(spec, weights.path)  # the pretrained model, as keras.applications gives it
        base.trainable = False
        inputs = keras.Input(spec.input_shape)
        x = base(inputs, training=False)
        x = keras.layers.Dropout(config.dropout)(x)
        outputs = keras.layers.Dense(len(dataset.class_names), activation="softmax")(x)
        model = keras.Model(inputs, outputs)
        with mlflow.start_run(run_name=f"naive-unfreeze-{depth}"):
            mlflow.log_params({"unfreeze_layers": depth, "epochs_head": config.epochs_head})
            model.compile(keras.optimizers.Adam(config.learning_rate_head), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
            model.fit(**data, epochs=config.epochs_head, callbacks=[mlflow.keras.MlflowCallback()], verbose=0)
            base.trainable = True
            count = len(base.layers) if depth == ALL_LAYERS else depth
            for layer in base.layers[: len(base.layers) - count]:
                layer.trainable = False
            model.compile(keras.optimizers.Adam(config.learning_rate_finetune), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
            model.fit(
                **data, epochs=config.epochs_head + config.epochs_finetune, initial_epoch=config.epochs_head,
                callbacks=[mlflow.keras.MlflowCallback()], verbose=0,
            )
            val_f1 = f1_score(dataset.val.y, model.predict(x_val, verbose=0).argmax(axis=1), average="macro")
            mlflow.log_metric("val_f1_macro", val_f1)
            signature = infer_signature(x_val[:2], model.predict(x_val[:2], verbose=0))
            # Stated requirements, as tlexp does: MLflow's requirement inference would add seconds
            # per model to the naive side that have nothing to do with how the sweep trains.
            requirements = [f"tensorflow=={tf.__version__}", f"keras=={keras.__version__}"]
            mlflow.tensorflow.log_model(model, name="model", signature=signature, pip_requirements=requirements)
        best = max(best, val_f1)
    return best


def tlexp_sweep(config: SweepConfig) -> tuple[float, Stopwatch]:
    watch = Stopwatch()
    watch.wrap(sweep, "fit_phase", "fit")
    watch.wrap(sweep, "predict_probabilities_of_each", "predict")
    watch.wrap(features.FeatureCache, "_features", "cache")
    watch.wrap(sweep.Tracker, "log_keras_model", "model logging")
    watch.wrap(sweep.Tracker, "log_figure", "plots")
    result = sweep.run_sweep(config)
    if result.failed:
        raise SystemExit(f"tlexp sweep had failed depths: {[r.error for r in result.failed]}")
    return result.best.val_f1_macro, watch


def speed(config_path: str, overrides: dict[str, object]) -> None:
    import tensorflow  # noqa: F401  (imported, and the data parsed, before either side is timed)

    with tempfile.TemporaryDirectory() as folder:
        config = load_config(config_path, tracking_uri=f"sqlite:///{folder}/tlexp.db")
        if overrides:
            config = config.with_overrides(**overrides)
        unmatched = {
            key: getattr(config, key)
            for key, plain in (("unfreeze_unit", "layers"), ("class_weight", "none"), ("early_stopping_patience", None), ("augment", False))
            if getattr(config, key) != plain
        }
        if unmatched:  # the naive loop counts layers and has no class weights, early stopping or augmentation
            raise SystemExit(f"the naive reference does not replicate {unmatched}; use a config without them")
        if config.backbone != "demo":
            # Random weights saved to a file stand in for ImageNet's: offline, and frozen BatchNorm
            # as with any pretrained file.
            spec = bb.backbone_spec(config.backbone, config.image_size)
            weights = f"{folder}/{config.backbone}.weights.h5"
            bb.build_backbone(spec, None).save_weights(weights)
            config = config.with_overrides(weights=weights)
        spec = bb.backbone_spec(config.backbone, config.image_size)
        # The demo backbone's pretraining is cached, and the stores created, before any timing.
        resolve_backbone_weights(config, spec, Tracker(f"sqlite:///{folder}/warmup.db", "warmup"), print)
        load_configured_dataset(config, ImageFormat(spec.image_size, spec.channels))
        stores = {side: f"sqlite:///{folder}/{side}.db" for side in ("arrays", "tf.data")}
        for uri in (*stores.values(), config.tracking_uri):
            Tracker(uri, "warmup")
        print(f"data {config.data}, backbone {config.backbone} at {spec.image_size}px, depths {','.join(map(str, config.unfreeze))}, epochs {config.epochs_head}+{config.epochs_finetune}, seed {config.seed}")

        naive = {}
        for pipeline, uri in stores.items():
            started = time.perf_counter()
            best_f1 = naive_sweep(config, uri, pipeline=pipeline)
            naive[pipeline] = (time.perf_counter() - started, best_f1)

        started = time.perf_counter()
        tlexp_f1, watch = tlexp_sweep(config)
        tlexp_seconds = time.perf_counter() - started
        spent = dict(watch.seconds)  # the sweep's alone, before the deepest run adds to it

        # The sweep's single most expensive run: its deepest depth alone, head phase included.
        deepest = max(config.unfreeze, key=lambda depth: float("inf") if depth == ALL_LAYERS else depth)
        started = time.perf_counter()
        sweep.run_single(config.with_overrides(experiment="deepest-alone"), deepest)
        deepest_seconds = time.perf_counter() - started

    for pipeline, (seconds, best_f1) in naive.items():
        print(f"naive Keras + MLflow loop, {pipeline:<8} {seconds:6.1f}s  best val_f1_macro {best_f1:.3f}")
    print(f"tlexp sweep:                       {tlexp_seconds:6.1f}s  best val_f1_macro {tlexp_f1:.3f}")
    for pipeline, (seconds, best_f1) in naive.items():
        print(f"speed-up over the {pipeline} loop: {seconds / tlexp_seconds:.2f}x   best val F1 difference: {tlexp_f1 - best_f1:+.3f}")
    print(f"tlexp sweep / its deepest run (unfreeze={deepest}) alone: {tlexp_seconds:.1f}s / {deepest_seconds:.1f}s = {tlexp_seconds / deepest_seconds:.2f}")
    compute = sum(spent.get(label, 0.0) for label in ("fit", "predict", "cache"))
    print(f"tlexp sweep time in TensorFlow compute (fit, predict, feature cache): {compute:.1f}s = {compute / tlexp_seconds:.0%}")
    for label in ("fit", "predict", "cache", "model logging", "plots"):
        print(f"  {label:<14} {spent.get(label, 0.0):6.1f}s  {spent.get(label, 0.0) / tlexp_seconds:5.1%}")
    other = tlexp_seconds - compute - spent.get("model logging", 0.0) - spent.get("plots", 0.0)
    print(f"  {'other':<14} {other:6.1f}s  {other / tlexp_seconds:5.1%}  (data, metrics, MLflow calls, model building)")


def peak_memory_of_sweep(depth_count: int) -> None:
    """Run in a fresh process: one sweep, then print the process's peak resident memory."""
    with tempfile.TemporaryDirectory() as folder:
        rng = np.random.default_rng(0)
        np.savez(f"{folder}/data.npz", x=rng.integers(0, 256, (50, 32, 32, 3)), y=np.repeat(np.arange(5), 10))
        config = load_config(
            None, data=f"{folder}/data.npz", unfreeze=MEMORY_DEPTHS[depth_count],
            tracking_uri=f"sqlite:///{folder}/mlflow.db", **MEMORY_SWEEP,
        )
        started = time.perf_counter()
        result = sweep.run_sweep(config)
        seconds = time.perf_counter() - started
    finished = len(result.results) - len(result.failed)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{depth_count} {finished} {peak_mb:.0f} {seconds:.1f}")


def memory() -> None:
    peaks = {}
    for depth_count in MEMORY_DEPTHS:
        command = [sys.executable, __file__, "--peak-memory-of", str(depth_count)]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout.split()
        _, finished, peak_mb, seconds = output[-4:]
        peaks[depth_count] = float(peak_mb)
        print(f"{depth_count:>2}-depth sweep ({MEMORY_SWEEP['backbone']}, {finished} finished): peak {peak_mb} MB in {seconds}s")
    print(f"12 depths peak at {peaks[12] / peaks[3] - 1:+.1%} of 3 depths (target: within 15%)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(DEMO_CONFIG), help="the sweep config both sides run")
    parser.add_argument("--backbone", help="another backbone than the config's, e.g. mobilenet_v2 (local random weights)")
    parser.add_argument("--image-size", type=int, help="with --backbone: its input size")
    parser.add_argument("--unfreeze", help="other depths than the config's, e.g. 0,10,30,all")
    parser.add_argument("--memory", action="store_true", help="compare the peak memory of 3 and 12 depths instead")
    parser.add_argument("--peak-memory-of", type=int, choices=sorted(MEMORY_DEPTHS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    if args.peak_memory_of:
        peak_memory_of_sweep(args.peak_memory_of)
        return
    if args.memory:
        memory()
        return
    overrides = {"backbone": args.backbone, "image_size": args.image_size, "unfreeze": args.unfreeze}
    if args.backbone not in (None, "demo"):
        overrides["weights"] = "none"  # replaced by a local weights file in speed()
    speed(args.config, {key: value for key, value in overrides.items() if value is not None})


if __name__ == "__main__":
    main()
