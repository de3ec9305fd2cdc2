"""Both searches over HTTP on real sample looks embedded by the real worker: k results, filters honoured inside
the vector query (a filtered search still returns k when the catalogue has them)."""
import pytest
from rest_framework.test import APIClient

from recommender.models import Item, Look, Snapshot
from recommender.services.search import descriptor_of, nearest
from tests.api.conftest import STYLES, import_and_embed, upload

# Looks with one snapshot and six items each.
LOOKS = (0, 3, 6, 8, 12, 14)


@pytest.fixture
def catalogue(sample_dir, tmp_path, transactional_db, active_version, taxonomy, celery_worker_process):
    return import_and_embed(sample_dir, tmp_path, LOOKS)


def post_image(url, path, **fields):
    return APIClient().post(url, {"image": upload(path.name, path.read_bytes()), **fields}, format="multipart")


def test_snapshot_to_items(catalogue, sample_dir):
    snapshot_file = sample_dir / "0_0_part.jpg"
    response = post_image("/api/search/items/", snapshot_file)
    assert response.status_code == 200, response.content
    results = response.json()["results"]
    assert len(results) == 6
    assert set(results[0]) == {"item_id", "image_url", "score", "category"}
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    items = Item.objects.in_bulk([r["item_id"] for r in results])
    for result in results:
        item = items[result["item_id"]]
        assert result["image_url"].endswith(item.image.url) and result["image_url"].startswith("http")
        assert result["category"] == item.category.name
    # the query embedded in this process ranks like the worker's stored descriptor of the same snapshot
    stored = descriptor_of("snapshot", Snapshot.objects.get(look__key="0").id)
    assert [r["item_id"] for r in results] == [m.id for m in nearest(stored, "item", k=6)]

    assert len(post_image("/api/search/items/", snapshot_file, k=3).json()["results"]) == 3
    assert len(post_image("/api/search/items/", snapshot_file, k=50).json()["results"]) == Item.objects.count()


@pytest.mark.parametrize("category", ["shoes", "top", "hat"])
def test_category_filter_still_returns_k(catalogue, sample_dir, category):
    available = Item.objects.filter(category__name=category).count()
    assert available >= 1
    response = post_image("/api/search/items/", sample_dir / "3_0_part.jpg", category=category)
    results = response.json()["results"]
    assert {r["category"] for r in results} == {category}
    assert len(results) == min(6, available)


def test_item_to_looks(catalogue, sample_dir):
    item_file = sample_dir / "6_2_reco.jpg"
    response = post_image("/api/search/looks/", item_file)
    assert response.status_code == 200, response.content
    results = response.json()["results"]
    assert len(results) == 6 and len({r["look_id"] for r in results}) == 6
    assert set(results[0]) == {"look_id", "snapshot_url", "score", "style"}
    looks = Look.objects.in_bulk([r["look_id"] for r in results])
    for result in results:
        look = looks[result["look_id"]]
        assert result["style"] == look.style.name
        assert any(result["snapshot_url"].endswith(s.image.url) for s in look.snapshots.all())
    assert len(post_image("/api/search/looks/", item_file, k=2).json()["results"]) == 2
    # the upload is a catalogue product (the same bytes): the answer says which
    import hashlib

    product = Item.objects.get(sha256=hashlib.sha256(item_file.read_bytes()).hexdigest())
    recognised = response.json()["recognised_item"]
    assert recognised["item_id"] == product.id and recognised["match"] == "identical"
    assert recognised["image_url"].endswith(product.image.url)


def test_item_to_looks_page_says_when_the_upload_is_a_catalogue_product(catalogue, sample_dir, client):
    import hashlib

    path = sample_dir / "6_2_reco.jpg"
    page = client.post("/search/looks/", {"image": upload(path.name, path.read_bytes())})
    assert page.status_code == 200
    assert "Recognised as an item of the catalogue" in page.content.decode()
    other = sample_dir / "1_0_reco.jpg"  # look 1 is not in this catalogue
    assert not Item.objects.filter(sha256=hashlib.sha256(other.read_bytes()).hexdigest()).exists()
    page = client.post("/search/looks/", {"image": upload(other.name, other.read_bytes())})
    assert page.status_code == 200 and "Recognised as an item" not in page.content.decode()
    answer = client.post("/search/looks/?format=json", {"image": upload(other.name, other.read_bytes())}).json()
    assert answer["recognised_item"] is None and len(answer["results"]) == 6


@pytest.mark.parametrize("style", STYLES)
def test_style_filter(catalogue, sample_dir, style):
    results = post_image("/api/search/looks/", sample_dir / "6_2_reco.jpg", style=style).json()["results"]
    assert {r["style"] for r in results} == {style}
    assert len(results) == Look.objects.filter(style__name=style).count() == len(LOOKS) // 2


def test_authenticated_users_search_too(catalogue, sample_dir, make_user):
    _, client = make_user()
    path = sample_dir / "0_0_part.jpg"
    response = client.post("/api/search/items/", {"image": upload(path.name, path.read_bytes())}, format="multipart")
    assert response.status_code == 200 and len(response.json()["results"]) == 6


def test_a_query_upload_is_embedded_as_the_catalogue_embeds_the_same_file(sample_dir, tmp_path, transactional_db,
                                                                          active_version, taxonomy,
                                                                          celery_worker_process):
    """What is measured is what is served: a search decodes its upload with the function that reads catalogue
    images for embedding (ml.images.load_input_array: JPEG draft decoding, orientation and resizing in one
    pass), so an upload's descriptor is the stored one of the same file. Phone-sized photos (2,000 px and
    more) make the draft decoding matter: decoded in full and then resized, the same file gives another
    descriptor."""
    import hashlib
    import io

    import numpy as np
    from PIL import Image

    from ml.images import load_rgb
    from recommender.services.search import embed_query
    from recommender.services.uploads import check_query

    folder = tmp_path / "big"
    folder.mkdir()
    for path in sorted(sample_dir.glob("20_*.jpg")):  # a look's photos, enlarged to phone-photo sizes
        with Image.open(path) as image:
            big = image.convert("RGB").resize((image.width * 7, image.height * 7), Image.BICUBIC)
        big.save(folder / path.name, format="JPEG", quality=90)
    import_and_embed(folder, tmp_path, (20,))
    photos = sorted(folder.glob("20_*_reco.jpg"))
    assert photos and min(Image.open(p).width for p in photos) >= 2000
    for path in sorted(folder.glob("20_*_reco.jpg")):
        data = path.read_bytes()
        item = Item.objects.get(sha256=hashlib.sha256(data).hexdigest())
        stored = descriptor_of("item", item.id)
        served = embed_query(check_query(io.BytesIO(data), name=path.name))
        np.testing.assert_allclose(served, stored, atol=1e-5, err_msg=path.name)
        # the former query path (a full decode, then the resize) gives another input for such a photo
        fully_decoded = embed_query(load_rgb(io.BytesIO(data), name=path.name))
        assert np.abs(fully_decoded - stored).max() > 1e-3, path.name
