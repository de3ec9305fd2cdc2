"""Automatic tags without Django: the trained category head on synthetic vectors (training, prediction, saving,
cross-validation, the held-out split), the shipped tagger on real item photos, the ImageNet-class mapping it
replaced (the benchmark's baseline), and the style classifier on synthetic vectors."""
from pathlib import Path

import numpy as np
import pytest

from ml.backbones.imagenet import IMAGENET_CLASSES
from ml.tagging.category import (
    CATEGORIES,
    CATEGORY_CLASSES,
    REFINEMENTS,
    CategoryHead,
    category_matrix,
    category_scores,
    cross_validate,
    feature_space_of,
    held_out_split,
    softmax,
    stratified_folds,
    tags_from_probabilities,
)
from ml.tagging.style import METHODS, StyleClassifier, look_vector, majority_style

SAMPLE_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "musinsa" / "dev"
MODEL_CACHE = Path(__file__).resolve().parents[2] / "var" / "models"


def test_the_categories_are_the_platforms():
    taxonomy = (Path(__file__).resolve().parents[2] / "recommender" / "taxonomy.py").read_text()
    for name in CATEGORIES:
        assert f'"{name}"' in taxonomy
    assert set(CATEGORY_CLASSES) == set(CATEGORIES)


def test_the_mapping_covers_every_category_with_real_imagenet_classes():
    for refined in (False, True):
        matrix = category_matrix(IMAGENET_CLASSES, refined=refined)
        assert matrix.shape == (1000, len(CATEGORIES))
        assert (matrix.sum(axis=0) >= 3).all(), "every category needs several ImageNet classes"
        assert (matrix.sum(axis=1) <= 1).all(), "no class counts for two categories"
    index = {name: i for i, name in enumerate(IMAGENET_CLASSES)}
    matrix = category_matrix(IMAGENET_CLASSES)
    expected = {"jersey": "top", "trench coat": "outerwear", "jean": "bottom", "gown": "dress",
                "running shoe": "shoes", "backpack": "bag", "cowboy hat": "hat", "sunglasses": "accessory"}
    expected.update(REFINEMENTS)
    for name, category in expected.items():
        assert CATEGORIES[int(matrix[index[name]].argmax())] == category, name
    assert matrix[index["golden retriever"]].sum() == 0


def test_a_misspelt_class_is_refused(monkeypatch):
    monkeypatch.setitem(CATEGORY_CLASSES, "hat", ("cowboy hatt",))
    with pytest.raises(ValueError, match="cowboy hatt"):
        category_matrix(IMAGENET_CLASSES)


def test_scores_sum_probabilities_per_category():
    logits = np.full((1, 1000), -20.0)
    logits[0, IMAGENET_CLASSES.index("sandal")] = 5.0
    logits[0, IMAGENET_CLASSES.index("Loafer")] = 5.0
    logits[0, IMAGENET_CLASSES.index("backpack")] = 5.5
    probabilities = softmax(logits)
    scores = category_scores(probabilities, category_matrix(IMAGENET_CLASSES))
    assert scores[0, CATEGORIES.index("shoes")] > scores[0, CATEGORIES.index("bag")]
    (tag,) = tags_from_probabilities(["x.jpg"], probabilities, category_matrix(IMAGENET_CLASSES))
    assert tag.category == "shoes"
    assert tag.confidence == pytest.approx(2 / (2 + np.exp(0.5)), abs=1e-4)


@pytest.fixture(scope="module")
def tagger():
    if not SAMPLE_DIR.is_dir():
        pytest.fail(f"the sample catalogue is missing: {SAMPLE_DIR}")
    from ml.tagging.category import CategoryTagger

    return CategoryTagger("lite0", MODEL_CACHE)


