"""Parse a folder of Musinsa looks (see shared/data/musinsa/README.md).

Layout::

    {look}_{k}_part.jpg   street snapshot k of look {look}
    {look}_{k}_reco.jpg   item k recommended for look {look}

``.png`` (and ``.jpeg``) files are accepted too; any other file, and any file name that
does not match the pattern, is ignored.  Items are deduplicated by the SHA-256 of the
file bytes (docs/EVALUATION.md): the same bytes under two looks are one item linked to
both looks.

Pure Python: nothing here imports Django.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from ml.layout import SNAPSHOT, parse_layout_name

__all__ = ["Look", "LookDataset", "read_look_ids"]


@dataclass
class Look:
    """One post: its snapshots (file names, by k) and its items (item keys, deduplicated,
    in order of first appearance by k)."""

    id: int
    snapshots: list[str] = field(default_factory=list)
    items: list[str] = field(default_factory=list)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class LookDataset:
    """Looks, snapshots and deduplicated items of one data folder.

    ``looks`` is keyed and ordered by look id.  ``items`` maps an item key (the SHA-256
    hex digest of the file bytes) to the sorted file names holding those bytes; its
    keys are in order of first appearance (looks by id, then files by k).
    """

    root: Path
    looks: dict[int, Look]
    items: dict[str, list[str]]

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self._item_of_file: dict[str, str] = {
            name: key for key, names in self.items.items() for name in names
        }

    # ------------------------------------------------------------------ items
    def item_name(self, key: str) -> str:
        """The representative file name of an item: the first of its sorted files."""
        return self.items[key][0]

    def item_key_of_file(self, name: str) -> str | None:
        """The item key of an item file name (any of its files), or None if it is not one."""
        return self._item_of_file.get(name)

    def canonical_item_name(self, name: str) -> str:
        """Map any file of an item to the item's representative file name; other names
        are returned unchanged."""
        key = self._item_of_file.get(name)
        return name if key is None else self.items[key][0]

    def looks_of_item(self, key: str) -> list[int]:
        """The ids of the looks that link the item, ascending."""
        return [look.id for look in self.looks.values() if key in look.items]

    # -------------------------------------------------------------- snapshots
    def snapshot_names(self, look_ids: Iterable[int] | None = None) -> list[str]:
        """Snapshot file names of the given looks (all looks if None), by look id then k.
        Ids that are not looks of the data set are ignored."""
        if look_ids is None:
            ids = list(self.looks)
        else:
            wanted = set(look_ids)
            ids = [i for i in self.looks if i in wanted]
        return [name for i in ids for name in self.looks[i].snapshots]

    # ---------------------------------------------------------------- loading
    @classmethod
    def from_folder(cls, root: str | os.PathLike) -> "LookDataset":
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"data folder not found: {root}")

        # look id -> kind -> list of (k, name)
        found: dict[int, dict[str, list[tuple[int, str]]]] = {}
        for entry in os.scandir(root):
            parsed = parse_layout_name(entry.name)
            if parsed is None or not entry.is_file():
                continue
            kind = "part" if parsed.role == SNAPSHOT else "reco"
            found.setdefault(int(parsed.look), {"part": [], "reco": []})[kind].append((parsed.k, entry.name))
        if not found:
            raise ValueError(f"no looks found in {root}")

        # Ordering within a kind: by k, then by name (two files for the same k, e.g.
        # .jpg and .png, are both kept, deterministically ordered).
        for kinds in found.values():
            for lst in kinds.values():
                lst.sort()

        reco_files = [name for i in sorted(found) for _, name in found[i]["reco"]]
        digests = {name: _sha256(root / name) for name in reco_files}

        looks: dict[int, Look] = {}
        items: dict[str, list[str]] = {}
        for look_id in sorted(found):
            look = Look(id=look_id, snapshots=[name for _, name in found[look_id]["part"]])
            for _, name in found[look_id]["reco"]:
                key = digests[name]
                items.setdefault(key, []).append(name)
                if key not in look.items:
                    look.items.append(key)
            looks[look_id] = look
        for names in items.values():
            names.sort()
        return cls(root=root, looks=looks, items=items)


def read_look_ids(path: str | os.PathLike, dataset: LookDataset) -> set[int]:
    """Read look ids, one per line; blank lines and ``#`` comments are ignored.

    Raises ValueError (naming the file) when a line is not an integer, when the file
    names no look, or when it names ids that are not looks of ``dataset`` (listed).
    """
    path = Path(path)
    ids: set[int] = set()
    with open(path, encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            try:
                ids.add(int(line))
            except ValueError:
                raise ValueError(f"{path}:{lineno}: not a look id: {raw.strip()!r}") from None
    if not ids:
        raise ValueError(f"{path} names no look")
    unknown = sorted(ids - set(dataset.looks))
    if unknown:
        raise ValueError(
            f"{path} names look ids not in the data set {dataset.root}: "
            + ", ".join(str(i) for i in unknown)
        )
    return ids
