"""Retrieval scoring and the evaluation ranker on small hand-checked cases (numpy only)."""

import numpy as np
import pytest

from ml.evaluation.dataset import Look, LookDataset
from ml.evaluation.protocols import SCORED_DIRECTIONS, build_tasks, evaluate
from ml.retrieval.ranker import ScoringRanker
from ml.retrieval.scoring import (DomainMeans, ScoringSettings, centred_queries, expanded_item_queries,
                                  item_query_scores, link_query_expansion, snapshot_queries,
                                  pool_by_look, ranked_indices, ranked_looks, score_matrix, snapshot_gallery_transfer,
                                  softmax_hubness)


def unit(*rows):
    m = np.asarray(rows, dtype=np.float32)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def test_plain_score_is_cosine():
    q = unit([1, 0], [0, 1])
    g = unit([1, 1], [1, 0], [0, 1])
    s = score_matrix(q * 3.0, g, ScoringSettings())  # re-normalised
    np.testing.assert_allclose(s, q @ g.T, atol=1e-6)


def test_look_transfer_by_hand():
    q = unit([1, 0])
    g = unit([0, 1], [0.6, 0.8])                    # direct: 0, 0.6
    known = unit([1, 0], [0, 1])                    # similarities 1, 0
    links = np.array([[1, 0], [0, 1]], np.float32)  # known snapshot 0's look links item 0
    st = ScoringSettings(lt_weight=0.5, lt_top_k=1, lt_reduce="max")
    s = score_matrix(q, g, st, known_snapshot_vecs=known, known_links=links)
    # item 0: 0.5*0 + 0.5*1 = 0.5 ; item 1: 0.5*0.6 + 0 = 0.3
    np.testing.assert_allclose(s, [[0.5, 0.3]], atol=1e-6)
    # without look transfer the order is the other way round
    assert np.argmax(score_matrix(q, g, ScoringSettings())[0]) == 1
    with pytest.raises(ValueError):
        score_matrix(q, g, st, known_snapshot_vecs=known, known_links=links[:, :1])


def test_snapshot_gallery_transfer_by_hand():
    items = unit([1, 0, 0])                         # one query item
    gallery = unit([0, 1, 0], [0, 0, 1])            # two gallery snapshots, direct 0 and 0
    known = unit([0, 1, 0.1])                       # close to gallery snapshot 0
    links = np.array([[1]], np.float32)             # its look links the query item
    st = ScoringSettings(item_transfer_weight=0.5, lt_top_k=1)
    direct = score_matrix(items, gallery, st)
    s = snapshot_gallery_transfer(items, gallery, direct, st, known_snapshot_vecs=known, known_links=links)
    assert s.shape == (1, 2)
    assert s[0, 0] == pytest.approx(0.5 * float(known[0] @ gallery[0]), abs=1e-6)
    assert s[0, 1] == pytest.approx(0.5 * float(known[0] @ gallery[1]), abs=1e-6)
    assert s[0, 0] > s[0, 1]
    off = snapshot_gallery_transfer(items, gallery, direct, ScoringSettings(), known, links)
    np.testing.assert_allclose(off, direct)


def test_link_query_expansion_by_hand():
    items = unit([1, 0, 0], [0, 0, 1])              # item 0 is worn in known snapshots, item 1 is not
    known = unit([0, 1, 0], [0, 0.6, 0.8])
    links = np.array([[1, 0], [1, 0]], np.float32)  # both known snapshots' looks link item 0
    out = link_query_expansion(items, known, links, 2.0)
    expected = items[0] + 2.0 * (known[0] + known[1]) / 2
    np.testing.assert_allclose(out[0], expected / np.linalg.norm(expected), atol=1e-6)
    np.testing.assert_allclose(out[1], items[1], atol=1e-6)    # no known link: unchanged
    np.testing.assert_allclose(link_query_expansion(items, known, links, 0.0), items, atol=1e-6)
    # a gallery snapshot like the ones wearing item 0 now outranks one like the product photo's
    gallery = unit([0, 1, 0.1], [1, 0, 0.5])
    assert np.argmax((items[:1] @ gallery.T)[0]) == 1 and np.argmax((out[:1] @ gallery.T)[0]) == 0
    with pytest.raises(ValueError):
        link_query_expansion(items, known, links[:, :1], 1.0)