def test_real_item_photos_of_obvious_categories(tagger, tmp_path):
    photos = {"61_6_reco.jpg": "bag", "88_8_reco.jpg": "shoes", "72_7_reco.jpg": "bottom",
              "11_3_reco.jpg": "outerwear", "257_2_reco.jpg": "top"}
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    paths = [SAMPLE_DIR / name for name in photos] + [broken]
    tags, errors = tagger.tag_files(paths)
    assert list(errors) == [str(broken)]
    assert [Path(t.path).name for t in tags] == list(photos)
    for tag in tags:
        assert tag.category == photos[Path(tag.path).name], tag
        assert 0.5 < tag.confidence <= 1.0
    # the tagger's input is the untrained-lite0 descriptor: the head gives the same answer from it
    _, vectors, _ = tagger.embedder.embed_files(paths[:-1])
    assert [c for c, _ in tagger.head.predict(vectors)] == list(photos.values())


# ------------------------------------------------------------------------------------ the trained category head

HEAD_CATEGORIES = ("top", "bottom", "shoes", "dress")


def _category_clusters(seed=0, n=(40, 40, 40, 8), dim=32, spread=1.0):
    """Unit vectors around one random centre per category (dress rare, as in the catalogue)."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(size=(len(HEAD_CATEGORIES), dim)) * 2.5
    x = np.concatenate([centres[i] + spread * rng.normal(size=(count, dim)) for i, count in enumerate(n)])
    y = [c for c, count in zip(HEAD_CATEGORIES, n) for _ in range(count)]
    return x / np.linalg.norm(x, axis=1, keepdims=True), y


def test_the_head_learns_categories_and_says_how_sure_it_is():
    x, y = _category_clusters(0)
    x_test, y_test = _category_clusters(1, n=(10, 10, 10, 10))
    head = CategoryHead(l2=1e-3).fit(x, y)
    predictions = head.predict(x_test)
    accuracy = np.mean([c == t for (c, _), t in zip(predictions, y_test)])
    assert accuracy >= 0.9
    dress_recall = np.mean([c == "dress" for (c, _), t in zip(predictions, y_test) if t == "dress"])
    assert dress_recall >= 0.8, "the rare category is learnt too"
    p = head.probabilities(x_test)
    assert p.shape == (40, len(CATEGORIES))
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    # categories without a label are never answered
    for name in set(CATEGORIES) - set(HEAD_CATEGORIES):
        assert p[:, CATEGORIES.index(name)].max() < 1e-6
    # confidence is the answered category's probability; an ambiguous vector gets a low one
    assert all(0.25 <= conf <= 1.0 for _, conf in predictions)
    centre_of_two = x[y.index("top")] + x[y.index("shoes")]
    (_, unsure), = head.predict(centre_of_two[None])
    assert unsure < np.median([conf for _, conf in predictions])
    with pytest.raises(ValueError, match="32-d"):
        head.probabilities(np.ones((1, 8)))


def test_the_head_refuses_what_it_cannot_learn():
    x, _ = _category_clusters(0, n=(5, 5, 5, 5))
    with pytest.raises(ValueError, match="two categories"):
        CategoryHead().fit(x, ["top"] * len(x))
    with pytest.raises(ValueError, match="trousers"):
        CategoryHead().fit(x, ["trousers"] + ["top"] * (len(x) - 1))
    with pytest.raises(ValueError, match="vectors but"):
        CategoryHead().fit(x, ["top", "shoes"])
    with pytest.raises(RuntimeError, match="not trained"):
        CategoryHead().predict(x)


def test_a_saved_head_predicts_the_same_after_loading(tmp_path):
    x, y = _category_clusters(2)
    head = CategoryHead(l2=1e-2, class_weight=None).fit(x, y)
    path = head.save(tmp_path / "heads" / "h.npz", meta={"labels": len(y), "cv_accuracy": 0.9})
    loaded = CategoryHead.load(path)
    np.testing.assert_allclose(loaded.probabilities(x), head.probabilities(x), atol=1e-6)
    assert loaded.meta == {"labels": len(y), "cv_accuracy": 0.9}
    assert (loaded.l2, loaded.class_weight) == (1e-2, None)
    assert [p.name for p in (tmp_path / "heads").iterdir()] == ["h.npz"], "no temporary file left"
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"not a head")
    with pytest.raises(ValueError, match="broken.npz"):
        CategoryHead.load(broken)


def test_folds_and_the_held_out_split_are_stratified_and_fixed():
    categories = ["top"] * 50 + ["shoes"] * 30 + ["dress"] * 6 + ["hat"] * 1
    fold = stratified_folds(categories, folds=5, seed=0)
    for name in ("top", "shoes"):
        counts = np.bincount(fold[[c == name for c in categories]], minlength=5)
        assert counts.max() - counts.min() <= 1, name
    np.testing.assert_array_equal(fold, stratified_folds(categories, folds=5, seed=0))
    keys = [f"item{i}" for i in range(len(categories))]
    held = held_out_split(keys, categories, fraction=0.2, seed=12)
    assert held == held_out_split(keys, categories, fraction=0.2, seed=12)
    by_category = {name: sum(1 for k, c in zip(keys, categories) if k in held and c == name) for name in set(categories)}
    assert by_category == {"top": 10, "shoes": 6, "dress": 1, "hat": 0}


def test_cross_validation_predicts_every_label_once_and_ranks_the_candidates():
    x, y = _category_clusters(3, spread=1.6)
    results = cross_validate(x, y, [{"l2": 1e3, "steps": 2}, {"l2": 1e-3}], folds=4)
    accuracies = [r["accuracy"] for r in results]
    assert accuracies == sorted(accuracies, reverse=True), "best first"
    for r in results:
        assert len(r["predicted"]) == len(y)
        assert r["accuracy"] == pytest.approx(np.mean([p == t for p, t in zip(r["predicted"], y)]))
    assert results[0]["accuracy"] > 0.8


def test_cross_validation_never_scores_a_label_its_head_saw():
    """Random labels on many dimensions: a head fits its training labels perfectly, yet predicts held-out
    folds no better than chance, which it could not if a fold leaked into its own training."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(120, 400))
    y = [HEAD_CATEGORIES[i] for i in rng.integers(0, 4, size=120)]
    head = CategoryHead(l2=1e-6, steps=600).fit(x, y)
    assert np.mean([c == t for (c, _), t in zip(head.predict(x), y)]) > 0.95
    (result,) = cross_validate(x, y, [{"l2": 1e-6, "steps": 600}], folds=4)
    assert result["accuracy"] < 0.45


