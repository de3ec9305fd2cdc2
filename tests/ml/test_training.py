"""Feature cache, a tiny real training run on a few looks of the sample data, the model directory, resume."""

import json
from pathlib import Path

import numpy as np
import pytest

from ml.embedding import CGDEmbedder, ModelDirError, load_embedder
from ml.evaluation.dataset import LookDataset
from ml.training.feature_cache import FeatureCache, augment
from ml.model_card import ModelCard
from ml.training import TrainConfig, subset_dataset, train, train_with_selection

DEV = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "musinsa" / "dev"
LOOKS = (0, 1, 2, 3, 4, 6, 7)
TEST = {7}


@pytest.fixture(scope="module")
def dataset():
    if not DEV.is_dir():
        pytest.fail(f"the sample catalogue is missing: {DEV}")
    full = LookDataset.from_folder(DEV)
    looks = [i for i in LOOKS if i in full.looks]
    assert len(looks) == len(LOOKS)
    return subset_dataset(full, looks)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


def config(**kw):
    base = dict(backbone="lite0", epochs=2, P=2, K=2, descriptor_dim=64, views=2, patience=5, seed=1, ensemble=1)
    base.update(kw)
    return TrainConfig(**base)


def test_augment_views_are_deterministic():
    from PIL import Image

    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 30, 3), dtype=np.uint8))
    key = "ab" * 32
    v0 = augment(img, 0, key, 16)
    from ml.images import to_input_array

    np.testing.assert_array_equal(v0, to_input_array(img, 16))
    np.testing.assert_array_equal(augment(img, 1, key, 16), augment(img, 1, key, 16))
    assert not np.array_equal(augment(img, 1, key, 16), augment(img, 2, key, 16))


def test_feature_cache_at_another_input_size(dataset, models_dir, tmp_path):
    paths = [str(dataset.root / dataset.item_name(k)) for k in list(dataset.items)[:2]]
    # a cache folder of its own (the other tests count what the shared one computes), the shared weights
    native = FeatureCache(tmp_path / "features", "lite0", weights_dir=models_dir)
    larger = FeatureCache(tmp_path / "features", "lite0", weights_dir=models_dir, input_size=320)
    assert larger.input_size == 320 and larger.root != native.root  # never mixed with the native maps
    maps, errors = larger.features(paths)
    assert not errors and maps[(paths[0], 0)].shape == (10, 10, 1280)
    # the same backbone: each image's pooled map points the way its native-size one does
    small, _ = native.features(paths)
    pooled = [[m[(p, 0)].astype(np.float32).mean(axis=(0, 1)) for p in paths] for m in (small, maps)]
    for a, b in zip(*pooled):
        assert a @ b / np.linalg.norm(a) / np.linalg.norm(b) > 0.8


def test_feature_cache_keyed_and_reused(dataset, models_dir, tmp_path):
    names = dataset.snapshot_names()[:2] + [dataset.item_name(k) for k in list(dataset.items)[:2]]
    paths = [str(dataset.root / n) for n in names]
    bad = tmp_path / "9_0_part.jpg"
    bad.write_bytes(b"not an image")
    cache = FeatureCache(models_dir / "features", "lite0")
    maps, errors = cache.features(paths + [str(bad)], views=(0, 1))
    assert cache.computed == 2 * len(paths)
    assert list(errors) == [str(bad)] and "9_0_part.jpg" in errors[str(bad)]
    assert set(maps) == {(p, v) for p in paths for v in (0, 1)}
    m = maps[(paths[0], 0)]
    assert m.shape == (7, 7, 1280) and m.dtype == np.float16
    assert not np.array_equal(maps[(paths[0], 0)], maps[(paths[0], 1)])
    # keyed by content: a second object computes nothing and reads the same arrays
    again = FeatureCache(models_dir / "features", "lite0")
    maps2, _ = again.features(paths, views=(0, 1))
    assert again.computed == 0
    np.testing.assert_array_equal(maps2[(paths[1], 1)], maps[(paths[1], 1)])
    # a copy of the same bytes under another name hits the same entry
    copy = tmp_path / "x.jpg"
    copy.write_bytes(Path(paths[0]).read_bytes())
    maps3, _ = again.features([str(copy)], views=(0,))
    assert again.computed == 0
    np.testing.assert_array_equal(maps3[(str(copy), 0)], maps[(paths[0], 0)])
    # the plain view is the untrained embedder's input: average pooling equals its descriptor
    emb = load_embedder("untrained-lite0", models_dir)
    _, vec, _ = emb.embed_files(paths[:1])
    pooled = m.astype(np.float32).mean(axis=(0, 1))
    np.testing.assert_allclose(pooled / np.linalg.norm(pooled), vec[0], atol=2e-3)


