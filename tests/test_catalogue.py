"""The bad-input catalogue: each case is one `Error:` line naming the value and what was expected,
a non-zero exit code, no traceback, and no run left RUNNING in the store."""

import numpy as np
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient
from PIL import Image

from tlexp.cli import main


def images(root, classes=("a", "b"), per_class=6):
    for label, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            Image.fromarray(np.full((12, 12), 40 * label + index, dtype=np.uint8)).save(root / name / f"{index}.png")
    return root


def demo_weights(tmp):
    from tlexp import backbone as bb

    path = tmp / "demo.weights.h5"
    bb.build_backbone(bb.backbone_spec("demo"), None).save_weights(path)
    return path


# Each case: (id, a function of tmp_path giving the CLI arguments, the start of the error line).
CASES = [
    ("missing data path", lambda t: ["--data", str(t / "nope")], "Error: data path '{t}/nope' does not exist; expected 'demo', a folder"),
    ("data path is a file", lambda t: ["--data", str((t / "x.csv").write_text("1") and t / "x.csv")], "Error: data path '{t}/x.csv' is neither a folder nor an .npz file"),
    ("empty class folder", lambda t: (images(t / "d"), (t / "d" / "c").mkdir(), ["--data", str(t / "d")])[-1], "Error: class folder '{t}/d/c' holds no images"),
    ("one class only", lambda t: ["--data", str(images(t / "d", classes=("only",)))], "Error: data '{t}/d' has 1 class; expected at least 2 classes"),
    ("corrupt image", lambda t: (images(t / "d"), (t / "d" / "a" / "bad.png").write_bytes(b"\x89PNG broken"), ["--data", str(t / "d")])[-1], "Error: image '{t}/d/a/bad.png' cannot be read"),
    ("text file named like an image", lambda t: (images(t / "d"), (t / "d" / "b" / "notes.jpg").write_text("hello"), ["--data", str(t / "d")])[-1], "Error: image '{t}/d/b/notes.jpg' cannot be read"),
    ("split leaves a class empty", lambda t: ["--data", str(images(t / "d", per_class=2))], "Error: cannot split 4 images (2 in the smallest class)"),
    ("npz without labels", lambda t: (np.savez(t / "s.npz", x=np.zeros((4, 8, 8))), ["--data", str(t / "s.npz")])[-1], "Error: file '{t}/s.npz' lacks array y"),
    ("unknown backbone", lambda t: ["--backbone", "vgg16"], "Error: Invalid value for '--backbone': 'vgg16' is not one of"),
    ("depth larger than the backbone", lambda t: ["--unfreeze", "0,40"], "Error: unfreeze depth 40 is larger than backbone demo_cnn, which has 9 layers"),
    ("negative depth", lambda t: ["--unfreeze", "-3"], "Error: unfreeze depth '-3' is not valid; expected a non-negative integer or 'all'"),
    ("non-integer depth", lambda t: ["--unfreeze", "1.5"], "Error: unfreeze depth '1.5' is not valid; expected a non-negative integer or 'all'"),
    ("unknown config key", lambda t: [str((t / "c.yaml").write_text("epoch: 3\n") and t / "c.yaml")], "Error: unknown config key 'epoch'; expected keys among:"),
    ("malformed YAML", lambda t: [str((t / "c.yaml").write_text("unfreeze: [0,\n") and t / "c.yaml")], "Error: config file '{t}/c.yaml' is not valid YAML"),
    ("malformed TOML", lambda t: [str((t / "c.toml").write_text("unfreeze = [0,\n") and t / "c.toml")], "Error: config file '{t}/c.toml' is not valid TOML"),
    ("missing config file", lambda t: [str(t / "none.yaml")], "Error: config file '{t}/none.yaml' does not exist"),
    ("zero epochs", lambda t: ["--epochs-head", "0", "--epochs-finetune", "0"], "Error: epochs_head and epochs_finetune are both 0; expected at least one epoch"),
    ("zero batch size", lambda t: ["--batch-size", "0"], "Error: batch_size must be an integer >= 1, got 0"),
    ("split fraction out of range", lambda t: ["--test-fraction", "1.2"], "Error: test_fraction must be > 0 and < 1, got 1.2"),
    ("missing weights file", lambda t: ["--weights", str(t / "w.weights.h5")], "Error: weights file '{t}/w.weights.h5' does not exist"),
    ("mismatched weights file", lambda t: ["--backbone", "mobilenet_v2", "--image-size", "32", "--weights", str(demo_weights(t))], "Error: weights file '{t}/demo.weights.h5' does not match backbone mobilenet_v2"),
    ("weights of the wrong kind", lambda t: ["--weights", "imagenet"], "Error: weights 'imagenet' does not apply to backbone 'demo'"),
    ("image size too small", lambda t: ["--backbone", "resnet50", "--image-size", "16"], "Error: image_size 16 is too small for resnet50; expected at least 32"),
    ("malformed tracking URI", lambda t: ["--tracking-uri", "mlruns"], "Error: tracking URI 'mlruns' is not one tlexp can use"),
    ("positive class not in the data", lambda t: ["--data", "demo-rare", "--positive-class", "cat"], "Error: positive_class 'cat' is not a class of this data; expected one of 'other', '9'"),
    ("threshold target missing", lambda t: ["--threshold-rule", "min_precision"], "Error: threshold_rule min_precision needs threshold_target"),
]


@pytest.mark.parametrize(("build", "expected"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input(build, expected, tmp_path, store_uri, cache_dir):
    args = build(tmp_path)
    store = [] if "--tracking-uri" in args else ["--tracking-uri", store_uri]
    result = CliRunner().invoke(main, ["sweep", *args, *store, "--cache-dir", cache_dir, "--demo-images-per-class", "8"])
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith(expected.format(t=tmp_path)), last
    if store:
        client = MlflowClient(tracking_uri=store_uri)
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
        assert not [r for r in runs if r.info.status == "RUNNING"]