def test_ranker_link_qe_uses_known_links_only():
    """Item C is linked by known look 1 and test look 2: only its query is expanded (with s1)."""
    base, vecs = tiny_dataset()
    looks = {1: Look(1, ["1_0_part.jpg"], ["A", "C"]), 2: base.looks[2], 3: base.looks[3]}
    ds = LookDataset(root=".", looks=looks, items=base.items)
    i2s = build_tasks(ds, {2, 3})[1]
    plain = ScoringRanker(vecs, ds, known_look_ids=[1]).scores(i2s)
    expanded = ScoringRanker(vecs, ds, known_look_ids=[1], settings=ScoringSettings(item_link_qe=1.0)).scores(i2s)
    changed = ~np.isclose(plain, expanded).all(axis=1)
    known_linked = [q.name in {ds.item_name(k) for k in ds.looks[1].items} for q in i2s.queries]
    assert list(changed) == known_linked and any(known_linked)


def test_pool_by_look_by_hand():
    scores = np.array([[0.9, 0.1, 0.5, 0.4]], np.float32)
    looks = [7, 7, 8, 8]                            # two looks of two photos each
    np.testing.assert_allclose(pool_by_look(scores, looks, 1.0), [[0.9, 0.9, 0.5, 0.5]], atol=1e-6)
    np.testing.assert_allclose(pool_by_look(scores, looks, 0.5), [[0.9, 0.5, 0.5, 0.45]], atol=1e-6)
    np.testing.assert_allclose(pool_by_look(scores, looks, 0.0), scores)
    # look 7's weak photo now outranks look 8's photos
    assert np.argsort(-pool_by_look(scores, looks, 0.5)[0])[1] == 1
    with pytest.raises(ValueError):
        pool_by_look(scores, looks[:3], 1.0)


def test_ranker_pools_item_to_snapshot_scores_by_look():
    base, vecs = tiny_dataset()
    looks = {**base.looks, 2: Look(2, ["2_0_part.jpg", "2_1_part.jpg"], ["C"])}
    ds = LookDataset(root=".", looks=looks, items=base.items)
    vecs = {**vecs, "2_1_part.jpg": vecs["2_0_reco.jpg"]}   # a close-up of item C
    i2s = build_tasks(ds, {2, 3})[1]
    c = [q.name for q in i2s.queries].index("2_0_reco.jpg")
    plain = ScoringRanker(vecs, ds, known_look_ids=[1]).scores(i2s)[c]
    pooled = ScoringRanker(vecs, ds, known_look_ids=[1], settings=ScoringSettings(look_pooling=1.0)).scores(i2s)[c]
    col = {name: j for j, name in enumerate(i2s.gallery)}
    assert plain[col["2_1_part.jpg"]] > plain[col["2_0_part.jpg"]]
    assert pooled[col["2_0_part.jpg"]] == pytest.approx(plain[col["2_1_part.jpg"]])
    assert pooled[col["3_0_part.jpg"]] == pytest.approx(plain[col["3_0_part.jpg"]])  # a one-photo look


