"""The first start's background training: trains on the platform's own catalogue, registers the model,
re-embeds every image with it through the real worker, and only then serves it."""
import io
import json
from pathlib import Path

import numpy as np
import pytest
from django.core.management import call_command

from ml.training import TrainConfig
from ml.retrieval.scoring import (DomainMeans, ScoringSettings, item_query_scores, ranked_indices, ranked_looks,
                                  score_matrix)
from recommender.models import Descriptor, Item, LookItem, Snapshot, TrainingJob
from recommender.services import search, training, versions
from recommender.services.training import refresh_training_job
from recommender.services.uploads import check_query
from tests.conftest import copy_looks, wait_until

LOOKS = (0, 5, 6, 10, 15, 20, 22, 25, 149, 288, 30, 35)
TINY = TrainConfig(backbone="lite0", epochs=2, P=4, K=2, views=1, patience=1, descriptor_dim=64, ensemble=1)


@pytest.fixture
def catalogue(sample_dir, tmp_path, transactional_db, active_version, celery_worker_process):
    call_command("import_looks", str(copy_looks(sample_dir, LOOKS, tmp_path / "looks")), verbosity=0)
    wait_until(lambda: not Descriptor.objects.exclude(status=Descriptor.Status.READY).exists(),
               timeout=180, message="the catalogue is embedded")


def test_initial_training_then_switch(catalogue, active_version):
    assert training.needs_initial_training()
    job = TrainingJob.objects.create()

    version = training.train_catalogue_model(job, config=TINY)

    assert version.dim == 64 and not version.is_active, "serving continues with the untrained model meanwhile"
    assert versions.active_version() == active_version
    assert not training.needs_initial_training(), "no second training while one is re-embedding"
    wait_until(lambda: refresh_training_job(TrainingJob.objects.get(pk=job.pk)).state == TrainingJob.State.DONE,
               timeout=300, message="the trained model is re-embedded and switched to")
    assert versions.active_version() == version
    images = Snapshot.objects.count() + Item.objects.count()
    assert Descriptor.objects.filter(model_version=version, status=Descriptor.Status.READY).count() == images


def test_platform_search_scores_as_the_evaluation_does(catalogue, active_version, sample_dir):
    """search_items (pgvector candidates + ml scoring) ranks exactly as score_matrix over the whole catalogue,
    with look transfer, the popularity prior and the query centring (the model's domain_means.npz) switched on
    in the model card."""
    job = TrainingJob.objects.create()
    version = training.train_catalogue_model(job, config=TINY)
    card_path = Path(version.spec) / "card.json"
    card = json.loads(card_path.read_text())
    card["postprocessing"].update(lt_weight=0.5, lt_top_k=5, lt_reduce="weighted", pop_weight=0.1, qe=False, dba=False,
                                  diversity=0.5, diversity_depth=12, snapshot_centring="centre")
    card_path.write_text(json.dumps(card))
    wait_until(lambda: refresh_training_job(TrainingJob.objects.get(pk=job.pk)).state == TrainingJob.State.DONE,
               timeout=300, message="the trained model is served")

    query_path = sample_dir / "149_0_part.jpg"
    upload = check_query(io.BytesIO(query_path.read_bytes()), name=query_path.name)  # as the views pass it
    results = search.search_items(upload, k=6)

    settings = ScoringSettings.from_dict(card["postprocessing"])
    items = list(Item.objects.order_by("id"))
    snapshots = list(Snapshot.objects.order_by("id"))
    links = np.array([[float(LookItem.objects.filter(look=s.look, item=i).exists()) for i in items] for s in snapshots])
    popularity = np.array([LookItem.objects.filter(item=i).count() for i in items], np.float32)
    query = search.embed_query(upload)
    # the upload's descriptor is the one the catalogue stores for the same file (the same decoding)
    snapshot = Snapshot.objects.get(sha256=upload.sha256)
    np.testing.assert_allclose(query, search.descriptor_of("snapshot", snapshot.id), atol=1e-5)
    item_vectors = np.stack([search.descriptor_of("item", i.id) for i in items])
    with np.load(Path(version.spec) / "domain_means.npz") as data:  # the model's means, as served
        means = DomainMeans(snapshot=data["snapshot"], item=data["item"])
    snapshot_vectors = np.stack([search.descriptor_of("snapshot", s.id) for s in snapshots])
    expected = score_matrix(
        query[None], item_vectors, settings, known_snapshot_vecs=snapshot_vectors,
        known_links=links, item_popularity=popularity, domain_means=means,
    )
    # the centring is really on: the same recipe with the query where it is scores otherwise
    unmoved = score_matrix(query[None], item_vectors, settings, known_snapshot_vecs=snapshot_vectors,
                           known_links=links, item_popularity=popularity)
    assert not np.allclose(unmoved, expected, atol=1e-3)
    order = ranked_indices(expected, settings, item_vectors)[0][:6]
    expected = expected[0]
    assert [r.item.id for r in results] == [items[i].id for i in order]
    # the six are chosen for variety among the best twelve, not simply the six best scores
    by_score = np.argsort(-expected, kind="stable")[:12]
    assert set(order) <= set(by_score)
    np.testing.assert_allclose([r.score for r in results], expected[order], atol=1e-5)
    # and look transfer is really on: without it the scores differ
    plain = ScoringSettings.from_dict({**card["postprocessing"], "lt_weight": 0.0, "pop_weight": 0.0})
    direct = score_matrix(query[None], np.stack([search.descriptor_of("item", i.id) for i in items]), plain)[0]
    assert not np.allclose(direct[order], expected[order], atol=1e-3)


def _query(path, data):
    """A query upload as the views pass it to the searches (services.uploads.check_query)."""
    return check_query(io.BytesIO(data), name=path.name)


