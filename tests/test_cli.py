"""The CLI through click's CliRunner, and in a subprocess where the environment matters."""

import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient
from PIL import Image

from tlexp.cli import main


def invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_every_command_has_help_with_an_example():
    assert invoke("--help").exit_code == 0
    for name, command in main.commands.items():
        result = invoke(name, "--help")
        assert result.exit_code == 0, name
        assert command.help and "Example:" in result.output, name


def test_help_does_not_import_tensorflow():
    code = "import sys; from tlexp.cli import main; sys.argv=['tlexp','sweep','--help']\ntry: main()\nexcept SystemExit: pass\nprint('tensorflow' in sys.modules, 'mlflow' in sys.modules)"
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip().endswith("False False")


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--batch-size", "0"], "Error: batch_size must be an integer >= 1, got 0"),
        (["--unfreeze", "1,-2"], "Error: unfreeze depth '-2' is not valid; expected a non-negative integer or 'all'"),
        (["--data", "/no/such/dir"], "Error: data path '/no/such/dir' does not exist; expected 'demo', a folder of class folders or an .npz file"),
        (["--unfreeze", "0,500"], "Error: unfreeze depth 500 is larger than backbone demo_cnn, which has 9 layers; expected 0..9 or 'all'"),
        (["--tracking-uri", "ftp:/x"], "Error: tracking URI 'ftp:/x' is not one tlexp can use; expected sqlite:///PATH, http(s)://HOST:PORT or file:///PATH"),
        (["--val-fraction", "0.7", "--test-fraction", "0.3"], "Error: val_fraction + test_fraction = 1; expected less than 1 so that some images are left to train on"),
        (["--data", "demo-rare", "--positive-class", "8"], "Error: positive_class '8' is not a class of this data; expected one of 'other', '9'"),
        (["--positive-class", "5"], "Error: positive_class '5' is set but the task has 5 classes; expected a binary task"),
        (["--threshold-rule", "min_recall", "--threshold-target", "0.9"], "Error: threshold_rule min_recall applies to binary tasks, but demo has 5 classes; expected threshold_rule max_f1"),
    ],
)
def test_bad_input_is_one_error_line_and_leaves_no_run(args, line, store_uri, cache_dir):
    store = ["--tracking-uri", store_uri] if "--tracking-uri" not in args else []
    result = CliRunner().invoke(main, ["sweep", "--cache-dir", cache_dir, *store, *args])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == line
    assert "Traceback" not in result.output
    if not store:
        return
    client = MlflowClient(tracking_uri=store_uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [run for run in runs if run.info.status == "RUNNING"] == []


def test_unknown_config_key_fails_by_name(tmp_path):
    config = tmp_path / "sweep.yaml"
    config.write_text("epochs_head: 1\nunfreez: [0]\n")
    result = CliRunner().invoke(main, ["sweep", str(config)])
    assert result.exit_code == 1
    assert result.output.startswith("Error: unknown config key 'unfreez'; expected keys among: data, backbone,")


def test_sweep_command_prints_progress_and_summary(tiny_config, store_uri, cache_dir, client):
    result = invoke(
        "sweep", "--data", "demo", "--unfreeze", "0,all", "--epochs-head", "1", "--epochs-finetune", "1",
        "--val-fraction", "0.25", "--test-fraction", "0.25", "--batch-size", "16",
        "--tracking-uri", store_uri, "--cache-dir", cache_dir, "--experiment", "cli",
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any(line.startswith("[1/2] unfreeze=0:") for line in lines)
    assert any(line.startswith("[2/2] unfreeze=all:") for line in lines)
    header = next(i for i, line in enumerate(lines) if line.split()[:1] == ["depth"])
    assert lines[header].split() == [
        "depth", "trainable", "train", "F1", "val", "F1", "[95%", "CI]", "gap", "overfit",
        "rare", "recall", "[95%", "CI]", "threshold", "verdict",
    ]
    rows = [line.split() for line in lines[header + 1 : header + 3]]
    assert [row[0] for row in rows] == ["0", "all"]
    assert all(row[-1] in ("good", "bad", "(!)") and "argmax" in row for row in rows)
    assert f"open it with: tlexp ui --tracking-uri {store_uri}" in result.output
    experiment = client.get_experiment_by_name("cli")
    # One sweep run and two depth runs (a first use of the cache directory adds a pretraining run).
    kinds = [run.data.tags["tlexp.kind"] for run in client.search_runs([experiment.experiment_id])]
    assert sorted(kind for kind in kinds if kind != "backbone-pretraining") == ["depth", "depth", "sweep"]


def write_rgb_folder(root, classes=("ant", "bee"), per_class=8):
    rng = np.random.default_rng(1)
    for label, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for index in range(per_class):
            pixels = rng.integers(0, 80, (40, 40, 3), dtype=np.uint8) + np.uint8(120 * label)
            Image.fromarray(pixels).save(root / name / f"{index}.jpg")


def run_cli(args, env_overrides):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **env_overrides}
    return subprocess.run(
        [sys.executable, "-m", "tlexp.cli", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_image_folder_sweep_on_mobilenet_v2_with_imagenet_weights_from_keras_cache(tmp_path, store_uri):
    """`--weights imagenet` goes through Keras' download path; a file in $KERAS_HOME/models is used."""
    from tlexp import backbone as bb

    spec = bb.backbone_spec("mobilenet_v2", 32)
    file_name, _, _ = bb._imagenet_weights_source(spec)
    (tmp_path / "keras" / "models").mkdir(parents=True)
    # Keras' ImageNet files are legacy HDF5, which Keras 3 writes through model.save("*.h5").
    bb.build_backbone(spec, None).save(tmp_path / "keras" / "models" / file_name)
    write_rgb_folder(tmp_path / "images")
    completed = run_cli(
        ["sweep", "--data", str(tmp_path / "images"), "--backbone", "mobilenet_v2", "--weights", "imagenet",
         "--image-size", "32", "--unfreeze", "10", "--epochs-head", "1", "--epochs-finetune", "1",
         "--val-fraction", "0.25", "--test-fraction", "0.25", "--tracking-uri", store_uri, "--experiment", "folder"],
        {"KERAS_HOME": str(tmp_path / "keras"), "https_proxy": "http://127.0.0.1:9"},
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    client = MlflowClient(tracking_uri=store_uri)
    experiment = client.get_experiment_by_name("folder")
    runs = client.search_runs([experiment.experiment_id], "params.unfreeze_layers = '10'")
    params = runs[0].data.params
    assert params["backbone"] == "mobilenet_v2" and params["weights"] == "imagenet"
    assert params["backbone_weights_path"].endswith(file_name)
    assert params["dataset"] == "images" and params["class_names"] == "ant,bee"
    assert runs[0].data.metrics["trainable_params"] > runs[0].data.metrics["trainable_layers"] > 0


def test_imagenet_weights_offline_fail_in_one_line(tmp_path, store_uri):
    write_rgb_folder(tmp_path / "images")
    completed = run_cli(
        ["sweep", "--data", str(tmp_path / "images"), "--backbone", "mobilenet_v2", "--image-size", "32",
         "--tracking-uri", store_uri],
        # No cached weights, and a proxy on a closed local port: the download fails at once.
        {"KERAS_HOME": str(tmp_path / "keras"), "https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"},
    )
    assert completed.returncode == 1
    last = completed.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: could not download ImageNet weights for mobilenet_v2 from https://")
    assert last.endswith("pass --weights PATH with a local weights file")
    assert "Traceback" not in completed.stderr


def test_leaked_copies_stop_the_sweep_before_training_naming_the_files(tmp_path, store_uri):
    write_rgb_folder(tmp_path / "images", per_class=10)
    ants = sorted((tmp_path / "images" / "ant").glob("*.jpg"))
    for index, path in enumerate(ants[:4]):
        (tmp_path / "images" / "ant" / f"copy_{index}.jpg").write_bytes(path.read_bytes())
    result = CliRunner().invoke(
        main, ["sweep", "--data", str(tmp_path / "images"), "--tracking-uri", store_uri,
               "--val-fraction", "0.3", "--test-fraction", "0.3"],
    )
    assert result.exit_code == 1
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("Error: ") and "occur in more than one split" in line
    assert "copy_" in line and "--allow-overlap" in line
    client = MlflowClient(tracking_uri=store_uri)
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []


def test_ui_serves_the_store_on_loopback(store_uri):
    import signal
    import socket
    import time
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "tlexp.cli", "ui", "--port", str(port), "--tracking-uri", store_uri],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline, answer = time.monotonic() + 90, None
        while time.monotonic() < deadline and answer is None:
            try:
                answer = urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read()
            except OSError:
                time.sleep(1)
        assert answer == b"OK"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def test_ui_refuses_a_server_uri_and_warns_on_other_hosts():
    outcome = CliRunner().invoke(main, ["ui", "--tracking-uri", "http://127.0.0.1:5999", "--host", "0.0.0.0"])
    assert outcome.exit_code == 1
    assert "Warning: binding 0.0.0.0" in outcome.stderr
    assert outcome.output.strip().splitlines()[-1] == "Error: tracking URI http://127.0.0.1:5999 is already a server; open it in a browser instead"