def test_ranked_indices_diversity_by_hand():
    # items 0 and 1 are near copies (two puffer jackets), item 2 is different (trousers), item 3 is last
    gallery = unit([1, 0, 0], [0.99, 0.1, 0], [0, 1, 0], [0, 0, 1])
    scores = np.array([[1.0, 0.9, 0.6, 0.0]], np.float32)
    np.testing.assert_array_equal(ranked_indices(scores), [[0, 1, 2, 3]])
    # MMR with weight 0.5 over the best 3, two places shown: relevance scaled to [1, 0.75, 0]; after
    # item 0, item 1 scores 0.5*0.75 - 0.5*0.995 < 0 and item 2 scores 0.5*0 - 0.5*0 = 0 -> item 2 shown
    st = ScoringSettings(diversity=0.5, diversity_depth=3, diversity_shown=2)
    np.testing.assert_array_equal(ranked_indices(scores, st, gallery), [[0, 2, 1, 3]])
    # a light touch keeps the order; entries past the depth never move; no vectors: plain order;
    # as many places shown as the depth: the same entries, listed by score
    light = ScoringSettings(diversity=0.1, diversity_depth=3, diversity_shown=2)
    np.testing.assert_array_equal(ranked_indices(scores, light, gallery), [[0, 1, 2, 3]])
    np.testing.assert_array_equal(ranked_indices(scores, ScoringSettings(diversity=0.5, diversity_depth=2), gallery),
                                  [[0, 1, 2, 3]])
    np.testing.assert_array_equal(ranked_indices(scores, st), [[0, 1, 2, 3]])
    np.testing.assert_array_equal(ranked_indices(scores, ScoringSettings(diversity=0.5, diversity_depth=3), gallery),
                                  [[0, 1, 2, 3]])


def test_ranked_indices_lists_the_diverse_picks_by_score():
    # 0 and 1 near copies, 2 half-way to 0 (cosine 0.5), 3 unlike all; scores scale to [1, 0.8, 0.2, 0]
    gallery = unit([1, 0, 0], [0.99, 0.1, 0], [0.5, np.sqrt(0.75), 0], [0, 0, 1])
    scores = np.array([[1.0, 0.9, 0.6, 0.5]], np.float32)
    st = ScoringSettings(diversity=0.5, diversity_depth=4, diversity_shown=3)
    # MMR picks 0; then 3 (0.5*0 - 0 = 0) over 2 (0.5*0.2 - 0.5*0.5 = -0.15) and 1 (0.5*0.8 - 0.5*0.995
    # = -0.0975); then 1 (-0.0975) over 2 (-0.15).  Shown {0, 1, 3} by score, then 2.
    np.testing.assert_array_equal(ranked_indices(scores, st, gallery), [[0, 1, 3, 2]])


def test_ranker_diversifies_item_galleries_only():
    ds, vecs = tiny_dataset()
    vecs = {**vecs, "1_1_reco.jpg": vecs["2_0_reco.jpg"] * 0.99 + 0.01 * vecs["1_0_reco.jpg"]}  # B: a copy of C
    st = ScoringSettings(diversity=0.9, diversity_depth=4, diversity_shown=2)
    tasks = build_tasks(ds, {2, 3})
    plain = ScoringRanker(vecs, ds, known_look_ids=[1])
    varied = ScoringRanker(vecs, ds, known_look_ids=[1], settings=st)
    s2i, i2s = tasks[0], tasks[1]
    assert sorted(map(sorted, varied.rank(s2i))) == sorted(map(sorted, plain.rank(s2i)))  # same entries
    assert varied.rank(s2i) != plain.rank(s2i)       # in another order
    assert varied.rank(i2s) == plain.rank(i2s)       # snapshots are ranked by score alone


def test_settings_round_trip():
    st = ScoringSettings(qe=True, qe_k=3, lt_weight=0.7)
    assert ScoringSettings.from_dict({**st.to_dict(), "unknown": 1}) == st


# ----------------------------------------------------------------------------- ranker
def tiny_dataset():
    """Known look 1 (snapshot s1, items A, B); test looks 2 (t2; item C) and 3 (t3; item D)."""
    looks = {
        1: Look(1, ["1_0_part.jpg"], ["A", "B"]),
        2: Look(2, ["2_0_part.jpg"], ["C"]),
        3: Look(3, ["3_0_part.jpg"], ["D"]),
    }
    items = {"A": ["1_0_reco.jpg"], "B": ["1_1_reco.jpg"], "C": ["2_0_reco.jpg"], "D": ["3_0_reco.jpg"]}
    ds = LookDataset(root=".", looks=looks, items=items)
    v = {
        "1_0_part.jpg": [1, 0, 0, 0],
        "2_0_part.jpg": [0.9, 0.1, 0, 0],     # test snapshot, similar to s1 and t3
        "3_0_part.jpg": [0.9, 0.12, 0, 0],
        "1_0_reco.jpg": [0, 1, 0, 0],         # A
        "1_1_reco.jpg": [0, 0, 1, 0],         # B
        "2_0_reco.jpg": [0.3, 0.3, 0.9, 0],   # C
        "3_0_reco.jpg": [0.2, 0.2, 0.2, 1],   # D
    }
    return ds, {k: np.asarray(x, np.float32) / np.linalg.norm(x) for k, x in v.items()}


