"""evaluate_cgd --untrained on a small real folder; its metrics recomputed here, independently, from the
rankings file and the folder (own parsing, own hashing, own metric code)."""
import hashlib
import json
import re
from collections import defaultdict

import numpy as np
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from tests.conftest import copy_looks

LOOKS = (0, 5, 6, 15, 22, 149, 288, 10, 20, 25)
TEST_LOOKS = (5, 10, 20, 25, 15)


def independent_relevance(folder, test_looks):
    """Relevant sets per direction, derived straight from file names and bytes."""
    looks_items, snapshots, item_file = defaultdict(set), defaultdict(list), {}
    for path in sorted(folder.iterdir()):
        look, _, kind = re.match(r"(\d+)_(\d+)_(part|reco)", path.name).groups()
        if kind == "part":
            snapshots[int(look)].append(path.name)
        else:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            looks_items[int(look)].add(digest)
            item_file.setdefault(digest, path.name)  # sorted order: the first name is the representative
    name = {digest: item_file[digest] for digest in item_file}
    known = set(looks_items) | set(snapshots)
    known -= set(test_looks)
    known_items = set().union(*(looks_items[l] for l in known))
    relevant = {"snapshot_to_items": {}, "item_to_snapshots": {}, "snapshot_to_unseen_items": {}}
    for look in test_looks:
        for snapshot in snapshots[look]:
            if looks_items[look]:
                relevant["snapshot_to_items"][snapshot] = {name[d] for d in looks_items[look]}
            unseen = looks_items[look] - known_items
            if unseen:
                relevant["snapshot_to_unseen_items"][snapshot] = {name[d] for d in unseen}
        for digest in looks_items[look]:
            relevant["item_to_snapshots"].setdefault(name[digest], set()).update(snapshots[look])
    return relevant


def my_metrics(ranked, relevant):
    ranked = ranked[:100]
    hits, precision_sum = 0, 0.0
    for rank, entry in enumerate(ranked, start=1):
        if entry in relevant:
            hits += 1
            precision_sum += hits / rank
    top6 = set(ranked[:6]) & relevant
    return precision_sum / len(relevant), float(bool(top6)), len(top6) / len(relevant)


@pytest.fixture(scope="module")
def evaluated(sample_dir, tmp_path_factory):
    folder = copy_looks(sample_dir, LOOKS, tmp_path_factory.mktemp("eval") / "dev")
    test_file = folder.parent / "test_looks.txt"
    test_file.write_text("\n".join(map(str, TEST_LOOKS)) + "\n")
    rankings, metrics = folder.parent / "rankings.jsonl", folder.parent / "metrics.json"
    call_command(
        "evaluate_cgd", data=str(folder), test_looks=str(test_file), untrained=True,
        rankings=str(rankings), json=str(metrics), verbosity=0,
    )
    lines = [json.loads(line) for line in rankings.read_text().splitlines()]
    return folder, lines, json.loads(metrics.read_text())["metrics"]


def test_rankings_file_covers_every_query(evaluated):
    folder, lines, _ = evaluated
    relevant = independent_relevance(folder, TEST_LOOKS)
    for direction, queries in relevant.items():
        listed = {line["query"] for line in lines if line["direction"] == direction}
        assert listed == set(queries), direction
    for line in lines:
        assert len(line["ranked"]) <= 100
        assert len(set(line["ranked"])) == len(line["ranked"])


def test_metrics_match_an_independent_recomputation(evaluated):
    folder, lines, metrics = evaluated
    relevant = independent_relevance(folder, TEST_LOOKS)
    for direction, queries in relevant.items():
        scores = np.array([
            my_metrics(line["ranked"], queries[line["query"]]) for line in lines if line["direction"] == direction
        ])
        assert metrics[direction]["queries"] == len(queries)
        assert metrics[direction]["mAP@100"] == pytest.approx(scores[:, 0].mean(), abs=1e-9)
        assert metrics[direction]["hit@6"] == pytest.approx(scores[:, 1].mean(), abs=1e-9)
        assert metrics[direction]["recall@6"] == pytest.approx(scores[:, 2].mean(), abs=1e-9)


def test_untrained_beats_chance(evaluated):
    """A sanity check that the rankings carry signal: mAP above what a random order gives in expectation."""
    folder, lines, metrics = evaluated
    relevant = independent_relevance(folder, TEST_LOOKS)
    gallery = len({p.name for p in folder.glob("*_reco.*")})  # upper bound on distinct items
    chance = np.mean([len(r) / gallery for r in relevant["snapshot_to_items"].values()])
    assert metrics["snapshot_to_items"]["mAP@100"] > chance


def test_bad_arguments_are_clear_errors(sample_dir, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    looks = tmp_path / "looks.txt"
    looks.write_text("5\n")
    with pytest.raises(CommandError, match="no looks found"):
        call_command("evaluate_cgd", data=str(empty), test_looks=str(looks), untrained=True,
                     rankings=str(tmp_path / "r.jsonl"), verbosity=0)
    folder = copy_looks(sample_dir, (0, 5), tmp_path / "dev")
    looks.write_text("7\n")
    with pytest.raises(CommandError, match="7"):
        call_command("evaluate_cgd", data=str(folder), test_looks=str(looks), untrained=True,
                     rankings=str(tmp_path / "r.jsonl"), verbosity=0)
