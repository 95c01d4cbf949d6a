"""Keras model building: backbones, their weights and preprocessing, the classifier head, unfreezing.

This is the one module that builds TensorFlow/Keras models. Keras is imported inside functions so
that importing tlexp (and `tlexp --help`) stays instant.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tlexp.config import ALL_LAYERS, BACKBONES, Depth
from tlexp.errors import BackboneError, first_line

if TYPE_CHECKING:
    import keras

DEMO_IMAGE_SIZE = 28
APPLICATION_IMAGE_SIZE = 224
# keras.applications backbones refuse inputs smaller than this.
APPLICATION_MIN_IMAGE_SIZE = 32


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    image_size: int
    channels: int

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.image_size, self.image_size, self.channels)


def backbone_spec(name: str, image_size: int | None = None) -> BackboneSpec:
    if name not in BACKBONES:
        raise BackboneError(f"unknown backbone {name!r}; expected one of {', '.join(BACKBONES)}")
    if name == "demo":
        return BackboneSpec(name, image_size or DEMO_IMAGE_SIZE, channels=1)
    size = image_size or APPLICATION_IMAGE_SIZE
    if size < APPLICATION_MIN_IMAGE_SIZE:
        raise BackboneError(
            f"image_size {size} is too small for {name}; expected at least {APPLICATION_MIN_IMAGE_SIZE}"
        )
    return BackboneSpec(name, size, channels=3)


def _application(name: str):
    """The keras.applications constructor and preprocess_input for a backbone name."""
    from keras import applications

    return {
        "mobilenet_v2": (applications.MobileNetV2, applications.mobilenet_v2.preprocess_input),
        "efficientnet_b0": (applications.EfficientNetB0, applications.efficientnet.preprocess_input),
        "resnet50": (applications.ResNet50, applications.resnet50.preprocess_input),
    }[name]


def preprocess(spec: BackboneSpec, images: np.ndarray) -> np.ndarray:
    """Map raw pixel values in [0, 255] to what the backbone was trained on."""
    images = np.asarray(images, dtype="float32")
    if spec.name == "demo":
        return images / 255.0
    _, preprocess_input = _application(spec.name)
    return np.asarray(preprocess_input(images.copy()), dtype="float32")


def build_backbone(spec: BackboneSpec, weights_path: str | None) -> keras.Model:
    """The backbone without its top, ending in a pooled feature vector; random init if no path."""
    if spec.name == "demo":
        model = _build_demo_backbone(spec)
        if weights_path is not None:
            _load_weights(model, weights_path, spec)
        return model
    constructor, _ = _application(spec.name)
    try:
        return constructor(
            include_top=False, weights=weights_path, input_shape=spec.input_shape, pooling="avg"
        )
    except (ValueError, OSError) as error:
        raise BackboneError(
            f"weights file {weights_path!r} does not match backbone {spec.name} at image_size "
            f"{spec.image_size}: {first_line(error)}"
        ) from None


def _build_demo_backbone(spec: BackboneSpec) -> keras.Model:
    """A small CNN for grey digits: two conv blocks and a dense feature layer."""
    from keras import Input, Model, layers

    inputs = Input(shape=spec.input_shape, name="image")
    x = inputs
    for block, filters in enumerate((32, 64), start=1):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"block{block}_conv")(x)
        # A short-memory moving average: the source task is small, so the statistics must settle
        # within a few hundred steps to be usable in inference mode.
        x = layers.BatchNormalization(momentum=0.9, name=f"block{block}_bn")(x)
        x = layers.MaxPooling2D(name=f"block{block}_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    outputs = layers.Dense(128, activation="relu", name="features")(x)
    return Model(inputs, outputs, name="demo_cnn")


def _load_weights(model: keras.Model, weights_path: str, spec: BackboneSpec) -> None:
    try:
        model.load_weights(weights_path)
    except (ValueError, OSError, KeyError) as error:
        raise BackboneError(
            f"weights file {weights_path!r} does not match backbone {spec.name}: {first_line(error)}"
        ) from None


def imagenet_weights_path(spec: BackboneSpec) -> str:
    """Download (or find in Keras' cache) the backbone's ImageNet weights, through keras.utils.get_file.

    The file name, URL and hash are Keras' own, so a file already in $KERAS_HOME/models is used
    as Keras would use it.
    """
    from keras.utils import get_file

    file_name, origin, file_hash = _imagenet_weights_source(spec)
    try:
        return get_file(file_name, origin, cache_subdir="models", file_hash=file_hash)
    except Exception as error:  # get_file raises a bare Exception when offline
        raise BackboneError(
            f"could not download ImageNet weights for {spec.name} from {origin} "
            f"({first_line(error)}); pass --weights PATH with a local weights file"
        ) from None


def _imagenet_weights_source(spec: BackboneSpec) -> tuple[str, str, str | None]:
    if spec.name == "mobilenet_v2":
        from keras.src.applications import mobilenet_v2

        # MobileNetV2 ships weights for these input sizes and falls back to 224 otherwise.
        rows = spec.image_size if spec.image_size in (96, 128, 160, 192, 224) else 224
        file_name = f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{rows}_no_top.h5"
        return file_name, mobilenet_v2.BASE_WEIGHT_PATH + file_name, None
    if spec.name == "resnet50":
        from keras.src.applications import resnet

        file_name = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
        return file_name, resnet.BASE_WEIGHTS_PATH + file_name, resnet.WEIGHTS_HASHES["resnet50"][1]
    if spec.name == "efficientnet_b0":
        from keras.src.applications import efficientnet

        file_name = "efficientnetb0_notop.h5"
        return (
            file_name,
            efficientnet.BASE_WEIGHTS_PATH + file_name,
            efficientnet.WEIGHTS_HASHES["b0"][1],
        )
    raise BackboneError(f"backbone {spec.name} has no ImageNet weights; expected one of {BACKBONES[1:]}")


def build_classifier(
    backbone: keras.Model,
    num_classes: int,
    *,
    dropout: float,
    augment: bool = False,
    name: str = "classifier",
) -> keras.Model:
    """Backbone, dropout and a softmax layer; with `augment`, random rotations, shifts and zooms
    of the input first (active in training only)."""
    from keras import Input, Model, layers

    inputs = Input(shape=backbone.input_shape[1:], name="image")
    x = inputs
    if augment:
        # No flips: they change what digits and many small-data classes mean.
        x = layers.RandomRotation(0.05, fill_mode="nearest", name="augment_rotation")(x)
        x = layers.RandomTranslation(0.1, 0.1, fill_mode="nearest", name="augment_translation")(x)
        x = layers.RandomZoom(0.1, fill_mode="nearest", name="augment_zoom")(x)
    # training=False as in the Keras transfer-learning guide. Keras 3 lets an outer fit() override
    # it, so unfreeze_top_layers also keeps BatchNorm layers frozen, which Keras runs in inference mode.
    features = backbone(x, training=False)
    features = layers.Dropout(dropout, name="head_dropout")(features)
    # float32 output keeps softmax stable under a mixed_float16 policy.
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="head")(features)
    return Model(inputs, outputs, name=name)


def backbone_of(classifier: keras.Model) -> keras.Model:
    from keras import Model

    return next(layer for layer in classifier.layers if isinstance(layer, Model))


def resolve_depth(depth: Depth, backbone: keras.Model, unit: str = "layers") -> int:
    """The number of top backbone layers a depth unfreezes; `unit` "blocks" counts the
    architecture's own blocks from the top. Too deep is an error."""
    layer_count = len(backbone.layers)
    if depth == ALL_LAYERS:
        return layer_count
    if unit == "blocks":
        starts = block_starts(backbone)
        if depth > len(starts):
            raise BackboneError(
                f"unfreeze depth {depth} is larger than backbone {backbone.name}, which has "
                f"{len(starts)} blocks; expected 0..{len(starts)} or 'all'"
            )
        return 0 if depth == 0 else layer_count - starts[-depth]
    if depth > layer_count:
        raise BackboneError(
            f"unfreeze depth {depth} is larger than backbone {backbone.name}, which has "
            f"{layer_count} layers; expected 0..{layer_count} or 'all'"
        )
    return depth


# The architectures' own block names: MobileNetV2 (expanded_conv, block_1..16), ResNet
# (conv2_block1..), EfficientNet (block1a..) and the demo CNN (block1, block2).
_BLOCK_NAME = re.compile(r"^(expanded_conv|conv\d+_block\d+|block_?\d+[a-z]?)_")
# Layers whose output is random in training even when frozen: a cache of their output would
# not be what the uncached model trains on.
_RANDOM_IN_TRAINING = ("Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
                       "GaussianNoise", "GaussianDropout", "AlphaDropout")


def block_starts(backbone: keras.Model) -> tuple[int, ...]:
    """Layer indices where the backbone's blocks start, bottom to top.

    Layers before the first named block form a stem block and layers after the last form a top
    block, each only when it has weights (weightless ones join their neighbour). Every start is
    a single-tensor cut, so a block depth always has a valid frozen-feature cache.
    """
    groups: list[tuple[str, int, bool]] = []  # (block name, first layer index, has weights)
    seen_block = False
    for index, layer in enumerate(backbone.layers[1:], start=1):
        match = _BLOCK_NAME.match(layer.name)
        name = match.group(1) if match else ("top" if seen_block else "stem")
        seen_block = seen_block or match is not None
        if groups and groups[-1][0] == name:
            groups[-1] = (name, groups[-1][1], groups[-1][2] or bool(layer.weights))
        else:
            groups.append((name, index, bool(layer.weights)))
    if groups and groups[-1][0] == "top" and not groups[-1][2]:
        groups.pop()
    if groups and groups[0][0] == "stem" and not groups[0][2] and len(groups) > 1:
        groups[1] = (groups[1][0], groups[0][1], groups[1][2])
        groups.pop(0)
    cuts = set(single_tensor_cuts(backbone))
    starts = tuple(start for _, start, _ in groups)
    uncut = [backbone.layers[start].name for start in starts if start not in cuts and start > 1]
    if uncut:
        raise BackboneError(f"backbone {backbone.name} has blocks that do not start on a single tensor: {uncut}")
    return starts


def _node_output(layer) -> keras.KerasTensor:
    """The layer's output in its backbone's own graph (later sub-models add nodes of their own)."""
    return layer._inbound_nodes[0].output_tensors[0]


def single_tensor_cuts(backbone: keras.Model) -> tuple[int, ...]:
    """Indices k where layers[:k] hand exactly one tensor to layers[k:], so that the output of
    layers[:k] is all the top needs; k = len(layers) is the backbone's output."""
    position = {id(layer): index for index, layer in enumerate(backbone.layers)}
    inputs_of = [
        [(position[id(t._keras_history.operation)], id(t)) for t in layer._inbound_nodes[0].input_tensors]
        for layer in backbone.layers[1:]
    ]
    cuts = []
    for k in range(1, len(backbone.layers)):
        crossing = {tensor for consumers in inputs_of[k - 1 :] for producer, tensor in consumers if producer < k}
        if len(crossing) == 1:
            cuts.append(k)
    return (*cuts, len(backbone.layers))


def cache_cut(backbone: keras.Model, layer_count: int) -> int | None:
    """The highest single-tensor cut below every trainable layer and every layer that is random
    in training: the frozen-feature cache point for a depth. None when nothing below is worth
    caching (only the input)."""
    limit = len(backbone.layers) - layer_count
    random_layers = [
        index for index, layer in enumerate(backbone.layers) if type(layer).__name__ in _RANDOM_IN_TRAINING
    ]
    if random_layers:
        limit = min(limit, random_layers[0])
    below = [cut for cut in single_tensor_cuts(backbone) if cut <= limit]
    return below[-1] if below and below[-1] > 1 else None


def frozen_part(backbone: keras.Model, cut: int) -> keras.Model:
    """The backbone's layers[:cut] as a model: what the frozen-feature cache holds."""
    from keras import Model

    output = backbone.outputs[0] if cut == len(backbone.layers) else _node_output(backbone.layers[cut - 1])
    return Model(backbone.inputs[0], output, name=f"{backbone.name}_below_{cut}")


def part_above_cut(classifier: keras.Model, cut: int) -> keras.Model:
    """The classifier from the backbone's cut to the class probabilities, sharing its layers
    (and so its weights and trainable flags): trained on cached frozen features."""
    from keras import Input, Model

    backbone = backbone_of(classifier)
    if cut == len(backbone.layers):
        inputs = Input(shape=backbone.outputs[0].shape[1:], name="features")
        x = inputs
    else:
        tensor = _node_output(backbone.layers[cut - 1])
        inputs = Input(shape=tensor.shape[1:], name=f"{backbone.layers[cut - 1].name}_output")
        x = Model(tensor, backbone.outputs[0], name=f"{backbone.name}_above_{cut}")(inputs)
    after_backbone = classifier.layers[classifier.layers.index(backbone) + 1 :]
    for layer in after_backbone:  # the head is a chain: dropout, then the softmax layer
        x = layer(x)
    return Model(inputs, x, name=f"{classifier.name}_above_{cut}")


def unfreeze_top_layers(
    classifier: keras.Model, layer_count: int, *, freeze_batchnorm: bool = True
) -> int:
    """Make the top `layer_count` backbone layers trainable (the head always is) and freeze the
    rest. With `freeze_batchnorm` (pretrained weights), BatchNorm layers stay frozen so that they
    keep their pretrained statistics in inference mode. Returns how many backbone layers have
    weights that train."""
    from keras import layers

    backbone = backbone_of(classifier)
    backbone.trainable = layer_count > 0
    if layer_count == 0:
        return 0
    # Each layer is set explicitly: Keras skips the recursive setter when the model's own flag
    # does not change, which would leave layers frozen by an earlier call frozen.
    first_trainable = len(backbone.layers) - layer_count
    for index, layer in enumerate(backbone.layers):
        is_frozen_batchnorm = freeze_batchnorm and isinstance(layer, layers.BatchNormalization)
        layer.trainable = index >= first_trainable and not is_frozen_batchnorm
    return sum(1 for layer in backbone.layers if layer.trainable and layer.trainable_weights)


def count_params(weights) -> int:
    return int(sum(np.prod(weight.shape) for weight in weights))


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()

