"""Backbones from keras.applications and the demo CNN: weights, depths, unfreezing."""

import numpy as np
import pytest

from tlexp import backbone as bb
from tlexp.errors import BackboneError

SMALL = 32  # the smallest input keras.applications accept: keeps these tests fast


@pytest.fixture(scope="module")
def mobilenet_weights(tmp_path_factory):
    """A local MobileNetV2 weights file, standing in for the ImageNet download."""
    path = tmp_path_factory.mktemp("weights") / "mobilenet_v2.weights.h5"
    model = bb.build_backbone(bb.backbone_spec("mobilenet_v2", SMALL), None)
    model.save_weights(path)
    return path, model


def test_depths_count_top_layers_and_all_means_every_layer():
    model = bb.build_backbone(bb.backbone_spec("demo"), None)
    assert bb.resolve_depth("all", model) == len(model.layers)
    assert bb.resolve_depth(3, model) == 3
    with pytest.raises(BackboneError, match=f"unfreeze depth 99 is larger than backbone demo_cnn, which has {len(model.layers)} layers"):
        bb.resolve_depth(99, model)


def test_unfreeze_top_layers_keeps_the_rest_and_batchnorm_frozen():
    import keras

    classifier = bb.build_classifier(bb.build_backbone(bb.backbone_spec("demo"), None), 3, dropout=0.1)
    backbone = bb.backbone_of(classifier)
    assert bb.unfreeze_top_layers(classifier, 0) == 0
    assert bb.count_params(classifier.trainable_weights) == 128 * 3 + 3  # the head alone
    trainable = bb.unfreeze_top_layers(classifier, 5)
    top = backbone.layers[-5:]
    assert [layer.trainable for layer in backbone.layers[:-5]] == [False] * (len(backbone.layers) - 5)
    bn = [layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert bn and not any(layer.trainable for layer in bn)
    assert trainable == 2  # block2_conv and the dense feature layer; pooling and flatten have no weights
    bb.unfreeze_top_layers(classifier, 5, freeze_batchnorm=False)
    assert [layer for layer in bn if layer in top][0].trainable


def test_application_backbone_loads_a_local_weights_file(mobilenet_weights):
    path, reference = mobilenet_weights
    spec = bb.backbone_spec("mobilenet_v2", SMALL)
    loaded = bb.build_backbone(spec, str(path))
    assert len(loaded.layers) == len(reference.layers)
    np.testing.assert_array_equal(loaded.get_weights()[0], reference.get_weights()[0])


def test_mismatched_weights_file_is_named(tmp_path):
    wrong = tmp_path / "demo.weights.h5"
    bb.build_backbone(bb.backbone_spec("demo"), None).save_weights(wrong)
    with pytest.raises(BackboneError, match=f"weights file '{wrong}' does not match backbone mobilenet_v2"):
        bb.build_backbone(bb.backbone_spec("mobilenet_v2", SMALL), str(wrong))


def test_preprocess_input_matches_the_backbone():
    images = np.full((1, SMALL, SMALL, 3), 255.0, dtype="float32")
    assert bb.preprocess(bb.backbone_spec("mobilenet_v2", SMALL), images).max() == pytest.approx(1.0)
    assert bb.preprocess(bb.backbone_spec("demo"), images[..., :1]).max() == pytest.approx(1.0)
    caffe = bb.preprocess(bb.backbone_spec("resnet50", SMALL), images)
    assert caffe[0, 0, 0].tolist() == pytest.approx([255 - 103.939, 255 - 116.779, 255 - 123.68])


def test_too_small_image_size_is_rejected():
    with pytest.raises(BackboneError, match="image_size 16 is too small for resnet50; expected at least 32"):
        bb.backbone_spec("resnet50", 16)


def test_demo_cnn_blocks_are_its_two_conv_blocks_and_the_dense_top():
    model = bb.build_backbone(bb.backbone_spec("demo"), None)
    assert bb.block_starts(model) == (1, 4, 7)  # block1_conv, block2_conv, flatten
    assert [bb.resolve_depth(d, model, "blocks") for d in (0, 1, 2, 3, "all")] == [0, 2, 5, 8, 9]
    with pytest.raises(BackboneError, match="unfreeze depth 4 is larger than backbone demo_cnn, which has 3 blocks; expected 0..3 or 'all'"):
        bb.resolve_depth(4, model, "blocks")


@pytest.mark.parametrize(
    ("name", "named_blocks", "first", "last"),
    [
        # MobileNetV2: expanded_conv and block_1..16; ResNet50: 3 + 4 + 6 + 3 residual blocks;
        # EfficientNetB0: 16 MBConv blocks (1a .. 7a). Each also has a stem, and a top with weights.
        ("mobilenet_v2", 17, "expanded_conv_depthwise", "Conv_1"),
        ("resnet50", 16, "conv2_block1_1_conv", "conv5_block3_1_conv"),
        ("efficientnet_b0", 16, "block1a_dwconv", "top_conv"),
    ],
)
def test_application_blocks_start_on_single_tensor_cuts(name, named_blocks, first, last):
    model = bb.build_backbone(bb.backbone_spec(name, SMALL), None)
    starts = bb.block_starts(model)
    names = [model.layers[start].name for start in starts]
    assert names[1] == first and names[-1] == last
    has_top_block = name != "resnet50"  # ResNet50's top is a weightless pooling layer: no block
    assert len(starts) == 1 + named_blocks + has_top_block
    cuts = set(bb.single_tensor_cuts(model))
    assert set(starts[1:]) <= cuts
    # A block depth unfreezes exactly the layers above a block start, so its cache sits right
    # there, unless a layer that is random in training comes first (EfficientNet's dropouts).
    for depth in range(1, len(starts)):
        count = bb.resolve_depth(depth, model, "blocks")
        assert count == len(model.layers) - starts[-depth]
        if name != "efficientnet_b0":
            assert bb.cache_cut(model, count) == starts[-depth]


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_the_part_above_a_cut_on_the_frozen_part_computes_the_whole_classifier(depth):
    model = bb.build_backbone(bb.backbone_spec("mobilenet_v2", SMALL), None)
    classifier = bb.build_classifier(model, 3, dropout=0.2)
    count = bb.resolve_depth(depth, model, "blocks")
    cut = bb.cache_cut(model, count)
    images = np.random.default_rng(0).uniform(-1, 1, (4, SMALL, SMALL, 3)).astype("float32")
    features = bb.frozen_part(model, cut).predict(images, verbose=0)
    above = bb.part_above_cut(classifier, cut)
    np.testing.assert_allclose(above.predict(features, verbose=0), classifier.predict(images, verbose=0), atol=1e-5)
    # The part above shares the classifier's layers: training one trains the other.
    assert {id(w) for w in above.weights} <= {id(w) for w in classifier.weights}


def test_a_depth_with_nothing_frozen_below_has_no_cache_point():
    model = bb.build_backbone(bb.backbone_spec("demo"), None)
    assert bb.cache_cut(model, len(model.layers)) is None
    assert bb.cache_cut(model, 0) == len(model.layers)  # the head trains on the backbone's output
    assert bb.cache_cut(model, 1) == 8  # below the dense feature layer: flatten's output
