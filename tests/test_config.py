from pathlib import Path

import pytest

from tlexp.config import ALL_LAYERS, CONFIG_KEYS, SweepConfig, load_config, parse_depths
from tlexp.errors import ConfigError


def test_defaults_are_valid_and_unfreeze_parses():
    config = SweepConfig()
    assert config.unfreeze == (0, 2, 4, ALL_LAYERS)
    assert config.resolved_weights == "pretrained"
    assert SweepConfig(backbone="resnet50").resolved_weights == "imagenet"


def test_depths_parse_from_text_and_lists():
    assert parse_depths("0, 2,all") == (0, 2, ALL_LAYERS)
    assert parse_depths([3, "all"]) == (3, ALL_LAYERS)


@pytest.mark.parametrize("value", ["-1", "two", "1.5", [True], [], "0,0"])
def test_bad_depths_are_rejected_by_value(value):
    with pytest.raises(ConfigError, match="unfreeze"):
        parse_depths(value)


def test_file_then_options_override(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text("epochs_head: 7\nbatch_size: 8\nunfreeze: [0, all]\n")
    config = load_config(path, batch_size=4, epochs_finetune=None)
    assert (config.epochs_head, config.batch_size, config.epochs_finetune) == (7, 4, 5)
    assert config.unfreeze == (0, "all")


def test_toml_config(tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text('backbone = "mobilenet_v2"\nunfreeze = [0, 10, "all"]\n')
    config = load_config(path)
    assert config.backbone == "mobilenet_v2" and config.unfreeze == (0, 10, "all")


def test_unknown_config_key_is_named(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text("epochs_head: 1\nlearnin_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'learnin_rate'"):
        load_config(path)


def test_malformed_yaml_and_toml_are_config_errors(tmp_path):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("epochs_head: [1,\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_config(bad_yaml)
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("epochs_head = = 1\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(bad_toml)
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(listed)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"batch_size": 0}, "batch_size must be an integer >= 1, got 0"),
        ({"epochs_head": -1}, "epochs_head must be an integer >= 0, got -1"),
        ({"epochs_head": 0, "epochs_finetune": 0}, "both 0"),
        ({"val_fraction": 1.5}, "val_fraction must be > 0 and < 1, got 1.5"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "val_fraction \\+ test_fraction = 1"),
        ({"learning_rate_head": 0}, "learning_rate_head must be > 0, got 0"),
        ({"backbone": "vgg"}, "unknown backbone 'vgg'"),
        ({"weights": "imagenet"}, "weights 'imagenet' does not apply to backbone 'demo'"),
        ({"weights": "/no/such.weights.h5"}, "weights file '/no/such.weights.h5' does not exist"),
        ({"seed": "x"}, "seed must be an integer"),
        ({"dropout": -0.1}, "dropout must be >= 0 and < 1, got -0.1"),
        ({"threshold_rule": "youden"}, "unknown threshold_rule 'youden'; expected one of max_f1, min_recall, min_precision"),
        ({"threshold_rule": "min_recall"}, "threshold_rule min_recall needs threshold_target"),
        ({"threshold_target": 0.9}, "threshold_target 0.9 is set but threshold_rule is max_f1"),
        ({"threshold_rule": "min_precision", "threshold_target": 1.5}, "threshold_target must be > 0 and <= 1, got 1.5"),
        ({"class_weight": "auto"}, "unknown class_weight 'auto'; expected one of none, balanced"),
        ({"bootstrap_resamples": 10}, "bootstrap_resamples must be an integer >= 100, got 10"),
        ({"verdict_min_recall": 2}, "verdict_min_recall must be >= 0 and <= 1, got 2"),
        ({"allow_overlap": "yes"}, "allow_overlap must be true or false, got 'yes'"),
    ],
)
def test_out_of_range_values_are_named(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, **overrides)


def test_every_config_key_is_a_dataclass_field():
    assert set(CONFIG_KEYS) == set(SweepConfig.__dataclass_fields__)
    with pytest.raises(ConfigError, match="unknown option key 'epochs'"):
        load_config(None, epochs=3)


def test_positive_class_read_as_a_number_becomes_a_class_name(tmp_path):
    path = tmp_path / "rare.yaml"
    path.write_text("data: demo-rare\npositive_class: 9\n")
    config = load_config(path)
    assert config.positive_class == "9" and config.dataset_name == "demo-rare"


@pytest.mark.parametrize("path", sorted(Path(__file__).parent.parent.glob("experiments/*.*")), ids=lambda p: p.name)
def test_every_shipped_experiment_config_loads(path):
    config = load_config(path)
    assert config.unfreeze and config.experiment.startswith("tlexp-")
