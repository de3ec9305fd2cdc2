"""One scoring function for every retrieval direction (pure numpy, no Django).

Used by the evaluation ranker (:mod:`ml.retrieval.ranker`) and by the platform's
live queries, so what is measured is what is served.

    settings = ScoringSettings(look_transfer_weight=0.5)
    scores = score_matrix(query_vecs, gallery_vecs, settings,
                          known_snapshot_vecs=S, known_links=L)   # (Q, G)

* ``query_vecs`` ``(Q, D)``, ``gallery_vecs`` ``(G, D)``: L2-normalised descriptors.
* ``known_snapshot_vecs`` ``(S, D)``: snapshots of KNOWN looks only (the
  catalogue's history); ``known_links`` ``(S, G)`` 0/1 (dense or scipy sparse):
  ``L[s, g] = 1`` when a known look of snapshot ``s`` links gallery entry ``g``.
  Never pass links of test looks / of looks the query belongs to.

Steps, each optional (see :class:`ScoringSettings`):

0. **query centring** (``snapshot_centring`` / ``item_centring``): the query moved by its kind's mean
   (:func:`centred_queries`, the model's :class:`DomainMeans`); only the query moves, so a nearest-neighbour
   fetch with the moved query finds exactly the best direct scores.
1. **DBA** on the gallery (``dba_k`` neighbours within the gallery).
2. **query expansion**: AQE (``qe_alpha == 0``) or alpha-QE over the gallery
   (``qe_k`` neighbours).
3. direct score = cosine(expanded query, augmented gallery).
4. **look transfer** (snapshot -> items): blend with
   :func:`ml.retrieval.postprocess.look_transfer_scores` through the known
   snapshots most similar to the query (``lt_weight``, ``lt_top_k``, ``lt_reduce``).
5. **popularity prior** (``pop_weight``): items linked by many known looks score higher.

For item -> snapshots, :func:`snapshot_gallery_transfer` is the mirror image:
a gallery snapshot scores high for a query item when known snapshots similar to
it belong to looks that link that item (weight ``item_transfer_weight``), and
:func:`link_query_expansion` first adds to an item query the known snapshots that
wear it (weight ``item_link_qe``); :func:`pool_by_look` lets the photos of one look
share their best score (weight ``look_pooling``).

All of it is one function, :func:`item_query_scores`, which the evaluation ranker and the platform's item ->
looks search both call (the platform with pgvector candidates as the gallery):

    scores = item_query_scores(item_vecs, snapshot_vecs, look_of_each_gallery_snapshot, settings,
                               known_snapshot_vecs=S, query_links=L_items)
    looks = ranked_looks(scores, look_of_each_gallery_snapshot)   # [(look, best photo), ...] per query
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np

from .postprocess import alpha_query_expansion, database_side_augmentation, look_transfer_scores

__all__ = ["ScoringSettings", "DomainMeans", "CENTRING_MODES", "centred_queries", "snapshot_queries", "score_matrix", "popularity_prior", "hubness", "softmax_hubness", "snapshot_gallery_transfer", "normalise",
           "link_query_expansion", "expanded_item_queries", "item_query_scores", "pool_by_look", "ranked_indices",
           "ranked_looks"]


def normalise(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D matrix, got shape {x.shape}")
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(n, 1e-12)).astype(np.float32)


@dataclass
class ScoringSettings:
    """Post-processing settings (stored in a model's ``card.json``)."""

    qe: bool = False            # query expansion over the gallery
    qe_k: int = 2
    qe_alpha: float = 0.0       # 0: AQE, > 0: alpha-QE
    dba: bool = False           # database-side augmentation of the gallery
    dba_k: int = 2
    lt_weight: float = 0.0      # look transfer weight (snapshot -> items); 0 = off
    lt_top_k: int = 10
    lt_reduce: str = "max"      # "max" or "weighted"
    item_transfer_weight: float = 0.0  # symmetric transfer for item -> snapshots; 0 = off
    item_transfer_top_k: int = 10  # 0: all known snapshots
    csls_k: int = 0             # hubness correction: - csls_weight * mean top-k sim of each gallery
    csls_weight: float = 0.5    #   vector to the reference set (the query kind); 0 = off
    pop_weight: float = 0.0     # prior: + w * log(1 + known looks linking the item) / log(1 + max)
    item_link_qe: float = 0.0   # item -> snapshots: + w * mean of the known snapshots wearing the item; 0 = off
    item_hub_weight: float = 0.0  # item -> snapshots: - w * each snapshot's inverted-softmax hubness against
    item_hub_temperature: float = 0.1  #   the model's reference items (softmax_hubness); 0 = off
    look_pooling: float = 0.0   # item -> snapshots: blend each snapshot's score with its look's best; 0 = off
    diversity: float = 0.0      # snapshot -> items: variety among the first results (MMR weight); 0 = off
    diversity_depth: int = 12   #   ... chosen from this many best-scored items
    diversity_shown: int = 6    #   ... for the first this many places (what a page shows)
    snapshot_centring: str = "off"  # snapshot queries moved before scoring (centred_queries): "off", "centre",
    item_centring: str = "off"      #   "translate"; item queries the same, with the kinds' roles swapped

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> "ScoringSettings":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in names})


