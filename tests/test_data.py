import numpy as np
import pytest
from PIL import Image

from tlexp.data import ImageFormat, load_dataset
from tlexp.errors import DataError

GREY_28 = ImageFormat(28, 1)


def write_image_folder(root, classes=("cat", "dog"), per_class=8, size=(20, 12), mode="RGB"):
    rng = np.random.default_rng(0)
    for label, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True)
        for index in range(per_class):
            shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
            pixels = rng.integers(0, 255, shape, dtype=np.uint8)
            Image.fromarray(pixels).convert(mode).save(folder / f"{name}_{index}.png")
    return root


def load(spec, image_format=GREY_28, **kwargs):
    options = {"seed": 0, "val_fraction": 0.25, "test_fraction": 0.25, **kwargs}
    return load_dataset(str(spec), image_format, **options)


def test_image_folder_in_keras_layout_is_resized_and_split_stratified(tmp_path):
    write_image_folder(tmp_path / "images", per_class=8)
    (tmp_path / "images" / "cat" / "notes.txt").write_text("not an image")
    dataset = load(tmp_path / "images", ImageFormat(32, 3))
    assert dataset.class_names == ("cat", "dog")
    assert dataset.train.x.shape[1:] == (32, 32, 3) and dataset.train.x.dtype == np.float32
    assert [len(dataset.train), len(dataset.val), len(dataset.test)] == [8, 4, 4]
    for split in (dataset.train, dataset.val, dataset.test):
        assert np.bincount(split.y).tolist() == [len(split) // 2] * 2
    all_sources = dataset.train.sources + dataset.val.sources + dataset.test.sources
    assert len(set(all_sources)) == 16 and not any(s.endswith(".txt") for s in all_sources)


def test_splits_are_reproducible_from_the_seed(tmp_path):
    write_image_folder(tmp_path / "images", per_class=12, mode="L")
    first, again = load(tmp_path / "images"), load(tmp_path / "images")
    other = load(tmp_path / "images", seed=1)
    assert first.test.sources == again.test.sources
    assert first.test.sources != other.test.sources
    assert np.array_equal(first.train.x, again.train.x)


def test_npz_with_string_labels_and_grey_to_rgb(tmp_path):
    x = np.random.default_rng(0).integers(0, 255, (20, 16, 16)).astype("uint8")
    y = np.array(["no", "yes"] * 10)
    np.savez(tmp_path / "set.npz", x=x, y=y)
    dataset = load(tmp_path / "set.npz", ImageFormat(32, 3))
    assert dataset.class_names == ("no", "yes")
    assert dataset.train.x.shape[1:] == (32, 32, 3)
    assert dataset.name == "set.npz"


def test_demo_target_task_holds_digits_five_to_nine():
    dataset = load("demo", demo_images_per_class=12)
    assert dataset.class_names == ("5", "6", "7", "8", "9")
    assert len(dataset.train) + len(dataset.val) + len(dataset.test) == 60
    assert dataset.train.x.shape[1:] == (28, 28, 1) and dataset.train.x.max() > 1


@pytest.mark.parametrize(
    ("arrange", "message"),
    [
        (lambda root: None, "does not exist"),
        (lambda root: root.mkdir(), "has no class folders"),
        (lambda root: write_image_folder(root, classes=("only",)), "has 1 class; expected at least 2"),
        (lambda root: (write_image_folder(root), (root / "empty").mkdir()), "holds no images"),
        (
            lambda root: (write_image_folder(root), (root / "cat" / "broken.png").write_bytes(b"nope")),
            "broken.png' cannot be read",
        ),
        (lambda root: write_image_folder(root, per_class=2), "cannot split 4 images"),
    ],
)
def test_bad_folders_name_the_problem(tmp_path, arrange, message):
    root = tmp_path / "images"
    arrange(root)
    with pytest.raises(DataError, match=message):
        load(root)


def test_npz_without_labels_is_rejected(tmp_path):
    np.savez(tmp_path / "set.npz", images=np.zeros((4, 8, 8)))
    with pytest.raises(DataError, match="lacks array x, y"):
        load(tmp_path / "set.npz")


def test_copies_under_new_names_across_splits_are_found(tmp_path):
    from tlexp.data import split_overlaps

    root = write_image_folder(tmp_path / "images", per_class=12, mode="L")
    clean = load(root)
    assert split_overlaps(clean) == ()
    # Copy every cat image under a new name into the dog class: each copy lands somewhere.
    for index, path in enumerate(sorted((root / "cat").glob("*.png"))):
        (root / "dog" / f"renamed_{index}.png").write_bytes(path.read_bytes())
    overlaps = split_overlaps(load(root))
    assert overlaps
    for overlap in overlaps:
        names = {source.rsplit("/", 1)[-1] for _, source in overlap.occurrences}
        assert len({split for split, _ in overlap.occurrences}) > 1
        assert any(name.startswith("renamed_") for name in names) and any(name.startswith("cat_") for name in names)


def test_demo_splits_do_not_overlap():
    from tlexp.data import split_overlaps

    assert split_overlaps(load("demo", demo_images_per_class=40)) == ()


def test_images_of_mixed_sizes_and_modes_are_converted(tmp_path):
    root = tmp_path / "mixed"
    for name, mode, size in (("a", "RGB", (30, 20)), ("a", "L", (8, 8)), ("a", "RGBA", (50, 50)), ("a", "P", (16, 40))):
        (root / name).mkdir(parents=True, exist_ok=True)
        Image.new(mode, size).save(root / name / f"{mode}.png")
    for index in range(4):
        (root / "b").mkdir(exist_ok=True)
        Image.new("CMYK", (10, 10 + index)).save(root / "b" / f"{index}.jpg")
    dataset = load(root, ImageFormat(32, 3))
    assert dataset.train.x.shape[1:] == (32, 32, 3)
