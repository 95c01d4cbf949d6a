"""Training: device set-up, seeding, the frozen head phase, fine-tuning and inference.

Keras is imported inside functions so that importing tlexp stays instant.
"""

from __future__ import annotations

import contextlib
import gc
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np

from tlexp.data import Split
from tlexp.errors import TrialError

if TYPE_CHECKING:
    import keras

# Called after each epoch with (global epoch index, Keras' logs for that epoch).
EpochHook = Callable[[int, dict[str, float]], None]


@dataclass(frozen=True)
class PhaseSettings:
    epochs: int
    learning_rate: float
    batch_size: int
    seed: int
    early_stopping_patience: int | None = None
    class_weight: dict[int, float] | None = None


def configure_device(*, mixed_precision: bool) -> str:
    """Use a GPU when TensorFlow sees one (memory growth on); describe the device in use."""
    import keras
    import tensorflow as tf

    # Progress bars would interleave with tlexp's own progress lines.
    keras.config.disable_interactive_logging()
    # Each depth builds new models, and TensorFlow warns about every retrace that causes.
    tf.get_logger().setLevel("ERROR")
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return "CPU"
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialised by an earlier call in this process
            pass
    if mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    name = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
    return f"GPU:0 ({name})" + (", mixed_float16" if mixed_precision else "")


@contextlib.contextmanager
def releasing_training_graphs() -> Iterator[None]:
    """Free what TensorFlow keeps of the models trained inside, once they are gone.

    Keras all-reduces gradients through tf.distribute's default replica context in every train
    step it traces, and that registers a custom gradient in TensorFlow's global gradient registry,
    never removed: each traced train step, with its whole graph, stays in memory for the life of
    the process (keras-team/keras#20245, tensorflow#61791). A sweep traces new train steps for
    every depth, so its memory would grow with the number of depths. The registrations are only
    used while a step is traced; the ones made inside are dropped on the way out.
    """
    registry = _gradient_registry()
    before = set(registry)
    try:
        yield
    finally:
        for name in set(registry) - before:
            if name.startswith("CustomGradient-"):
                del registry[name]
        gc.collect()  # Keras models are reference cycles: free their graphs now, not later


def _gradient_registry() -> dict:
    try:
        from tensorflow.python.framework import ops

        return ops._gradient_registry._registry
    except (ImportError, AttributeError):  # another TensorFlow layout: nothing to release
        return {}


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow, and make TensorFlow's ops deterministic."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def fit_phase(
    model: keras.Model,
    train: Split,
    val: Split,
    settings: PhaseSettings,
    *,
    initial_epoch: int = 0,
    on_epoch_end: EpochHook | None = None,
) -> dict[str, list[float]]:
    """Compile `model` for this phase and fit it; returns Keras' history, one value per epoch."""
    import keras

    if settings.epochs == 0:
        return {}
    seed_everything(settings.seed + initial_epoch)
    model.compile(
        optimizer=keras.optimizers.Adam(settings.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    callbacks: list[keras.callbacks.Callback] = [keras.callbacks.TerminateOnNaN()]
    if settings.early_stopping_patience is not None:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=settings.early_stopping_patience, restore_best_weights=True
            )
        )
    if on_epoch_end is not None:
        callbacks.append(keras.callbacks.LambdaCallback(on_epoch_end=on_epoch_end))
    train_data = batches(train.x, train.y, settings.batch_size, shuffle_seed=settings.seed + initial_epoch)
    val_data = batches(val.x, val.y, settings.batch_size)
    history = model.fit(
        train_data,
        validation_data=val_data,
        epochs=initial_epoch + settings.epochs,
        initial_epoch=initial_epoch,
        callbacks=callbacks,
        class_weight=settings.class_weight,
        verbose=0,
    )
    losses = history.history.get("loss", [])
    if losses and not np.isfinite(losses[-1]):
        raise TrialError(
            f"training loss became {losses[-1]} at epoch {initial_epoch + len(losses)}; "
            "expected a finite loss (try a lower learning rate)"
        )
    return history.history


def batches(x: np.ndarray, y: np.ndarray | None, batch_size: int, *, shuffle_seed: int | None = None):
    """A tf.data pipeline of (x, y) batches, or x batches, reshuffled each epoch given a seed.

    Keras turns NumPy arrays into a new tf.data pipeline, and new iterators, in every epoch and
    every validation pass; on small data that overhead is most of an epoch's time. An array in a
    file (np.memmap: a feature cache over its memory budget) is read one batch of rows at a time;
    tf.data's seeded shuffle draws the same order for its row indices as for in-memory rows, so
    both give the same batches.
    """
    import tensorflow as tf

    if isinstance(x, np.memmap):
        def rows_of(index):
            rows = tf.numpy_function(lambda i: np.asarray(x[i]), [index], tf.float32, stateful=False)
            return tf.ensure_shape(rows, (None, *x.shape[1:]))

        data = tf.data.Dataset.range(len(x))
        labels = None if y is None else tf.convert_to_tensor(y)
        to_batch = rows_of if labels is None else (lambda index: (rows_of(index), tf.gather(labels, index)))
    else:
        data = tf.data.Dataset.from_tensor_slices(x if y is None else (x, y))
        to_batch = None
    if shuffle_seed is not None:
        data = data.shuffle(len(x), seed=shuffle_seed, reshuffle_each_iteration=True)
    data = data.batch(batch_size)
    if to_batch is not None:
        data = data.map(to_batch)
    return data.prefetch(tf.data.AUTOTUNE)


def predict_probabilities(model: keras.Model, x: np.ndarray, *, batch_size: int) -> np.ndarray:
    """Class probabilities in inference mode (dropout off, BatchNorm on its moving statistics)."""
    return predict_probabilities_of_each(model, (x,), batch_size=batch_size)[0]


def predict_probabilities_of_each(
    model: keras.Model, arrays: tuple[np.ndarray, ...], *, batch_size: int
) -> list[np.ndarray]:
    """`predict_probabilities` of several arrays in one predict call (one trace of the predict
    function instead of one per array), split back into one result per array."""
    from functools import reduce

    pipeline = reduce(lambda joined, data: joined.concatenate(data), (batches(x, None, batch_size) for x in arrays))
    probabilities = np.asarray(model.predict(pipeline, verbose=0), dtype="float64")
    # float32 softmax rows sum to 1 only up to rounding; scikit-learn's log_loss checks the sum.
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    return np.split(probabilities, np.cumsum([len(x) for x in arrays])[:-1])