#: How a query is moved before it is scored (:func:`centred_queries`)
CENTRING_MODES = ("off", "centre", "translate")


@dataclass(frozen=True)
class DomainMeans:
    """The mean descriptor of each kind of image over a model's known looks: its street snapshots and its
    product photos (each item once).  A model ships them (``domain_means.npz``) as it ships its reference
    items; the evaluation computes the same from the known looks when a model has none."""

    snapshot: np.ndarray
    item: np.ndarray

    @classmethod
    def of(cls, snapshot_vecs, item_vecs) -> "DomainMeans":
        return cls(snapshot=normalise(snapshot_vecs).mean(axis=0).astype(np.float32),
                   item=normalise(item_vecs).mean(axis=0).astype(np.float32))


def centred_queries(query_vecs, mode: str, own_mean=None, other_mean=None) -> np.ndarray:
    """Queries moved by their kind's mean before scoring, renormalised.

    ``"centre"``: ``q - mean(own kind)`` (what every query of that kind shares says nothing about which
    results suit it); ``"translate"``: ``q - mean(own kind) + mean(gallery kind)`` (the query carried into the
    gallery's domain); ``"off"``: unchanged.  Only the query moves: the gallery's descriptors stay as stored,
    so pgvector's nearest rows to the moved query are exactly the best-scored by this step (a candidate fetch
    with no approximation)."""
    q = normalise(query_vecs)
    if mode not in CENTRING_MODES:
        raise ValueError(f"unknown centring mode {mode!r} (expected one of {', '.join(CENTRING_MODES)})")
    if mode == "off" or own_mean is None or len(q) == 0:
        return q
    moved = q - np.asarray(own_mean, np.float32)[None]
    if mode == "translate" and other_mean is not None:
        moved = moved + np.asarray(other_mean, np.float32)[None]
    return normalise(moved)


def snapshot_queries(query_vecs, settings: ScoringSettings | None = None,
                     domain_means: DomainMeans | None = None) -> np.ndarray:
    """Snapshot queries as :func:`score_matrix` scores them (``settings.snapshot_centring``).  The platform
    fetches its candidates (items, and the known snapshots of look transfer) with these vectors."""
    s = settings or ScoringSettings()
    if domain_means is None:
        return normalise(query_vecs)
    return centred_queries(query_vecs, s.snapshot_centring, domain_means.snapshot, domain_means.item)


def _expand_and_score(q: np.ndarray, g: np.ndarray, s: ScoringSettings) -> np.ndarray:
    if s.dba and s.dba_k > 0 and len(g) > 1:
        g = database_side_augmentation(g, s.dba_k)
    if s.qe and s.qe_k > 0 and len(g) > 0:
        q = alpha_query_expansion(q, g, s.qe_k, alpha=s.qe_alpha)
    return q @ g.T


def popularity_prior(item_popularity) -> np.ndarray:
    """``log(1 + n) / log(1 + max n)`` of the number of known looks linking each item (0..1)."""
    n = np.asarray(item_popularity, dtype=np.float32)
    top = float(n.max()) if n.size else 0.0
    return (np.log1p(n) / np.log1p(top)).astype(np.float32) if top > 0 else np.zeros_like(n)


def hubness(vectors, reference, top_k: int) -> np.ndarray:
    """Mean similarity of each row of ``vectors`` to its ``top_k`` nearest rows of ``reference``."""
    from .postprocess import top_k_neighbours

    if len(reference) == 0 or top_k <= 0:
        return np.zeros(len(vectors), np.float32)
    _, sims = top_k_neighbours(normalise(vectors), normalise(reference), top_k)
    return sims.mean(axis=1).astype(np.float32)