def _search_looks_upload(path, data):
    """search_looks as the views call it: the upload's query and the SHA-256 of its bytes."""
    query = _query(path, data)
    return search.search_looks(query, k=6, sha256=query.sha256)


def test_platform_item_to_looks_scores_as_the_evaluation_does(catalogue, active_version, sample_dir, tmp_path):
    """search_looks ranks looks exactly as item_query_scores + ranked_looks over the whole catalogue (the
    evaluation's item -> looks recipe), and an upload of a catalogue product borrows its expert links."""
    import io

    from PIL import Image

    job = TrainingJob.objects.create()
    version = training.train_catalogue_model(job, config=TINY)
    card_path = Path(version.spec) / "card.json"
    card = json.loads(card_path.read_text())
    card["postprocessing"].update(item_link_qe=1.0, item_transfer_weight=0.0, look_pooling=1.0,
                                  qe=False, dba=False, csls_k=0, item_hub_weight=1.0, item_hub_temperature=0.15)
    card["recognition"] = {"near_duplicate_cosine": 0.999999}
    card_path.write_text(json.dumps(card))
    wait_until(lambda: refresh_training_job(TrainingJob.objects.get(pk=job.pk)).state == TrainingJob.State.DONE,
               timeout=300, message="the trained model is served")
    settings = ScoringSettings.from_dict(card["postprocessing"])
    snapshots = list(Snapshot.objects.order_by("id"))
    snapshot_vectors = np.stack([search.descriptor_of("snapshot", s.id) for s in snapshots])
    looks = [s.look_id for s in snapshots]
    reference = np.load(Path(version.spec) / "hub_reference.npy")  # the model's reference items, as served
    assert reference.shape[0] > 0 and reference.shape[1] == snapshot_vectors.shape[1]

    def expected(query, item=None):
        links = None
        if item is not None:  # the catalogue's links of the product: which snapshots' looks link it
            links = np.array([[float(LookItem.objects.filter(look_id=s.look_id, item=item).exists())]
                              for s in snapshots], np.float32)
        scores = item_query_scores(query[None], snapshot_vectors, looks, settings,
                                   known_snapshot_vecs=snapshot_vectors if item is not None else None,
                                   query_links=links, hub_reference=reference)[0]
        ranked = ranked_looks(scores[None], looks)[0][:6]
        return [look for look, _ in ranked], [float(scores[j]) for _, j in ranked]

    # a catalogue product, the same bytes: recognised; its links expand the query
    import hashlib

    data = (sample_dir / "149_1_reco.jpg").read_bytes()
    product = Item.objects.get(sha256=hashlib.sha256(data).hexdigest())
    found = _search_looks_upload(sample_dir / "149_1_reco.jpg", data)
    assert found.recognised is not None and found.recognised.item == product and found.recognised.match == "identical"
    query = search.embed_query(_query(sample_dir / "149_1_reco.jpg", data))
    # the upload's descriptor is the one the catalogue stores for the same file (the same decoding)
    np.testing.assert_allclose(query, search.descriptor_of("item", product.id), atol=1e-5)
    want_looks, want_scores = expected(query, product)
    assert [r.look.id for r in found.results] == want_looks
    np.testing.assert_allclose([r.score for r in found.results], want_scores, atol=1e-5)
    linked = set(LookItem.objects.filter(item=product).values_list("look_id", flat=True))
    assert found.results[0].look.id in linked, "the product's own look comes first"
    plain_looks, _ = expected(query)
    assert plain_looks != want_looks or not np.allclose(want_scores, expected(query)[1]), "the links change scores"

    # a re-encoded copy: not the same bytes; a near-duplicate only when its cosine reaches the card's threshold
    buffer = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("RGB").resize((180, 240)).save(buffer, format="JPEG", quality=70)
    copy = buffer.getvalue()
    copy_query = search.embed_query(_query(tmp_path / "copy.jpg", copy))
    cosine = float(copy_query @ search.descriptor_of("item", product.id))
    assert _search_looks_upload(tmp_path / "copy.jpg", copy).recognised is None  # threshold 0.999999
    card["recognition"] = {"near_duplicate_cosine": cosine - 1e-4}
    card_path.write_text(json.dumps(card))
    from recommender import embedders

    embedders._embedders.clear()  # the card is read when the model is loaded
    found = _search_looks_upload(tmp_path / "copy.jpg", copy)
    assert found.recognised is not None and found.recognised.item == product
    assert found.recognised.match == "near-duplicate" and found.recognised.similarity == pytest.approx(cosine, abs=1e-4)
    assert [r.look.id for r in found.results] == expected(copy_query, product)[0]

    # a photo of a product the catalogue does not hold: plain cosine over every snapshot, pooled by look
    card["recognition"] = {"near_duplicate_cosine": 0.0}  # identical bytes only
    card_path.write_text(json.dumps(card))
    embedders._embedders.clear()
    other = next(p for p in sorted(sample_dir.glob("7_*_reco.jpg"))
                 if not Item.objects.filter(sha256=hashlib.sha256(p.read_bytes()).hexdigest()).exists())
    found = _search_looks_upload(other, other.read_bytes())
    assert found.recognised is None
    other_query = search.embed_query(_query(other, other.read_bytes()))
    want_looks, want_scores = expected(other_query)
    assert [r.look.id for r in found.results] == want_looks
    np.testing.assert_allclose([r.score for r in found.results], want_scores, atol=1e-5)


def test_no_training_without_a_catalogue(transactional_db, active_version):
    assert not training.needs_initial_training()
    call_command("ensure_trained_model", verbosity=0)
    assert not TrainingJob.objects.exists()
