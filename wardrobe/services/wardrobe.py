"""A user's wardrobe (uploaded past purchases), liked looks and saved preferences.

The web pages and the REST API both call these functions; every change that affects a user's outfit
suggestions queues `wardrobe.tasks.recompute_suggestions` for that user once the transaction commits, through
fashionsite.queueing.enqueue (services never import tasks).
"""
import tempfile

from django.contrib.auth import get_user_model
from django.core.files import File
from django.db import transaction
from django.db.models import OuterRef, Subquery

from fashionsite.queueing import BULK_QUEUE, INTERACTIVE_QUEUE, enqueue
from ml.images import ImageError, load_rgb
from ml.tagging.colour import colour_words
from recommender.models import Category, CategorySource, Descriptor, Look, Style
from recommender.services.embedding import create_pending_descriptors, queue_embedding
from recommender.services.reembedding import versions_receiving_new_images
from recommender.services.uploads import MAX_REQUEST_PIXELS, UploadError, decode, read_header, stored_copy
from wardrobe.models import LikedLook, Preferences, WardrobeItem

PENDING, READY, FAILED = Descriptor.Status.PENDING.value, Descriptor.Status.READY.value, Descriptor.Status.FAILED.value


# ---------------------------------------------------------------------------------------------------- taxonomy


def taxonomy_row(model, name: str | None, what: str):
    """The Category/Style row called `name`; None for None or ""; ValueError naming an unknown name."""
    if name is None or name == "":
        return None
    row = model.objects.filter(name=name).first()
    if row is None:
        known = ", ".join(model.objects.order_by("name").values_list("name", flat=True)) or "none defined"
        raise ValueError(f"unknown {what} {name!r} (known: {known})")
    return row


# ---------------------------------------------------------------------------------------------------- wardrobe


def _checked_uploads(files):
    """Checks every file's size, format and dimensions from its header (no pixels decoded), then decodes them
    one at a time, each into its stored copy (upright, without metadata) in a temporary file: at most one
    decoded image is in memory, whatever the number of files. Any rejected file raises UploadError naming it
    (and every other rejected one)."""
    headers, problems = [], []
    for index, uploaded in enumerate(files):
        name = getattr(uploaded, "name", None) or f"file {index + 1}"
        try:
            headers.append(read_header(uploaded, name=name))
        except UploadError as error:
            problems.append(str(error))
    if problems:
        raise UploadError("; ".join(problems))
    total = sum(header.pixels for header in headers)
    if total > MAX_REQUEST_PIXELS:
        raise UploadError(
            f"the {len(headers)} photos have {total / 1e6:.0f} megapixels together; one upload takes at most "
            f"{MAX_REQUEST_PIXELS / 1e6:.0f}: send them in smaller groups"
        )
    checked = []
    try:
        for header in headers:
            upload = decode(header)
            copy = tempfile.SpooledTemporaryFile(max_size=2**20)
            copy.write(stored_copy(upload))
            copy.seek(0)
            # the garment's colour words from its pixels: a few ms on a shrunk copy
            checked.append((upload.generated_name(), upload.sha256, colour_words(upload.image), copy))
            del upload  # its decoded pixels go before the next image is decoded
    except UploadError:
        for *_, copy in checked:
            copy.close()
        raise
    return checked


