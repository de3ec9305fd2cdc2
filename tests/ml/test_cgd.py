"""CGD pooling layers and head (Keras 3, no Django)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest

from ml.cgd import GeM, L2Normalize, MAC, SPoC, build_cgd_head, build_cgd_model, build_descriptor_model


@pytest.fixture
def tiny_map():
    # (1, 2, 2, 2): channel 0 = [[1, 2], [3, 4]], channel 1 = [[0, 0], [0, 8]]
    x = np.zeros((1, 2, 2, 2), dtype=np.float32)
    x[0, :, :, 0] = [[1, 2], [3, 4]]
    x[0, :, :, 1] = [[0, 0], [0, 8]]
    return x


def test_spoc_mac_values(tiny_map):
    # SPoC: ch0 mean(1,2,3,4) = 2.5; ch1 mean(0,0,0,8) = 2. MAC: 4 and 8.
    np.testing.assert_allclose(np.asarray(SPoC()(tiny_map)), [[2.5, 2.0]], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(MAC()(tiny_map)), [[4.0, 8.0]], rtol=1e-6)


def test_gem_values(tiny_map):
    # p=3, ch0: ((1 + 8 + 27 + 64) / 4) ** (1/3) = 25 ** (1/3) = 2.9240
    out = np.asarray(GeM(p=3.0)(tiny_map))
    assert out.shape == (1, 2)
    np.testing.assert_allclose(out[0, 0], 25.0 ** (1 / 3), rtol=1e-5)
    # ch1: (512 / 4) ** (1/3) = 128 ** (1/3) = 5.0397 (eps^3 terms negligible)
    np.testing.assert_allclose(out[0, 1], 128.0 ** (1 / 3), rtol=1e-4)
    # p=1 -> SPoC, large p -> MAC
    np.testing.assert_allclose(np.asarray(GeM(p=1.0, eps=0.0)(tiny_map)), [[2.5, 2.0]], rtol=1e-5)
    # p=60: ch0 = 4 * ((1 + (3/4)^60 + ...) / 4)^(1/60) = 4 * 0.25^(1/60) = 3.909 (no overflow)
    np.testing.assert_allclose(np.asarray(GeM(p=60.0)(tiny_map)), [[4.0, 8.0]], rtol=0.03)
    np.testing.assert_allclose(np.asarray(GeM(p=500.0)(tiny_map)), [[4.0, 8.0]], rtol=0.005)


def test_gem_p_is_trainable():
    layer = GeM(p=3.0)
    layer.build((None, 2, 2, 3))
    assert len(layer.trainable_weights) == 1
    frozen = GeM(p=3.0, trainable_p=False)
    frozen.build((None, 2, 2, 3))
    assert len(frozen.trainable_weights) == 0 and len(frozen.weights) == 1


def test_l2_normalize():
    out = np.asarray(L2Normalize()(np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32)))
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]], atol=1e-6)


def _head(**kw):
    kw.setdefault("descriptor_dim", 16)
    return build_cgd_head((3, 3, 8), num_classes=5, **kw)


def test_head_outputs_shapes_and_unit_norm():
    head = _head(branches=("spoc", "gem", "mac"), descriptor_dim=18)
    x = np.random.default_rng(0).random((4, 3, 3, 8), dtype=np.float32)
    out = head(x, training=False)
    assert set(out) == {"descriptor", "logits"}
    d = np.asarray(out["descriptor"])
    assert d.shape == (4, 18)
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0, atol=1e-5)
    # each branch part is unit norm before concatenation -> each 6-dim slice has norm 1/sqrt(3)
    np.testing.assert_allclose(np.linalg.norm(d[:, :6], axis=1), 1 / np.sqrt(3), atol=1e-5)
    assert np.asarray(out["logits"]).shape == (4, 5)


def test_head_rejects_bad_dim():
    with pytest.raises(ValueError):
        build_cgd_head((3, 3, 8), 5, descriptor_dim=15, branches=("spoc", "gem"))


def test_logits_come_from_first_branch():
    head = _head(branches=("mac", "gem"))
    # aux BN input is the first (MAC) pooling layer
    bn = head.get_layer("aux_bn")
    assert bn.input is head.get_layer("pool_0_mac").output


def test_save_load_round_trip(tmp_path):
    head = _head()
    x = np.random.default_rng(1).random((3, 3, 3, 8), dtype=np.float32)
    before = head(x, training=False)
    path = str(tmp_path / "head.keras")
    head.save(path)
    loaded = keras.saving.load_model(path)
    after = loaded(x, training=False)
    for key in ("descriptor", "logits"):
        np.testing.assert_allclose(np.asarray(after[key]), np.asarray(before[key]), atol=1e-6)


def test_full_model_and_descriptor_export(tmp_path):
    img = keras.Input((12, 12, 3))
    fmap = keras.layers.Conv2D(8, 3, strides=4, padding="same", activation="relu")(img)
    backbone = keras.Model(img, fmap, name="toy_backbone")
    head = build_cgd_head(backbone.output.shape[1:], num_classes=4, descriptor_dim=8)
    model = build_cgd_model(backbone, head)
    images = np.random.default_rng(2).random((2, 12, 12, 3), dtype=np.float32)
    out = model(images, training=False)
    assert np.asarray(out["descriptor"]).shape == (2, 8)
    # same result as running the parts separately
    feats = backbone(images)
    np.testing.assert_allclose(np.asarray(out["descriptor"]),
                               np.asarray(head(feats, training=False)["descriptor"]), atol=1e-6)

    infer = build_descriptor_model(model)
    d = np.asarray(infer(images, training=False))
    np.testing.assert_allclose(d, np.asarray(out["descriptor"]), atol=1e-6)
    path = str(tmp_path / "infer.keras")
    infer.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(np.asarray(loaded(images, training=False)), d, atol=1e-6)
