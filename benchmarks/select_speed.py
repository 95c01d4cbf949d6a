"""How fast `tlexp select` answers on a big store.

Fills a fresh SQLite store with RUNS depth runs (the metrics, params and tags a sweep logs, written
through MlflowClient, no training), then times `select_best_run` (the library call behind
`tlexp select`) with and without filters. Target: under 2 seconds per query on 2 CPU cores.

    .venv/bin/python benchmarks/select_speed.py [RUNS]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from tlexp.select import select_best_run
from tlexp.tracking import Tracker

RUNS_PER_SWEEP = 10


def fill_store(uri: str, runs: int) -> None:
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment("bench")
    rng = np.random.default_rng(0)
    now = int(time.time() * 1000)
    sweep_id = None
    for index in range(runs):
        if index % RUNS_PER_SWEEP == 0:
            sweep_id = client.create_run(experiment_id, tags={"tlexp.kind": "sweep"}).info.run_id
            client.set_terminated(sweep_id)
        val_f1 = float(rng.uniform(0.5, 0.95))
        gap = float(rng.uniform(-0.05, 0.3))
        tags = {"tlexp.kind": "depth", "tlexp.sweep_id": sweep_id, "mlflow.parentRunId": sweep_id}
        run_id = client.create_run(experiment_id, tags=tags).info.run_id
        metrics = {
            "val_f1_macro": val_f1, "train_f1_macro": val_f1 + gap, "f1_gap": gap,
            "trainable_params": float(rng.integers(1_000, 1_000_000)), "val_loss": float(rng.uniform(0.1, 2)),
            "val_accuracy": val_f1, "val_recall_rarest": float(rng.uniform(0.3, 1)),
        }
        client.log_batch(
            run_id,
            metrics=[Metric(name, value, now, 0) for name, value in metrics.items()],
            params=[Param("unfreeze_layers", str(index % RUNS_PER_SWEEP)), Param("backbone", "demo")],
            tags=[RunTag("tlexp.overfit", str(gap > 0.1).lower()), RunTag("tlexp.verdict", "good")],
        )
        client.set_terminated(run_id)


def timed(label: str, call, repeats: int = 5) -> None:
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        selection = call()
        seconds.append(time.perf_counter() - started)
    print(
        f"{label:<48} median {statistics.median(seconds):.3f}s  max {max(seconds):.3f}s  "
        f"(picked {selection.run.run_id[:8]}, {selection.metric} {selection.run.metrics[selection.metric]:.3f})"
    )


def main(runs: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        uri = f"sqlite:///{Path(folder) / 'mlflow.db'}"
        started = time.perf_counter()
        fill_store(uri, runs)
        print(f"filled a store with {runs} depth runs in {time.perf_counter() - started:.1f}s")
        tracker = Tracker(uri, "bench", create=False)
        timed("select --metric val_f1_macro", lambda: select_best_run(tracker))
        timed("select --exclude-overfit", lambda: select_best_run(tracker, exclude_overfit=True))
        timed(
            "select --where 'metrics.val_recall_rarest >= 0.9'",
            lambda: select_best_run(tracker, where="metrics.val_recall_rarest >= 0.9"),
        )
        timed("select --sweep latest", lambda: select_best_run(tracker, sweep="latest"))
        command = [sys.executable, "-m", "tlexp.cli", "select", "--experiment", "bench", "--tracking-uri", uri]
        seconds = []
        for _ in range(3):
            started = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            seconds.append(time.perf_counter() - started)
        print(f"{'the tlexp select command, process start included':<48} median {statistics.median(seconds):.3f}s")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
