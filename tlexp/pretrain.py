"""Which weights a backbone starts from: the demo backbone (pretrained on the demo's source task,
cached on disk, its pretraining an MLflow run of its own), ImageNet, a file, or none."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from tlexp import backbone as bb
from tlexp.config import SweepConfig
from tlexp.data import DEMO_SOURCE_DIGITS, Split, demo_digits
from tlexp.tracking import Tracker
from tlexp.train import PhaseSettings, fit_phase, predict_probabilities, seed_everything

CACHE_ENV = "TLEXP_CACHE_DIR"
DEMO_WEIGHTS_FILE = "demo_backbone.weights.h5"
DEMO_RECORD_FILE = "demo_backbone.json"
# The source task's recipe; part of the cache's identity, so changing it retrains the backbone.
DEMO_PRETRAINING = {
    "architecture": "conv32-conv64-dense128",
    "epochs": 4,
    "learning_rate": 1e-3,
    "batch_size": 64,
    "seed": 0,
    "val_fraction": 0.1,
}


@dataclass(frozen=True)
class BackboneWeights:
    path: str | None  # None: random initialisation
    sha256: str | None
    pretrain_run_id: str | None = None
    pretrain_store: str | None = None  # the tracking URI that holds the pretraining run


def cache_dir(config: SweepConfig) -> Path:
    return Path(
        config.cache_dir or os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "tlexp"
    ).expanduser()


def resolve_backbone_weights(
    config: SweepConfig, spec: bb.BackboneSpec, tracker: Tracker, progress: Callable[[str], None]
) -> BackboneWeights:
    weights = config.resolved_weights
    if weights == "none":
        return BackboneWeights(None, None)
    if weights == "imagenet":
        path = bb.imagenet_weights_path(spec)
        return BackboneWeights(path, bb.file_sha256(path))
    if weights == "pretrained":
        return demo_backbone_weights(cache_dir(config), spec, tracker, progress)
    path = str(Path(weights).resolve())
    return BackboneWeights(path, bb.file_sha256(path))


def demo_backbone_weights(
    directory: Path, spec: bb.BackboneSpec, tracker: Tracker, progress: Callable[[str], None]
) -> BackboneWeights:
    """The demo backbone's pretrained weights, trained and cached on first use."""
    weights_path = directory / f"{spec.image_size}px" / DEMO_WEIGHTS_FILE
    record_path = weights_path.with_name(DEMO_RECORD_FILE)
    if weights_path.is_file() and record_path.is_file():
        try:
            record = json.loads(record_path.read_text())
        except ValueError:
            record = {}  # a damaged record: pretrain again
        if record.get("recipe") == DEMO_PRETRAINING:
            return BackboneWeights(
                str(weights_path), bb.file_sha256(weights_path), record.get("run_id"), record.get("tracking_uri")
            )
    progress(f"pretraining the demo backbone on digits 0-4 (cached in {weights_path.parent})")
    run_id = _pretrain_demo_backbone(spec, weights_path, tracker)
    record_path.write_text(
        json.dumps(
            {"recipe": DEMO_PRETRAINING, "run_id": run_id, "tracking_uri": tracker.tracking_uri},
            indent=2,
        )
    )
    return BackboneWeights(str(weights_path), bb.file_sha256(weights_path), run_id, tracker.tracking_uri)


def _pretrain_demo_backbone(spec: bb.BackboneSpec, weights_path: Path, tracker: Tracker) -> str:
    from tlexp.data import ImageFormat, fit_images
    from tlexp.metrics import evaluate_predictions

    recipe = DEMO_PRETRAINING
    x, y = demo_digits(DEMO_SOURCE_DIGITS)
    x = bb.preprocess(spec, fit_images(x, ImageFormat(spec.image_size, spec.channels)))
    train, val = _source_splits(x, y, recipe)
    class_names = tuple(str(digit) for digit in DEMO_SOURCE_DIGITS)
    seed_everything(recipe["seed"])  # the same pretrained backbone on every machine
    backbone = bb.build_backbone(spec, None)
    classifier = bb.build_classifier(backbone, len(class_names), dropout=0.0, name="source_classifier")
    with tracker.run("pretrain-demo-backbone", tags={"tlexp.kind": "backbone-pretraining"}) as run_id:
        tracker.log_params(
            {**recipe, "backbone": spec.name, "image_size": spec.image_size, "source_classes": class_names}
        )
        history = fit_phase(
            classifier,
            train,
            val,
            PhaseSettings(recipe["epochs"], recipe["learning_rate"], recipe["batch_size"], recipe["seed"]),
        )
        tracker.log_history(history, prefix="epoch_", first_step=0)
        probabilities = predict_probabilities(classifier, val.x, batch_size=recipe["batch_size"])
        source = evaluate_predictions("source_val", val.y, probabilities, class_names)
        tracker.log_metrics(source.prefixed_scores())
        weights_path.parent.mkdir(parents=True, exist_ok=True)
        # Written beside the target and renamed, so a concurrent sweep never reads half a file.
        handle, partial = tempfile.mkstemp(suffix=".weights.h5", dir=weights_path.parent)
        os.close(handle)
        backbone.save_weights(partial)
        os.replace(partial, weights_path)
        tracker.log_params(
            {"backbone_weights_path": str(weights_path), "backbone_weights_sha256": bb.file_sha256(weights_path)}
        )
    return run_id


def _source_splits(x: np.ndarray, y: np.ndarray, recipe: dict) -> tuple[Split, Split]:
    """Train and validation splits of the source task; it has no test data to hold out."""
    from sklearn.model_selection import train_test_split

    train, val = train_test_split(
        np.arange(len(y)), test_size=recipe["val_fraction"], stratify=y, random_state=recipe["seed"]
    )
    return (
        Split(x[train], y[train], tuple(f"demo-source[{i}]" for i in train)),
        Split(x[val], y[val], tuple(f"demo-source[{i}]" for i in val)),
    )
