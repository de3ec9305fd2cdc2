"""LookBalancedSampler (numpy only, no Django)."""

import math
from collections import Counter

import numpy as np
import pytest

from ml.training.sampler import LookBalancedSampler

# looks L1..L5; "item_shared" belongs to L1 and L2; L5 has a single image
IMAGE_LOOKS = {
    "snap1": {"L1"}, "a1": {"L1"}, "a2": {"L1"},
    "snap2": {"L2"}, "b1": {"L2"}, "item_shared": {"L1", "L2"},
    "snap3": {"L3"}, "c1": {"L3"}, "c2": {"L3"}, "c3": {"L3"},
    "snap4": {"L4"}, "d1": {"L4"},
    "snap5": {"L5"},
    "orphan": set(),
}


def test_batch_shape_and_count():
    s = LookBalancedSampler(IMAGE_LOOKS, P=2, K=3, seed=0)
    batches = list(s.epoch())
    assert len(batches) == len(s) == math.ceil(5 / 2) == 3
    for b in batches:
        assert len(b.image_ids) == 6 and b.labels.shape == (6,) and b.positive_mask.shape == (6, 6)
        assert b.positive_mask.dtype == bool
        assert len(set(b.look_ids)) == 2                       # P distinct looks per batch
        # labels are look indices, K consecutive images per look, each image belongs to its look
        for i, (img, lab) in enumerate(zip(b.image_ids, b.labels)):
            assert s.look_ids[lab] == b.look_ids[i // 3]
            assert s.look_ids[lab] in IMAGE_LOOKS[img]
    assert "orphan" not in s.image_ids


def test_every_look_once_per_epoch_except_padding():
    s = LookBalancedSampler(IMAGE_LOOKS, P=2, K=2, seed=3)
    looks = [l for b in s.epoch() for l in b.look_ids]
    assert set(looks) == {"L1", "L2", "L3", "L4", "L5"}
    assert len(looks) == 6                                     # 5 looks + 1 padding look


def test_equal_look_frequency_over_many_epochs():
    s = LookBalancedSampler(IMAGE_LOOKS, P=2, K=2, seed=1)
    counts = Counter(l for e in range(600) for b in s.epoch(e) for l in b.look_ids)
    # per epoch 6 look slots (3 batches x P=2) shared by 5 looks: each look appears once plus
    # P(padding look) = P(not alone in last group) * 1/4 = 4/5 * 1/4 = 1/5 -> 1.2 per epoch
    # (sd of the 600-epoch mean ~ 0.4 / sqrt(600) = 0.016)
    freqs = np.array([counts[l] for l in ("L1", "L2", "L3", "L4", "L5")]) / 600
    np.testing.assert_allclose(freqs, 1.2, atol=0.06)


def test_oversampling_single_image_look():
    s = LookBalancedSampler(IMAGE_LOOKS, P=5, K=4, seed=0)
    (batch,) = list(s.epoch())
    l5 = s.look_index["L5"]
    assert [img for img, lab in zip(batch.image_ids, batch.labels) if lab == l5] == ["snap5"] * 4
    # L4 has 2 images -> both appear, the other 2 slots are repeats
    l4_imgs = [img for img, lab in zip(batch.image_ids, batch.labels) if lab == s.look_index["L4"]]
    assert set(l4_imgs) == {"snap4", "d1"} and len(l4_imgs) == 4
    # L3 has exactly K=4 images -> drawn without replacement
    l3_imgs = [img for img, lab in zip(batch.image_ids, batch.labels) if lab == s.look_index["L3"]]
    assert sorted(l3_imgs) == ["c1", "c2", "c3", "snap3"]


def test_positive_mask_for_image_in_two_looks():
    s = LookBalancedSampler(IMAGE_LOOKS, P=2, K=1, seed=0)
    idx = np.array([s.image_index[i] for i in ["item_shared", "snap1", "snap2", "snap3", "item_shared"]])
    mask = s.positive_mask(idx)
    expected = np.array([
        # shared snap1 snap2 snap3 shared
        [1, 1, 1, 0, 1],   # item_shared: in L1 and L2 -> positive to snap1 and snap2
        [1, 1, 0, 0, 1],   # snap1 (L1) vs snap2 (L2): different looks -> negative
        [1, 0, 1, 0, 1],
        [0, 0, 0, 1, 0],
        [1, 1, 1, 0, 1],   # a repeated image is positive to its copy
    ], dtype=bool)
    np.testing.assert_array_equal(mask, expected)
    # masks in sampled batches agree with set intersection, also across the drawn looks
    for b in s.epoch(0):
        for i, a in enumerate(b.image_ids):
            for j, c in enumerate(b.image_ids):
                assert b.positive_mask[i, j] == bool(IMAGE_LOOKS[a] & IMAGE_LOOKS[c])


def test_deterministic_by_seed():
    def run(seed):
        s = LookBalancedSampler(IMAGE_LOOKS, P=2, K=3, seed=seed)
        return [(tuple(b.image_ids), tuple(b.labels)) for e in range(3) for b in s.epoch()]

    assert run(7) == run(7)
    assert run(7) != run(8)
    s = LookBalancedSampler(IMAGE_LOOKS, P=2, K=3, seed=7)
    first = [tuple(b.image_ids) for b in s.epoch()]
    second = [tuple(b.image_ids) for b in s.epoch()]
    assert first == [tuple(b.image_ids) for b in s.epoch(0)]
    assert second == [tuple(b.image_ids) for b in s.epoch(1)]
    assert first != second


def test_invalid_arguments():
    with pytest.raises(ValueError):
        LookBalancedSampler(IMAGE_LOOKS, P=6, K=2)
    with pytest.raises(ValueError):
        LookBalancedSampler(IMAGE_LOOKS, P=2, K=0)