def add_wardrobe_items(user, files, category: str | None = None, style: str | None = None) -> list[WardrobeItem]:
    """Checks every file, then stores each (upright, metadata removed) under its generated name with a pending
    descriptor per version receiving new images, and queues them for the workers.

    Any rejected file raises UploadError naming it (and every other rejected one), and nothing is stored.
    An unknown category or style name raises ValueError naming it.
    """
    category_row = taxonomy_row(Category, category, "category")
    style_row = taxonomy_row(Style, style, "style")
    files = list(files)
    if not files:
        raise UploadError("no image was uploaded")
    checked = _checked_uploads(files)

    versions = versions_receiving_new_images()
    items, descriptor_ids = [], {True: [], False: []}
    with transaction.atomic():
        for name, sha256, colour, copy in checked:
            item = WardrobeItem(
                owner=user, sha256=sha256, category=category_row, style=style_row, colour=colour,
                category_source=CategorySource.USER if category_row else CategorySource.NONE,
            )
            with copy:
                item.image.save(name, File(copy), save=True)
            for version in versions:
                descriptor_ids[version.is_active].append(create_pending_descriptors(version, wardrobe_item=item).id)
            items.append(item)
        # the user waits for the active version's descriptor (its own queue); a re-embedding's goes with the bulk
        queue_embedding(descriptor_ids[True], queue=INTERACTIVE_QUEUE)
        queue_embedding(descriptor_ids[False], queue=BULK_QUEUE)
        schedule_suggestions(user.pk)
    return items


def _active_status():
    return Subquery(
        Descriptor.objects.filter(wardrobe_item=OuterRef("pk"), model_version__is_active=True).values("status")[:1]
    )


def wardrobe_item_status(item) -> str:
    """"pending", "ready" or "failed": the state of the item's descriptor under the active version."""
    status = (
        Descriptor.objects.filter(wardrobe_item=item, model_version__is_active=True)
        .values_list("status", flat=True)
        .first()
    )
    return status or PENDING


def wardrobe_statuses(user) -> dict[int, str]:
    """{wardrobe item id: status} for all the user's items, in one query."""
    rows = WardrobeItem.objects.filter(owner=user).annotate(status=_active_status()).values_list("id", "status")
    return {item_id: status or PENDING for item_id, status in rows}


def wardrobe_items(user):
    """The user's items, newest first, each annotated with `status` (None counts as pending)."""
    return (
        WardrobeItem.objects.filter(owner=user)
        .select_related("category", "style")
        .annotate(status=_active_status())
    )


def owns_photo(user, name: str) -> bool:
    """Whether `name` (a storage name) is the photo of one of the user's items; never for anonymous visitors."""
    return user.is_authenticated and WardrobeItem.objects.filter(owner=user, image=name).exists()


def get_wardrobe_item(user, item_id) -> WardrobeItem:
    """One of the user's items; WardrobeItem.DoesNotExist for anyone else's (a 404 upstream)."""
    return wardrobe_items(user).get(pk=item_id)


def update_wardrobe_item(user, item_id, **changes) -> WardrobeItem:
    """Corrects an item's `category` and/or `style` (names; "" or None clears). A category the owner gives,
    or confirms by giving the suggested one again, becomes a label (source "user") the category tagger
    learns from the next time it is trained."""
    item = get_wardrobe_item(user, item_id)
    if "category" in changes:
        item.set_category_label(taxonomy_row(Category, changes["category"], "category"), CategorySource.USER)
    if "style" in changes:
        item.style = taxonomy_row(Style, changes["style"], "style")
    with transaction.atomic():
        item.save(update_fields=["category", "category_source", "category_confidence", "style"])
        schedule_suggestions(user.pk)
    return item


def delete_wardrobe_item(user, item_id) -> None:
    """Deletes one of the user's items and its file; another user's item raises WardrobeItem.DoesNotExist."""
    item = WardrobeItem.objects.get(pk=item_id, owner=user)
    storage, name = item.image.storage, item.image.name
    with transaction.atomic():
        # the lock suggestions.recompute takes: a recomputation running now must not link the item meanwhile
        get_user_model().objects.select_for_update().filter(pk=user.pk).first()
        item.delete()
        schedule_suggestions(user.pk)
        if name and not WardrobeItem.objects.filter(image=name).exists():
            transaction.on_commit(lambda: storage.delete(name))


MAX_PROBLEMS_LISTED = 100


