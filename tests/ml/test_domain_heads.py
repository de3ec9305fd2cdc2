"""Per-kind projections of the CGD head (`domains`, session 12): product photos and snapshots."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

from ml.cgd import DOMAIN_MODES, build_cgd_head
from ml.training import TrainConfig


def _maps(n=4, seed=0):
    return np.random.default_rng(seed).random((n, 3, 3, 8)).astype(np.float32)


def test_shared_head_takes_one_input_and_others_two():
    assert len(build_cgd_head((3, 3, 8), 5, 16, domains="shared").inputs) == 1
    for mode in DOMAIN_MODES[1:]:
        assert len(build_cgd_head((3, 3, 8), 5, 16, domains=mode).inputs) == 2


@pytest.mark.parametrize("mode", ["adapter", "affine"])
def test_zero_initialised_modes_start_as_one_head(mode):
    """A product photo and a snapshot of the same features get the same descriptor before training."""
    head = build_cgd_head((3, 3, 8), 5, 16, domains=mode)
    x = _maps()
    as_items = np.asarray(head([x, np.ones((4, 1), np.float32)])["descriptor"])
    as_snapshots = np.asarray(head([x, np.zeros((4, 1), np.float32)])["descriptor"])
    np.testing.assert_allclose(as_items, as_snapshots, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(as_items, axis=1), 1.0, rtol=1e-5)


def test_kind_chooses_the_projection():
    """In `separate` the kind flag picks a projection; moving the item kernel changes items only."""
    head = build_cgd_head((3, 3, 8), 5, 16, domains="separate")
    x = _maps()
    kinds = np.array([[1.0], [0.0], [1.0], [0.0]], np.float32)
    before = np.asarray(head([x, kinds])["descriptor"])
    item_kernels = [w for w in head.weights if "_item" in w.path]
    assert item_kernels, "separate mode has per-item projections"
    for w in item_kernels:
        w.assign(np.asarray(w) * -2.0 + 0.1)
    after = np.asarray(head([x, kinds])["descriptor"])
    np.testing.assert_allclose(after[[1, 3]], before[[1, 3]], atol=1e-6)   # snapshots unchanged
    assert np.abs(after[[0, 2]] - before[[0, 2]]).max() > 1e-3              # items moved


def test_unknown_mode_is_refused_by_name():
    with pytest.raises(ValueError, match="domains"):
        build_cgd_head((3, 3, 8), 5, 16, domains="per-photo")
    with pytest.raises(ValueError, match="domains"):
        TrainConfig(domains="per-photo").check()