@pytest.fixture(scope="module")
def trained(dataset, models_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "model"
    logs = []
    card = train_with_selection(dataset, out, models_dir / "features", config(), test_look_ids=TEST,
                                progress=False, log=logs.append)
    return out, card, logs


def test_training_writes_a_loadable_model_dir(trained, dataset):
    out, card, logs = trained
    assert (out / "model.keras").is_file() and (out / "card.json").is_file()
    assert (out / "history.json").is_file() and (out / "training_curve.png").is_file()
    on_disk = json.loads((out / "card.json").read_text())
    assert on_disk == card.to_dict() and ModelCard.from_dict(on_disk) == card
    assert card.backbone == "lite0" and card.input_size == 224 and card.descriptor_dim == 64
    assert card.loss == "arcface+classification"
    assert len(card.training_data_sha256) == 64
    assert card.excluded_test_looks == sorted(TEST)
    assert card.epochs_trained >= 1 and card.validation_metrics["snapshot_to_items"]["queries"] > 0
    assert card.validation_metrics["item_to_looks"]["queries"] > 0
    assert set(on_disk["postprocessing"]) >= {"lt_weight", "qe", "dba"}
    assert any("post-processing chosen" in m for m in logs)

    emb = load_embedder(str(out))
    assert isinstance(emb, CGDEmbedder) and emb.dim == card.descriptor_dim and emb.card == card
    files = [dataset.root / n for n in dataset.snapshot_names()[:2]]
    files.append(dataset.root / dataset.item_name(next(iter(dataset.items))))
    ok, vecs, errors = emb.embed_files(files)
    assert not errors and vecs.shape == (3, 64)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)

    # the reference items of item queries' hubness: the training looks' items, as the model describes them
    from ml.training.export import hub_reference_items

    names = hub_reference_items(dataset, [i for i in LOOKS if i not in TEST])
    assert names == sorted(set(names), key=names.index) and len(names) > 1
    assert emb.hub_reference is not None and emb.hub_reference.shape == (len(names), 64)
    _, described, _ = emb.embed_files([dataset.root / n for n in names[:3]])
    np.testing.assert_allclose(emb.hub_reference[:3], described, atol=2e-2)  # float16 feature maps vs images
    test_items = {k for look in TEST for k in dataset.looks[look].items}
    only_test = {dataset.item_name(k) for k in test_items} - {
        dataset.item_name(k) for look in LOOKS if look not in TEST for k in dataset.looks[look].items}
    assert not only_test & set(names), "no test look's own item is a reference item"


