"""Losses in ml.losses against numpy references on tiny batches (no Django)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
import tensorflow as tf

from ml.cgd import build_cgd_head
from ml.losses import (LOSSES, ArcFaceLoss, ClassificationLoss, CombinedLoss, CrossModalContrastiveLoss,
                       LossBatch, MultiPositiveContrastiveLoss, build_loss)


def np_ce(logits, labels):
    logits = logits - logits.max(axis=1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(labels)), labels].mean())


def unit(x):
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


LOGITS = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]], dtype=np.float32)
LABELS = np.array([0, 1], dtype=np.int32)


# ---------------------------------------------------------------- classification
def test_classification_plain_ce():
    loss = ClassificationLoss(3, label_smoothing=0.0, temperature=1.0)
    value = float(loss(LossBatch(descriptors=None, labels=LABELS, logits=LOGITS)))
    assert value == pytest.approx(np_ce(LOGITS, LABELS), rel=1e-5)


def test_classification_smoothing_and_temperature():
    eps, T = 0.1, 0.5
    loss = ClassificationLoss(3, label_smoothing=eps, temperature=T)
    value = float(loss(LossBatch(descriptors=None, labels=LABELS, logits=LOGITS)))
    z = LOGITS / T
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    target = np.full((2, 3), eps / 3)
    target[np.arange(2), LABELS] += 1 - eps        # 0.9333 on the label, 0.0333 elsewhere
    expected = float(-(target * logp).sum(axis=1).mean())
    assert value == pytest.approx(expected, rel=1e-5)


def test_classification_requires_logits():
    with pytest.raises(ValueError):
        ClassificationLoss(3)(LossBatch(descriptors=np.zeros((2, 2), np.float32), labels=LABELS))


# ---------------------------------------------------------------- arcface
def _arcface_with_centres(centres, **kw):
    loss = ArcFaceLoss(num_classes=centres.shape[1], descriptor_dim=centres.shape[0], **kw)
    loss.centres.centres.assign(centres)
    return loss


DESC = unit([[1.0, 0.2], [0.3, 1.0], [-1.0, 0.1]])
CENTRES = np.array([[1.0, 0.0, -2.0], [0.0, 3.0, 0.0]], dtype=np.float32)   # columns: (1,0), (0,3), (-2,0)
ARC_LABELS = np.array([0, 1, 2], dtype=np.int32)


def test_arcface_zero_margin_is_scaled_cosine_softmax():
    loss = _arcface_with_centres(CENTRES, scale=10.0, margin=0.0)
    cos = DESC @ unit(CENTRES.T).T
    value = float(loss(LossBatch(descriptors=DESC, labels=ARC_LABELS)))
    assert value == pytest.approx(np_ce(10.0 * cos, ARC_LABELS), rel=1e-5)


def test_arcface_margin_matches_numpy():
    s, m = 4.0, 0.15   # small scale so the loss does not underflow to 0 on this easy batch
    loss = _arcface_with_centres(CENTRES, scale=s, margin=m)
    cos = DESC @ unit(CENTRES.T).T
    theta = np.arccos(np.clip(cos, -1, 1))
    logits = s * cos
    rows = np.arange(3)
    logits[rows, ARC_LABELS] = s * np.cos(theta[rows, ARC_LABELS] + m)   # all theta + m < pi here
    value = float(loss(LossBatch(descriptors=DESC, labels=ARC_LABELS)))
    assert value == pytest.approx(np_ce(logits, ARC_LABELS), rel=1e-4)
    # the margin makes the loss larger than without it
    no_margin = float(_arcface_with_centres(CENTRES, scale=s, margin=0.0)(LossBatch(DESC, ARC_LABELS)))
    assert value > no_margin


def test_arcface_finite_gradients_at_cos_one():
    # descriptor exactly on its centre (cos = 1) and exactly opposite another (cos = -1)
    loss = _arcface_with_centres(np.array([[1.0, -1.0], [0.0, 0.0]], np.float32), margin=0.5)
    x = tf.Variable([[1.0, 0.0]])
    with tf.GradientTape() as tape:
        value = loss(LossBatch(descriptors=x, labels=np.array([0])))
    grads = tape.gradient(value, [x] + loss.trainable_variables)
    assert np.isfinite(float(value))
    assert all(np.all(np.isfinite(np.asarray(g))) for g in grads)


def test_arcface_weights_are_tracked():
    loss = ArcFaceLoss(num_classes=7, descriptor_dim=4)
    assert len(loss.trainable_variables) == 1
    assert tuple(loss.trainable_variables[0].shape) == (4, 7)
    combo = build_loss("arcface+classification", 7, 4)
    assert len(combo.trainable_variables) == 1


# ---------------------------------------------------------------- multi-positive
def np_positives_nll(z, mask, tau, competes=lambda i, k: k != i):
    """Reference multi-positive InfoNCE: anchor i's softmax runs over the k with competes(i, k)."""
    z = unit(z)
    sim = z @ z.T / tau
    losses = []
    for i in range(len(z)):
        others = [k for k in range(len(z)) if competes(i, k)]
        if not others:
            continue
        lse = np.log(np.exp(sim[i, others]).sum())
        pos = [j for j in others if mask[i, j]]
        if pos:
            losses.append(-np.mean([sim[i, j] - lse for j in pos]))
    return float(np.mean(losses))