def test_ranker_uses_known_links_only():
    ds, vecs = tiny_dataset()
    st = ScoringSettings(lt_weight=0.9, lt_top_k=5, lt_reduce="max")
    s2i = build_tasks(ds, {2, 3})[0]
    ranker = ScoringRanker(vecs, ds, known_look_ids=[1], settings=st)
    ranked = ranker.rank(s2i)
    # query t2: known s1 is similar, its look links A and B -> they move to the top
    assert set(ranked[0][:2]) == {"1_0_reco.jpg", "1_1_reco.jpg"}
    # if the ranker had used test look 3's links, t2 (very similar to t3) would get D on top
    leaky = ScoringRanker(vecs, ds, known_look_ids=[1, 3], settings=st)
    # the ranker drops known snapshots that are queries of the task, so even a wrong known set
    # cannot leak the test look's links
    assert leaky.rank(s2i) == ranked


def test_test_links_would_change_ranking():
    """The construction above is meaningful: with test look 3's snapshot as a known snapshot
    (under another name), item D jumps to the top for query t2."""
    ds, vecs = tiny_dataset()
    st = ScoringSettings(lt_weight=0.9, lt_top_k=5, lt_reduce="max")
    s2i = build_tasks(ds, {2, 3})[0]
    q = np.stack([vecs["2_0_part.jpg"]])
    g = np.stack([vecs[n] for n in s2i.gallery])
    known = np.stack([vecs["3_0_part.jpg"]])
    links = np.array([[n == "3_0_reco.jpg" for n in s2i.gallery]], np.float32)
    leak = score_matrix(q, g, st, known_snapshot_vecs=known, known_links=links)
    assert s2i.gallery[int(np.argmax(leak[0]))] == "3_0_reco.jpg"
    honest = ScoringRanker(vecs, ds, known_look_ids=[1], settings=st).rank(s2i)
    assert honest[0][0] != "3_0_reco.jpg"


def test_ranker_evaluate_runs_all_directions():
    ds, vecs = tiny_dataset()
    st = ScoringSettings(lt_weight=0.5, qe=True, qe_k=1, dba=True, dba_k=1, item_transfer_weight=0.5)
    res = evaluate(ds, {2, 3}, ScoringRanker(vecs, ds, known_look_ids=[1], settings=st))
    assert set(res.metrics) == set(SCORED_DIRECTIONS)
    for m in res.metrics.values():
        assert m["queries"] > 0 and 0.0 <= m["mAP@100"] <= 1.0
    # plain settings == the protocol's cosine ranker
    from ml.evaluation.protocols import CosineRanker

    a = evaluate(ds, {2, 3}, ScoringRanker(vecs, ds, known_look_ids=[1])).metrics
    b = evaluate(ds, {2, 3}, CosineRanker(vecs)).metrics
    assert a == b




def test_item_query_scores_is_the_composition_and_ranked_looks_collapse():
    q = unit([1, 0, 0], [0, 1, 0])
    gallery = unit([1, 0.1, 0], [0.2, 1, 0], [0.5, 0.5, 0.1], [0, 0, 1])
    looks = ["a", "a", "b", "c"]
    known = unit([0.9, 0, 0.1], [0, 0.2, 1])
    links = np.array([[1, 0], [0, 1]], np.float32)        # known snapshot 0 wears query 0, 1 wears query 1
    st = ScoringSettings(item_link_qe=1.0, item_transfer_weight=0.3, item_transfer_top_k=1, look_pooling=1.0)
    got = item_query_scores(q, gallery, looks, st, known_snapshot_vecs=known, query_links=links)
    expanded = link_query_expansion(q, known, links, 1.0)
    want = snapshot_gallery_transfer(q, gallery, score_matrix(expanded, gallery, st), st, known, links)
    np.testing.assert_allclose(got, pool_by_look(want, looks, 1.0), atol=1e-6)
    ranked = ranked_looks(got, looks)
    for row, scores in zip(ranked, got):
        assert [look for look, _ in row] == list(dict.fromkeys(looks[j] for j in np.argsort(-scores, kind="stable")))
        assert all(scores[j] == max(scores[i] for i in range(4) if looks[i] == look) for look, j in row)


