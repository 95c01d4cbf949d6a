"""Fitting a phase: what TensorFlow keeps of a trained model after it is gone."""

import gc

import numpy as np

from tlexp.data import Split
from tlexp.train import PhaseSettings, _gradient_registry, fit_phase, releasing_training_graphs


def fit_a_small_model() -> None:
    import keras

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
    data = Split(np.random.default_rng(0).random((16, 4), dtype="float32"), np.arange(16) % 2, ("x",) * 16)
    fit_phase(model, data, data, PhaseSettings(epochs=1, learning_rate=1e-2, batch_size=8, seed=0))


def live_train_step_graphs() -> int:
    from tensorflow.python.framework.func_graph import FuncGraph

    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, FuncGraph) and o.name.startswith("one_step_on_data"))


def test_a_traced_train_step_stays_in_memory_unless_released():
    registry = _gradient_registry()
    registered, graphs = len(registry), live_train_step_graphs()
    fit_a_small_model()
    # What TensorFlow keeps of a model that is gone: its gradient registration and step graphs.
    assert len(registry) > registered and live_train_step_graphs() > graphs
    registered, graphs = len(registry), live_train_step_graphs()
    with releasing_training_graphs():
        fit_a_small_model()
    assert len(registry) == registered and live_train_step_graphs() == graphs