def test_the_exported_model_measures_its_own_recognition_threshold(trained, dataset):
    """The card's near-duplicate threshold is this model's, measured on its training items (not a default
    carried over from another model), and it is the lowest cosine that keeps false matches at 1 % or fewer."""
    from ml.evaluation.recognition import measure_recognition
    from ml.training.export import hub_reference_items

    out, card, logs = trained
    names = hub_reference_items(dataset, [i for i in LOOKS if i not in TEST])
    measured = card.recognition.measured
    assert measured is not None and measured["catalogue_items"] == len(names)
    assert measured["sampled_items"] == len(names)  # the tiny catalogue is sampled whole
    assert set(measured["recognised"]) == {"JPEG q60", "half size", "central 85 % crop", "all three"}
    assert any("recognition threshold" in line for line in logs)

    again = measure_recognition(load_embedder(str(out)), [dataset.root / n for n in names])
    assert card.recognition.near_duplicate_cosine == round(again.threshold, 4)
    assert again.false_matches() <= 0.01 and measured["false_matches"] == round(again.false_matches(), 4)
    assert len(again.outside) == 5 * len(names)  # each left-out item and its four copies
    lower = np.unique(np.round(again.outside, 4))
    lower = lower[lower < again.threshold]
    if lower.size:  # any lower cosine lets more than 1 % of unknown products match
        assert again.false_matches(float(lower.max())) > 0.01
    assert all(0.0 <= share <= 1.0 for share in again.recognised().values())


def test_bad_model_dirs(tmp_path):
    with pytest.raises(ModelDirError, match="not found"):
        CGDEmbedder(tmp_path / "missing")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "card.json").write_text("{not json")
    (tmp_path / "m" / "model.keras").write_bytes(b"junk")
    with pytest.raises(ModelDirError, match="card"):
        CGDEmbedder(tmp_path / "m")
    (tmp_path / "m" / "card.json").write_text(json.dumps({"descriptor_dim": 8, "input_size": 224}))
    with pytest.raises(ModelDirError, match="cannot load"):
        CGDEmbedder(tmp_path / "m")


def test_bad_hub_reference_is_named(trained, tmp_path):
    import shutil

    out, card, _ = trained
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    np.save(copy / "hub_reference.npy", np.zeros((3, card.descriptor_dim + 1), np.float32))
    with pytest.raises(ModelDirError, match="reference items of shape"):
        CGDEmbedder(copy)
    (copy / "hub_reference.npy").unlink()
    assert CGDEmbedder(copy).hub_reference is None   # an older model: no hubness correction


def test_resume_continues_from_the_checkpoint(dataset, models_dir, tmp_path):
    looks = sorted(set(dataset.looks) - TEST)
    train_ids, val_ids = looks[:-1], looks[-1:]
    first = train(dataset, train_ids, tmp_path / "a", models_dir / "features", config(epochs=2),
                  val_look_ids=val_ids, progress=False, log=lambda m: None)
    assert [h["epoch"] for h in first.history] == [1, 2]
    logs = []
    second = train(dataset, train_ids, tmp_path / "a", models_dir / "features", config(epochs=3),
                   val_look_ids=val_ids, resume=True, progress=False, log=logs.append)
    assert any("resumed" in m for m in logs)
    assert [h["epoch"] for h in second.history] == [1, 2, 3]
    assert second.history[:2] == first.history  # not retrained
    # same seed, uninterrupted 3 epochs: the same final loss (deterministic batches and state)
    straight = train(dataset, train_ids, tmp_path / "b", models_dir / "features", config(epochs=3),
                     val_look_ids=val_ids, progress=False, log=lambda m: None)
    assert straight.history[2]["loss"] == pytest.approx(second.history[2]["loss"], rel=1e-4)


