"""The MLflow side: a fresh SQLite store under concurrent sweeps, and a real tracking server."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from tlexp.cli import main

TINY = [
    "--data", "demo", "--demo-images-per-class", "8", "--epochs-head", "1", "--epochs-finetune", "1",
    "--batch-size", "16", "--val-fraction", "0.25", "--test-fraction", "0.25", "--bootstrap-resamples", "100",
]
QUIET = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_four_sweeps_started_at_once_on_a_fresh_sqlite_store_all_complete(store_uri, cache_dir):
    command = [sys.executable, "-m", "tlexp.cli", "sweep", *TINY, "--unfreeze", "0",
               "--tracking-uri", store_uri, "--cache-dir", cache_dir, "--experiment", "together"]
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=QUIET) for _ in range(4)]
    outcomes = [process.communicate(timeout=400) for process in processes]
    assert [p.returncode for p in processes] == [0] * 4, [err[-1500:] for _, err in outcomes]
    client = MlflowClient(tracking_uri=store_uri)
    runs = client.search_runs([client.get_experiment_by_name("together").experiment_id])
    kinds = [r.data.tags["tlexp.kind"] for r in runs]
    assert kinds.count("sweep") == 4 and kinds.count("depth") == 4
    assert {r.info.status for r in runs} == {"FINISHED"}


def test_an_unreachable_server_fails_fast_before_any_training(cache_dir):
    uri = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    outcome = CliRunner().invoke(main, ["sweep", *TINY, "--tracking-uri", uri, "--cache-dir", cache_dir])
    assert time.monotonic() - started < 30
    assert outcome.exit_code == 1
    last = outcome.output.strip().splitlines()[-1]
    assert last.startswith(f"Error: tracking server {uri} is unreachable (") and "training" not in outcome.output


class MlflowServer:
    """A real `mlflow server` on 127.0.0.1 that a test can stop and start again on the same port."""

    def __init__(self, folder):
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.command = [
            sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
            "--backend-store-uri", f"sqlite:///{folder / 'server.db'}",
            "--artifacts-destination", str(folder / "artifacts"), "--workers", "1",
        ]
        self.process = None

    def start(self):
        self.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if urllib.request.urlopen(f"{self.uri}/health", timeout=2).read() == b"OK":
                    return
            except OSError:
                time.sleep(0.5)
        raise AssertionError("mlflow server did not start")

    def stop(self):
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)


@pytest.fixture
def server(tmp_path):
    server = MlflowServer(tmp_path)
    server.start()
    yield server
    server.stop()


def test_a_sweep_survives_a_server_restart_and_loses_no_run(server, cache_dir):
    command = [sys.executable, "-m", "tlexp.cli", "sweep", *TINY, "--unfreeze", "0,all", "--tracking-uri", server.uri, "--cache-dir", cache_dir, "--experiment", "served"]
    sweep = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=QUIET)
    for line in sweep.stdout:
        if line.startswith("[1/2]"):
            server.stop()
            time.sleep(2)
            server.start()
            break
    out, err = sweep.communicate(timeout=300)
    assert sweep.returncode == 0, err[-2000:]
    client = MlflowClient(tracking_uri=server.uri)
    runs = client.search_runs([client.get_experiment_by_name("served").experiment_id])
    depths = sorted(r.data.params["unfreeze_layers"] for r in runs if r.data.tags.get("tlexp.kind") == "depth")
    assert depths == ["0", "all"]
    assert {r.info.status for r in runs} == {"FINISHED"}
    best = [r for r in runs if r.data.tags.get("tlexp.kind") == "sweep"][0].data.tags["tlexp.best_run_id"]
    assert {a.path for a in client.list_artifacts(best)} >= {"confusion_matrix", "training_curves.png"}
