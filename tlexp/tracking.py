"""MLflow tracking: where the store is, runs and nested runs, and what is logged to them.

This is the one module that imports mlflow. The names logged (the tracking schema users query)
are chosen by the caller; this module only knows how to write them.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from tlexp.errors import TrackingError, first_line, received_interrupt

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


def store_failure(error: BaseException) -> TrackingError | None:
    """An error raised by MLflow or the libraries under it (a server that stopped answering after
    MLflow's bounded retries, a database that cannot be written) as a one-line TrackingError."""
    package = type(error).__module__.split(".", 1)[0]
    if package not in ("mlflow", "requests", "urllib3", "sqlalchemy"):
        return None
    import mlflow

    return TrackingError(f"the MLflow store {mlflow.get_tracking_uri()} failed: {first_line(error)}")


def ui_command(tracking_uri: str | None, *, host: str, port: int) -> list[str]:
    """The `mlflow ui` arguments that serve this store."""
    uri = resolve_tracking_uri(tracking_uri)
    if uri.startswith(("http://", "https://")):
        raise TrackingError(f"tracking URI {uri} is already a server; open it in a browser instead")
    return ["ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)]


SERVER_PROBE_TIMEOUT_S = 5


def _require_reachable_server(uri: str) -> None:
    """Fail in seconds, before any training, when a tracking server does not answer; MLflow's own
    client would retry for minutes."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=SERVER_PROBE_TIMEOUT_S):
            pass
    except urllib.error.HTTPError:
        pass  # it answered: a server (perhaps behind a proxy or with auth) is there
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise TrackingError(
            f"tracking server {uri} is unreachable ({reason}); expected a running MLflow server there"
        ) from None


@contextlib.contextmanager
def _store_setup_lock(uri: str) -> Iterator[None]:
    """Serialise creating a SQLite store's schema and experiments across processes: MLflow's
    schema creation races when several processes open a new database at once."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    database = Path(uri[len("sqlite:///"):])
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(database.with_name(database.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _is_embedded_store(uri: str) -> bool:
    return uri.startswith("sqlite:///") and Path(uri[len("sqlite:///"):]).parent.name == DEFAULT_STORE_DIR


@dataclass(frozen=True)
class RunRecord:
    """What tlexp reads back of an MLflow run."""

    run_id: str
    run_name: str
    experiment_id: str
    status: str
    start_time: int
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]


def _record(run) -> RunRecord:
    return RunRecord(
        run_id=run.info.run_id,
        run_name=run.info.run_name,
        experiment_id=run.info.experiment_id,
        status=run.info.status,
        start_time=run.info.start_time,
        params=dict(run.data.params),
        metrics=dict(run.data.metrics),
        tags=dict(run.data.tags),
    )


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: str
    alias: str

    @property
    def uri(self) -> str:
        return f"models:/{self.name}@{self.alias}"


class Tracker:
    """One experiment in one MLflow store. With `create=False` the experiment must exist
    (commands that only read); with `experiment=None` no experiment is chosen yet."""

    def __init__(self, tracking_uri: str | None, experiment: str | None, *, create: bool = True) -> None:
        import mlflow

        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        if self.tracking_uri.startswith(("http://", "https://")):
            _require_reachable_server(self.tracking_uri)
        mlflow.set_tracking_uri(self.tracking_uri)
        with _store_setup_lock(self.tracking_uri):
            self.experiment_id = None if experiment is None else self._ensure_experiment(experiment, create)

    def _ensure_experiment(self, name: str, create: bool) -> str:
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
            if not create:
                names = [e.name for e in mlflow.search_experiments()]
                raise TrackingError(
                    f"experiment {name!r} does not exist in {self.tracking_uri}; expected one of "
                    f"{', '.join(map(repr, names)) or 'none (run tlexp sweep first)'}"
                )
            artifact_location = None
            if _is_embedded_store(self.tracking_uri):
                store = Path(self.tracking_uri[len("sqlite:///"):]).parent
                artifact_location = (store / "artifacts").as_uri()
            return mlflow.create_experiment(name, artifact_location=artifact_location)
        except MlflowException as error:
            raise TrackingError(
                f"cannot use MLflow store {self.tracking_uri}: {first_line(error)}"
            ) from None

    def search_runs(
        self, filter_string: str, *, order_by: list[str] | None = None, max_results: int = 10_000
    ) -> list[RunRecord]:
        """Runs of this experiment matching an MLflow filter, sorted by the store."""
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        try:
            runs = MlflowClient().search_runs(
                [self.experiment_id], filter_string, order_by=order_by, max_results=max_results
            )
        except MlflowException as error:
            raise TrackingError(f"MLflow cannot run the query {filter_string!r}: {first_line(error)}") from None
        return [_record(run) for run in runs]

    def get_run(self, run_id: str) -> RunRecord:
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        try:
            return _record(MlflowClient().get_run(run_id))
        except MlflowException:
            raise TrackingError(f"run {run_id!r} does not exist in {self.tracking_uri}") from None

    def run_id_of_model(self, model_uri: str) -> str:
        """The training run behind runs:/RUN_ID/model or models:/NAME@ALIAS (or /VERSION)."""
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        if model_uri.startswith("runs:/"):
            return model_uri[len("runs:/"):].split("/", 1)[0]
        if not model_uri.startswith("models:/"):
            raise TrackingError(
                f"model URI {model_uri!r} is not one tlexp can evaluate; expected runs:/RUN_ID/model "
                "or models:/NAME@ALIAS"
            )
        reference = model_uri[len("models:/"):]
        client = MlflowClient()
        try:
            if "@" in reference:
                name, alias = reference.split("@", 1)
                version = client.get_model_version_by_alias(name, alias)
            else:
                name, number = reference.rsplit("/", 1)
                version = client.get_model_version(name, number)
        except (MlflowException, ValueError) as error:
            raise TrackingError(f"model {model_uri!r} is not registered in {self.tracking_uri}: {first_line(error)}") from None
        return version.run_id

    def load_keras_model(self, model_uri: str) -> keras.Model:
        import mlflow
        from mlflow.exceptions import MlflowException

        try:
            return mlflow.tensorflow.load_model(model_uri)
        except (MlflowException, OSError) as error:
            raise TrackingError(f"cannot load model {model_uri!r}: {first_line(error)}") from None

    def register(self, run_id: str, *, name: str, alias: str) -> RegisteredVersion:
        """Register the run's model as a new version of `name` and point `alias` at it."""
        import mlflow
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        try:
            version = mlflow.register_model(f"runs:/{run_id}/model", name)
            MlflowClient().set_registered_model_alias(name, alias, version.version)
        except MlflowException as error:
            raise TrackingError(f"cannot register run {run_id}'s model as {name!r}: {first_line(error)}") from None
        return RegisteredVersion(name, str(version.version), alias)

    @contextlib.contextmanager
    def run(
        self,
        name: str,
        *,
        nested: bool = False,
        tags: dict[str, str] | None = None,
        resume_run_id: str | None = None,
    ) -> Iterator[str]:
        """An MLflow run (a new one, or `resume_run_id` reopened) that ends FINISHED; KILLED when
        interrupted (KeyboardInterrupt, SIGTERM turned into one); FAILED on any other error.
        Yields its id."""
        import mlflow

        if resume_run_id is not None:
            run = mlflow.start_run(run_id=resume_run_id, nested=nested)
            if tags:
                mlflow.set_tags(tags)
        else:
            run = mlflow.start_run(experiment_id=self.experiment_id, run_name=name, nested=nested, tags=tags)
        try:
            yield run.info.run_id
        except KeyboardInterrupt:
            mlflow.end_run("KILLED")
            raise
        except BaseException:
            mlflow.end_run("KILLED" if received_interrupt() else "FAILED")
            raise
        mlflow.end_run("FINISHED")

    def mark_killed(self, run_id: str) -> None:
        """End a run that a dead process left RUNNING, without deleting anything it logged."""
        from mlflow import MlflowClient

        MlflowClient().set_terminated(run_id, "KILLED")

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

    def log_keras_model(self, model: keras.Model, *, example_input: np.ndarray, example_output: np.ndarray) -> str:
        """The model under `model` with MLflow's TensorFlow flavor (Keras' .keras format) and a
        signature inferred from an example input and the model's output for it; returns its
        runs:/ URI.

        No input example is stored: MLflow would load the saved model back to validate it, which
        took longer than fine-tuning a short run (tests load logged models back instead).
        mlflow.keras.log_model is not used: in MLflow 3.17 it writes the input example before it
        creates the model folder and fails whenever an example is given.
        """
        import keras as keras_module
        import mlflow
        import tensorflow as tf
        from mlflow.models import infer_signature

        mlflow.tensorflow.log_model(
            model,
            name="model",
            signature=infer_signature(example_input, example_output),
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