def softmax_hubness(vectors, reference, temperature: float, chunk: int = 4096) -> np.ndarray:
    """``tau * log sum_r exp(<v, r> / tau)`` of each row ``v`` of ``vectors`` over the (unit) rows of ``reference``.

    The normaliser of the inverted softmax (Smith et al. 2017): a snapshot that is close to many items (a
    plain street photo that every product resembles a little) has a large one.  Subtracting it ranks a
    gallery snapshot by how much more the query item suits it than the reference items do, which is what
    stops the same few photos from crowding every item's list.  A smooth CSLS (:func:`hubness` averages the
    top-k instead); its reference is fixed with the model (the items it was trained on), so it costs
    ``len(reference)`` dot products per scored snapshot and does not grow with the catalogue."""
    v = normalise(vectors)
    # the reference's rows are unit vectors already (the export writes them so, the embedder and the ranker
    # load them so): normalising them again on every query would cost more than the dot products
    ref = np.asarray(reference, dtype=np.float32) if len(reference) else np.zeros((0, v.shape[1]), np.float32)
    if len(ref) == 0 or len(v) == 0:
        return np.zeros(len(v), np.float32)
    out = np.empty(len(v), np.float32)
    for start in range(0, len(v), chunk):
        sims = (v[start:start + chunk] @ ref.T) / float(temperature)
        top = sims.max(axis=1)
        out[start:start + chunk] = float(temperature) * (top + np.log(np.exp(sims - top[:, None]).sum(axis=1)))
    return out


def score_matrix(query_vecs, gallery_vecs, settings: ScoringSettings | None = None,
                 known_snapshot_vecs=None, known_links=None, item_popularity=None,
                 gallery_reference=None, domain_means: DomainMeans | None = None) -> np.ndarray:
    """Scores ``(Q, G)`` of snapshot -> items (or any plain query -> gallery direction).

    Look transfer runs only when ``settings.lt_weight > 0`` and known snapshots
    with links are given.  ``item_popularity`` ``(G,)``: how many known looks link
    each gallery item; with ``settings.pop_weight > 0`` it adds
    ``pop_weight * popularity_prior(item_popularity)`` (an item experts link often
    is a likelier recommendation).  ``gallery_reference``: vectors of the query kind
    (e.g. the known snapshots for an item gallery, the catalogue items for a snapshot
    gallery); with ``settings.csls_k > 0`` each gallery entry's direct score is lowered
    by ``csls_weight`` times its hubness (CSLS, Lample et al. 2018), so entries that are
    close to everything stop crowding every list.  ``domain_means``: with
    ``settings.snapshot_centring`` on, the queries are first moved by :func:`snapshot_queries`
    (look transfer then finds its known snapshots with the moved query too).  Higher is better.
    """
    s = settings or ScoringSettings()
    q = snapshot_queries(query_vecs, s, domain_means)
    g = normalise(gallery_vecs)
    if len(q) == 0 or len(g) == 0:
        return np.zeros((len(q), len(g)), np.float32)
    direct = _expand_and_score(q, g, s)
    if s.csls_k > 0 and s.csls_weight and gallery_reference is not None:
        direct = direct - s.csls_weight * hubness(g, gallery_reference, s.csls_k)[None, :]
    if (s.lt_weight > 0 and known_snapshot_vecs is not None and known_links is not None
            and len(known_snapshot_vecs) > 0):
        links = known_links
        if links.shape != (len(known_snapshot_vecs), len(g)):
            raise ValueError(f"known_links shape {links.shape} != "
                             f"({len(known_snapshot_vecs)}, {len(g)})")
        direct = look_transfer_scores(q, normalise(known_snapshot_vecs), links, direct,
                                      weight=s.lt_weight, top_k=s.lt_top_k, reduce=s.lt_reduce)
    if s.pop_weight > 0 and item_popularity is not None:
        pop = np.asarray(item_popularity).reshape(-1)
        if pop.shape != (len(g),):
            raise ValueError(f"item_popularity shape {pop.shape} != ({len(g)},)")
        direct = direct + s.pop_weight * popularity_prior(pop)[None, :]
    return direct.astype(np.float32)


def link_query_expansion(query_item_vecs, known_snapshot_vecs, known_links, weight: float) -> np.ndarray:
    """Item queries expanded with the known snapshots whose looks link them.

    ``q' = normalise(q + weight * mean_{t: L[t, q] = 1} t)``; an item no known look links is
    unchanged.  ``known_links`` ``(S_known, Q)`` 0/1 (dense or scipy sparse).  The street photos
    that already wear an item show it the way the gallery's street photos will, which the
    product photo alone does not.
    """
    q = normalise(query_item_vecs)
    if weight <= 0 or known_snapshot_vecs is None or known_links is None or len(known_snapshot_vecs) == 0:
        return q
    links = known_links.toarray() if hasattr(known_links, "toarray") else np.asarray(known_links, np.float32)
    if links.shape != (len(known_snapshot_vecs), len(q)):
        raise ValueError(f"known_links shape {links.shape} != ({len(known_snapshot_vecs)}, {len(q)})")
    counts = links.sum(axis=0)
    mean = (links.T @ normalise(known_snapshot_vecs)) / np.maximum(counts, 1.0)[:, None]
    return normalise(q + float(weight) * mean)