def np_multi_positive(z, mask, tau):
    return np_positives_nll(z, mask, tau)


def test_multi_positive_matches_numpy():
    z = np.array([[1.0, 0.1, 0.0], [0.9, 0.3, 0.1], [0.0, 1.0, 0.2], [0.1, 0.8, 0.5], [0.3, 0.3, 1.0]],
                 dtype=np.float32)
    # 0-1 share a look, 2-3 share one, 1-3 share one (an item in two looks), 4 has no positive
    mask = np.eye(5, dtype=bool)
    for i, j in [(0, 1), (2, 3), (1, 3)]:
        mask[i, j] = mask[j, i] = True
    loss = MultiPositiveContrastiveLoss(temperature=0.5)
    value = float(loss(LossBatch(descriptors=unit(z), labels=np.zeros(5, np.int32), positive_mask=mask)))
    assert value == pytest.approx(np_multi_positive(z, mask, 0.5), rel=1e-5)


def test_multi_positive_lower_when_positives_closer():
    mask = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]], dtype=bool)
    close = unit([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0], [0.1, 0.99]])
    far = unit([[1.0, 0.0], [0.0, 1.0], [0.99, 0.1], [0.1, 0.99]])
    loss = MultiPositiveContrastiveLoss(temperature=0.1)
    lab = np.zeros(4, np.int32)
    assert float(loss(LossBatch(close, lab, positive_mask=mask))) < float(loss(LossBatch(far, lab, positive_mask=mask)))


