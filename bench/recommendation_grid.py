"""A picture of recommendations: validation snapshots, each with its first six items, right ones marked.

    .venv/bin/python bench/recommendation_grid.py --rankings var/results/cgd_rankings.jsonl \
        [--data ../shared/data/musinsa/dev] [--test-looks ../shared/data/musinsa/val_looks.txt] \
        [--rows 5] [--out docs/images/val_recommendations.png]

Reads a rankings file written by `evaluate_cgd` (../shared/docs/EVALUATION.md) and draws, for `--rows`
snapshot -> items queries spread evenly over the file (not picked by result), the snapshot and its first six
items; a green frame marks an item the experts linked to the snapshot's look, grey the others. The picture shows
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
from ml.evaluation.protocols import SNAPSHOT_TO_ITEMS, build_tasks  # noqa: E402
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


def draw_grid(dataset: LookDataset, rows: list[tuple[str, list[str], frozenset]]) -> Image.Image:
    width = GAP + (TILE + GAP) * (1 + SHOWN) + GAP
    height = GAP + (TILE + GAP) * len(rows) + 24
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    pen = ImageDraw.Draw(sheet)
    pen.text((GAP, 4), "snapshot | its first six items (green: linked by the experts)", fill=(0, 0, 0))
    for r, (query, ranked, relevant) in enumerate(rows):
        y = 24 + GAP + r * (TILE + GAP)
        sheet.paste(tile(dataset.root / query), (GAP, y))
        for c, name in enumerate(ranked[:SHOWN]):
            colour = RIGHT if name in relevant else WRONG
            sheet.paste(tile(dataset.root / name, colour), (GAP + (TILE + GAP) * (c + 1) + GAP, y))
    return sheet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rankings", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=SHARED / "dev")
    parser.add_argument("--test-looks", type=Path, default=SHARED / "val_looks.txt")
    parser.add_argument("--rows", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "val_recommendations.png")
    args = parser.parse_args()

    dataset = LookDataset.from_folder(args.data)
    task = next(t for t in build_tasks(dataset, read_look_ids(args.test_looks, dataset))
                if t.direction == SNAPSHOT_TO_ITEMS)
    relevant = {q.name: q.relevant for q in task.queries}
    ranked = {r["query"]: [dataset.canonical_item_name(n) for n in r["ranked"]]
              for r in read_rankings(args.rankings) if r["direction"] == SNAPSHOT_TO_ITEMS}
    queries = [q.name for q in task.queries if q.name in ranked]
    if not queries:
        raise SystemExit(f"{args.rankings}: no snapshot_to_items rankings for the test looks")
    step = max(1, len(queries) // max(1, args.rows))
    picked = queries[::step][:args.rows]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    draw_grid(dataset, [(q, ranked[q], relevant[q]) for q in picked]).save(args.out)
    hits = sum(any(n in relevant[q] for n in ranked[q][:SHOWN]) for q in picked)
    print(f"wrote {args.out}: {len(picked)} snapshots, {hits} with a right item in the first six")


if __name__ == "__main__":
    main()
