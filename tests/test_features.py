"""The frozen-feature cache: the same results as training on images, in memory or on disk, and
off (saying why) when augmentation makes the frozen layers see new inputs every epoch."""

import numpy as np
import pytest

from tlexp import backbone as bb
from tlexp.data import Split
from tlexp.features import FeatureCache

# Metrics that depend only on the trained weights; per-epoch curves are compared separately.
COMPARED = ("train_loss", "val_loss", "train_f1_macro", "val_f1_macro", "val_accuracy", "f1_gap", "trainable_params")


def depth_runs(client, result):
    return {str(r.depth): client.get_run(r.run_id) for r in result.results}


def test_cached_features_in_memory_or_on_disk_give_the_uncached_results(tiny_config, client, cache_dir):
    from pathlib import Path

    from tlexp.sweep import run_sweep

    settings = {"unfreeze": (0, 1, 5), "epochs_head": 2, "epochs_finetune": 2}
    in_memory = depth_runs(client, run_sweep(tiny_config(**settings)))
    on_disk = depth_runs(client, run_sweep(tiny_config(feature_cache_memory_mb=0, **settings)))
    uncached = depth_runs(client, run_sweep(tiny_config(feature_cache=False, **settings)))
    assert not list((Path(cache_dir) / "features").iterdir())  # no spill file outlives its sweep
    for depth in ("0", "1", "5"):
        without = uncached[depth].data
        assert without.tags["tlexp.feature_cache"] == "off: feature_cache is false"
        assert without.params["feature_cache"] == "false"
        for cached, where in ((in_memory[depth], "in memory"), (on_disk[depth], "on disk")):
            tag = cached.data.tags["tlexp.feature_cache"]
            assert tag.startswith("on: frozen layers' output cached at") and tag.endswith(f"per image, {where})")
            assert cached.data.params["feature_cache"] == "true"
            for name in COMPARED:
                assert cached.data.metrics[name] == pytest.approx(without.metrics[name], abs=1e-4), (depth, where, name)
            curves = [client.get_metric_history(run.info.run_id, "epoch_val_loss") for run in (cached, uncached[depth])]
            assert [m.value for m in curves[0]] == pytest.approx([m.value for m in curves[1]], abs=1e-4)
    assert "at flatten (3136 per image" in in_memory["1"].data.tags["tlexp.feature_cache"]  # right below the dense layer
    assert "at block1_pool (14x14x32 per image" in in_memory["5"].data.tags["tlexp.feature_cache"]


def test_augmentation_turns_the_cache_off_and_the_run_says_so(tiny_config, client):
    from tlexp.sweep import run_sweep

    (depth,) = run_sweep(tiny_config(unfreeze=(1,), augment=True)).results
    run = client.get_run(depth.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["tlexp.feature_cache"].startswith("off: augmentation is on")
    assert (run.data.params["augment"], run.data.params["feature_cache"]) == ("true", "false")


def test_on_disk_features_equal_in_memory_features(tmp_path):
    model = bb.build_backbone(bb.backbone_spec("demo"), None)
    rng = np.random.default_rng(0)
    train = Split(rng.random((10, 28, 28, 1), dtype="float32"), np.arange(10) % 2, tuple(map(str, range(10))))
    val = Split(rng.random((6, 28, 28, 1), dtype="float32"), np.arange(6) % 2, tuple(map(str, range(6))))
    in_memory = FeatureCache(model, train, val, batch_size=4, memory_bytes=1 << 30, spill_dir=tmp_path).at(4)
    spilling = FeatureCache(model, train, val, batch_size=4, memory_bytes=0, spill_dir=tmp_path)
    on_disk = spilling.at(4)
    assert (in_memory.on_disk, on_disk.on_disk) == (False, True)
    assert isinstance(on_disk.train.x, np.memmap) and on_disk.train.x.shape == (10, 14, 14, 32)
    np.testing.assert_array_equal(np.asarray(on_disk.train.x), in_memory.train.x)
    np.testing.assert_array_equal(np.asarray(on_disk.val.x), in_memory.val.x)
    expected = bb.frozen_part(model, 4).predict(train.x, verbose=0)
    np.testing.assert_allclose(in_memory.train.x, expected, atol=1e-6)
    assert spilling.at(4) is on_disk  # the same cut is served from the cache
    assert not list(tmp_path.iterdir())  # the file is unlinked once mapped: nothing outlives the process
    assert spilling.at(8).train.x.shape == (10, 3136)  # one cut point at a time


def test_a_cache_that_cannot_be_written_is_one_clear_error(tmp_path):
    from tlexp.errors import CacheError

    model = bb.build_backbone(bb.backbone_spec("demo"), None)
    split = Split(np.zeros((4, 28, 28, 1), dtype="float32"), np.arange(4) % 2, ("x",) * 4)
    (tmp_path / "file").write_text("not a folder")
    cache = FeatureCache(model, split, split, batch_size=4, memory_bytes=0, spill_dir=tmp_path / "file" / "features")
    with pytest.raises(CacheError, match=f"cannot write the frozen-feature cache under '{tmp_path}/file/features'.*--no-feature-cache"):
        cache.at(4)
