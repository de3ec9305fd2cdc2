"""Automatic tags without Django: the ImageNet-class mapping, the category tagger on real item photos, and the
style classifier on synthetic vectors."""
from pathlib import Path

import numpy as np
import pytest

from ml.backbones.imagenet import IMAGENET_CLASSES
from ml.tagging.category import (
    CATEGORIES,
    CATEGORY_CLASSES,
    REFINEMENTS,
    category_matrix,
    category_scores,
    softmax,
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
    (tag,) = tags_from_probabilities(["x.jpg"], probabilities, category_matrix(IMAGENET_CLASSES), IMAGENET_CLASSES)
    assert tag.category == "shoes" and tag.top_class == "backpack"
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