def test_feature_spaces_of_model_versions():
    assert feature_space_of("untrained-lite0") == "imagenet-lite0"
    assert feature_space_of("untrained-lite2") == "imagenet-lite2"
    assert feature_space_of("/models/versions/cgd-catalogue-job1") is None


def _clusters(seed=0, n=30, dim=16):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, dim)) * 3
    styles = ["girlish", "sporty", "street/hip-hop"]
    x = np.concatenate([centres[i] + rng.normal(size=(n, dim)) for i in range(3)])
    y = [styles[i] for i in range(3) for _ in range(n)]
    return x, y


@pytest.mark.parametrize("method", METHODS)
def test_style_classifier_separates_synthetic_styles(method):
    x, y = _clusters(0)
    x_test, y_test = _clusters(0, n=10)
    x_test = x_test + np.random.default_rng(1).normal(size=x_test.shape) * 0.1
    clf = StyleClassifier(method).fit(x, y)
    assert clf.classes_ == ["girlish", "sporty", "street/hip-hop"]
    predicted = clf.predict(x_test)
    assert np.mean([p == t for p, t in zip(predicted, y_test)]) >= 0.9
    probabilities = clf.predict_proba(x_test)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-9)
    style, confidence = clf.suggest(x_test[0])
    assert style == y_test[0] and 1 / 3 < confidence <= 1.0
    with pytest.raises(ValueError, match="16-d"):
        clf.predict_proba(np.ones((1, 8)))


def test_style_helpers():
    assert majority_style(["a", "b", "b", "c"]) == "b"
    assert majority_style(["b", "a"]) == "a"
    v = look_vector([[3.0, 0.0], [0.0, 1.0]])
    np.testing.assert_allclose(v, [np.sqrt(0.5), np.sqrt(0.5)])
    with pytest.raises(ValueError):
        StyleClassifier("forest")
    with pytest.raises(RuntimeError):
        StyleClassifier().predict_proba(np.ones((1, 4)))
