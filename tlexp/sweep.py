"""A sweep over unfreeze depths: one MLflow parent run, one nested child run per depth.

The head phase (backbone frozen) is the same for every depth, so it is trained once per sweep;
each depth then starts from that head, unfreezes its top layers and fine-tunes.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import socket
import time
import traceback
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np

from tlexp import backbone as bb
from tlexp.config import SweepConfig, Depth
from tlexp.data import (
    Dataset,
    ImageFormat,
    Split,
    describe_overlaps,
    load_configured_dataset,
    split_digest,
    split_overlaps,
)
from tlexp.errors import ConfigError, DataError, TrialError, first_line, received_interrupt
from tlexp.features import FeatureCache
from tlexp.metrics import assess, confusion_matrix_figure, positive_index, precision_recall_figure
from tlexp.plots import depth_summary_figure, training_curves_figure
from tlexp.pretrain import BackboneWeights, cache_dir, resolve_backbone_weights
from tlexp.tracking import RunRecord, Tracker
from tlexp.train import (
    PhaseSettings,
    configure_device,
    fit_phase,
    predict_probabilities_of_each,
    releasing_training_graphs,
    seed_everything,
)

if TYPE_CHECKING:
    import keras

Progress = Callable[[str], None]
# Per-epoch curves are logged under this prefix so they never collide with the final metrics.
CURVE_PREFIX = "epoch_"
SIGNATURE_EXAMPLE_SIZE = 2


@dataclass(frozen=True)
class DepthResult:
    depth: Depth
    run_id: str
    status: str  # "FINISHED" or "FAILED"
    trainable_layers: int
    trainable_params: int
    train_f1_macro: float = float("nan")
    val_f1_macro: float = float("nan")
    val_f1_macro_ci_low: float = float("nan")
    val_f1_macro_ci_high: float = float("nan")
    f1_gap: float = float("nan")
    overfit: bool = False
    rarest_class: str | None = None
    val_recall_rarest: float = float("nan")
    val_recall_rarest_ci_low: float = float("nan")
    val_recall_rarest_ci_high: float = float("nan")
    decision_threshold: float | None = None
    verdict: str | None = None
    accuracy_paradox: str | None = None
    model_uri: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class SweepResult:
    sweep_id: str
    tracking_uri: str
    experiment_id: str
    results: tuple[DepthResult, ...]
    best: DepthResult | None

    @property
    def failed(self) -> tuple[DepthResult, ...]:
        return tuple(result for result in self.results if result.status != "FINISHED")


@dataclass
class _Prepared:
    """Everything a sweep needs before its first epoch; building it validates the whole sweep."""

    config: SweepConfig
    tracker: Tracker
    dataset: Dataset
    train: Split  # preprocessed for the backbone
    val: Split
    weights: BackboneWeights
    layer_counts: dict[Depth, int]
    head_model: keras.Model
    device: str
    leak: str | None  # a description of images shared between splits, when allowed
    class_weight: dict[int, float] | None
    data_digest: str  # of all three splits: part of what makes two sweeps the same
    cache: FeatureCache | None  # None when the feature cache is off
    cache_off_reason: str | None


def _noop(_: str) -> None:
    pass


def run_sweep(config: SweepConfig, *, progress: Progress = _noop, restart: bool = False) -> SweepResult:
    """Train one model per unfreeze depth in `config` and track each as a nested MLflow run.

    The same sweep run again after a crash or an interrupt resumes it: depths that FINISHED are
    skipped, runs a dead process left RUNNING are marked KILLED, and the rest run. `restart`
    starts a fresh sweep instead. An interrupt ends the runs KILLED and carries the finished
    depths' results as `partial_results` on the KeyboardInterrupt it re-raises.
    """
    prepared = _prepare(config, progress)
    tracker = prepared.tracker
    params = {**_shared_params(prepared), "unfreeze_depths": [str(d) for d in config.unfreeze]}
    fingerprint = _fingerprint(params)
    resumed = None if restart else _resumable_sweep(tracker, fingerprint)
    done = _finished_depths(tracker, resumed) if resumed else {}
    if resumed:
        progress(f"resuming sweep {resumed}: {len(done)} of {len(config.unfreeze)} depths already finished")
    tags = {"tlexp.kind": "sweep", "tlexp.config_fingerprint": fingerprint, "tlexp.owner": _owner()}
    results: list[DepthResult] = []
    with tracker.run(_sweep_run_name(config), tags=tags, resume_run_id=resumed) as sweep_id:
        try:
            tracker.set_tags({"tlexp.sweep_id": sweep_id, "tlexp.device": prepared.device})
            # A resumed sweep run has its params already; the weights' path may differ (same content).
            tracker.log_params(_without_path(params) if resumed else params)
            head_history = None
            for index, depth in enumerate(config.unfreeze, start=1):
                if str(depth) in done:
                    result = done[str(depth)]
                    line = f"unfreeze={depth}: already FINISHED in run {result.run_id}; skipped"
                else:
                    head_history = head_history if head_history is not None else _train_head(prepared, progress)
                    with releasing_training_graphs():  # keeps memory flat however many depths
                        result = _run_depth(prepared, head_history, depth, sweep_id=sweep_id, nested=True)
                    line = _describe(result)
                results.append(result)
                progress(f"[{index}/{len(config.unfreeze)}] {line}")
        except KeyboardInterrupt as interrupt:
            interrupt.partial_results = tuple(results)
            raise
        finally:
            _release_cache(prepared)
        best = best_result(results)
        _log_sweep_summary(tracker, results, best, config.overfit_threshold)
    return SweepResult(sweep_id, tracker.tracking_uri, tracker.experiment_id, tuple(results), best)


def _without_path(params: dict[str, object]) -> dict[str, object]:
    return {key: value for key, value in params.items() if key != "backbone_weights_path"}


def _fingerprint(params: dict[str, object]) -> str:
    """What makes two sweeps the same sweep: every setting, the data's and the weights' content."""
    relevant = {key: str(value) for key, value in _without_path(params).items()}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _owner_is_dead(owner: str | None) -> bool:
    """Only a process on this host can be checked; one elsewhere is taken to be alive."""
    host, _, pid = (owner or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _resumable_sweep(tracker: Tracker, fingerprint: str) -> str | None:
    """The latest unfinished sweep with this fingerprint: KILLED, FAILED, or RUNNING with a dead owner."""
    found = tracker.search_runs(
        f"tags.`tlexp.kind` = 'sweep' and tags.`tlexp.config_fingerprint` = '{fingerprint}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not found or found[0].status == "FINISHED":
        return None
    latest = found[0]
    if latest.status == "RUNNING":
        if not _owner_is_dead(latest.tags.get("tlexp.owner")):
            return None  # an identical sweep is running now: this one starts afresh beside it
        tracker.mark_killed(latest.run_id)
    return latest.run_id


def _finished_depths(tracker: Tracker, sweep_id: str) -> dict[str, DepthResult]:
    """The FINISHED depths of a sweep; depth runs a dead process left RUNNING are marked KILLED."""
    done: dict[str, DepthResult] = {}
    for record in tracker.search_runs(f"tags.`tlexp.kind` = 'depth' and tags.`tlexp.sweep_id` = '{sweep_id}'"):
        if record.status == "RUNNING" and _owner_is_dead(record.tags.get("tlexp.owner")):
            tracker.mark_killed(record.run_id)
        elif record.status == "FINISHED":
            done[record.params["unfreeze_layers"]] = _result_from_record(record)
    return done


def _result_from_record(record: RunRecord) -> DepthResult:
    metrics, tags = record.metrics, record.tags
    nan = float("nan")
    depth = record.params["unfreeze_layers"]
    return DepthResult(
        depth=int(depth) if depth.isdigit() else depth,
        run_id=record.run_id,
        status=record.status,
        trainable_layers=int(metrics.get("trainable_layers", 0)),
        trainable_params=int(metrics.get("trainable_params", 0)),
        train_f1_macro=metrics.get("train_f1_macro", nan),
        val_f1_macro=metrics.get("val_f1_macro", nan),
        val_f1_macro_ci_low=metrics.get("val_f1_macro_ci_low", nan),
        val_f1_macro_ci_high=metrics.get("val_f1_macro_ci_high", nan),
        f1_gap=metrics.get("f1_gap", nan),
        overfit=tags.get("tlexp.overfit") == "true",
        rarest_class=tags.get("tlexp.rarest_class"),
        val_recall_rarest=metrics.get("val_recall_rarest", nan),
        val_recall_rarest_ci_low=metrics.get("val_recall_rarest_ci_low", nan),
        val_recall_rarest_ci_high=metrics.get("val_recall_rarest_ci_high", nan),
        decision_threshold=metrics.get("decision_threshold"),
        verdict=tags.get("tlexp.verdict"),
        accuracy_paradox=tags.get("tlexp.accuracy_paradox"),
        model_uri=f"runs:/{record.run_id}/model",
    )


def run_single(config: SweepConfig, depth: Depth, *, progress: Progress = _noop) -> DepthResult:
    """Train and track one depth as a top-level MLflow run (no sweep parent)."""
    config = config.with_overrides(unfreeze=(depth,))
    prepared = _prepare(config, progress)
    try:
        head_history = _train_head(prepared, progress)
        result = _run_depth(prepared, head_history, depth, sweep_id=None, nested=False)
    finally:
        _release_cache(prepared)
    progress(_describe(result))
    return result


def _prepare(config: SweepConfig, progress: Progress) -> _Prepared:
    tracker = Tracker(config.tracking_uri, config.experiment)
    spec = bb.backbone_spec(config.backbone, config.image_size)
    dataset = load_configured_dataset(config, ImageFormat(spec.image_size, spec.channels))
    leak = _check_overlaps(dataset, allow=config.allow_overlap)
    _check_task_settings(config, dataset)
    device = configure_device(mixed_precision=config.mixed_precision)
    weights = resolve_backbone_weights(config, spec, tracker, progress)
    # Seeded here so that the head's initial weights do not depend on what ran before (such as
    # pretraining the demo backbone in this process).
    seed_everything(config.seed)
    base = bb.build_backbone(spec, weights.path)
    # Every depth is checked against the backbone before any training starts.
    layer_counts = {depth: bb.resolve_depth(depth, base, config.unfreeze_unit) for depth in config.unfreeze}
    head_model = bb.build_classifier(
        base, len(dataset.class_names), dropout=config.dropout, augment=config.augment
    )
    train, val = _preprocessed(spec, dataset.train), _preprocessed(spec, dataset.val)
    cache_off_reason = _cache_off_reason(config)
    cache = None
    if cache_off_reason is None:
        cache = FeatureCache(
            base,
            train,
            val,
            batch_size=config.batch_size,
            memory_bytes=config.feature_cache_memory_mb << 20,
            spill_dir=cache_dir(config) / "features",
        )
    return _Prepared(
        config=config,
        tracker=tracker,
        dataset=dataset,
        train=train,
        val=val,
        weights=weights,
        layer_counts=layer_counts,
        head_model=head_model,
        device=device,
        leak=leak,
        class_weight=_balanced_class_weight(config, dataset),
        data_digest=hashlib.sha256(
            "".join(split_digest(s) for s in (dataset.train, dataset.val, dataset.test)).encode()
        ).hexdigest()[:32],
        cache=cache,
        cache_off_reason=cache_off_reason,
    )


def _release_cache(prepared: _Prepared) -> None:
    if prepared.cache is not None:
        prepared.cache.clear()


def _cache_off_reason(config: SweepConfig) -> str | None:
    if config.augment:
        return "off: augmentation is on, so the frozen layers see new inputs every epoch"
    if not config.feature_cache:
        return "off: feature_cache is false"
    return None


def _check_task_settings(config: SweepConfig, dataset: Dataset) -> None:
    """Binary-only settings are checked against the data before any training."""
    binary = positive_index(dataset.class_names, config.positive_class) is not None
    if not binary and config.threshold_rule != "max_f1":
        raise ConfigError(
            f"threshold_rule {config.threshold_rule} applies to binary tasks, but {dataset.name} has "
            f"{len(dataset.class_names)} classes; expected threshold_rule max_f1"
        )


def _balanced_class_weight(config: SweepConfig, dataset: Dataset) -> dict[int, float] | None:
    if config.class_weight != "balanced":
        return None
    from sklearn.utils.class_weight import compute_class_weight

    classes = np.arange(len(dataset.class_names))
    weights = compute_class_weight("balanced", classes=classes, y=dataset.train.y)
    return {int(label): float(weight) for label, weight in zip(classes, weights)}


def _check_overlaps(dataset: Dataset, *, allow: bool) -> str | None:
    """An image in more than one split stops the sweep before training, unless allowed; then the
    description becomes a warning tag on every run."""
    overlaps = split_overlaps(dataset)
    if not overlaps:
        return None
    description = describe_overlaps(overlaps)
    if not allow:
        raise DataError(
            f"{description}; expected every image in one split only (remove the copies, or pass "
            "--allow-overlap to train anyway)"
        )
    return description


def _preprocessed(spec: bb.BackboneSpec, split: Split) -> Split:
    return Split(bb.preprocess(spec, split.x), split.y, split.sources)


def _train_head(prepared: _Prepared, progress: Progress) -> dict[str, list[float]]:
    """The frozen-backbone phase, shared by every depth of the sweep."""
    config = prepared.config
    bb.unfreeze_top_layers(prepared.head_model, 0)
    settings = _phase_settings(prepared, "head")
    model, train, val, cache_note = _trainable_part(prepared, prepared.head_model, layer_count=0, settings=settings)
    progress(
        f"training the head on {len(prepared.train)} images, backbone frozen "
        f"({config.epochs_head} epochs, {prepared.device}; feature cache {cache_note})"
    )
    return fit_phase(model, train, val, settings)


def _trainable_part(
    prepared: _Prepared, classifier: keras.Model, *, layer_count: int, settings: PhaseSettings
) -> tuple[keras.Model, Split, Split, str]:
    """What a phase fits: with the cache, the classifier above the highest cut below its trainable
    layers, on the cached output of the layers below; otherwise the whole classifier on images.
    Both share the classifier's layers, so training either trains the classifier. The last item
    says which it is (the tlexp.feature_cache tag)."""
    if prepared.cache is None:
        return classifier, prepared.train, prepared.val, prepared.cache_off_reason or ""
    if settings.epochs == 0:
        return classifier, prepared.train, prepared.val, "off: no epochs in this phase"
    cut = bb.cache_cut(bb.backbone_of(classifier), layer_count)
    if cut is None:
        prepared.cache.clear()  # nothing to cache: the last cut point's features would only take memory
        return classifier, prepared.train, prepared.val, "off: no frozen layers below the trainable ones"
    cached = prepared.cache.at(cut)
    return bb.part_above_cut(classifier, cut), cached.train, cached.val, cached.describe()


def _run_depth(
    prepared: _Prepared,
    head_history: dict[str, list[float]],
    depth: Depth,
    *,
    sweep_id: str | None,
    nested: bool,
) -> DepthResult:
    tracker = prepared.tracker
    layer_count = prepared.layer_counts[depth]
    tags = {"tlexp.kind": "depth", "tlexp.device": prepared.device, "tlexp.owner": _owner()}
    if prepared.leak:
        tags["tlexp.overlap_warning"] = prepared.leak[:5000]
    if prepared.weights.pretrain_run_id and prepared.weights.pretrain_store == tracker.tracking_uri:
        tags["tlexp.backbone_pretrain_run_id"] = prepared.weights.pretrain_run_id
    model = _model_from_head(prepared.head_model)
    # Random-init BatchNorm statistics mean nothing: from scratch, BatchNorm trains.
    trainable_layers = bb.unfreeze_top_layers(
        model, layer_count, freeze_batchnorm=prepared.weights.path is not None
    )
    trainable_params = bb.count_params(model.trainable_weights)
    run_id = ""
    try:
        with tracker.run(f"unfreeze-{depth}", nested=nested, tags=tags) as run_id:
            tracker.set_tags({"tlexp.sweep_id": sweep_id or run_id})
            tracker.log_params(
                {**_shared_params(prepared), "unfreeze_layers": depth, "unfreeze_layer_count": layer_count}
            )
            tracker.log_metrics(
                {
                    "trainable_layers": trainable_layers,
                    "trainable_params": trainable_params,
                    "total_params": bb.count_params(model.weights),
                }
            )
            try:
                return _train_and_log(prepared, model, head_history, depth, trainable_layers, run_id)
            except Exception as error:
                interrupt = received_interrupt()
                if interrupt is not None:  # an interrupt that TensorFlow turned into another error
                    raise interrupt from error
                tracker.set_tags({"tlexp.error": first_line(error)[:500]})
                tracker.log_text(traceback.format_exc(), "error/traceback.txt")
                raise TrialError(f"unfreeze depth {depth} failed: {first_line(error)}") from error
    except TrialError as error:
        return DepthResult(
            depth, run_id, "FAILED", trainable_layers, trainable_params, error=str(error)
        )


def _model_from_head(head_model: keras.Model) -> keras.Model:
    """A fresh copy of the trained head model, so that depths never share weights."""
    import keras

    model = keras.models.clone_model(head_model)
    model.set_weights(head_model.get_weights())
    return model


def _train_and_log(
    prepared: _Prepared,
    model: keras.Model,
    head_history: dict[str, list[float]],
    depth: Depth,
    trainable_layers: int,
    run_id: str,
) -> DepthResult:
    tracker, config, dataset = prepared.tracker, prepared.config, prepared.dataset
    for context, split in (("train", dataset.train), ("validation", dataset.val), ("test-held-out", dataset.test)):
        tracker.log_split(split.x, split.y, name=f"{dataset.name}-{context}", digest=split_digest(split), context=context)
    head_epochs = len(head_history.get("loss", []))
    tracker.log_history(head_history, prefix=CURVE_PREFIX, first_step=0)
    settings = _phase_settings(prepared, "finetune")
    trainable, train, val, cache_note = _trainable_part(
        prepared, model, layer_count=prepared.layer_counts[depth], settings=settings
    )
    tracker.set_tags({"tlexp.feature_cache": cache_note})
    finetune_history = fit_phase(
        trainable,
        train,
        val,
        settings,
        initial_epoch=head_epochs,
        on_epoch_end=lambda epoch, logs: tracker.log_metrics(
            {f"{CURVE_PREFIX}{name}": value for name, value in logs.items()}, step=epoch
        ),
    )
    train_probabilities, val_probabilities = predict_probabilities_of_each(
        model, (prepared.train.x, prepared.val.x), batch_size=config.batch_size
    )
    assessment = assess(
        prepared.train.y, train_probabilities, prepared.val.y, val_probabilities, dataset.class_names, config
    )
    tracker.log_metrics(
        {**assessment.metrics(), "epochs_trained": head_epochs + len(finetune_history.get("loss", []))}
    )
    tracker.set_tags(assessment.tags())
    for evaluation in (assessment.train, assessment.val):
        tracker.log_json(evaluation.confusion_json(), f"confusion_matrix/{evaluation.split}.json")
        tracker.log_figure(confusion_matrix_figure(evaluation), f"confusion_matrix/{evaluation.split}.png")
        tracker.log_json(evaluation.report(), f"classification_report/{evaluation.split}.json")
    if assessment.threshold is not None:
        tracker.log_figure(precision_recall_figure(assessment, val_probabilities), "pr_curve/val.png")
    tracker.log_figure(
        training_curves_figure(
            _joined_history(head_history, finetune_history),
            finetune_starts_at=head_epochs,
            title=f"unfreeze {depth} ({trainable_layers} backbone layers trainable)",
        ),
        "training_curves.png",
    )
    model_uri = tracker.log_keras_model(
        model,
        example_input=prepared.val.x[:SIGNATURE_EXAMPLE_SIZE],
        example_output=val_probabilities[:SIGNATURE_EXAMPLE_SIZE].astype("float32"),
    )
    return DepthResult(
        depth=depth,
        run_id=run_id,
        status="FINISHED",
        trainable_layers=trainable_layers,
        trainable_params=bb.count_params(model.trainable_weights),
        train_f1_macro=assessment.train.scores["f1_macro"],
        val_f1_macro=assessment.val.scores["f1_macro"],
        val_f1_macro_ci_low=assessment.f1_ci[0],
        val_f1_macro_ci_high=assessment.f1_ci[1],
        f1_gap=assessment.gaps["f1_gap"],
        overfit=assessment.overfit.overfit,
        rarest_class=assessment.rarest_class,
        val_recall_rarest=assessment.rarest_recall,
        val_recall_rarest_ci_low=assessment.rarest_recall_ci[0],
        val_recall_rarest_ci_high=assessment.rarest_recall_ci[1],
        decision_threshold=assessment.threshold.value if assessment.threshold else None,
        verdict="good" if assessment.good else "bad",
        accuracy_paradox=assessment.paradox,
        model_uri=model_uri,
    )


def _phase_settings(prepared: _Prepared, phase: str) -> PhaseSettings:
    config = prepared.config
    return PhaseSettings(
        epochs=config.epochs_head if phase == "head" else config.epochs_finetune,
        learning_rate=config.learning_rate_head if phase == "head" else config.learning_rate_finetune,
        batch_size=config.batch_size,
        seed=config.seed,
        early_stopping_patience=config.early_stopping_patience,
        class_weight=prepared.class_weight,
    )


def _joined_history(*histories: dict[str, list[float]]) -> dict[str, list[float]]:
    joined: dict[str, list[float]] = {}
    for history in histories:
        for name, values in history.items():
            joined.setdefault(name, []).extend(values)
    return joined


def _shared_params(prepared: _Prepared) -> dict[str, object]:
    config, dataset = prepared.config, prepared.dataset
    return {
        "backbone": config.backbone,
        "weights": config.resolved_weights,
        "backbone_weights_path": prepared.weights.path,
        "backbone_weights_sha256": prepared.weights.sha256,
        "image_size": prepared.train.x.shape[1],
        "learning_rate_head": config.learning_rate_head,
        "learning_rate_finetune": config.learning_rate_finetune,
        "epochs_head": config.epochs_head,
        "epochs_finetune": config.epochs_finetune,
        "batch_size": config.batch_size,
        "dropout": config.dropout,
        "early_stopping_patience": config.early_stopping_patience,
        "seed": config.seed,
        "dataset": dataset.name,
        "data_digest": prepared.data_digest,
        "demo_images_per_class": config.demo_images_per_class,
        "num_classes": len(dataset.class_names),
        "class_names": list(dataset.class_names),
        "n_train": len(dataset.train),
        "n_val": len(dataset.val),
        "n_test": len(dataset.test),
        "val_fraction": config.val_fraction,
        "test_fraction": config.test_fraction,
        "overfit_threshold": config.overfit_threshold,
        "allow_overlap": config.allow_overlap,
        "class_weight": config.class_weight,
        "positive_class": _positive_class_name(config, dataset),
        "threshold_rule": config.threshold_rule,
        "threshold_target": config.threshold_target,
        "bootstrap_resamples": config.bootstrap_resamples,
        "paradox_accuracy": config.paradox_accuracy,
        "paradox_recall": config.paradox_recall,
        "verdict_min_accuracy": config.verdict_min_accuracy,
        "verdict_min_precision": config.verdict_min_precision,
        "verdict_min_recall": config.verdict_min_recall,
        "verdict_max_f1_shortfall": config.verdict_max_f1_shortfall,
        "mixed_precision": config.mixed_precision and prepared.device != "CPU",
        "unfreeze_unit": config.unfreeze_unit,
        "augment": config.augment,
        "feature_cache": prepared.cache is not None,
    }


def _positive_class_name(config: SweepConfig, dataset: Dataset) -> str | None:
    index = positive_index(dataset.class_names, config.positive_class)
    return None if index is None else dataset.class_names[index]


def best_result(results: list[DepthResult]) -> DepthResult | None:
    """Highest val macro-F1; ties go to the smaller gap, then to fewer trainable parameters."""
    finished = [result for result in results if result.status == "FINISHED"]
    if not finished:
        return None
    return max(finished, key=lambda r: (r.val_f1_macro, -r.f1_gap, -r.trainable_params))


SUMMARY_COLUMNS = (
    "unfreeze_layers",
    "status",
    "trainable_layers",
    "trainable_params",
    "train_f1_macro",
    "val_f1_macro",
    "val_f1_macro_ci_low",
    "val_f1_macro_ci_high",
    "f1_gap",
    "overfit",
    "rarest_class",
    "val_recall_rarest",
    "val_recall_rarest_ci_low",
    "val_recall_rarest_ci_high",
    "decision_threshold",
    "verdict",
    "accuracy_paradox",
    "run_id",
)


def summary_rows(results: list[DepthResult]) -> list[dict[str, object]]:
    rows = []
    for result in results:
        row = asdict(result)
        row["unfreeze_layers"] = str(row.pop("depth"))
        rows.append({column: row[column] for column in SUMMARY_COLUMNS})
    return rows


def _log_sweep_summary(
    tracker: Tracker, results: list[DepthResult], best: DepthResult | None, threshold: float
) -> None:
    rows = summary_rows(results)
    tracker.log_json({"columns": list(SUMMARY_COLUMNS), "rows": rows}, "summary/summary.json")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    tracker.log_text(buffer.getvalue(), "summary/summary.csv")
    finished = [result for result in results if result.status == "FINISHED"]
    if finished:
        tracker.log_figure(
            depth_summary_figure(
                [str(result.depth) for result in finished],
                [result.val_f1_macro for result in finished],
                [result.f1_gap for result in finished],
                threshold=threshold,
            ),
            "summary/depth_vs_f1.png",
        )
    tracker.log_metrics({"failed_depths": len(results) - len(finished)})
    if best is not None:
        tracker.log_metrics({"best_val_f1_macro": best.val_f1_macro})
        tracker.set_tags({"tlexp.best_depth": str(best.depth), "tlexp.best_run_id": best.run_id})


def format_summary(results: tuple[DepthResult, ...] | list[DepthResult]) -> str:
    """The end-of-sweep table: per depth, F1s with the validation interval, the gap, overfitting,
    the rarest class's recall with its interval, the decision threshold and the verdict; then any
    accuracy-paradox warnings."""
    header = (
        f"{'depth':>6}  {'trainable':>9}  {'train F1':>8}  {'val F1 [95% CI]':<21}  {'gap':>6}  "
        f"{'overfit':<7}  {'rare recall [95% CI]':<26}  {'threshold':>9}  verdict"
    )
    lines = [header]
    warnings = []
    for r in results:
        if r.status != "FINISHED":
            lines.append(f"{str(r.depth):>6}  {r.trainable_layers:>9}  FAILED: {r.error}")
            continue
        val_f1 = f"{r.val_f1_macro:.3f} [{r.val_f1_macro_ci_low:.2f}, {r.val_f1_macro_ci_high:.2f}]"
        rare = (
            f"{r.rarest_class}: {r.val_recall_rarest:.3f} "
            f"[{r.val_recall_rarest_ci_low:.2f}, {r.val_recall_rarest_ci_high:.2f}]"
        )
        threshold = "argmax" if r.decision_threshold is None else f"{r.decision_threshold:.3f}"
        lines.append(
            f"{str(r.depth):>6}  {r.trainable_layers:>9}  {r.train_f1_macro:>8.3f}  {val_f1:<21}  "
            f"{r.f1_gap:>+6.3f}  {'yes' if r.overfit else 'no':<7}  {rare:<26}  {threshold:>9}  "
            f"{r.verdict}{' (!)' if r.accuracy_paradox else ''}"
        )
        if r.accuracy_paradox:
            warnings.append(f"(!) depth {r.depth}: accuracy paradox: {r.accuracy_paradox}")
    return "\n".join(lines + warnings)


def _describe(result: DepthResult) -> str:
    if result.status != "FINISHED":
        return f"unfreeze={result.depth}: FAILED ({result.error})"
    return (
        f"unfreeze={result.depth}: {result.trainable_layers} layers trainable, "
        f"val_f1_macro={result.val_f1_macro:.3f} f1_gap={result.f1_gap:+.3f} "
        f"overfit={'yes' if result.overfit else 'no'} verdict={result.verdict}"
    )


def _sweep_run_name(config: SweepConfig) -> str:
    return f"sweep-{config.backbone}-{config.dataset_name}-{time.strftime('%Y%m%d-%H%M%S')}"


