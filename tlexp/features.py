"""The frozen-feature cache: the output of a backbone's frozen layers, computed once per cut point.

Every depth of a sweep whose frozen layers end at the same cut trains on the same activations, so
they are computed once (in inference mode, as frozen layers run) and each depth trains only its
trainable top. One cut point is held at a time, which keeps a sweep's memory flat however many
depths it has; a cache larger than the memory budget is written to a file and read in batches.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tlexp import backbone as bb
from tlexp.data import Split

if TYPE_CHECKING:
    import keras


@dataclass(frozen=True)
class CachedSplits:
    cut: int
    layer_name: str  # the last frozen layer, whose output is cached
    train: Split
    val: Split
    on_disk: bool

    def describe(self) -> str:
        where = "on disk" if self.on_disk else "in memory"
        shape = "x".join(str(d) for d in self.train.x.shape[1:])
        return f"on: frozen layers' output cached at {self.layer_name} ({shape} per image, {where})"


class FeatureCache:
    """Frozen-layer outputs of the train and validation images at one cut point at a time."""

    def __init__(
        self, backbone: keras.Model, train: Split, val: Split, *, batch_size: int, memory_bytes: int, spill_dir: Path
    ) -> None:
        self._backbone = backbone
        self._train = train
        self._val = val
        self._batch_size = batch_size
        self._memory_bytes = memory_bytes
        self._spill_root = spill_dir
        self._spill_dir: Path | None = None
        self._current: CachedSplits | None = None

    def at(self, cut: int) -> CachedSplits:
        if self._current is not None and self._current.cut == cut:
            return self._current
        self.clear()
        frozen = bb.frozen_part(self._backbone, cut)
        per_image = int(np.prod(frozen.output.shape[1:])) * 4
        on_disk = per_image * (len(self._train) + len(self._val)) > self._memory_bytes
        if on_disk:
            self._spill_root.mkdir(parents=True, exist_ok=True)
            self._spill_dir = Path(tempfile.mkdtemp(prefix="features-", dir=self._spill_root))
        train, val = (
            Split(self._features(frozen, split, on_disk, name), split.y, split.sources)
            for split, name in ((self._train, "train"), (self._val, "val"))
        )
        self._current = CachedSplits(cut, self._backbone.layers[cut - 1].name, train, val, on_disk)
        return self._current

    def _features(self, frozen: keras.Model, split: Split, on_disk: bool, name: str) -> np.ndarray:
        """The frozen layers' output in inference mode, batch by batch (into a file when on disk)."""
        shape = (len(split), *frozen.output.shape[1:])
        if on_disk:
            features = np.lib.format.open_memmap(self._spill_dir / f"{name}.npy", mode="w+", dtype="float32", shape=shape)
        else:
            features = np.empty(shape, dtype="float32")
        for start in range(0, len(split), self._batch_size):
            batch = split.x[start : start + self._batch_size]
            features[start : start + len(batch)] = np.asarray(frozen.predict_on_batch(batch), dtype="float32")
        if on_disk:
            features.flush()
        return features

    def clear(self) -> None:
        self._current = None
        if self._spill_dir is not None:
            shutil.rmtree(self._spill_dir, ignore_errors=True)
            self._spill_dir = None
