"""Sweep configuration: a frozen dataclass built from defaults, then a config file, then options.

Every value is checked here, before any data is read or any model is built, and unknown keys
are rejected by name.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import yaml

from tlexp.errors import ConfigError

BACKBONES = ("demo", "mobilenet_v2", "efficientnet_b0", "resnet50")
THRESHOLD_RULES = ("max_f1", "min_recall", "min_precision")
CLASS_WEIGHTS = ("none", "balanced")
UNFREEZE_UNITS = ("layers", "blocks")
ALL_LAYERS = "all"
Depth = Union[int, str]  # a layer count, or ALL_LAYERS


@dataclass(frozen=True)
class SweepConfig:
    data: str = "demo"
    backbone: str = "demo"
    # None means the backbone's own pretrained weights: the source task for "demo", ImageNet otherwise.
    weights: str | None = None
    image_size: int | None = None
    unfreeze: tuple[Depth, ...] = (0, 2, 4, ALL_LAYERS)
    # What a depth counts: single layers (base.layers[-n:]) or the architecture's own blocks.
    unfreeze_unit: str = "layers"
    # Random rotations, shifts and zooms of the training images; turns the feature cache off.
    augment: bool = False
    # Train each depth's trainable top on the frozen layers' output, computed once per cut point;
    # beyond the memory budget (0: always) the cache lives on disk under cache_dir.
    feature_cache: bool = True
    feature_cache_memory_mb: int = 2048
    epochs_head: int = 5
    epochs_finetune: int = 5
    batch_size: int = 32
    learning_rate_head: float = 1e-3
    learning_rate_finetune: float = 1e-4
    dropout: float = 0.2
    early_stopping_patience: int | None = None
    seed: int = 0
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    demo_images_per_class: int = 60
    overfit_threshold: float = 0.10
    allow_overlap: bool = False
    # Binary tasks: which class is positive (default: the second class name in sorted order), and
    # how the decision threshold is chosen on the validation set.
    positive_class: str | None = None
    threshold_rule: str = "max_f1"
    threshold_target: float | None = None
    class_weight: str = "none"
    bootstrap_resamples: int = 1000
    # The accuracy-paradox warning: accuracy at least this high while some class's recall is below.
    paradox_accuracy: float = 0.80
    paradox_recall: float = 0.50
    # The verdict: a run is good when all of these hold on the validation set (and no overfitting).
    verdict_min_accuracy: float = 0.80
    verdict_min_precision: float = 0.75
    verdict_min_recall: float = 0.75
    verdict_max_f1_shortfall: float = 0.10
    mixed_precision: bool = False
    experiment: str = "tlexp"
    tracking_uri: str | None = None
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "unfreeze", parse_depths(self.unfreeze))
        if self.positive_class is not None:  # YAML reads a class named 9 as a number
            object.__setattr__(self, "positive_class", str(self.positive_class))
        _validate(self)

    @property
    def resolved_weights(self) -> str:
        if self.weights is not None:
            return self.weights
        return "pretrained" if self.backbone == "demo" else "imagenet"

    @property
    def dataset_name(self) -> str:
        return self.data if self.data in ("demo", "demo-rare") else Path(self.data).name

    def with_overrides(self, **overrides: Any) -> SweepConfig:
        """A copy with the given keys replaced; keys whose value is None are left alone."""
        given = {key: value for key, value in overrides.items() if value is not None}
        _reject_unknown_keys(given, "option")
        return dataclasses.replace(self, **given)


def _validate(config: SweepConfig) -> None:
    if config.backbone not in BACKBONES:
        raise ConfigError(
            f"unknown backbone {config.backbone!r}; expected one of {', '.join(BACKBONES)}"
        )
    _require_int(config, "epochs_head", minimum=0)
    _require_int(config, "epochs_finetune", minimum=0)
    if config.epochs_head + config.epochs_finetune == 0:
        raise ConfigError("epochs_head and epochs_finetune are both 0; expected at least one epoch")
    _require_int(config, "batch_size", minimum=1)
    _require_int(config, "seed", minimum=0)
    _require_int(config, "demo_images_per_class", minimum=5)
    if config.image_size is not None:
        _require_int(config, "image_size", minimum=8)
    if config.early_stopping_patience is not None:
        _require_int(config, "early_stopping_patience", minimum=1)
    _require_number(config, "learning_rate_head", low=0.0, high=None)
    _require_number(config, "learning_rate_finetune", low=0.0, high=None)
    _require_number(config, "dropout", low=0.0, high=1.0, allow_low=True)
    _require_number(config, "val_fraction", low=0.0, high=1.0)
    _require_number(config, "test_fraction", low=0.0, high=1.0)
    if config.val_fraction + config.test_fraction >= 1.0:
        raise ConfigError(
            f"val_fraction + test_fraction = {config.val_fraction + config.test_fraction:g}; "
            "expected less than 1 so that some images are left to train on"
        )
    _require_number(config, "overfit_threshold", low=0.0, high=1.0, allow_low=True)
    if config.unfreeze_unit not in UNFREEZE_UNITS:
        raise ConfigError(
            f"unknown unfreeze_unit {config.unfreeze_unit!r}; expected one of {', '.join(UNFREEZE_UNITS)}"
        )
    _require_int(config, "feature_cache_memory_mb", minimum=0)
    for key in ("mixed_precision", "allow_overlap", "augment", "feature_cache"):
        if not isinstance(getattr(config, key), bool):
            raise ConfigError(f"{key} must be true or false, got {getattr(config, key)!r}")
    if not isinstance(config.experiment, str) or not config.experiment.strip():
        raise ConfigError(f"experiment must be a non-empty name, got {config.experiment!r}")
    if not isinstance(config.data, str) or not config.data:
        raise ConfigError(f"data must be 'demo' or a path, got {config.data!r}")
    _validate_weights(config)
    _validate_evaluation(config)


def _validate_evaluation(config: SweepConfig) -> None:
    if config.threshold_rule not in THRESHOLD_RULES:
        raise ConfigError(
            f"unknown threshold_rule {config.threshold_rule!r}; expected one of {', '.join(THRESHOLD_RULES)}"
        )
    if config.threshold_rule == "max_f1":
        if config.threshold_target is not None:
            raise ConfigError(
                f"threshold_target {config.threshold_target!r} is set but threshold_rule is max_f1; "
                "expected threshold_rule min_recall or min_precision with a target"
            )
    else:
        if config.threshold_target is None:
            raise ConfigError(
                f"threshold_rule {config.threshold_rule} needs threshold_target; expected a number "
                "between 0 and 1, e.g. 0.9"
            )
        _require_number(config, "threshold_target", low=0.0, high=1.0, allow_low=False, allow_high=True)
    if config.class_weight not in CLASS_WEIGHTS:
        raise ConfigError(
            f"unknown class_weight {config.class_weight!r}; expected one of {', '.join(CLASS_WEIGHTS)}"
        )
    _require_int(config, "bootstrap_resamples", minimum=100)
    for key in (
        "paradox_accuracy",
        "paradox_recall",
        "verdict_min_accuracy",
        "verdict_min_precision",
        "verdict_min_recall",
        "verdict_max_f1_shortfall",
    ):
        _require_number(config, key, low=0.0, high=1.0, allow_low=True, allow_high=True)


def _validate_weights(config: SweepConfig) -> None:
    weights = config.weights
    if weights is None or weights == "none":
        return
    if not isinstance(weights, str):
        raise ConfigError(f"weights must be a name or a path, got {weights!r}")
    named = "pretrained" if config.backbone == "demo" else "imagenet"
    other = "imagenet" if config.backbone == "demo" else "pretrained"
    if weights == other:
        raise ConfigError(
            f"weights {weights!r} does not apply to backbone {config.backbone!r}; "
            f"expected {named}, none or a path to a weights file"
        )
    if weights != named and not Path(weights).is_file():
        raise ConfigError(
            f"weights file {weights!r} does not exist; expected {named}, none or a path to a "
            f"weights file for {config.backbone}"
        )


def _require_int(config: SweepConfig, key: str, *, minimum: int) -> None:
    value = getattr(config, key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key} must be an integer >= {minimum}, got {value!r}")


def _require_number(
    config: SweepConfig,
    key: str,
    *,
    low: float | None,
    high: float | None,
    allow_low: bool = False,
    allow_high: bool = False,
) -> None:
    value = getattr(config, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key} must be a number, got {value!r}")
    too_low = low is not None and (value < low or (value == low and not allow_low))
    too_high = high is not None and (value > high or (value == high and not allow_high))
    if too_low or too_high:
        bounds = f"{'>=' if allow_low else '>'} {low:g}" if low is not None else ""
        if high is not None:
            upper = f"{'<=' if allow_high else '<'} {high:g}"
            bounds = f"{bounds} and {upper}" if bounds else upper
        raise ConfigError(f"{key} must be {bounds}, got {value!r}")


def parse_depths(value: Any) -> tuple[Depth, ...]:
    """Parse unfreeze depths from "0,2,all" or a list such as [0, 2, "all"]."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items:
        raise ConfigError(f"unfreeze must list depths such as 0,2,4,all; got {value!r}")
    depths: list[Depth] = []
    for item in items:
        depth = _parse_depth(item)
        if depth in depths:
            raise ConfigError(f"unfreeze lists depth {depth!r} twice; expected each depth once")
        depths.append(depth)
    return tuple(depths)