def test_fine_tuning_the_last_stage_trains_it_and_exports_it(dataset, models_dir, tmp_path):
    from ml.backbones.efficientnet_lite import split_last_stage
    from ml.backbones.imagenet import load_folded_imagenet_efficientnet_lite
    from ml.training import export_model_dir

    looks = sorted(set(dataset.looks) - TEST)
    cfg = config(epochs=2, views=1, fine_tune_last_stage=True, last_stage_learning_rate=1e-3)
    result = train(dataset, looks, tmp_path / "ft", models_dir / "features", cfg, progress=False,
                   fixed_epochs=True, log=lambda m: None)
    # the cache holds the trunk's output (the last stage's input), not the final feature map
    assert list((models_dir / "features").glob("lite0-224-last_stage_input/v0/*/*.npy"))
    assert (tmp_path / "ft" / "last_stage.weights.npz").is_file()

    _, imagenet_stage = split_last_stage(load_folded_imagenet_efficientnet_lite("lite0", models_dir), "lite0")
    tuned = result.last_stage.get_layer("top_conv").get_weights()[0]
    assert not np.allclose(tuned, imagenet_stage.get_layer("top_conv").get_weights()[0])

    # the exported image -> descriptor model carries the tuned stage: same descriptors as in training
    model_dir = export_model_dir(result.head, cfg, tmp_path / "model", models_dir, {}, last_stages=[result.last_stage])
    name = dataset.snapshot_names()[0]
    _, vecs, errors = load_embedder(str(model_dir)).embed_files([dataset.root / name])
    assert not errors
    from ml.training.feature_cache import FeatureCache

    maps, _ = FeatureCache(models_dir / "features", "lite0", stage="last_stage_input").features([dataset.root / name])
    x = next(iter(maps.values())).astype(np.float32)[None]
    with_tuned = np.asarray(result.head(result.last_stage(x))["descriptor"])[0]
    with_imagenet = np.asarray(result.head(imagenet_stage(x))["descriptor"])[0]
    error = np.abs(vecs[0] - with_tuned).max()
    assert error < 1e-2 and np.abs(vecs[0] - with_imagenet).max() > 5 * error
    card = json.loads((model_dir / "card.json").read_text())
    assert card["train_config"]["fine_tune_last_stage"] is True


def test_ensemble_model_dir_concatenates_the_members(dataset, models_dir, tmp_path):
    from ml.training import ensemble_vectors, train_ensemble

    logs = []
    card = train_with_selection(dataset, tmp_path / "model", models_dir / "features", config(ensemble=2, views=1),
                                test_look_ids=TEST, progress=False, log=logs.append)
    assert card.ensemble == 2 and card.descriptor_dim == 128 and card.member_descriptor_dim == 64
    assert len(card.member_selected_epochs) == 2
    assert sum("ensemble member" in m for m in logs) == 4  # two members in each phase
    assert any(m.startswith("member 2/2: epoch") for m in logs)  # progress lines name their member
    emb = load_embedder(str(tmp_path / "model"))
    assert emb.dim == 128
    name = dataset.snapshot_names()[0]
    _, vecs, _ = emb.embed_files([dataset.root / name])
    np.testing.assert_allclose(np.linalg.norm(vecs[0]), 1.0, atol=1e-5)
    # each half is one member's unit descriptor, scaled by 1/sqrt(2); the members differ (own seeds)
    halves = vecs[0][:64] * np.sqrt(2), vecs[0][64:] * np.sqrt(2)
    np.testing.assert_allclose([np.linalg.norm(h) for h in halves], 1.0, atol=1e-4)
    assert np.abs(halves[0] - halves[1]).max() > 1e-2

    # the helpers on their own: members of a tiny ensemble and their joined vectors
    looks = sorted(set(dataset.looks) - TEST)
    members = train_ensemble(dataset, looks, tmp_path / "members", models_dir / "features",
                             config(ensemble=2, views=1, epochs=1), fixed_epochs=True, progress=False, log=lambda m: None)
    joined = ensemble_vectors(members, [name])[name]
    parts = [m.vectors_fn([name])[0] for m in members]
    np.testing.assert_allclose(joined, np.concatenate(parts) / np.sqrt(2), atol=1e-5)


