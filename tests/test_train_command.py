"""train_cgd on a small copied folder, then evaluate_cgd --model on the model it wrote; bad input is a CommandError."""
import json
from io import StringIO

import numpy as np
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from tests.conftest import copy_looks

LOOKS = (0, 5, 6, 15, 22, 149, 288, 10, 20, 25)
TEST_LOOKS = (5, 10)


@pytest.fixture(scope="module")
def trained(sample_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    folder = copy_looks(sample_dir, LOOKS, root / "dev")
    (folder / "0_7_part.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")  # an unreadable snapshot
    test_file = root / "test_looks.txt"
    test_file.write_text("\n".join(map(str, TEST_LOOKS)) + "\n")
    out, err = StringIO(), StringIO()
    call_command("train_cgd", data=str(folder), out=str(root / "model"), test_looks=str(test_file),
                 epochs=2, batch_size=8, views=1, backbone="lite0", ensemble=1, stdout=out, stderr=err, verbosity=0)
    return folder, test_file, root / "model", out.getvalue(), err.getvalue()


def test_train_writes_a_model_dir(trained):
    folder, _, model, out, err = trained
    card = json.loads((model / "card.json").read_text())
    assert (model / "model.keras").is_file()
    assert card["excluded_test_looks"] == sorted(TEST_LOOKS)
    assert card["descriptor_dim"] == 512 and card["backbone"] == "lite0"
    assert "model written" in out
    assert "0_7_part.jpg" in err  # the unreadable image is skipped and named
    assert any(s.startswith("0_7_part.jpg") for s in card["skipped_images"])


def test_evaluate_the_trained_model(trained):
    folder, test_file, model, _, _ = trained
    rankings, metrics = folder.parent / "r.jsonl", folder.parent / "m.json"
    out = StringIO()
    call_command("evaluate_cgd", data=str(folder), test_looks=str(test_file), model=str(model),
                 rankings=str(rankings), json=str(metrics), stdout=out, verbosity=0)
    values = json.loads(metrics.read_text())["metrics"]
    for direction in ("snapshot_to_items", "item_to_snapshots"):
        assert values[direction]["queries"] > 0
        assert 0.0 <= values[direction]["mAP@100"] <= 1.0
    lines = [json.loads(line) for line in rankings.read_text().splitlines()]
    assert {line["direction"] for line in lines} >= {"snapshot_to_items", "item_to_snapshots"}
    assert "post-processing" in out.getvalue()


def test_bad_input_is_a_command_error(trained, sample_dir, tmp_path):
    folder, test_file, model, _, _ = trained
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CommandError, match="no looks found"):
        call_command("train_cgd", data=str(empty), out=str(tmp_path / "m"), verbosity=0)
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("777\n")
    with pytest.raises(CommandError, match="777"):
        call_command("train_cgd", data=str(folder), out=str(tmp_path / "m"), test_looks=str(wrong), verbosity=0)
    with pytest.raises(CommandError, match="not found"):
        call_command("evaluate_cgd", data=str(folder), test_looks=str(test_file), model=str(tmp_path / "none"),
                     rankings=str(tmp_path / "r.jsonl"), verbosity=0)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "card.json").write_text((model / "card.json").read_text())
    (broken / "model.keras").write_bytes(b"not a model")
    with pytest.raises(CommandError, match="cannot load"):
        call_command("evaluate_cgd", data=str(folder), test_looks=str(test_file), model=str(broken),
                     rankings=str(tmp_path / "r.jsonl"), verbosity=0)


def test_ensemble_options_mean_what_they_say():
    from recommender.management.commands.train_cgd import ensemble_members
    from ml.training import TrainConfig

    assert ensemble_members(TrainConfig.backbone, None, None) == dict(
        ensemble=TrainConfig.ensemble, member_backbones=TrainConfig.member_backbones)  # the default recipe
    assert ensemble_members("lite0", None, None) == dict(ensemble=TrainConfig.ensemble, member_backbones=())
    assert ensemble_members(TrainConfig.backbone, 1, None) == dict(ensemble=1, member_backbones=())
    assert ensemble_members("lite2", None, ["lite2", "lite1"]) == dict(ensemble=2, member_backbones=("lite2", "lite1"))
    with pytest.raises(CommandError, match="member_backbones names 2 backbones"):
        call_command("train_cgd", data="/nonexistent", out="/tmp/never", ensemble=3,
                     member_backbones=["lite2", "lite1"], verbosity=0)