def _parse_depth(item: Any) -> Depth:
    text = item.strip() if isinstance(item, str) else item
    if text == ALL_LAYERS:
        return ALL_LAYERS
    if isinstance(text, str) and text.lstrip("-").isdigit():
        text = int(text)
    if isinstance(text, bool) or not isinstance(text, int) or text < 0:
        raise ConfigError(
            f"unfreeze depth {item!r} is not valid; expected a non-negative integer or 'all'"
        )
    return text


CONFIG_KEYS = tuple(f.name for f in dataclasses.fields(SweepConfig))


def _reject_unknown_keys(values: dict[str, Any], where: str) -> None:
    unknown = sorted(set(values) - set(CONFIG_KEYS))
    if unknown:
        raise ConfigError(
            f"unknown {where} key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
            f"expected keys among: {', '.join(CONFIG_KEYS)}"
        )


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or TOML sweep config into a dict of checked keys."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        values = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as error:
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(f"config file {str(path)!r} is not valid {_format(path)}: {detail}") from None
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(
            f"config file {str(path)!r} holds a {type(values).__name__}; expected a mapping of keys"
        )
    _reject_unknown_keys(values, "config")
    return values


def _format(path: Path) -> str:
    return "TOML" if path.suffix == ".toml" else "YAML"


def load_config(path: str | Path | None = None, **overrides: Any) -> SweepConfig:
    """Defaults, then the config file (if any), then the non-None overrides."""
    values = read_config_file(path) if path is not None else {}
    _reject_unknown_keys(overrides, "option")
    values.update({key: value for key, value in overrides.items() if value is not None})
    try:
        return SweepConfig(**values)
    except TypeError as error:  # a value of a type the dataclass cannot take at all
        raise ConfigError(str(error)) from None