def expanded_item_queries(query_item_vecs, settings: ScoringSettings | None = None, known_snapshot_vecs=None,
                          query_links=None, domain_means: DomainMeans | None = None) -> np.ndarray:
    """Item queries moved by ``settings.item_centring`` (:func:`centred_queries`, with ``domain_means``),
    then after link query expansion with their own links (``query_links`` ``(S, Q)``), as
    :func:`item_query_scores` scores them.  The platform fetches its candidates with these vectors."""
    s = settings or ScoringSettings()
    q = normalise(query_item_vecs)
    if domain_means is not None:
        q = centred_queries(q, s.item_centring, domain_means.item, domain_means.snapshot)
    if known_snapshot_vecs is None or len(known_snapshot_vecs) == 0 or len(q) == 0 or query_links is None:
        return q
    return link_query_expansion(q, normalise(known_snapshot_vecs), query_links, s.item_link_qe)


def item_query_scores(query_item_vecs, gallery_snapshot_vecs, gallery_looks, settings: ScoringSettings | None = None,
                      known_snapshot_vecs=None, query_links=None, gallery_reference=None,
                      hub_reference=None, domain_means: DomainMeans | None = None) -> np.ndarray:
    """Scores ``(Q, G)`` of item queries against snapshots: the one recipe of item -> snapshots / looks.

    1. :func:`expanded_item_queries`: the query moved by ``settings.item_centring`` (``domain_means``),
       link query expansion with the query's own links (``query_links``
       ``(S, Q)``: known snapshot ``s``'s look links query ``q``; an upload recognised as a catalogue product
       has that product's);
    2. cosine (+ QE/DBA/CSLS of :func:`score_matrix`), minus ``item_hub_weight`` times each gallery
       snapshot's :func:`softmax_hubness` against ``hub_reference`` ``(R, D)`` (the model's reference items),
       then :func:`snapshot_gallery_transfer`;
    3. :func:`pool_by_look` over ``gallery_looks`` ``(G,)``.
    ``known_snapshot_vecs`` ``(S, D)``: snapshots of known looks, never the gallery's own test photos.
    """
    s = settings or ScoringSettings()
    q = normalise(query_item_vecs)
    g = normalise(gallery_snapshot_vecs)
    if len(q) == 0 or len(g) == 0:
        return np.zeros((len(q), len(g)), np.float32)
    expanded = expanded_item_queries(q, s, known_snapshot_vecs, query_links, domain_means)
    scores = score_matrix(expanded, g, s, gallery_reference=gallery_reference)
    if s.item_hub_weight > 0 and hub_reference is not None and len(hub_reference) > 0:
        scores = scores - s.item_hub_weight * softmax_hubness(g, hub_reference, s.item_hub_temperature)[None, :]
    if known_snapshot_vecs is not None and len(known_snapshot_vecs) > 0 and query_links is not None:
        scores = snapshot_gallery_transfer(q, g, scores, s, known_snapshot_vecs=normalise(known_snapshot_vecs),
                                           known_links=query_links)
    return pool_by_look(scores, gallery_looks, s.look_pooling)


def ranked_looks(scores, gallery_looks) -> list[list[tuple[object, int]]]:
    """Per query, the looks by their best-scored photo: ``[(look, index of that photo), ...]``, best first.

    The same order as collapsing the photo ranking to looks (a look at the rank of its first photo), which
    is how the evaluation scores item -> looks (ties keep gallery order)."""
    scores = np.asarray(scores, dtype=np.float32)
    looks = list(gallery_looks)
    out = []
    for row in np.argsort(-scores, axis=1, kind="stable"):
        seen, ranked = set(), []
        for j in row.tolist():
            if looks[j] not in seen:
                seen.add(looks[j])
                ranked.append((looks[j], j))
        out.append(ranked)
    return out