def test_multi_positive_no_positives_and_label_mask():
    loss = MultiPositiveContrastiveLoss()
    z = unit([[1.0, 0.0], [0.0, 1.0]])
    assert float(loss(LossBatch(z, np.array([0, 1])))) == 0.0         # distinct labels -> no positives
    # with mask=None the labels define positives: same as an explicit mask
    lab = np.array([0, 0, 1])
    z3 = unit([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    explicit = lab[:, None] == lab[None, :]
    assert float(loss(LossBatch(z3, lab))) == pytest.approx(
        float(loss(LossBatch(z3, lab, positive_mask=explicit))), rel=1e-6)


def np_cross_modal(z, mask, is_snapshot, tau):
    return np_positives_nll(z, mask, tau, competes=lambda i, k: is_snapshot[k] != is_snapshot[i])


def test_cross_modal_matches_numpy_and_ignores_same_kind_pairs():
    z = np.array([[1.0, 0.1, 0.0], [0.9, 0.3, 0.1], [0.0, 1.0, 0.2], [0.1, 0.8, 0.5], [0.3, 0.3, 1.0]],
                 dtype=np.float32)
    is_snapshot = np.array([True, False, True, False, False])
    # snapshot 0 links item 1; snapshot 2 links items 3 and 1; item 4 links nothing
    mask = np.eye(5, dtype=bool)
    for i, j in [(0, 1), (2, 3), (2, 1), (1, 3)]:
        mask[i, j] = mask[j, i] = True
    loss = CrossModalContrastiveLoss(temperature=0.5)
    batch = LossBatch(descriptors=unit(z), labels=np.zeros(5, np.int32), positive_mask=mask, is_snapshot=is_snapshot)
    value = float(loss(batch))
    assert value == pytest.approx(np_cross_modal(z, mask, is_snapshot, 0.5), rel=1e-5)
    # a link between two items (or two snapshots) is not a cross-modal positive
    mask2 = mask.copy()
    mask2[1, 3] = mask2[3, 1] = False   # an item-item link is not a cross-modal positive
    assert float(loss(LossBatch(unit(z), np.zeros(5, np.int32), positive_mask=mask2, is_snapshot=is_snapshot))) == pytest.approx(value)
    with pytest.raises(ValueError, match="is_snapshot"):
        loss(LossBatch(unit(z), np.zeros(5, np.int32), positive_mask=mask))


def test_cross_modal_lower_when_linked_pairs_closer():
    is_snapshot = np.array([True, False, True, False])
    mask = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]], dtype=bool)
    close = unit([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0], [0.1, 0.99]])
    far = unit([[1.0, 0.0], [0.0, 1.0], [0.99, 0.1], [0.1, 0.99]])
    loss = CrossModalContrastiveLoss(temperature=0.1)
    lab = np.zeros(4, np.int32)
    assert (float(loss(LossBatch(close, lab, positive_mask=mask, is_snapshot=is_snapshot)))
            < float(loss(LossBatch(far, lab, positive_mask=mask, is_snapshot=is_snapshot))))


# ---------------------------------------------------------------- combined / registry
def test_combined_is_weighted_sum():
    a = ClassificationLoss(3, label_smoothing=0.0, temperature=1.0)
    b = ClassificationLoss(3, label_smoothing=0.1, temperature=0.5)
    batch = LossBatch(descriptors=None, labels=LABELS, logits=LOGITS)
    combo = CombinedLoss({"a": (a, 2.0), "b": (b, 0.5)})
    parts = combo.breakdown(batch)
    assert float(parts["total"]) == pytest.approx(2.0 * float(a(batch)) + 0.5 * float(b(batch)), rel=1e-6)
    assert float(combo(batch)) == pytest.approx(float(parts["total"]), rel=1e-6)


def test_registry():
    for name in ("arcface", "multi_positive", "classification", "cross_modal", "arcface+multi_positive",
                 "arcface+classification"):
        assert name in LOSSES
    loss = build_loss("arcface", 5, 8, margin=0.3)
    assert isinstance(loss, ArcFaceLoss) and loss.margin == 0.3
    combo = build_loss("arcface+multi_positive", 5, 8, arcface={"scale": 16.0},
                       multi_positive={"temperature": 0.1}, weights={"multi_positive": 0.5})
    assert isinstance(combo, CombinedLoss)
    assert combo.terms["arcface"][0].scale == 16.0
    assert combo.terms["multi_positive"][0].temperature == 0.1
    assert combo.terms["multi_positive"][1] == 0.5 and combo.terms["arcface"][1] == 1.0
    # unregistered order of a "+" combination is still built
    assert isinstance(build_loss("classification+multi_positive", 5, 8), CombinedLoss)
    with pytest.raises(KeyError):
        build_loss("nope", 5, 8)
    with pytest.raises(TypeError):
        build_loss("arcface+multi_positive", 5, 8, margin=0.2)   # must be keyed by component


# ---------------------------------------------------------------- training
@pytest.mark.parametrize("name", ["arcface+classification", "multi_positive", "arcface+multi_positive",
                                  "cross_modal"])
