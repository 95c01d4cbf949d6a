"""Shared fixtures: a real MLflow store under tmp_path and one demo backbone per test session."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest

from tlexp.config import SweepConfig, load_config


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> str:
    """One demo-backbone cache for the whole session: it is pretrained once, on first use."""
    return str(tmp_path_factory.mktemp("tlexp-cache"))


@pytest.fixture
def store_uri(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"


@pytest.fixture
def tiny_config(store_uri, cache_dir):
    """A demo sweep small enough for a test: few images, one epoch per phase."""

    def make(**overrides) -> SweepConfig:
        values = {
            "data": "demo",
            "demo_images_per_class": 8,
            "val_fraction": 0.25,
            "test_fraction": 0.25,
            "unfreeze": (0, "all"),
            "epochs_head": 1,
            "epochs_finetune": 1,
            "batch_size": 16,
            "bootstrap_resamples": 100,
            "experiment": "test",
            "tracking_uri": store_uri,
            "cache_dir": cache_dir,
        }
        values.update(overrides)
        return load_config(None, **values)

    return make


@pytest.fixture
def client(store_uri):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=store_uri)


@pytest.fixture(scope="session")
def sweep(tmp_path_factory, cache_dir):
    """One tiny real demo sweep for the session: (result, client, progress lines, config)."""
    from mlflow import MlflowClient

    from tlexp.sweep import run_sweep

    uri = f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"
    config = load_config(
        None,
        data="demo",
        demo_images_per_class=8,
        val_fraction=0.25,
        test_fraction=0.25,
        unfreeze="0,5,all",
        epochs_head=2,
        epochs_finetune=2,
        batch_size=16,
        bootstrap_resamples=200,
        experiment="sweep-test",
        tracking_uri=uri,
        cache_dir=cache_dir,
    )
    lines = []
    result = run_sweep(config, progress=lines.append)
    return result, MlflowClient(tracking_uri=uri), lines, config
