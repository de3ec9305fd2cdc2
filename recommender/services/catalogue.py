"""Importing looks into the catalogue: from a folder in the original layout or from a CSV manifest.

Idempotent (a second run adds nothing), deduplicates items by the SHA-256 of their bytes, and skips a file that
is not a readable image (reporting it by name) without losing the rest. Every new image gets a pending
descriptor for the active model version (and any version being re-embedded) and is queued for the workers as
the import goes (a large folder streams: one file in memory at a time, descriptors sent in chunks).
"""
import csv
import hashlib
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from django.core.files.base import ContentFile
from django.db import transaction
from tqdm import tqdm

from ml.images import ImageError, load_rgb
from ml.layout import ITEM, SNAPSHOT, parse_layout_name
from recommender.models import Category, CategorySource, Item, Look, LookItem, Snapshot, Style
from recommender.services.embedding import create_pending_descriptors, queue_embedding
from recommender.services.reembedding import versions_receiving_new_images

MANIFEST_COLUMNS = ("look", "role", "path", "style", "category")
ROLES = {"snapshot": SNAPSHOT, "part": SNAPSHOT, "item": ITEM, "reco": ITEM}


@dataclass(frozen=True)
class ImportEntry:
    look: str
    role: str  # SNAPSHOT or ITEM
    path: Path
    style: str = ""
    category: str = ""


@dataclass
class ImportReport:
    looks: int = 0
    snapshots: int = 0
    items: int = 0
    links: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)

    def summary(self) -> str:
        return (
            f"added {self.looks} looks, {self.snapshots} snapshots, {self.items} items, {self.links} links; "
            f"skipped {len(self.skipped)} files"
        )


class FolderEntries(Sequence):
    """The images of a folder in the original layout, in look order, made into ImportEntry rows one at a time:
    only their file names are held (a folder of 1M images costs its names, not 1M entries)."""

    def __init__(self, folder: Path, names: list[str]):
        self.folder, self.names = folder, names

    def __len__(self):
        return len(self.names)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return FolderEntries(self.folder, self.names[index])
        name = parse_layout_name(self.names[index])
        return ImportEntry(look=name.look, role=name.role, path=self.folder / self.names[index])


def entries_from_folder(folder: Path) -> FolderEntries:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no such folder: {folder}")
    parsed = []
    with os.scandir(folder) as found:
        for entry in found:
            name = parse_layout_name(entry.name)
            if name is not None:
                parsed.append((int(name.look) if name.look.isdigit() else name.look, name.role, entry.name))
    parsed.sort(key=lambda e: (isinstance(e[0], str), e))
    return FolderEntries(folder, [file_name for *_, file_name in parsed])


def entries_from_manifest(manifest: Path, base: Path | None = None) -> list[ImportEntry]:
    """Rows `look,role,path,style,category`; relative paths are relative to `base` (or the manifest's folder)."""
    manifest = Path(manifest)
    base = Path(base) if base else manifest.parent
    with manifest.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in ("look", "role", "path") if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{manifest}: missing columns {', '.join(missing)} (expected {','.join(MANIFEST_COLUMNS)})")
        entries = []
        for line, row in enumerate(reader, start=2):
            role = ROLES.get(row["role"].strip().lower())
            if role is None:
                raise ValueError(f"{manifest}:{line}: role must be snapshot or item, not {row['role']!r}")
            path = Path(row["path"].strip())
            entries.append(
                ImportEntry(
                    look=row["look"].strip(),
                    role=role,
                    path=path if path.is_absolute() else base / path,
                    style=(row.get("style") or "").strip(),
                    category=(row.get("category") or "").strip(),
                )
            )
    return entries


QUEUE_EVERY = 256  # new descriptors: sent to the workers as the import goes, so they start at once


def import_entries(entries: list[ImportEntry], progress: bool = False) -> ImportReport:
    """Imports the entries one file at a time (each in its own transaction; one file's bytes in memory at a
    time) and queues the new descriptors every QUEUE_EVERY, so a large folder streams into the workers."""
    report = ImportReport()
    versions = versions_receiving_new_images()
    new_descriptor_ids = []
    for entry in tqdm(entries, desc="importing", unit="file", disable=not progress):
        try:
            data = entry.path.read_bytes()
            load_rgb(io.BytesIO(data), name=entry.path.name)
        except (ImageError, OSError) as error:
            report.skipped.append((str(entry.path), str(error)))
            continue
        with transaction.atomic():
            image = _store(entry, data, report)
            if image is not None:
                for version in versions:
                    new_descriptor_ids.append(create_pending_descriptors(version, **image).id)
        if len(new_descriptor_ids) >= QUEUE_EVERY:
            queue_embedding(new_descriptor_ids)
            new_descriptor_ids = []
    queue_embedding(new_descriptor_ids)
    return report


def _store(entry: ImportEntry, data: bytes, report: ImportReport) -> dict | None:
    """Saves one file's look, image and link; returns {kind: new image} when the image is new, else None."""
    sha256 = hashlib.sha256(data).hexdigest()
    file_name = f"{sha256}{entry.path.suffix.lower()}"
    look, created = Look.objects.get_or_create(key=entry.look)
    report.looks += created
    if entry.style and look.style is None:
        look.style, _ = Style.objects.get_or_create(name=entry.style)
        look.save(update_fields=["style"])

    if entry.role == SNAPSHOT:
        if Snapshot.objects.filter(look=look, sha256=sha256).exists():
            return None
        snapshot = Snapshot(look=look, sha256=sha256, original_name=entry.path.name)
        snapshot.image.save(file_name, ContentFile(data), save=True)
        report.snapshots += 1
        return {"snapshot": snapshot}

    item = Item.objects.filter(sha256=sha256).first()
    new_item = item is None
    if new_item:
        item = Item(sha256=sha256, original_name=entry.path.name)
        if entry.category:  # the manifest's categories are hand labels (data/labels/item_categories.csv)
            item.set_category_label(Category.objects.get_or_create(name=entry.category)[0], CategorySource.HAND)
        item.image.save(file_name, ContentFile(data), save=True)
        report.items += 1
    _, linked = LookItem.objects.get_or_create(look=look, item=item)
    report.links += linked
    return {"item": item} if new_item else None
