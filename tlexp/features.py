"""The frozen-feature cache: the output of a backbone's frozen layers, computed once per cut point.

Every depth of a sweep whose frozen layers end at the same cut trains on the same activations, so
they are computed once (in inference mode, as frozen layers run) and each depth trains only its
trainable top. One cut point is held at a time, which keeps a sweep's memory flat however many
depths it has; a cache larger than the memory budget is written to a file and read in batches.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tlexp import backbone as bb
from tlexp.data import Split
from tlexp.errors import CacheError, first_line

if TYPE_CHECKING:
    import keras

FLOAT32_BYTES = 4


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
        self._spill_dir = spill_dir
        self._current: CachedSplits | None = None

    def at(self, cut: int) -> CachedSplits:
        if self._current is not None and self._current.cut == cut:
            return self._current
        self.clear()
        frozen = bb.frozen_part(self._backbone, cut)
        per_image = int(np.prod(frozen.output.shape[1:])) * FLOAT32_BYTES
        size = per_image * (len(self._train) + len(self._val))
        on_disk = size > self._memory_bytes
        folder = self._spill_folder(size) if on_disk else None
        try:
            train, val = (
                Split(self._features(frozen, split, folder, name), split.y, split.sources)
                for split, name in ((self._train, "train"), (self._val, "val"))
            )
        finally:
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
        self._current = CachedSplits(cut, self._backbone.layers[cut - 1].name, train, val, on_disk)
        return self._current

    def _spill_folder(self, size: int) -> Path:
        try:
            self._spill_dir.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(self._spill_dir).free
        except OSError as error:
            raise CacheError(
                f"cannot write the frozen-feature cache under {str(self._spill_dir)!r}: {first_line(error)}; "
                "expected a writable --cache-dir (or --no-feature-cache)"
            ) from None
        if size > free:
            raise CacheError(
                f"the frozen-feature cache needs {size / 2**20:.0f} MiB under {str(self._spill_dir)!r}, "
                f"which has {free / 2**20:.0f} MiB free; expected a --cache-dir with room, a larger "
                "--feature-cache-memory-mb, or --no-feature-cache"
            )
        return Path(tempfile.mkdtemp(prefix="features-", dir=self._spill_dir))

    def _features(self, frozen: keras.Model, split: Split, folder: Path | None, name: str) -> np.ndarray:
        """The frozen layers' output in inference mode, batch by batch (into a file in `folder`)."""
        shape = (len(split), *frozen.output.shape[1:])
        if folder is None:
            features = np.empty(shape, dtype="float32")
        else:
            path = folder / f"{name}.npy"
            features = np.lib.format.open_memmap(path, mode="w+", dtype="float32", shape=shape)
            # The mapping keeps the unlinked file alive until the cache lets go of it, so no
            # spill file outlives the process, however it ends.
            os.unlink(path)
        for start in range(0, len(split), self._batch_size):
            batch = split.x[start : start + self._batch_size]
            features[start : start + len(batch)] = np.asarray(frozen.predict_on_batch(batch), dtype="float32")
        return features

    def clear(self) -> None:
        self._current = None