def test_near_duplicate_needs_the_threshold():
    from ml.retrieval.recognition import RecognitionSettings, near_duplicate

    candidates = unit([1, 0, 0], [0.6, 0.8, 0])
    q = unit([0.99, 0.14, 0])[0]                              # cos 0.99 to the first, ~0.71 to the second
    assert near_duplicate(q, candidates, RecognitionSettings(0.98)) == (0, pytest.approx(0.99, abs=1e-3))
    assert near_duplicate(q, candidates, RecognitionSettings(0.995)) is None
    assert near_duplicate(q, candidates, RecognitionSettings(0.0)) is None   # off: identical bytes only
    assert near_duplicate(q, np.zeros((0, 3)), RecognitionSettings(0.5)) is None


def test_softmax_hubness_by_hand():
    v = unit([1, 0], [0, 1])
    ref = unit([1, 0], [0.6, 0.8], [0, 1])
    tau = 0.1
    want = [tau * np.log(np.sum(np.exp((ref @ row) / tau))) for row in v]
    np.testing.assert_allclose(softmax_hubness(v, ref, tau), want, rtol=1e-5)
    np.testing.assert_allclose(softmax_hubness(v, ref, tau, chunk=1), want, rtol=1e-5)  # chunked the same
    assert softmax_hubness(v, ref, 100.0)[0] == pytest.approx(100.0 * np.log(3) + float(np.mean(ref @ v[0])), rel=1e-3)
    np.testing.assert_array_equal(softmax_hubness(v, np.zeros((0, 2)), tau), [0, 0])


def test_item_hubness_demotes_the_snapshot_every_item_resembles():
    """Snapshot 0 is a little closer to the query than snapshot 1, but it resembles every reference item
    (a hub); with the correction the snapshot that suits this item in particular comes first."""
    query = unit([1, 0, 0])
    gallery = unit([0.62, 0.55, 0.55], [0.6, -0.5, -0.6])
    reference = unit([0, 1, 0], [0, 0, 1], [0, 0.7, 0.7])
    looks = [10, 11]
    plain = item_query_scores(query, gallery, looks, ScoringSettings())
    assert plain[0, 0] > plain[0, 1]
    st = ScoringSettings(item_hub_weight=0.5, item_hub_temperature=0.1)
    corrected = item_query_scores(query, gallery, looks, st, hub_reference=reference)
    np.testing.assert_allclose(corrected, plain - 0.5 * softmax_hubness(gallery, reference, 0.1)[None], atol=1e-6)
    assert corrected[0, 1] > corrected[0, 0]
    # off, or no reference (an older model): unchanged
    np.testing.assert_allclose(item_query_scores(query, gallery, looks, st), plain)
    np.testing.assert_allclose(item_query_scores(query, gallery, looks, ScoringSettings(), hub_reference=reference),
                               plain)


def test_ranker_hub_reference_defaults_to_the_known_looks_items():
    ds, vecs = tiny_dataset()
    st = ScoringSettings(item_hub_weight=1.0, item_hub_temperature=0.1)
    ranker = ScoringRanker(vecs, ds, known_look_ids=[1], settings=st)
    np.testing.assert_allclose(ranker.hub_reference, np.stack([vecs["1_0_reco.jpg"], vecs["1_1_reco.jpg"]]))
    i2s = build_tasks(ds, {2, 3})[1]
    assert i2s.direction == "item_to_snapshots"
    plain = ScoringRanker(vecs, ds, known_look_ids=[1]).scores(i2s)
    hub = softmax_hubness(np.stack([vecs[n] for n in i2s.gallery]), ranker.hub_reference, 0.1)
    np.testing.assert_allclose(ranker.scores(i2s), plain - hub[None], atol=1e-6)
    given = np.stack([vecs["3_0_reco.jpg"]])
    other = ScoringRanker(vecs, ds, known_look_ids=[1], settings=st, hub_reference=given)
    np.testing.assert_allclose(other.hub_reference, given)