def recolour_wardrobe_items(progress: bool = False, batch_size: int = 200) -> tuple[dict, list[str]]:
    """Recomputes every upload's colour words from its photo (after the colour rule changed), a batch at a
    time (memory stays flat), and queues the suggestions of the owners whose words changed (their reasons name
    them). Idempotent; an unreadable file keeps its words. Returns ({changed, unchanged, failed} counts, the
    problems of the first MAX_PROBLEMS_LISTED failed ones)."""
    from tqdm import tqdm

    outcome = {"changed": 0, "unchanged": 0, "failed": 0}
    owners, problems = set(), []
    rows = WardrobeItem.objects.order_by("id").only("id", "owner_id", "image", "colour")
    bar = tqdm(total=rows.count(), desc="colour words", unit="img", disable=not progress)
    batch = []
    for item in rows.iterator(chunk_size=batch_size):
        try:
            with item.image.open("rb") as handle:
                words = colour_words(load_rgb(handle, name=item.image.name, draft_size=256))
        except (ImageError, OSError) as error:
            outcome["failed"] += 1
            if len(problems) < MAX_PROBLEMS_LISTED:
                problems.append(f"wardrobe item {item.id}: {error}")
        else:
            if words == item.colour:
                outcome["unchanged"] += 1
            else:
                item.colour = words
                batch.append(item)
                owners.add(item.owner_id)
        if len(batch) >= batch_size:
            WardrobeItem.objects.bulk_update(batch, ["colour"])
            outcome["changed"] += len(batch)
            batch = []
        bar.update()
    WardrobeItem.objects.bulk_update(batch, ["colour"])
    outcome["changed"] += len(batch)
    bar.close()
    with transaction.atomic():
        for owner_id in sorted(owners):
            schedule_suggestions(owner_id)
    return outcome, problems


# ---------------------------------------------------------------------------------------------------- likes


def like_look(user, look_id) -> LikedLook:
    """Likes a catalogue look (idempotent); Look.DoesNotExist for an unknown id."""
    look = Look.objects.get(pk=look_id)
    with transaction.atomic():
        like, created = LikedLook.objects.get_or_create(user=user, look=look)
        if created:
            schedule_suggestions(user.pk)
    return like


def unlike_look(user, look_id) -> bool:
    """Removes a like (idempotent); True when there was one."""
    with transaction.atomic():
        deleted, _ = LikedLook.objects.filter(user=user, look_id=look_id).delete()
        if deleted:
            schedule_suggestions(user.pk)
    return bool(deleted)


def liked_look_ids(user) -> set[int]:
    """The ids of the looks the user liked; none for an anonymous visitor."""
    if not user.is_authenticated:
        return set()
    return set(LikedLook.objects.filter(user=user).values_list("look_id", flat=True))


# ---------------------------------------------------------------------------------------------------- preferences


def get_preferences(user) -> Preferences:
    """The user's saved preferences (an unsaved empty one when they never saved any)."""
    return Preferences.objects.select_related("style", "category").filter(user=user).first() or Preferences(
        user=user
    )


def set_preferences(user, style: str | None, category: str | None) -> Preferences:
    """Saves the preferred style and category (names; None or "" means no preference). ValueError for an
    unknown name."""
    style_row = taxonomy_row(Style, style, "style")
    category_row = taxonomy_row(Category, category, "category")
    preferences, _ = Preferences.objects.update_or_create(
        user=user, defaults={"style": style_row, "category": category_row}
    )
    return preferences


# ---------------------------------------------------------------------------------------------------- suggestions


def schedule_suggestions(user_id: int) -> None:
    """Queues the recomputation of the user's suggestions once the current transaction commits (broker down:
    logged; the next change, or the descriptor turning ready, recomputes them)."""
    enqueue("wardrobe.tasks.recompute_suggestions", (user_id,), coalesce=f"suggestions:{user_id}")


def schedule_suggestions_for_everyone() -> int:
    """Queues the recomputation for every user with wardrobe items or likes (e.g. after the active model
    version changed); returns how many users."""
    user_ids = set(WardrobeItem.objects.values_list("owner_id", flat=True).distinct())
    user_ids |= set(LikedLook.objects.values_list("user_id", flat=True).distinct())
    for user_id in sorted(user_ids):
        schedule_suggestions(user_id)
    return len(user_ids)
