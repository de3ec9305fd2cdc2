"""A picture of recommendations: validation snapshots with their first six items, or validation items with
their first six looks, right ones marked.

    .venv/bin/python bench/recommendation_grid.py --rankings var/results/cgd_rankings.jsonl \
        [--direction snapshot_to_items | item_to_looks] [--rows 5] [--out PNG] \
        [--data ../shared/data/musinsa/dev] [--test-looks ../shared/data/musinsa/val_looks.txt]

Reads a rankings file written by `evaluate_cgd` (../shared/docs/EVALUATION.md) and draws, for `--rows` queries
spread evenly over the file (not picked by result), the query and its first six results; a green frame marks a
right one, grey the others. `snapshot_to_items` (default, docs/images/val_recommendations.png): a snapshot and
its first six items, right when the experts linked the item to the snapshot's look. `item_to_looks`
(docs/images/val_item_recommendations.png): an item and its first six looks, each shown by its best photo (the
item -> snapshots list collapsed to looks, as the product shows it), right when the look links the item. The picture shows
the sample catalogue's photos, so it is written under docs/images/ but not committed (the data's README keeps
its photos out of the repository); run this after `evaluate_cgd` to see it.
"""
import argparse
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageOps

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ml.evaluation.dataset import LookDataset, read_look_ids  # noqa: E402
from ml.evaluation.protocols import ITEM_TO_LOOKS, ITEM_TO_SNAPSHOTS, SNAPSHOT_TO_ITEMS, build_tasks  # noqa: E402
from ml.evaluation.report import read_rankings  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "musinsa"
TILE, FRAME, GAP, SHOWN = 150, 6, 8, 6
RIGHT, WRONG = (40, 170, 70), (200, 200, 200)


def tile(path: Path, colour=None) -> Image.Image:
    with Image.open(path) as img:
        img = ImageOps.pad(img.convert("RGB"), (TILE - 2 * FRAME, TILE - 2 * FRAME), color=(255, 255, 255))
    out = Image.new("RGB", (TILE, TILE), colour or (255, 255, 255))
    out.paste(img, (FRAME, FRAME))
    return out


def draw_grid(dataset: LookDataset, rows: list[tuple[str, list[str], frozenset]],
              title: str = "snapshot | its first six items (green: linked by the experts)") -> Image.Image:
    width = GAP + (TILE + GAP) * (1 + SHOWN) + GAP
    height = GAP + (TILE + GAP) * len(rows) + 24
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    pen = ImageDraw.Draw(sheet)
    pen.text((GAP, 4), title, fill=(0, 0, 0))
    for r, (query, ranked, relevant) in enumerate(rows):
        y = 24 + GAP + r * (TILE + GAP)
        sheet.paste(tile(dataset.root / query), (GAP, y))
        for c, name in enumerate(ranked[:SHOWN]):
            colour = RIGHT if name in relevant else WRONG
            sheet.paste(tile(dataset.root / name, colour), (GAP + (TILE + GAP) * (c + 1) + GAP, y))
    return sheet


def item_rows(dataset: LookDataset, task, records) -> dict[str, tuple[list[str], frozenset]]:
    """Item query -> (the best photo of each of its looks in ranked order, the photos of its right looks)."""
    look_of = {name: look.id for look in dataset.looks.values() for name in look.snapshots}
    out = {}
    for query in task.queries:
        ranked = records.get(query.name)
        if ranked is None:
            continue
        firsts, seen = [], set()
        for name in ranked:
            if name in look_of and look_of[name] not in seen:
                seen.add(look_of[name])
                firsts.append(name)
        right = frozenset(s for s in task.gallery if look_of[s] in {look_of[r] for r in query.relevant})
        out[query.name] = (firsts, right)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rankings", type=Path, required=True)
    parser.add_argument("--direction", choices=[SNAPSHOT_TO_ITEMS, ITEM_TO_LOOKS], default=SNAPSHOT_TO_ITEMS)
    parser.add_argument("--data", type=Path, default=SHARED / "dev")
    parser.add_argument("--test-looks", type=Path, default=SHARED / "val_looks.txt")
    parser.add_argument("--rows", type=int, default=5)
    parser.add_argument("--out", type=Path, help="default docs/images/val_recommendations.png "
                                                  "(item_to_looks: val_item_recommendations.png)")
    args = parser.parse_args()
    images = ROOT / "docs" / "images"
    out = args.out or images / ("val_recommendations.png" if args.direction == SNAPSHOT_TO_ITEMS
                                else "val_item_recommendations.png")

    dataset = LookDataset.from_folder(args.data)
    source = SNAPSHOT_TO_ITEMS if args.direction == SNAPSHOT_TO_ITEMS else ITEM_TO_SNAPSHOTS
    task = next(t for t in build_tasks(dataset, read_look_ids(args.test_looks, dataset)) if t.direction == source)
    records = {dataset.canonical_item_name(r["query"]) if source == ITEM_TO_SNAPSHOTS else r["query"]:
               [dataset.canonical_item_name(n) for n in r["ranked"]]
               for r in read_rankings(args.rankings) if r["direction"] == source}
    if source == SNAPSHOT_TO_ITEMS:
        shown = {q.name: (records[q.name], q.relevant) for q in task.queries if q.name in records}
        title, unit = "snapshot | its first six items (green: linked by the experts)", "snapshots"
    else:
        shown = item_rows(dataset, task, records)
        title, unit = "item | its first six looks, each by its best photo (green: a look linking the item)", "items"
    queries = [q.name for q in task.queries if q.name in shown]
    if not queries:
        raise SystemExit(f"{args.rankings}: no {source} rankings for the test looks")
    step = max(1, len(queries) // max(1, args.rows))
    picked = queries[::step][:args.rows]
    out.parent.mkdir(parents=True, exist_ok=True)
    draw_grid(dataset, [(q, *shown[q]) for q in picked], title).save(out)
    hits = sum(any(n in shown[q][1] for n in shown[q][0][:SHOWN]) for q in picked)
    print(f"wrote {out}: {len(picked)} {unit}, {hits} with a right one in the first six")


if __name__ == "__main__":
    main()
