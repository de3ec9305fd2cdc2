"""The training rules every caller gets (train_cgd and the platform's background training), and the model card."""

import json

import pytest

from ml.evaluation.dataset import Look, LookDataset
from ml.model_card import ModelCard, ModelCardError
from ml.retrieval.recognition import RecognitionSettings
from ml.retrieval.scoring import ScoringSettings
from ml.training import TrainConfig, training_split


def test_batch_size_becomes_looks_times_images():
    assert (TrainConfig.from_batch_size(64).P, TrainConfig.from_batch_size(64).K) == (16, 4)
    assert (TrainConfig.from_batch_size(8).P, TrainConfig.from_batch_size(8).K) == (2, 4)
    assert (TrainConfig.from_batch_size(6).P, TrainConfig.from_batch_size(6).K) == (3, 2)
    with pytest.raises(ValueError, match="at least 2"):
        TrainConfig.from_batch_size(1)


def test_batches_never_hold_more_looks_than_the_phase_trains_on():
    assert TrainConfig(P=16).fitted_to_looks(5).P == 5
    assert TrainConfig(P=16).fitted_to_looks(100).P == 16
    assert TrainConfig(P=16).fitted_to_looks(0).P == 1


@pytest.mark.parametrize("changes, message", [
    ({"epochs": 0}, "epochs"), ({"views": 0}, "views"), ({"ensemble": 0}, "ensemble"),
    ({"loss": "arcface+nonsense"}, "unknown loss 'arcface\\+nonsense'"), ({"backbone": "lite9"}, "lite9"),
    ({"P": 1, "K": 1}, "at least 2 images"),
])
def test_config_check_names_the_problem(changes, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**changes).check()
    assert TrainConfig(loss="arcface+multi_positive").check().loss == "arcface+multi_positive"


def test_training_split_rules():
    looks = {i: Look(i, [f"{i}_0_part.jpg"], []) for i in (1, 2, 3)}
    ds = LookDataset(root=".", looks=looks, items={})
    assert training_split(ds, {3}) == ([1, 2], [])
    assert training_split(ds, (), {2}) == ([1, 3], [2])
    with pytest.raises(ValueError, match="overlap: 2"):
        training_split(ds, {2}, {2})
    with pytest.raises(ValueError, match="fewer than 2 training looks"):
        training_split(ds, {3}, {2})


def test_model_card_round_trip_keeps_unknown_keys(tmp_path):
    card = ModelCard(backbone="lite2", input_size=260, descriptor_dim=1536, ensemble=3,
                     postprocessing=ScoringSettings(lt_weight=0.85, item_link_qe=1.0),
                     recognition=RecognitionSettings(near_duplicate_cosine=0.9), excluded_test_looks=[5, 10],
                     extra={"from_a_newer_version": {"x": 1}})
    card.write(tmp_path)
    data = json.loads((tmp_path / "card.json").read_text())
    assert data["postprocessing"]["lt_weight"] == 0.85 and data["recognition"]["near_duplicate_cosine"] == 0.9
    assert data["from_a_newer_version"] == {"x": 1} and "extra" not in data
    assert ModelCard.read(tmp_path) == card
    # an older card: the default recognition settings; a knob this version dropped is ignored
    old = {"backbone": "lite0", "input_size": 224, "descriptor_dim": 512, "postprocessing": {"lt_items": True}}
    read = ModelCard.from_dict(old)
    assert read.recognition == RecognitionSettings() and read.postprocessing == ScoringSettings()


def test_bad_cards_are_named(tmp_path):
    with pytest.raises(ModelCardError, match="missing card.json"):
        ModelCard.read(tmp_path)
    (tmp_path / "card.json").write_text("{not json")
    with pytest.raises(ModelCardError, match="corrupt"):
        ModelCard.read(tmp_path)
    (tmp_path / "card.json").write_text(json.dumps({"backbone": "lite0", "input_size": 224}))
    with pytest.raises(ModelCardError, match="descriptor_dim"):
        ModelCard.read(tmp_path)
