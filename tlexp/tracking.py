"""MLflow tracking: where the store is, runs and nested runs, and what is logged to them.

This is the one module that imports mlflow. The names logged (the tracking schema users query)
are chosen by the caller; this module only knows how to write them.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from tlexp.errors import TrackingError, first_line

if TYPE_CHECKING:
    import keras
    import numpy as np

DEFAULT_STORE_DIR = "mlruns"
DEFAULT_DB_NAME = "mlflow.db"
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"


def default_tracking_uri(root: Path | None = None) -> str:
    """The embedded store: a SQLite database under ./mlruns (artifacts beside it)."""
    store = (root or Path.cwd()) / DEFAULT_STORE_DIR
    return f"sqlite:///{store.resolve() / DEFAULT_DB_NAME}"


def resolve_tracking_uri(explicit: str | None) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else the embedded store."""
    uri = explicit or os.environ.get(TRACKING_URI_ENV) or default_tracking_uri()
    scheme = uri.split(":", 1)[0] if ":" in uri else ""
    if scheme not in ("sqlite", "http", "https", "file", "postgresql", "mysql", "databricks"):
        raise TrackingError(
            f"tracking URI {uri!r} is not one tlexp can use; expected sqlite:///PATH, "
            "http(s)://HOST:PORT or file:///PATH"
        )
    return uri


def _is_embedded_store(uri: str) -> bool:
    return uri.startswith("sqlite:///") and Path(uri[len("sqlite:///"):]).parent.name == DEFAULT_STORE_DIR


class Tracker:
    """One experiment in one MLflow store."""

    def __init__(self, tracking_uri: str | None, experiment: str) -> None:
        import mlflow

        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        if self.tracking_uri.startswith("sqlite:///"):
            Path(self.tracking_uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        mlflow.set_tracking_uri(self.tracking_uri)
        self.experiment_id = self._ensure_experiment(experiment)

    def _ensure_experiment(self, name: str) -> str:
        import mlflow
        from mlflow.exceptions import MlflowException

        try:
            found = mlflow.get_experiment_by_name(name)
            if found is not None:
                if found.lifecycle_stage == "deleted":
                    raise TrackingError(
                        f"experiment {name!r} is deleted in {self.tracking_uri}; restore it or "
                        "pass another --experiment"
                    )
                return found.experiment_id
            artifact_location = None
            if _is_embedded_store(self.tracking_uri):
                store = Path(self.tracking_uri[len("sqlite:///"):]).parent
                artifact_location = (store / "artifacts").as_uri()
            return mlflow.create_experiment(name, artifact_location=artifact_location)
        except MlflowException as error:
            raise TrackingError(
                f"cannot use MLflow store {self.tracking_uri}: {first_line(error)}"
            ) from None

    @contextlib.contextmanager
    def run(
        self, name: str, *, nested: bool = False, tags: dict[str, str] | None = None
    ) -> Iterator[str]:
        """An MLflow run that ends FINISHED, or FAILED if the block raises; yields its id."""
        import mlflow

        with mlflow.start_run(
            experiment_id=self.experiment_id, run_name=name, nested=nested, tags=tags
        ) as run:
            yield run.info.run_id

    def log_params(self, params: dict[str, Any]) -> None:
        import mlflow

        mlflow.log_params({key: _param_text(value) for key, value in params.items()})

    def log_metrics(self, metrics: dict[str, float], *, step: int | None = None) -> None:
        import mlflow

        mlflow.log_metrics({key: float(value) for key, value in metrics.items()}, step=step)

    def log_history(self, history: dict[str, list[float]], *, prefix: str, first_step: int) -> None:
        """Keras history (one value per epoch) as metric curves, in one batched call."""
        import mlflow
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        entries = [
            Metric(f"{prefix}{name}", float(value), now, first_step + epoch)
            for name, values in history.items()
            for epoch, value in enumerate(values)
        ]
        if entries:
            mlflow.MlflowClient().log_batch(mlflow.active_run().info.run_id, metrics=entries)

    def log_split(self, x: np.ndarray, y: np.ndarray, *, name: str, digest: str, context: str) -> None:
        """A data split as an MLflow dataset input of the active run, under our own digest."""
        import mlflow

        mlflow.log_input(mlflow.data.from_numpy(x, targets=y, name=name, digest=digest), context=context)

    def set_tags(self, tags: dict[str, str]) -> None:
        import mlflow

        mlflow.set_tags(tags)

    def log_json(self, document: Any, path: str) -> None:
        import mlflow

        mlflow.log_dict(document, path)

    def log_text(self, text: str, path: str) -> None:
        import mlflow

        mlflow.log_text(text, path)

    def log_figure(self, figure, path: str) -> None:
        import matplotlib.pyplot as plt
        import mlflow

        mlflow.log_figure(figure, path)
        plt.close(figure)

    def log_keras_model(self, model: keras.Model, *, input_example: np.ndarray) -> str:
        """The model under `model` with MLflow's TensorFlow flavor (Keras' .keras format), a
        signature and an input example; returns its runs:/ URI.

        mlflow.keras.log_model is not used: in MLflow 3.17 it writes the input example before it
        creates the model folder and fails whenever an example is given.
        """
        import keras as keras_module
        import mlflow
        import tensorflow as tf
        from mlflow.models import infer_signature

        signature = infer_signature(input_example, model.predict(input_example, verbose=0))
        mlflow.tensorflow.log_model(
            model,
            name="model",
            signature=signature,
            input_example=input_example,
            # Stating the requirements skips MLflow's slow requirement inference.
            pip_requirements=[f"tensorflow=={tf.__version__}", f"keras=={keras_module.__version__}"],
        )
        return f"runs:/{mlflow.active_run().info.run_id}/model"


def _param_text(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return ",".join(str(item) for item in value)
    return str(value)