def test_losses_decrease_with_gradient_steps(name):
    """A few Adam steps of head + loss on separable toy feature maps reduce the loss."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    n_classes, per_class = 4, 4
    protos = rng.random((n_classes, 1, 1, 16)).astype(np.float32) * 2
    feats = np.concatenate([protos[c] + 0.1 * rng.random((per_class, 3, 3, 16)) for c in range(n_classes)])
    feats = feats.astype(np.float32)
    labels = np.repeat(np.arange(n_classes), per_class).astype(np.int32)
    mask = labels[:, None] == labels[None, :]
    is_snapshot = np.arange(len(labels)) % 2 == 0  # half "snapshots", half "items" in every class

    head = build_cgd_head((3, 3, 16), num_classes=n_classes, descriptor_dim=8)
    loss = build_loss(name, n_classes, 8)
    opt = keras.optimizers.Adam(learning_rate=0.02)
    variables = head.trainable_variables + loss.trainable_variables

    def step():
        with tf.GradientTape() as tape:
            out = head(feats, training=True)
            value = loss(LossBatch.from_outputs(out, labels, mask, is_snapshot))
        grads = tape.gradient(value, variables)
        # descriptor branch + loss weights always get gradients; the auxiliary classifier
        # (aux_bn / aux_logits) only when a loss uses the logits -> skip None gradients
        named = {v.path: g for v, g in zip(variables, grads)}
        assert all(g is not None for path, g in named.items() if "aux_" not in path), named.keys()
        opt.apply_gradients([(g, v) for g, v in zip(grads, variables) if g is not None])
        return float(value)

    values = [step() for _ in range(25)]
    assert np.isfinite(values).all()
    # the multi-positive loss is bounded below by log(#positives per anchor) = log(3)
    # (the cross-modal one by log(#linked images of the other kind) = log(2))
    floors = {"multi_positive": np.log(per_class - 1), "cross_modal": np.log(per_class // 2)}
    floor = next((f for loss_name, f in floors.items() if loss_name in name), 0.0)
    assert values[-1] - floor < 0.7 * (values[0] - floor), values


def test_tf_function_train_step_with_arcface():
    """Loss objects work inside a compiled tf.function step (ArcFace vars created eagerly)."""
    head = build_cgd_head((2, 2, 4), num_classes=3, descriptor_dim=4)
    loss = build_loss("arcface+classification", 3, 4)
    opt = keras.optimizers.SGD(learning_rate=0.1)
    variables = head.trainable_variables + loss.trainable_variables
    opt.build(variables)
    feats = np.random.default_rng(0).random((6, 2, 2, 4)).astype(np.float32)
    labels = np.array([0, 0, 1, 1, 2, 2], np.int32)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            value = loss(LossBatch.from_outputs(head(x, training=True), y))
        opt.apply_gradients(zip(tape.gradient(value, variables), variables))
        return value

    before = np.array(loss.trainable_variables[0])
    v = step(feats, labels)
    assert np.isfinite(float(v))
    assert not np.allclose(before, np.array(loss.trainable_variables[0]))


def test_loss_layers_tracked_by_keras_model(tmp_path):
    """Assigning ``loss.layers`` to a keras.Model subclass tracks and saves ArcFace centres."""

    class Trainer(keras.Model):
        def __init__(self, head, loss):
            super().__init__()
            self.head = head
            self.loss_obj = loss
            self.loss_layers = loss.layers

        def call(self, x, training=False):
            return self.head(x, training=training)

    head = build_cgd_head((2, 2, 4), num_classes=3, descriptor_dim=4)
    loss = build_loss("arcface+classification", 3, 4)
    trainer = Trainer(head, loss)
    trainer(np.zeros((1, 2, 2, 4), np.float32))
    paths = {v.path for v in trainer.trainable_variables}
    assert any("arcface_centres" in p for p in paths)
    path = str(tmp_path / "t.weights.h5")
    trainer.save_weights(path)
    loss2 = build_loss("arcface+classification", 3, 4)
    trainer2 = Trainer(build_cgd_head((2, 2, 4), num_classes=3, descriptor_dim=4), loss2)
    trainer2(np.zeros((1, 2, 2, 4), np.float32))
    trainer2.load_weights(path)
    np.testing.assert_allclose(np.array(loss2.trainable_variables[0]), np.array(loss.trainable_variables[0]))