def test_test_time_flip_exports_the_mean_of_the_image_and_its_mirror(dataset, models_dir, tmp_path):
    """With `test_time_flip` the model describes an image by the normalised mean of its own and its mirror
    image's descriptors, and the recipe's own vectors (selection, reference items) are those of the model."""
    from PIL import Image

    from ml.training import export_model_dir
    from ml.training.ensemble import ensemble_vectors, with_test_time_flip

    looks = sorted(set(dataset.looks) - TEST)
    result = train(dataset, looks, tmp_path / "run", models_dir / "features", config(epochs=1, views=1),
                   fixed_epochs=True, progress=False, log=lambda m: None)
    plain = load_embedder(str(export_model_dir(result.head, config(views=1), tmp_path / "plain", models_dir)))
    flip = load_embedder(str(export_model_dir(result.head, config(views=1, test_time_flip=True), tmp_path / "flip",
                                              models_dir)))
    assert flip.dim == plain.dim == 64
    name = dataset.snapshot_names()[0]
    mirror = tmp_path / "mirror.png"
    Image.open(dataset.root / name).convert("RGB").transpose(Image.FLIP_LEFT_RIGHT).save(mirror)
    _, (a, b), _ = plain.embed_files([dataset.root / name, mirror])
    _, (tta,), _ = flip.embed_files([dataset.root / name])
    want = (a + b) / np.linalg.norm(a + b)
    np.testing.assert_allclose(tta, want, atol=5e-3)
    assert np.abs(tta - a).max() > 5 * np.abs(tta - want).max(), "the mirror image changes the descriptor"
    # the recipe's vectors from the feature cache: the same as the exported model's
    vecs = with_test_time_flip(ensemble_vectors([result], [name]), [result], dataset, models_dir / "features",
                               config(views=1, test_time_flip=True))
    np.testing.assert_allclose(vecs[name], tta, atol=2e-2)


def test_ensemble_across_backbones_runs_every_member_at_the_models_side(dataset, models_dir, tmp_path):
    """Members on other backbones (`member_backbones`) are trained on their backbone's maps at the ensemble's
    input side, and the exported model (one input, one trunk per backbone) describes an image as the joined
    descriptors of the members computed from those cached maps, with and without flip at test time."""
    from ml.training import export_model_dir, train_ensemble
    from ml.training.ensemble import ensemble_vectors, with_test_time_flip

    mixed = config(ensemble=2, views=1, epochs=1, member_backbones=("lite0", "lite1")).check()
    looks = sorted(set(dataset.looks) - TEST)
    members = train_ensemble(dataset, looks, tmp_path / "members", models_dir / "features", mixed,
                             fixed_epochs=True, progress=False, log=lambda m: None)
    assert [(m.config.backbone, m.config.input_size) for m in members] == [("lite0", 0), ("lite1", 224)]
    assert (models_dir / "features" / "lite1-224").is_dir()  # Lite1's maps at Lite0's side, not its own 240
    name = dataset.snapshot_names()[0]
    for flip in (False, True):
        cfg = config(ensemble=2, views=1, member_backbones=("lite0", "lite1"), test_time_flip=flip)
        model_dir = export_model_dir([m.head for m in members], cfg, tmp_path / f"model-{flip}", models_dir)
        emb = load_embedder(str(model_dir))
        assert emb.dim == 128 and emb.input_size == 224
        assert emb.card.member_backbones == ["lite0", "lite1"] and emb.card.backbone == "lite0"
        _, (served,), _ = emb.embed_files([dataset.root / name])
        recipe = ensemble_vectors(members, [name])
        if flip:
            recipe = with_test_time_flip(recipe, members, dataset, models_dir / "features", cfg)
        np.testing.assert_allclose(served, recipe[name], atol=2e-2)  # float16 feature maps vs images
        halves = served[:64] * np.sqrt(2), served[64:] * np.sqrt(2)
        np.testing.assert_allclose([np.linalg.norm(h) for h in halves], 1.0, atol=1e-3)


def test_member_backbones_are_checked():
    with pytest.raises(ValueError, match="member_backbones names 2 backbones .* ensemble of 3"):
        config(ensemble=3, member_backbones=("lite0", "lite1")).check()
    with pytest.raises(ValueError, match="unknown member backbone 'lite9'"):
        config(ensemble=2, member_backbones=("lite0", "lite9")).check()
    with pytest.raises(ValueError, match="fine_tune_last_stage"):
        config(ensemble=2, member_backbones=("lite0", "lite1"), fine_tune_last_stage=True).check()
    assert config(ensemble=2, member_backbones=("lite0", "lite0"), fine_tune_last_stage=True).check()
