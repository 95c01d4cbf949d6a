"""Interrupts, crashes and resuming, with real processes, real signals and a real store."""

import os
import signal
import subprocess
import sys
import time

from mlflow import MlflowClient

DEPTHS = ["0", "5", "all"]


def sweep_command(store_uri, cache_dir):
    return [
        sys.executable, "-m", "tlexp.cli", "sweep", "--data", "demo", "--unfreeze", ",".join(DEPTHS),
        "--epochs-head", "1", "--epochs-finetune", "2", "--batch-size", "8", "--val-fraction", "0.25",
        "--test-fraction", "0.25", "--bootstrap-resamples", "100", "--experiment", "resilience",
        "--tracking-uri", store_uri, "--cache-dir", cache_dir,
    ]


def start_and_signal_after_first_depth(command, signal_number):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    seen = []
    deadline = time.monotonic() + 240
    for line in process.stdout:
        seen.append(line)
        if line.startswith("[1/3]"):
            time.sleep(0.3)  # into the second depth's training
            process.send_signal(signal_number)
            break
        assert time.monotonic() < deadline, "the first depth did not finish in time"
    out, err = process.communicate(timeout=120)
    return process.returncode, "".join(seen) + out, err


def runs_by_kind(store_uri):
    client = MlflowClient(tracking_uri=store_uri)
    experiment = client.get_experiment_by_name("resilience")
    runs = client.search_runs([experiment.experiment_id])
    sweeps = [r for r in runs if r.data.tags.get("tlexp.kind") == "sweep"]
    depths = [r for r in runs if r.data.tags.get("tlexp.kind") == "depth"]
    return sweeps, depths


def test_ctrl_c_ends_runs_killed_with_exit_code_130(store_uri, cache_dir):
    code, out, err = start_and_signal_after_first_depth(sweep_command(store_uri, cache_dir), signal.SIGINT)
    assert code == 130, err[-2000:]
    assert "Interrupted" in err and "Traceback" not in err
    (sweep,), depths = runs_by_kind(store_uri)
    assert sweep.info.status == "KILLED"
    assert "RUNNING" not in {r.info.status for r in depths}


def test_sigterm_ends_runs_killed_then_the_same_command_resumes(store_uri, cache_dir):
    command = sweep_command(store_uri, cache_dir)
    code, out, err = start_and_signal_after_first_depth(command, signal.SIGTERM)
    assert code == 143, err[-2000:]
    assert "Interrupted: the current runs are marked KILLED" in err and "Traceback" not in err
    assert " depth " in out  # the partial summary
    (sweep,), depths = runs_by_kind(store_uri)
    assert sweep.info.status == "KILLED"
    assert {r.info.status for r in depths} <= {"FINISHED", "KILLED"}
    assert [r.data.params["unfreeze_layers"] for r in depths if r.info.status == "FINISHED"] == ["0"]

    resumed = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming sweep {sweep.info.run_id}" in resumed.stdout
    assert "[1/3] unfreeze=0: already FINISHED" in resumed.stdout
    (after,), depths = runs_by_kind(store_uri)
    assert after.info.run_id == sweep.info.run_id and after.info.status == "FINISHED"
    finished = sorted(r.data.params["unfreeze_layers"] for r in depths if r.info.status == "FINISHED")
    assert finished == sorted(DEPTHS)  # never a second FINISHED run for a depth
    assert after.data.tags["tlexp.best_depth"] in DEPTHS


def test_a_killed_process_leaves_running_runs_that_the_next_run_marks_killed(store_uri, cache_dir):
    command = sweep_command(store_uri, cache_dir)
    code, _, _ = start_and_signal_after_first_depth(command, signal.SIGKILL)
    assert code == -signal.SIGKILL
    (sweep,), depths = runs_by_kind(store_uri)
    assert sweep.info.status == "RUNNING"
    orphans = [r.info.run_id for r in depths if r.info.status == "RUNNING"]
    resumed = subprocess.run(command, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    client = MlflowClient(tracking_uri=store_uri)
    assert all(client.get_run(run_id).info.status == "KILLED" for run_id in orphans)
    (after,), depths = runs_by_kind(store_uri)
    assert after.info.run_id == sweep.info.run_id and after.info.status == "FINISHED"
    finished = sorted(r.data.params["unfreeze_layers"] for r in depths if r.info.status == "FINISHED")
    assert finished == sorted(DEPTHS)
    assert not [r for r in depths if r.info.status == "RUNNING"]


def test_restart_starts_a_fresh_sweep_where_a_plain_run_would_resume(tiny_config, client):
    from tlexp.sweep import run_sweep

    config = tiny_config(unfreeze=(0, "all"))

    def interrupt_after_first_depth(line):
        if line.startswith("[1/2]"):
            raise KeyboardInterrupt

    try:
        run_sweep(config, progress=interrupt_after_first_depth)
    except KeyboardInterrupt as interrupt:
        assert [r.depth for r in interrupt.partial_results] == [0]
    killed = client.search_runs([client.get_experiment_by_name("test").experiment_id], "tags.`tlexp.kind` = 'sweep'")
    assert [r.info.status for r in killed] == ["KILLED"]
    fresh = run_sweep(config, restart=True)
    assert fresh.sweep_id != killed[0].info.run_id
    assert [r.status for r in fresh.results] == ["FINISHED", "FINISHED"]


def test_an_error_after_a_signal_ends_the_runs_killed_not_failed(tiny_config, client):
    """TensorFlow can turn an interrupt raised inside its tensor conversion into a TypeError; once
    a signal was received, any error in a depth stops the sweep as an interrupt."""
    import pytest

    from tlexp.errors import Interrupted, forget_received_interrupt, interrupt_on_signal
    from tlexp.sweep import run_sweep

    with pytest.raises(Interrupted):
        interrupt_on_signal(signal.SIGTERM)  # as the CLI's handler does on SIGTERM
    try:
        # A learning rate near float32 max makes this depth fail with an ordinary error.
        config = tiny_config(unfreeze=("all", 0), learning_rate_finetune=1e38, epochs_finetune=3)
        with pytest.raises(KeyboardInterrupt) as raised:
            run_sweep(config)
    finally:
        forget_received_interrupt()
    assert raised.value.exit_code == 143 and raised.value.partial_results == ()
    experiment = client.get_experiment_by_name("test")
    runs = [r for r in client.search_runs([experiment.experiment_id]) if r.data.tags.get("tlexp.kind") in ("sweep", "depth")]
    assert sorted(r.info.status for r in runs) == ["KILLED", "KILLED"]  # the sweep and its first depth
