"""Tests of ml.evaluation (pure Python, no Django).

Run: .venv/bin/python -m pytest tests/ml/test_evaluation.py -q -p no:django
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ml.evaluation.dataset import LookDataset, read_look_ids
from ml.evaluation.metrics import average_precision_at_k, clean_ranking, hit_at_k, recall_at_k
from ml.evaluation.protocols import (
    DIRECTIONS,
    SCORED_DIRECTIONS,
    CosineRanker,
    Query,
    Ranker,
    Task,
    build_derived_tasks,
    build_tasks,
    derived_ranking,
    evaluate,
)
from ml.evaluation.report import (
    format_table,
    score_rankings_file,
    write_metrics_json,
    write_rankings,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
MUSINSA = (PROJECT_ROOT / ".." / "shared" / "data" / "musinsa").resolve()
DEV = MUSINSA / "dev"
VAL = MUSINSA / "val_looks.txt"

needs_sample = pytest.mark.skipif(not DEV.is_dir(), reason=f"sample data not found at {DEV}")


# =============================================================================== metrics
def test_clean_ranking_skips_out_of_gallery_and_repeats_and_cuts_at_k():
    ranked = ["z", "x", "x", "a", "a", "q", "b", "y"]
    assert clean_ranking(ranked, {"a", "b", "x", "y"}, k=100) == ["x", "a", "b", "y"]
    assert clean_ranking(ranked, {"a", "b", "x", "y"}, k=2) == ["x", "a"]
    assert clean_ranking(ranked, None, k=100) == ["z", "x", "a", "q", "b", "y"]
    assert clean_ranking(ranked, ["a", "b"], k=100) == ["a", "b"]  # any collection as gallery
    assert clean_ranking(iter(ranked), None, k=0) == []


def test_metrics_simple_case():
    # ranked a(rel) x b(rel) c ; relevant {a, b, d} (d never found)
    # AP = (1/1 + 2/3) / 3 = 5/9  (divided by the 3 relevant items, not by the 2 found)
    ranked, relevant = ["a", "x", "b", "c"], {"a", "b", "d"}
    assert average_precision_at_k(ranked, relevant) == pytest.approx(5 / 9)
    assert hit_at_k(ranked, relevant) == 1.0
    assert recall_at_k(ranked, relevant) == pytest.approx(2 / 3)


def test_metrics_skip_out_of_gallery_and_repeated_entries():
    # cleaned: x(1) a(2) b(3)  -- z, q are out of the gallery, the 2nd x and 2nd a repeat
    # AP = (1/2 + 2/3) / 2 = 7/12
    ranked = ["z", "x", "x", "a", "a", "q", "b"]
    gallery = {"a", "b", "x", "y"}
    relevant = {"a", "b"}
    assert average_precision_at_k(ranked, relevant, gallery=gallery) == pytest.approx(7 / 12)
    assert hit_at_k(ranked, relevant, gallery=gallery) == 1.0
    assert recall_at_k(ranked, relevant, gallery=gallery) == 1.0
    # a repeated relevant entry counts once: ranked a a a, relevant {a, b}:
    # AP = (1/1) / 2 = 0.5 (not (1 + 2/2 + 3/3)/2), recall = 1/2
    assert average_precision_at_k(["a", "a", "a"], {"a", "b"}) == pytest.approx(0.5)
    assert recall_at_k(["a", "a", "a"], {"a", "b"}) == pytest.approx(0.5)


def test_hit_and_recall_at_6_boundary():
    rel = {"r"}
    at6 = ["x1", "x2", "x3", "x4", "x5", "r"]
    at7 = ["x1", "x2", "x3", "x4", "x5", "x6", "r"]
    assert hit_at_k(at6, rel) == 1.0 and recall_at_k(at6, rel) == 1.0
    assert hit_at_k(at7, rel) == 0.0 and recall_at_k(at7, rel) == 0.0
    # six repeats of x1 take no rank: r is at rank 2
    rep = ["x1"] * 6 + ["r"]
    assert hit_at_k(rep, rel) == 1.0
    # recall@6 with 4 relevant, 2 in the first six -> 2/4
    assert recall_at_k(["a", "x", "b", "y", "z", "w", "c", "d"], {"a", "b", "c", "d"}) == 0.5


def test_average_precision_relevant_beyond_rank_100():
    gallery = [f"g{i}" for i in range(150)]
    # g0 at rank 1, g120 at rank 121 (beyond the cut): AP = (1/1 + 0) / 2 = 0.5
    assert average_precision_at_k(gallery, {"g0", "g120"}, gallery=gallery) == pytest.approx(0.5)
    assert hit_at_k(gallery, {"g0", "g120"}) == 1.0
    assert recall_at_k(gallery, {"g0", "g120"}) == pytest.approx(0.5)
    assert average_precision_at_k(gallery, {"g120"}) == 0.0
    # g99 at rank exactly 100 counts: AP = (1/100) / 1
    assert average_precision_at_k(gallery, {"g99"}) == pytest.approx(0.01)
    # out-of-gallery junk in front takes no rank: g99 still at rank 100
    assert average_precision_at_k(["junk1", "junk2"] + gallery, {"g99"}, gallery=gallery) == pytest.approx(0.01)
    # g100 at rank 101 does not
    assert average_precision_at_k(gallery, {"g100"}) == 0.0


def test_metrics_reject_empty_relevant():
    for fn in (average_precision_at_k, hit_at_k, recall_at_k):
        with pytest.raises(ValueError):
            fn(["a"], set())


# ================================================================= synthetic data folder
def _jpeg(color) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, format="JPEG")
    return buf.getvalue()


def _png(color) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, format="PNG")
    return buf.getvalue()


# item contents: six products A..F (distinct colours -> distinct bytes)
ITEM_BYTES = {
    "A": _jpeg((255, 0, 0)),
    "B": _jpeg((0, 255, 0)),
    "C": _jpeg((0, 0, 255)),
    "D": _jpeg((255, 255, 0)),
    "E": _jpeg((0, 255, 255)),
    "F": _jpeg((255, 0, 255)),
}
# look -> snapshot files ; look -> [(item file, product)]
SNAPSHOTS = {
    1: ["1_0_part.jpg", "1_1_part.jpg"],
    2: ["2_0_part.jpg", "2_1_part.jpg"],
    3: ["3_0_part.jpg"],  # a look without items
    4: ["4_0_part.jpg"],
    10: ["10_0_part.png"],  # .png accepted
    20: ["20_0_part.jpg"],
}
RECOS = {
    1: [("1_0_reco.jpg", "A"), ("1_1_reco.jpg", "B"), ("1_2_reco.jpg", "A")],  # A listed twice
    2: [("2_0_reco.jpg", "B"), ("2_1_reco.jpg", "C"), ("2_2_reco.jpg", "F")],
    4: [("4_0_reco.jpg", "D"), ("4_1_reco.jpg", "E")],
    10: [("10_0_reco.jpg", "C"), ("10_1_reco.jpg", "D")],
    20: [("20_0_reco.jpg", "A")],
}
TEST_LOOKS = {2, 3, 10, 20}  # known looks: 1 and 4
# Representative names (first of the sorted file names of each product):
#   A: 1_0_reco.jpg, 1_2_reco.jpg, 20_0_reco.jpg -> 1_0_reco.jpg
#   B: 1_1_reco.jpg, 2_0_reco.jpg                -> 1_1_reco.jpg
#   C: 10_0_reco.jpg, 2_1_reco.jpg               -> 10_0_reco.jpg  (string order: "10" < "2_")
#   D: 10_1_reco.jpg, 4_0_reco.jpg               -> 10_1_reco.jpg
#   E: 4_1_reco.jpg ; F: 2_2_reco.jpg
REP = {"A": "1_0_reco.jpg", "B": "1_1_reco.jpg", "C": "10_0_reco.jpg",
       "D": "10_1_reco.jpg", "E": "4_1_reco.jpg", "F": "2_2_reco.jpg"}


@pytest.fixture
def tiny_folder(tmp_path) -> Path:
    root = tmp_path / "looks"
    root.mkdir()
    shade = 0
    for look, snaps in SNAPSHOTS.items():
        for name in snaps:
            shade += 20
            data = _png((shade, 100, 50)) if name.endswith(".png") else _jpeg((shade, 100, 50))
            (root / name).write_bytes(data)
    for look, recos in RECOS.items():
        for name, product in recos:
            (root / name).write_bytes(ITEM_BYTES[product])
    # files to ignore
    (root / "notes.txt").write_text("not an image")
    (root / "5_0_part.gif").write_bytes(ITEM_BYTES["A"])
    (root / "x_0_part.jpg").write_bytes(ITEM_BYTES["A"])
    (root / "6_0_other.jpg").write_bytes(ITEM_BYTES["A"])
    (root / "7_0_part.jpg").mkdir()  # a folder with a matching name
    return root


def test_tiny_folder_parses(tiny_folder):
    ds = LookDataset.from_folder(tiny_folder)
    assert list(ds.looks) == [1, 2, 3, 4, 10, 20]
    assert ds.snapshot_names() == [n for look in SNAPSHOTS.values() for n in look]
    assert ds.snapshot_names([20, 2, 99]) == ["2_0_part.jpg", "2_1_part.jpg", "20_0_part.jpg"]
    # dedup: 11 item files (3 + 3 + 2 + 2 + 1), 6 distinct items, keyed by SHA-256, in order of first appearance
    assert sum(len(v) for v in ds.items.values()) == 11
    sha = {p: hashlib.sha256(b).hexdigest() for p, b in ITEM_BYTES.items()}
    assert list(ds.items) == [sha[p] for p in "ABCFDE"]
    assert ds.items[sha["A"]] == ["1_0_reco.jpg", "1_2_reco.jpg", "20_0_reco.jpg"]
    assert ds.items[sha["C"]] == ["10_0_reco.jpg", "2_1_reco.jpg"]
    assert {p: ds.item_name(sha[p]) for p in REP} == REP
    assert ds.looks[1].items == [sha["A"], sha["B"]]  # A listed twice, kept once
    assert ds.looks[2].items == [sha["B"], sha["C"], sha["F"]]
    assert ds.looks[3].items == [] and ds.looks[3].snapshots == ["3_0_part.jpg"]
    assert ds.looks[10].snapshots == ["10_0_part.png"]


def test_tiny_folder_tasks(tiny_folder):
    ds = LookDataset.from_folder(tiny_folder)
    tasks = {t.direction: t for t in build_tasks(ds, TEST_LOOKS)}
    assert list(tasks) == list(DIRECTIONS)
    A, B, C, D, E, F = (REP[p] for p in "ABCDEF")

    # Protocol A, snapshot to items: every distinct item; look 3 has no items -> no query
    s2i = tasks["snapshot_to_items"]
    assert s2i.gallery == [A, B, C, F, D, E]
    assert s2i.queries == [
        Query("2_0_part.jpg", frozenset({B, C, F})),
        Query("2_1_part.jpg", frozenset({B, C, F})),
        Query("10_0_part.png", frozenset({C, D})),
        Query("20_0_part.jpg", frozenset({A})),
    ]

    # Protocol A, item to snapshots: items of test looks (E only in known look 4 -> no query);
    # gallery: all snapshots of the test looks, including look 3's
    i2s = tasks["item_to_snapshots"]
    assert i2s.gallery == ["2_0_part.jpg", "2_1_part.jpg", "3_0_part.jpg", "10_0_part.png", "20_0_part.jpg"]
    assert i2s.queries == [
        Query(A, frozenset({"20_0_part.jpg"})),
        Query(B, frozenset({"2_0_part.jpg", "2_1_part.jpg"})),
        Query(C, frozenset({"2_0_part.jpg", "2_1_part.jpg", "10_0_part.png"})),
        Query(F, frozenset({"2_0_part.jpg", "2_1_part.jpg"})),
        Query(D, frozenset({"10_0_part.png"})),
    ]

    # Protocol B: known looks 1, 4 link A, B, D, E -> unseen items C, F only;
    # 20_0_part (relevant A only) is dropped
    b = tasks["snapshot_to_unseen_items"]
    assert b.gallery == [C, F]
    assert b.queries == [
        Query("2_0_part.jpg", frozenset({C, F})),
        Query("2_1_part.jpg", frozenset({C, F})),
        Query("10_0_part.png", frozenset({C})),
    ]


def test_tasks_with_no_unseen_items(tiny_folder):
    ds = LookDataset.from_folder(tiny_folder)
    # test look 1 only: its items A and B are also linked by known looks 2 and 20
    tasks = {t.direction: t for t in build_tasks(ds, {1})}
    assert tasks["snapshot_to_unseen_items"].queries == []
    assert tasks["snapshot_to_unseen_items"].gallery == []
    assert len(tasks["snapshot_to_items"].queries) == 2
    vecs = {n: np.ones(3) for n in ds.snapshot_names() + [ds.item_name(k) for k in ds.items]}
    res = evaluate(ds, {1}, CosineRanker(vecs))
    assert res.metrics["snapshot_to_unseen_items"] == {
        "mAP@100": None, "hit@6": None, "recall@6": None, "queries": 0}


def test_build_tasks_rejects_bad_test_looks(tiny_folder):
    ds = LookDataset.from_folder(tiny_folder)
    with pytest.raises(ValueError, match="99"):
        build_tasks(ds, {2, 99})
    with pytest.raises(ValueError):
        build_tasks(ds, set())


def test_from_folder_errors(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match="nope"):
        LookDataset.from_folder(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("x")
    (empty / "a_0_part.jpg").write_bytes(b"x")
    with pytest.raises(ValueError, match=re.escape(f"no looks found in {empty}")):
        LookDataset.from_folder(empty)


def test_read_look_ids(tiny_folder, tmp_path):
    ds = LookDataset.from_folder(tiny_folder)
    ok = tmp_path / "ok.txt"
    ok.write_text("# test looks\n2\n\n  10  \n20 # trailing comment\n2\n")
    assert read_look_ids(ok, ds) == {2, 10, 20}

    none = tmp_path / "none.txt"
    none.write_text("# nothing\n\n")
    with pytest.raises(ValueError, match="none.txt"):
        read_look_ids(none, ds)

    unknown = tmp_path / "unknown.txt"
    unknown.write_text("2\n99\n5\n")
    with pytest.raises(ValueError, match=r"unknown\.txt.*5, 99"):
        read_look_ids(unknown, ds)

    bad = tmp_path / "bad.txt"
    bad.write_text("2\nten\n")
    with pytest.raises(ValueError, match="bad.txt"):
        read_look_ids(bad, ds)


# ========================================================================== rankers
def test_cosine_ranker_orders_and_breaks_ties_by_gallery_order():
    vecs = {
        "q1": np.array([1.0, 0.0]),
        "q2": np.array([0.0, 2.0]),  # not normalised: same ranking as (0, 1)
        "g1": np.array([0.6, 0.8]),
        "g2": np.array([1.0, 0.0]),
        "g3": np.array([0.0, 1.0]),
        "g4": np.array([1.0, 0.0]),  # same as g2 -> tie, g2 first (gallery order)
        "g5": np.array([-1.0, 0.0]),
    }
    task = Task("snapshot_to_items",
                [Query("q1", frozenset({"g1"})), Query("q2", frozenset({"g3"}))],
                ["g1", "g2", "g3", "g4", "g5"])
    ranker = CosineRanker(vecs)
    # q1 scores: g1 .6, g2 1, g3 0, g4 1, g5 -1
    # q2 scores: g1 .8, g2 0, g3 1, g4 0, g5 0 (ties g2, g4, g5 in gallery order)
    assert ranker.rank(task) == [["g2", "g4", "g1", "g3", "g5"], ["g3", "g1", "g2", "g4", "g5"]]
    assert ranker.rank(task, k=3) == [["g2", "g4", "g1"], ["g3", "g1", "g2"]]
    # reversing the gallery reverses the tie order
    rev = Task(task.direction, task.queries, task.gallery[::-1])
    assert ranker.rank(rev)[1] == ["g3", "g1", "g5", "g4", "g2"]
    with pytest.raises(KeyError, match="g9"):
        CosineRanker(vecs).rank(Task("x", task.queries, ["g1", "g9"]))


class FixedRanker(Ranker):
    """A plug-in ranker returning prescribed lists (falls back to gallery order)."""

    def __init__(self, lists):
        self.lists = lists

    def rank(self, task, k=100):
        return [list(self.lists.get((task.direction, q.name), task.gallery))[:k] for q in task.queries]


def test_evaluate_with_plugged_ranker_hand_checked(tiny_folder):
    ds = LookDataset.from_folder(tiny_folder)
    C, F = REP["C"], REP["F"]
    ranker = FixedRanker({
        ("snapshot_to_unseen_items", "2_0_part.jpg"): [F, C],
        # C named by a non-representative file, plus an out-of-gallery item and a repeat
        ("snapshot_to_unseen_items", "2_1_part.jpg"): ["2_1_reco.jpg", REP["A"], C, F],
        ("snapshot_to_unseen_items", "10_0_part.png"): [F, C],
    })
    res = evaluate(ds, TEST_LOOKS, ranker)
    b = res.metrics["snapshot_to_unseen_items"]
    # 2_0: F(1, rel) C(2, rel): AP (1+1)/2 = 1, hit 1, recall 1
    # 2_1: cleaned C F: AP 1, hit 1, recall 1
    # 10_0: F(1) C(2, rel): AP (1/2)/1 = 0.5, hit 1, recall 1
    assert b == {"mAP@100": pytest.approx(2.5 / 3), "hit@6": 1.0, "recall@6": 1.0, "queries": 3}
    rec = [r for r in res.rankings if r["query"] == "2_1_part.jpg" and r["direction"] == "snapshot_to_unseen_items"]
    assert rec == [{"query": "2_1_part.jpg", "direction": "snapshot_to_unseen_items", "ranked": [C, F]}]
    # item_to_snapshots in gallery order (2_0, 2_1, 3_0, 10_0, 20_0):
    # A {20_0}: rank 5 -> AP 1/5, hit 1, recall 1
    # B {2_0, 2_1}: AP 1, hit 1, recall 1 ; F same ; C {2_0, 2_1, 10_0}: (1 + 1 + 3/4)/3 = 11/12
    # D {10_0}: rank 4 -> 1/4
    i2s = res.metrics["item_to_snapshots"]
    assert i2s["queries"] == 5
    assert i2s["mAP@100"] == pytest.approx((1 / 5 + 1 + 11 / 12 + 1 + 1 / 4) / 5)
    assert i2s["hit@6"] == 1.0 and i2s["recall@6"] == 1.0
    assert len(res.rankings) == 4 + 5 + 3


def test_item_to_looks_and_unseen_items_scored_from_the_item_to_snapshots_lists(tiny_folder, tmp_path):
    ds = LookDataset.from_folder(tiny_folder)
    A, B, C, D, F = (REP[p] for p in "ABCDF")
    derived = {t.direction: t for t in build_derived_tasks(ds, TEST_LOOKS)}
    assert derived["item_to_looks"].gallery == ["2", "3", "10", "20"]
    assert derived["item_to_looks"].queries == [
        Query(A, frozenset({"20"})), Query(B, frozenset({"2"})), Query(C, frozenset({"2", "10"})),
        Query(F, frozenset({"2"})), Query(D, frozenset({"10"}))]
    # known looks 1 and 4 link A, B, D, E: the unseen item queries are C and F
    assert [q.name for q in derived["unseen_item_to_snapshots"].queries] == [C, F]
    assert [q.name for q in derived["unseen_item_to_looks"].queries] == [C, F]
    # a look takes the rank of its first photo; its later photos, and names of no snapshot, are skipped
    assert derived_ranking(ds, ["2_1_part.jpg", "x.jpg", "10_0_part.png", "2_0_part.jpg", "3_0_part.jpg"]) == [
        "2", "10", "3"]

    ranker = FixedRanker({
        ("item_to_snapshots", C): ["3_0_part.jpg", "2_0_part.jpg", "2_1_part.jpg", "10_0_part.png", "20_0_part.jpg"],
        ("item_to_snapshots", F): ["20_0_part.jpg", "3_0_part.jpg", "10_0_part.png", "2_1_part.jpg", "2_0_part.jpg"],
    })
    res = evaluate(ds, TEST_LOOKS, ranker)
    assert list(res.metrics) == list(SCORED_DIRECTIONS)
    assert {r["direction"] for r in res.rankings} == set(DIRECTIONS), "derived directions have no lines"
    # photo level: C relevant at ranks 2, 3, 4: (1/2 + 2/3 + 3/4) / 3; F at 4, 5: (1/4 + 2/5) / 2
    unseen_photos = res.metrics["unseen_item_to_snapshots"]
    assert unseen_photos["queries"] == 2
    assert unseen_photos["mAP@100"] == pytest.approx(((1 / 2 + 2 / 3 + 3 / 4) / 3 + (1 / 4 + 2 / 5) / 2) / 2)
    # look level: C -> looks 3, 2, 10, 20 (relevant at 2, 3): (1/2 + 2/3) / 2; F -> 20, 3, 10, 2: 1/4
    unseen_looks = res.metrics["unseen_item_to_looks"]
    assert unseen_looks["mAP@100"] == pytest.approx(((1 / 2 + 2 / 3) / 2 + 1 / 4) / 2)
    assert unseen_looks["hit@6"] == 1.0 and unseen_looks["recall@6"] == 1.0
    # the other items keep gallery order, 2_0 2_1 3_0 10_0 20_0 -> looks 2, 3, 10, 20:
    # A {20}: 1/4, B {2}: 1, D {10}: 1/3
    looks = res.metrics["item_to_looks"]
    assert looks["queries"] == 5
    assert looks["mAP@100"] == pytest.approx((1 / 4 + 1 + (1 / 2 + 2 / 3) / 2 + 1 / 4 + 1 / 3) / 5)
    # the rankings file gives the same figures
    path = tmp_path / "rankings.jsonl"
    write_rankings(path, res.rankings)
    assert score_rankings_file(path, ds, TEST_LOOKS) == res.metrics


def test_evaluate_rejects_short_ranker_output(tiny_folder):
    ds = LookDataset.from_folder(tiny_folder)

    class Broken(Ranker):
        def rank(self, task, k=100):
            return []

    with pytest.raises(ValueError, match="Broken"):
        evaluate(ds, TEST_LOOKS, Broken())
    with pytest.raises(NotImplementedError):
        evaluate(ds, TEST_LOOKS, Ranker())


# ========================================================================= reports
def test_write_rankings_format(tmp_path):
    path = tmp_path / "out" / "rankings.jsonl"
    write_rankings(path, [
        {"query": "23_0_part.jpg", "direction": "snapshot_to_items", "ranked": ["10_0_reco.jpg", "5_1_reco.jpg"]},
        {"query": "10_0_reco.jpg", "direction": "item_to_snapshots", "ranked": []},
    ])
    assert path.read_text().splitlines() == [
        '{"query": "23_0_part.jpg", "direction": "snapshot_to_items", "ranked": ["10_0_reco.jpg", "5_1_reco.jpg"]}',
        '{"query": "10_0_reco.jpg", "direction": "item_to_snapshots", "ranked": []}',
    ]
    with pytest.raises(ValueError):
        write_rankings(path, [{"query": "q", "direction": "d", "ranked": [str(i) for i in range(101)]}])


def test_write_metrics_json(tmp_path):
    path = tmp_path / "m.json"
    metrics = {"snapshot_to_items": {"mAP@100": 0.25, "hit@6": 0.5, "recall@6": 0.125, "queries": 4}}
    write_metrics_json(path, metrics, {"method": "untrained", "split": "val_looks.txt"})
    assert json.loads(path.read_text()) == {"method": "untrained", "split": "val_looks.txt", "metrics": metrics}


def test_format_table():
    base = {"snapshot_to_items": {"mAP@100": 0.2, "hit@6": 0.5, "recall@6": 0.1, "queries": 9},
            "item_to_snapshots": {"mAP@100": 0.1, "hit@6": 0.0, "recall@6": 0.05, "queries": 3}}
    better = {"snapshot_to_items": {"mAP@100": 0.3, "hit@6": 0.75, "recall@6": 0.1, "queries": 9},
              "item_to_snapshots": {"mAP@100": 0.25, "hit@6": 0.5, "recall@6": 0.05, "queries": 3}}
    table = format_table({"untrained": base, "trained": better})
    lines = table.strip().splitlines()
    assert lines[0] == ("| method | snapshot_to_items mAP@100 | snapshot_to_items hit@6 | snapshot_to_items recall@6"
                        " | item_to_snapshots mAP@100 | item_to_snapshots hit@6 | item_to_snapshots recall@6 |")
    assert lines[1] == "|---|---|---|---|---|---|---|"
    assert lines[2] == ("| untrained | 0.2000 (×1.00) | 0.5000 (×1.00) | 0.1000 (×1.00)"
                        " | 0.1000 (×1.00) | 0.0000 (×n/a) | 0.0500 (×1.00) |")
    assert lines[3] == ("| trained | 0.3000 (×1.50) | 0.7500 (×1.50) | 0.1000 (×1.00)"
                        " | 0.2500 (×2.50) | 0.5000 (×n/a) | 0.0500 (×1.00) |")
    with pytest.raises(ValueError, match="untrained"):
        format_table({"trained": better})


def test_score_rankings_file_errors(tiny_folder, tmp_path):
    ds = LookDataset.from_folder(tiny_folder)
    res = evaluate(ds, TEST_LOOKS, FixedRanker({}))
    path = tmp_path / "r.jsonl"
    write_rankings(path, res.rankings[1:])
    with pytest.raises(ValueError, match="no ranking"):
        score_rankings_file(path, ds, TEST_LOOKS)
    write_rankings(path, res.rankings + res.rankings[:1])
    with pytest.raises(ValueError, match="twice"):
        score_rankings_file(path, ds, TEST_LOOKS)
    write_rankings(path, res.rankings + [{"query": "3_0_part.jpg", "direction": "snapshot_to_items", "ranked": []}])
    with pytest.raises(ValueError, match="outside the split"):
        score_rankings_file(path, ds, TEST_LOOKS)
    write_rankings(path, res.rankings + [{"query": "2_0_part.jpg", "direction": "sideways", "ranked": []}])
    with pytest.raises(ValueError, match="sideways"):
        score_rankings_file(path, ds, TEST_LOOKS)


def test_package_imports_no_django():
    code = ("import sys, ml.evaluation.dataset, ml.evaluation.metrics, ml.evaluation.protocols, "
            "ml.evaluation.report; print(sorted(m for m in sys.modules if m.split('.')[0] == 'django'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ======================================================================= real sample
@pytest.fixture(scope="module")
def dev():
    return LookDataset.from_folder(DEV)


@pytest.fixture(scope="module")
def independent():
    """The dev folder read without ml.evaluation: look -> snapshots, look -> item hashes,
    reco file count."""
    snaps: dict[int, list[str]] = {}
    items: dict[int, set[str]] = {}
    reco_files: dict[int, int] = {}
    for name in os.listdir(DEV):
        m = re.fullmatch(r"(\d+)_(\d+)_(part|reco)\.jpg", name)
        assert m, f"unexpected file in dev/: {name}"
        look = int(m.group(1))
        snaps.setdefault(look, [])
        items.setdefault(look, set())
        reco_files.setdefault(look, 0)
        if m.group(3) == "part":
            snaps[look].append(name)
        else:
            items[look].add(hashlib.sha256((DEV / name).read_bytes()).hexdigest())
            reco_files[look] += 1
    return snaps, items, reco_files


@needs_sample
def test_dev_folder_facts(dev, independent):
    snaps, items, reco_files = independent
    assert len(dev.looks) == 240 == len(snaps)
    assert len(dev.snapshot_names()) == 418
    assert sum(len(v) for v in dev.items.values()) == 2453 == sum(reco_files.values())
    assert len(dev.items) == 1050 == len(set().union(*items.values()))
    links = {key: len(dev.looks_of_item(key)) for key in dev.items}
    assert max(links.values()) == 36
    assert sum(1 for n in links.values() if n == 36) == 1
    # README says "3 looks list one item twice"; measured: 3 repeated listings, in 2 looks
    # (look 100 lists two items twice, look 145 one)
    assert sum(reco_files[look.id] - len(look.items) for look in dev.looks.values()) == 3
    assert sorted(look.id for look in dev.looks.values() if len(look.items) < reco_files[look.id]) == [100, 145]
    assert {look.id: set(look.items) for look in dev.looks.values()} == items


@needs_sample
def test_dev_folder_parses_fast():
    LookDataset.from_folder(DEV)  # warm the file cache
    start = time.perf_counter()
    LookDataset.from_folder(DEV)
    assert time.perf_counter() - start < 2.0


@needs_sample
def test_dev_val_split_query_counts(dev, independent):
    snaps, items, _ = independent
    val = read_look_ids(VAL, dev)
    assert len(val) == 51
    assert val == {i for i in snaps if i % 5 == 0}  # EVALUATION.md: the ids divisible by 5
    known = set(snaps) - val
    known_items = set().union(*(items[i] for i in known))
    val_items = set().union(*(items[i] for i in val))
    unseen = val_items - known_items

    expected = {
        "snapshot_to_items": (sum(len(snaps[i]) for i in val if items[i]), 1050),
        "item_to_snapshots": (len(val_items), sum(len(snaps[i]) for i in val)),
        "snapshot_to_unseen_items": (sum(len(snaps[i]) for i in val if items[i] & unseen), len(unseen)),
    }
    tasks = build_tasks(dev, val)
    got = {t.direction: (len(t.queries), len(t.gallery)) for t in tasks}
    assert got == expected
    # relevant sets are consistent with the independent reading
    look_of_snap = {s: i for i, ss in snaps.items() for s in ss}
    name_to_key = {dev.item_name(k): k for k in dev.items}
    for task in tasks:
        for q in task.queries:
            if task.direction == "item_to_snapshots":
                key = name_to_key[q.name]
                assert q.relevant == {s for i in val if key in items[i] for s in snaps[i]}
            else:
                rel = items[look_of_snap[q.name]]
                if task.direction == "snapshot_to_unseen_items":
                    rel = rel & unseen
                assert {name_to_key[n] for n in q.relevant} == rel


@needs_sample
def test_dev_evaluate_round_trips_through_rankings_file(dev, tmp_path):
    val = read_look_ids(VAL, dev)
    rng = np.random.default_rng(0)
    names = dev.snapshot_names() + [dev.item_name(k) for k in dev.items]
    vectors = {}
    for n in names:
        v = rng.normal(size=16)
        vectors[n] = v / np.linalg.norm(v)
    res = evaluate(dev, val, CosineRanker(vectors))
    assert set(res.metrics) == set(SCORED_DIRECTIONS)
    assert all(len(r["ranked"]) <= 100 for r in res.rankings)
    path = tmp_path / "rankings.jsonl"
    write_rankings(path, res.rankings)
    assert score_rankings_file(path, dev, val) == res.metrics

    # any file of an item may stand for it, in queries and in ranked lists
    other = {dev.item_name(k): names_[-1] for k, names_ in dev.items.items()}
    swapped = [{"query": other.get(r["query"], r["query"]), "direction": r["direction"],
                "ranked": [other.get(n, n) for n in r["ranked"]]} for r in res.rankings]
    assert any(s != r for s, r in zip(swapped, res.rankings))
    write_rankings(path, swapped)
    rescored = score_rankings_file(path, dev, val)
    for d in SCORED_DIRECTIONS:
        assert rescored[d] == pytest.approx(res.metrics[d])
