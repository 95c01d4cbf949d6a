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