def test_centred_queries_by_hand():
    q = unit([1, 1])
    own, other = np.array([0.0, 1.0], np.float32), np.array([0.5, 0.0], np.float32)
    np.testing.assert_allclose(centred_queries(q, "off", own, other), q, atol=1e-6)
    np.testing.assert_allclose(centred_queries(q, "centre", own, other), unit([0.7071068, 0.7071068 - 1]),
                               atol=1e-6)
    np.testing.assert_allclose(centred_queries(q, "translate", own, other),
                               unit([0.7071068 + 0.5, 0.7071068 - 1]), atol=1e-6)
    with pytest.raises(ValueError, match="unknown centring mode 'middle'"):
        centred_queries(q, "middle", own, other)


def test_snapshot_centring_moves_only_the_query_and_changes_the_order():
    """A snapshot query shares a direction with every snapshot (the mean); centred, what is left of it picks the
    item, and the score is the plain cosine of the moved query with the gallery as stored."""
    q = unit([1.0, 0.2, 0.0])
    g = unit([1, 0, 0], [0, 1, 0.3])
    means = DomainMeans(snapshot=np.array([0.9, 0, 0], np.float32), item=np.array([0, 0, 0.5], np.float32))
    plain = score_matrix(q, g, ScoringSettings())
    st = ScoringSettings(snapshot_centring="centre")
    moved = snapshot_queries(q, st, means)
    np.testing.assert_allclose(score_matrix(q, g, st, domain_means=means), moved @ g.T, atol=1e-6)
    assert np.argmax(plain[0]) == 0 and np.argmax(moved @ g.T) == 1
    # without the means (an older model) nothing moves
    np.testing.assert_allclose(score_matrix(q, g, st), plain, atol=1e-6)


def test_item_centring_moves_the_query_before_link_expansion():
    q = unit([1, 1, 0])
    known = unit([0, 0, 1])
    links = np.ones((1, 1), np.float32)
    means = DomainMeans(snapshot=np.array([0, 0, 0.2], np.float32), item=np.array([0.6, 0, 0], np.float32))
    st = ScoringSettings(item_centring="centre", item_link_qe=1.0)
    expected = link_query_expansion(centred_queries(q, "centre", means.item), known, links, 1.0)
    np.testing.assert_allclose(expanded_item_queries(q, st, known, links, means), expected, atol=1e-6)
    g = unit([1, 0, 0], [0, 1, 0])
    np.testing.assert_allclose(item_query_scores(q, g, [1, 2], st, known_snapshot_vecs=known, query_links=links,
                                                 domain_means=means), expected @ g.T, atol=1e-6)


def test_ranker_domain_means_default_to_the_known_looks():
    ds, vecs = tiny_dataset()
    st = ScoringSettings(snapshot_centring="centre")
    ranker = ScoringRanker(vecs, ds, known_look_ids=[1], settings=st)
    np.testing.assert_allclose(ranker.domain_means.snapshot, vecs["1_0_part.jpg"])
    np.testing.assert_allclose(ranker.domain_means.item, (vecs["1_0_reco.jpg"] + vecs["1_1_reco.jpg"]) / 2)
    assert ScoringRanker(vecs, ds, known_look_ids=[1]).domain_means is None  # centring off: nothing computed
    s2i = build_tasks(ds, {2, 3})[0]
    q = np.stack([vecs[x.name] for x in s2i.queries])
    g = np.stack([vecs[n] for n in s2i.gallery])
    expected = snapshot_queries(q, st, ranker.domain_means) @ g.T
    np.testing.assert_allclose(ranker.scores(s2i), expected, atol=1e-6)
