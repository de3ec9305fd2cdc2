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


# ---------------------------------------------------------------- training with the kind of each image
from pathlib import Path  # noqa: E402

from ml.evaluation.dataset import LookDataset  # noqa: E402
from ml.training import subset_dataset, train  # noqa: E402
from ml.training.feature_cache import FeatureCache  # noqa: E402

DEV = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "musinsa" / "dev"
LOOKS = (0, 1, 2, 3, 4)


@pytest.fixture(scope="module")
def dataset():
    if not DEV.is_dir():
        pytest.fail(f"the sample catalogue is missing: {DEV}")
    return subset_dataset(LookDataset.from_folder(DEV), LOOKS)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


def _config(**kw):
    base = dict(backbone="lite0", epochs=2, P=2, K=2, descriptor_dim=32, views=1, patience=5, seed=1, ensemble=1)
    base.update(kw)
    return TrainConfig(**base)


def test_adapter_training_moves_the_product_correction(dataset, models_dir, tmp_path):
    """The product-only correction starts at zero and training moves it, so a product photo and a snapshot with
    the same feature map get different descriptors."""
    looks = sorted(dataset.looks)
    result = train(dataset, looks[:-1], tmp_path / "run", models_dir / "features", _config(domains="adapter"),
                   val_look_ids=looks[-1:], progress=False, log=lambda m: None)
    deltas = [w for w in result.head.weights if "item_delta" in w.path]
    assert len(deltas) == 2 and all(np.abs(np.asarray(w)).max() > 0 for w in deltas)
    x = np.random.default_rng(0).random((2,) + tuple(result.feature_shape)).astype(np.float32)
    as_items = np.asarray(result.head([x, np.ones((2, 1), np.float32)])["descriptor"])
    as_snapshots = np.asarray(result.head([x, np.zeros((2, 1), np.float32)])["descriptor"])
    assert np.abs(as_items - as_snapshots).max() > 1e-4
    names = [dataset.snapshot_names()[0], dataset.item_name(next(iter(dataset.items)))]
    vectors = result.vectors_fn(names)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


def test_feature_cache_at_another_input_size(dataset, models_dir):
    """Lite0 at 200 px: the same 7 x 7 map as at its own 224 px, another cache folder, other values."""
    path = str(dataset.root / dataset.item_name(next(iter(dataset.items))))
    native = FeatureCache(models_dir / "features", "lite0")
    other = FeatureCache(models_dir / "features", "lite0", input_size=200)
    assert other.root.name == "lite0-200" and native.root.name == "lite0-224"
    a = native.features([path])[0][(path, 0)]
    b = other.features([path])[0][(path, 0)]
    assert a.shape == b.shape == (7, 7, 1280)
    assert np.abs(a.astype(np.float32) - b.astype(np.float32)).max() > 1e-2


def test_items_at_their_own_input_size(dataset, models_dir, tmp_path):
    """Product photos read from their own size's cache; a size with another feature map is refused by name."""
    looks = sorted(dataset.looks)
    train(dataset, looks[:-1], tmp_path / "run", models_dir / "features", _config(item_input_size=200, epochs=1),
          val_look_ids=looks[-1:], progress=False, log=lambda m: None)
    cached = {p.stem for p in (models_dir / "features" / "lite0-200").rglob("*.npy")}
    from ml.training.feature_cache import file_sha256

    items = {file_sha256(dataset.root / n) for key in dataset.items for n in dataset.items[key][:1]}
    snapshots = {file_sha256(dataset.root / n) for n in dataset.snapshot_names()}
    assert items & cached and not snapshots & cached
    with pytest.raises(ValueError, match="item_input_size=256"):
        train(dataset, looks[:-1], tmp_path / "bad", models_dir / "features", _config(item_input_size=256),
              val_look_ids=looks[-1:], progress=False, log=lambda m: None)


def test_the_recipe_refuses_what_it_cannot_export(dataset, tmp_path):
    """Per-kind heads and per-kind input sizes are measured on the folds; the exported recipe says so by name."""
    from ml.training import train_with_selection

    for options in ({"domains": "adapter"}, {"item_input_size": 288}):
        with pytest.raises(ValueError, match="cannot be exported"):
            train_with_selection(dataset, tmp_path / "model", tmp_path / "features", _config(**options),
                                 test_look_ids={4}, progress=False, log=lambda m: None)
