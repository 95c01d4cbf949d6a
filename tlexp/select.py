"""Reading sweeps back from MLflow: compare the depths of a sweep, select (and register) the best run.

Every query is an MLflow `search_runs` filter, so the store does the filtering and sorting.
"""

from __future__ import annotations

from dataclasses import dataclass

from tlexp.errors import TlexpError
from tlexp.tracking import RegisteredVersion, RunRecord, Tracker

DEPTH_RUNS = "tags.`tlexp.kind` = 'depth'"
LATEST = "latest"
# The columns of `tlexp compare`, in order; stable for scripts.
COMPARE_COLUMNS = (
    "unfreeze_layers",
    "status",
    "run_id",
    "trainable_layers",
    "trainable_params",
    "train_f1_macro",
    "val_f1_macro",
    "val_f1_macro_ci_low",
    "val_f1_macro_ci_high",
    "val_accuracy",
    "val_recall_rarest",
    "f1_gap",
    "overfit",
    "verdict",
    "accuracy_paradox",
    "decision_threshold",
)
# Ties on the selection metric go to the smaller gap, then to fewer trainable parameters.
TIE_BREAKS = ("f1_gap", "trainable_params")


class SelectionError(TlexpError):
    """No run qualifies, or the sweep asked for does not exist."""


def resolve_sweep_id(tracker: Tracker, sweep: str) -> str:
    """`latest` (the most recently started sweep of the experiment) or a sweep run id."""
    if sweep != LATEST:
        record = tracker.get_run(sweep)
        if record.tags.get("tlexp.kind") != "sweep":
            raise SelectionError(f"run {sweep!r} is not a tlexp sweep run; expected a sweep run id or 'latest'")
        return sweep
    found = tracker.search_runs(
        "tags.`tlexp.kind` = 'sweep'", order_by=["attributes.start_time DESC"], max_results=1
    )
    if not found:
        raise SelectionError("the experiment has no sweep yet; expected one made by tlexp sweep")
    return found[0].run_id


def compare_rows(tracker: Tracker, sweep: str = LATEST) -> tuple[str, list[dict[str, object]]]:
    """One row per depth run of a sweep, in the sweep's depth order; returns (sweep id, rows)."""
    sweep_id = resolve_sweep_id(tracker, sweep)
    runs = tracker.search_runs(f"{DEPTH_RUNS} and tags.`tlexp.sweep_id` = '{sweep_id}'")
    order = tracker.get_run(sweep_id).params.get("unfreeze_depths", "").split(",")
    runs.sort(key=lambda r: (_position(order, r.params.get("unfreeze_layers")), r.start_time))
    return sweep_id, [_compare_row(run) for run in runs]


def _position(order: list[str], depth: str | None) -> int:
    return order.index(depth) if depth in order else len(order)


def _compare_row(run: RunRecord) -> dict[str, object]:
    row: dict[str, object] = {
        "unfreeze_layers": run.params.get("unfreeze_layers"),
        "status": run.status,
        "run_id": run.run_id,
        "overfit": run.tags.get("tlexp.overfit"),
        "verdict": run.tags.get("tlexp.verdict"),
        "accuracy_paradox": run.tags.get("tlexp.accuracy_paradox"),
    }
    for column in COMPARE_COLUMNS:
        if column not in row:
            row[column] = run.metrics.get(column)
    return {column: row[column] for column in COMPARE_COLUMNS}


@dataclass(frozen=True)
class Selection:
    run: RunRecord
    metric: str
    filter_string: str
    registered: RegisteredVersion | None = None

    @property
    def model_uri(self) -> str:
        return f"runs:/{self.run.run_id}/model"

    def as_dict(self) -> dict[str, object]:
        return {
            "run_id": self.run.run_id,
            "run_name": self.run.run_name,
            "unfreeze_layers": self.run.params.get("unfreeze_layers"),
            "metric": self.metric,
            "value": self.run.metrics[self.metric],
            "f1_gap": self.run.metrics.get("f1_gap"),
            "overfit": self.run.tags.get("tlexp.overfit"),
            "verdict": self.run.tags.get("tlexp.verdict"),
            "model_uri": self.model_uri,
            "registered_model_uri": self.registered.uri if self.registered else None,
            "registered_version": self.registered.version if self.registered else None,
            "filter": self.filter_string,
        }


def lower_is_better(metric: str) -> bool:
    """scikit-learn's convention: *_loss is lower-better; so are tlexp's gaps."""
    return metric.endswith("_loss") or metric.endswith("_gap")


def select_best_run(
    tracker: Tracker,
    *,
    metric: str = "val_f1_macro",
    sweep: str | None = None,
    exclude_overfit: bool = False,
    where: str | None = None,
    register: str | None = None,
    alias: str = "champion",
) -> Selection:
    """The best FINISHED depth run of a sweep (or of the whole experiment) by `metric`, filtered by
    MLflow; optionally registered as a new version of model `register` with `alias` pointing at it."""
    clauses = [DEPTH_RUNS, "attributes.status = 'FINISHED'"]
    if sweep is not None:
        clauses.append(f"tags.`tlexp.sweep_id` = '{resolve_sweep_id(tracker, sweep)}'")
    if exclude_overfit:
        clauses.append("tags.`tlexp.overfit` = 'false'")
    if where:
        clauses.append(where)
    filter_string = " and ".join(clauses)
    direction = "ASC" if lower_is_better(metric) else "DESC"
    order_by = [f"metrics.`{metric}` {direction}"]
    order_by += [f"metrics.`{name}` ASC" for name in TIE_BREAKS if name != metric]
    found = tracker.search_runs(filter_string, order_by=order_by, max_results=1)
    if not found:
        raise SelectionError(f"no run matches {filter_string!r}; loosen --where or drop --exclude-overfit")
    best = found[0]
    if metric not in best.metrics:
        raise SelectionError(
            f"no matching run has metric {metric!r}; expected a metric such as val_f1_macro, "
            "val_recall_rarest or f1_gap"
        )
    registered = tracker.register(best.run_id, name=register, alias=alias) if register else None
    return Selection(best, metric, filter_string, registered)
