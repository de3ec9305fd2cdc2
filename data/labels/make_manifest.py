"""Writes the sample catalogue's import manifest from the folder and the hand labels.

    .venv/bin/python data/labels/make_manifest.py [--dev ../shared/data/musinsa/dev] [--out data/labels/musinsa_manifest.csv]

Columns `look,role,path,style,category` (what `manage.py import_looks DIR --manifest CSV` reads; `path` is the
file name relative to DIR). Every row of a look carries its style from `look_styles.csv`. `category` is filled
on every row of a hand-labelled item (`item_categories.csv`): the same product (same bytes) appears under
several file names, and the importer keeps the category of whichever row creates the item. Other rows leave it
empty (the automatic tagger fills it in after embedding). Standard library only; deterministic output.
"""
import argparse
import csv
import hashlib
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent.parent
DEFAULT_DEV = PROJECT.parent / "shared" / "data" / "musinsa" / "dev"
NAME = re.compile(r"^(\d+)_(\d+)_(part|reco)\.(?:jpe?g|png)$", re.IGNORECASE)
COLUMNS = ("look", "role", "path", "style", "category")


def read_labels(path: Path, key: str, value: str) -> dict[str, str]:
    with path.open(newline="", encoding="utf-8") as handle:
        return {row[key].strip(): row[value].strip() for row in csv.DictReader(handle)}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def manifest_rows(dev: Path, look_styles: dict[str, str], item_categories: dict[str, str]) -> list[dict]:
    files = []
    for path in dev.iterdir():
        match = NAME.match(path.name)
        if match:
            files.append((int(match[1]), match[3].lower() != "part", int(match[2]), path))
    files.sort(key=lambda f: f[:3])
    missing = sorted(set(item_categories) - {f[3].name for f in files})
    if missing:
        raise SystemExit(f"labelled files not in {dev}: {', '.join(missing[:5])}")
    category_by_sha = {sha256(dev / name): category for name, category in item_categories.items()}
    rows = []
    for look, is_item, _, path in files:
        category = category_by_sha.get(sha256(path), "") if is_item else ""
        rows.append({
            "look": str(look),
            "role": "item" if is_item else "snapshot",
            "path": path.name,
            "style": look_styles.get(str(look), ""),
            "category": category,
        })
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dev", type=Path, default=DEFAULT_DEV)
    parser.add_argument("--styles", type=Path, default=HERE / "look_styles.csv")
    parser.add_argument("--categories", type=Path, default=HERE / "item_categories.csv")
    parser.add_argument("--out", type=Path, default=HERE / "musinsa_manifest.csv")
    args = parser.parse_args(argv)
    rows = manifest_rows(
        args.dev,
        read_labels(args.styles, "look", "style"),
        read_labels(args.categories, "file", "category"),
    )
    with args.out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    labelled = sum(1 for row in rows if row["category"])
    print(f"wrote {args.out}: {len(rows)} rows, {labelled} item rows with a category", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