def pool_by_look(scores, gallery_looks, weight: float) -> np.ndarray:
    """Gallery snapshots of one look share their best score.

    ``scores`` ``(Q, G)``; ``gallery_looks`` ``(G,)``: the look of each gallery snapshot.
    ``out[q, g] = (1 - weight) * scores[q, g] + weight * max_{g' in look(g)} scores[q, g']``.
    A look is one post: its photos show the same outfit from different distances, and a
    product that one of them shows clearly is worn in all of them.  ``weight = 1`` ranks
    every look by its best photo, as the platform's item -> looks search does.
    """
    scores = np.asarray(scores, dtype=np.float32)
    looks = np.asarray(gallery_looks)
    if looks.shape != (scores.shape[1],):
        raise ValueError(f"gallery_looks shape {looks.shape} != ({scores.shape[1]},)")
    if weight <= 0 or scores.size == 0:
        return scores
    best = np.empty_like(scores)
    for look in np.unique(looks):
        cols = np.flatnonzero(looks == look)
        best[:, cols] = scores[:, cols].max(axis=1, keepdims=True)
    return ((1.0 - weight) * scores + weight * best).astype(np.float32)


def snapshot_gallery_transfer(query_item_vecs, gallery_snapshot_vecs, direct_scores, settings,
                              known_snapshot_vecs=None, known_links=None) -> np.ndarray:
    """Item -> snapshots with the mirror image of look transfer.

    A gallery snapshot ``s`` scores for query item ``q`` as high as the most similar
    known snapshot ``t`` (among the ``lt_top_k`` nearest to ``s``) whose look links
    ``q``: ``T[q, s] = max_{t in N(s), L[t, q] = 1} max(<s, t>, 0)``, i.e. the
    transpose of :func:`look_transfer_scores` with the gallery snapshots as queries
    and the query items as its gallery.  ``known_links`` ``(S_known, Q)``.
    Blended as ``(1 - w) * direct + w * T`` with ``w = settings.item_transfer_weight``.
    """
    s = settings or ScoringSettings()
    direct = np.asarray(direct_scores, dtype=np.float32)
    if (s.item_transfer_weight <= 0 or known_snapshot_vecs is None or known_links is None
            or len(known_snapshot_vecs) == 0 or direct.size == 0):
        return direct
    gs = normalise(gallery_snapshot_vecs)
    blended_t = look_transfer_scores(gs, normalise(known_snapshot_vecs), known_links, direct.T,
                                     weight=s.item_transfer_weight, top_k=s.item_transfer_top_k or None,
                                     reduce=s.lt_reduce)
    return np.ascontiguousarray(blended_t.T, dtype=np.float32)


def ranked_indices(scores, settings: ScoringSettings | None = None, gallery_vecs=None) -> np.ndarray:
    """Gallery indices ``(Q, G)`` of each query's ranking: by decreasing score (stable), and with
    ``settings.diversity > 0`` and ``gallery_vecs`` given, the first ``diversity_shown`` places filled
    for variety from the best ``diversity_depth`` entries by maximal marginal relevance (Carbonell &
    Goldstein, 1998).

    MMR picks, one at a time among those best-scored entries, the one maximising
    ``(1 - diversity) * s_i - diversity * max_{j picked} <g_i, g_j>`` with ``s`` the scores min-max
    scaled to [0, 1] over the entries considered.  Six puffer jackets are one guess repeated; a jacket,
    trousers and shoes are three guesses, and a look links items of several kinds.

    Only *which* entries are shown first is MMR's choice: they are listed by score, and every other
    entry keeps its score order after them (measured on five inner folds: the same hit@6 as listing
    them in MMR's pick order, and most of the mAP that order loses comes back, docs/RESULTS.md).
    """
    scores = np.asarray(scores, dtype=np.float32)
    order = np.argsort(-scores, axis=1, kind="stable")
    s = settings or ScoringSettings()
    depth = min(int(s.diversity_depth), scores.shape[1])
    shown = min(int(s.diversity_shown), depth)
    if s.diversity <= 0 or gallery_vecs is None or shown < 1 or depth < 2:
        return order
    g = normalise(gallery_vecs)
    for row in range(len(order)):
        top = order[row, :depth]
        relevance = scores[row, top]
        span = float(relevance.max() - relevance.min())
        relevance = (relevance - relevance.min()) / span if span > 0 else np.zeros_like(relevance)
        similarity = g[top] @ g[top].T
        redundancy = np.full(depth, -np.inf, np.float32)  # no entry picked yet: no penalty
        left = list(range(depth))
        picked = []
        for _ in range(shown):
            penalty = np.where(np.isfinite(redundancy[left]), redundancy[left], 0.0)
            value = (1.0 - s.diversity) * relevance[left] - s.diversity * penalty
            best = left[int(np.argmax(value))]
            picked.append(best)
            left.remove(best)
            redundancy = np.maximum(redundancy, similarity[best])
        # positions in ``top`` are already in score order: sorting them lists each group by score
        order[row, :depth] = top[sorted(picked) + left]
    return order
