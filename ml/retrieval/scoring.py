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

    expanded = link_query_expansion(item_vecs, S, L_items, settings.item_link_qe)
    scores = score_matrix(expanded, snapshot_vecs, settings)           # direct (+QE/DBA)
    scores = snapshot_gallery_transfer(item_vecs, snapshot_vecs, scores, settings,
                                       known_snapshot_vecs=S, known_links=L_items)
    scores = pool_by_look(scores, look_of_each_gallery_snapshot, settings.look_pooling)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np

from .postprocess import alpha_query_expansion, database_side_augmentation, look_transfer_scores

__all__ = ["ScoringSettings", "score_matrix", "popularity_prior", "hubness", "snapshot_gallery_transfer", "normalise",
           "soft_links", "link_query_expansion", "pool_by_look", "ranked_indices"]


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
    lt_items: bool = False      # known items join the known snapshots (their links: co-linked items)
    item_transfer_weight: float = 0.0  # symmetric transfer for item -> snapshots; 0 = off
    item_transfer_top_k: int = 10  # 0: all known snapshots
    csls_k: int = 0             # hubness correction: - csls_weight * mean top-k sim of each gallery
    csls_weight: float = 0.5    #   vector to the reference set (the query kind); 0 = off
    pop_weight: float = 0.0     # prior: + w * log(1 + known looks linking the item) / log(1 + max)
    lt_soft_power: float = 0.0  # soft look transfer links (snapshot -> items); 0 = off, see soft_links
    item_transfer_soft_power: float = 0.0  # soft links for the item -> snapshots transfer; 0 = off
    item_link_qe: float = 0.0   # item -> snapshots: + w * mean of the known snapshots wearing the item; 0 = off
    look_pooling: float = 0.0   # item -> snapshots: blend each snapshot's score with its look's best; 0 = off
    diversity: float = 0.0      # snapshot -> items: variety among the first results (MMR weight); 0 = off
    diversity_depth: int = 12   #   ... chosen from this many best-scored items
    diversity_shown: int = 6    #   ... for the first this many places (what a page shows)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> "ScoringSettings":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in names})


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


def soft_links(known_item_links, known_item_vecs, target_vecs, power: float) -> np.ndarray:
    """Soft look-transfer links ``(S, G)``: how well a known snapshot's look matches each target item.

    ``known_item_links`` ``(S, I)`` 0/1: known snapshot ``s``'s look links known item ``j``;
    ``known_item_vecs`` ``(I, D)``, ``target_vecs`` ``(G, D)``.  ``A[s, g] = max_{j: L[s, j] = 1}
    max(<j, g>, 0) ** power`` (0 for a snapshot with no linked item): a target item that is (a copy of)
    a linked item gets 1, one that resembles a linked item gets less, so items no known look links
    still receive transferred scores.  Larger ``power`` is sharper (``inf`` would be the hard links).
    """
    links = known_item_links.toarray() if hasattr(known_item_links, "toarray") else np.asarray(known_item_links)
    n_s = links.shape[0]
    out = np.zeros((n_s, len(target_vecs)), np.float32)
    if n_s == 0 or len(target_vecs) == 0 or links.shape[1] == 0:
        return out
    sims = np.maximum(normalise(known_item_vecs) @ normalise(target_vecs).T, 0.0) ** float(power)
    for i in range(n_s):
        cols = np.flatnonzero(links[i])
        if len(cols):
            out[i] = sims[cols].max(axis=0)
    return out


def score_matrix(query_vecs, gallery_vecs, settings: ScoringSettings | None = None,
                 known_snapshot_vecs=None, known_links=None, item_popularity=None,
                 gallery_reference=None, known_item_vecs=None, known_item_links=None) -> np.ndarray:
    """Scores ``(Q, G)`` of snapshot -> items (or any plain query -> gallery direction).

    Look transfer runs only when ``settings.lt_weight > 0`` and known snapshots
    with links are given.  ``item_popularity`` ``(G,)``: how many known looks link
    each gallery item; with ``settings.pop_weight > 0`` it adds
    ``pop_weight * popularity_prior(item_popularity)`` (an item experts link often
    is a likelier recommendation).  ``gallery_reference``: vectors of the query kind
    (e.g. the known snapshots for an item gallery, the catalogue items for a snapshot
    gallery); with ``settings.csls_k > 0`` each gallery entry's direct score is lowered
    by ``csls_weight`` times its hubness (CSLS, Lample et al. 2018), so entries that are
    close to everything stop crowding every list.  ``known_item_vecs`` ``(I, D)`` and
    ``known_item_links`` ``(S, I)`` (known snapshot -> known items its look links): with
    ``settings.lt_soft_power > 0`` look transfer uses :func:`soft_links` to the gallery instead of
    ``known_links``.  Higher is better.
    """
    s = settings or ScoringSettings()
    q = normalise(query_vecs)
    g = normalise(gallery_vecs)
    if len(q) == 0 or len(g) == 0:
        return np.zeros((len(q), len(g)), np.float32)
    direct = _expand_and_score(q, g, s)
    if s.csls_k > 0 and s.csls_weight and gallery_reference is not None:
        direct = direct - s.csls_weight * hubness(g, gallery_reference, s.csls_k)[None, :]
    if (s.lt_weight > 0 and known_snapshot_vecs is not None and known_links is not None
            and len(known_snapshot_vecs) > 0):
        links = known_links
        if s.lt_soft_power > 0 and known_item_vecs is not None and known_item_links is not None:
            links = soft_links(known_item_links, known_item_vecs, g, s.lt_soft_power)
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
                              known_snapshot_vecs=None, known_links=None, known_item_vecs=None,
                              known_item_links=None) -> np.ndarray:
    """Item -> snapshots with the mirror image of look transfer.

    A gallery snapshot ``s`` scores for query item ``q`` as high as the most similar
    known snapshot ``t`` (among the ``lt_top_k`` nearest to ``s``) whose look links
    ``q``: ``T[q, s] = max_{t in N(s), L[t, q] = 1} max(<s, t>, 0)``, i.e. the
    transpose of :func:`look_transfer_scores` with the gallery snapshots as queries
    and the query items as its gallery.  ``known_links`` ``(S_known, Q)``.
    Blended as ``(1 - w) * direct + w * T`` with ``w = settings.item_transfer_weight``.
    With ``settings.item_transfer_soft_power > 0`` and ``known_item_vecs`` / ``known_item_links``
    ``(S_known, I)`` given, ``L`` is replaced by :func:`soft_links` to the query items: a known
    snapshot counts for ``q`` as much as its look's best-matching item resembles ``q``.
    """
    s = settings or ScoringSettings()
    direct = np.asarray(direct_scores, dtype=np.float32)
    if (s.item_transfer_weight <= 0 or known_snapshot_vecs is None or known_links is None
            or len(known_snapshot_vecs) == 0 or direct.size == 0):
        return direct
    gs = normalise(gallery_snapshot_vecs)
    links = known_links
    if s.item_transfer_soft_power > 0 and known_item_vecs is not None and known_item_links is not None:
        links = soft_links(known_item_links, known_item_vecs, query_item_vecs, s.item_transfer_soft_power)
    blended_t = look_transfer_scores(gs, normalise(known_snapshot_vecs), links, direct.T,
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
