"""import_looks on real sample looks: dedup by content hash, idempotency, bad files skipped by name."""
import hashlib

import pytest
from django.core.management import call_command

from recommender.models import Descriptor, Item, Look, LookItem, Snapshot
from tests.conftest import copy_looks

# Looks 149 and 288 of the sample data share two item files (same bytes under different names).
SHARED_ITEM_LOOKS = (149, 288)


def distinct_item_hashes(folder):
    return {hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.glob("*_reco.*")}


@pytest.fixture
def two_looks(sample_dir, tmp_path):
    return copy_looks(sample_dir, SHARED_ITEM_LOOKS, tmp_path / "looks")


@pytest.mark.django_db
def test_import_deduplicates_items_by_content(two_looks, active_version):
    item_files = list(two_looks.glob("*_reco.*"))
    hashes = distinct_item_hashes(two_looks)
    assert len(hashes) < len(item_files), "the chosen looks must share an item"

    call_command("import_looks", str(two_looks), verbosity=0)

    assert Look.objects.count() == 2
    assert Snapshot.objects.count() == len(list(two_looks.glob("*_part.*")))
    assert set(Item.objects.values_list("sha256", flat=True)) == hashes
    shared = [item for item in Item.objects.all() if item.looks.count() == 2]
    assert shared, "a shared item is linked to both looks"
    # every image has a pending descriptor under the active version
    assert Descriptor.objects.filter(model_version=active_version).count() == Snapshot.objects.count() + len(hashes)


@pytest.mark.django_db
def test_second_import_adds_nothing(two_looks, active_version):
    call_command("import_looks", str(two_looks), verbosity=0)
    before = (Look.objects.count(), Snapshot.objects.count(), Item.objects.count(), LookItem.objects.count(),
              Descriptor.objects.count())
    call_command("import_looks", str(two_looks), verbosity=0)
    after = (Look.objects.count(), Snapshot.objects.count(), Item.objects.count(), LookItem.objects.count(),
             Descriptor.objects.count())
    assert after == before


@pytest.mark.django_db
def test_bad_files_are_reported_and_skipped(two_looks, active_version, capsys):
    good_reco = next(two_looks.glob("149_*_reco.jpg")).read_bytes()
    (two_looks / "149_90_reco.jpg").write_bytes(good_reco[: len(good_reco) // 2])  # truncated
    (two_looks / "149_91_reco.jpg").write_bytes(b"")  # empty
    (two_looks / "149_92_reco.jpg").write_bytes(b"this is not an image")  # not an image
    (two_looks / "149_93_reco.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)  # corrupt PNG

    call_command("import_looks", str(two_looks), verbosity=0)

    err = capsys.readouterr().err
    for name in ("149_90_reco.jpg", "149_91_reco.jpg", "149_92_reco.jpg", "149_93_reco.png"):
        assert name in err
    stored = set(Item.objects.values_list("original_name", flat=True))
    assert not stored & {"149_90_reco.jpg", "149_91_reco.jpg", "149_92_reco.jpg", "149_93_reco.png"}
    good = distinct_item_hashes(two_looks) - {
        hashlib.sha256(p.read_bytes()).hexdigest() for p in two_looks.glob("149_9?_reco.*")
    }
    assert set(Item.objects.values_list("sha256", flat=True)) == good


@pytest.mark.django_db
def test_manifest_import_with_style_and_category(sample_dir, tmp_path, active_version):
    snapshot, item = sample_dir / "149_0_part.jpg", sample_dir / "149_0_reco.jpg"
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        "look,role,path,style,category\n"
        f"summer-1,snapshot,{snapshot},simple/casual,\n"
        f"summer-1,item,{item},simple/casual,shoes\n"
    )
    call_command("import_looks", str(tmp_path), manifest=str(manifest), verbosity=0)
    look = Look.objects.get(key="summer-1")
    assert look.style.name == "simple/casual"
    assert look.items.get().category.name == "shoes"
    assert look.snapshots.count() == 1


@pytest.mark.django_db
def test_missing_folder_is_a_clear_error(tmp_path, active_version):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="no such folder"):
        call_command("import_looks", str(tmp_path / "absent"), verbosity=0)
    with pytest.raises(CommandError, match="no images"):
        call_command("import_looks", str(tmp_path), verbosity=0)
