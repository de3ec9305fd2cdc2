"""Colour words against hand labels of product photos of ../shared/data/musinsa/dev.

Two label files: data/labels/item_colours.csv (63 photos; the first half set the thresholds of
ml.tagging.colour, the second half did not) and data/labels/item_colours_fresh.csv (32 other photos, labelled
after the rule was frozen and never used to change it). Each row names the garment's colour (``colour``:
accepted names separated by "|", the labeller's choice first) and, for a two-tone garment, its second colour
(``second``, same form; "?" in front when a second word is acceptable but not required, e.g. a white sole).
Printed per file (and per half of the first):

* first right: the first word is one of the accepted names of ``colour``;
* two-tone both right: on the rows with a required ``second``, two words, one accepted for each (either order);
* no wrong second word: on the other rows, one word, or (optional second) an accepted second word;
* the old rule (wardrobe's whole-photo colour before issue 12) on the same rows, and the time per photo beside
  the time to decode it.

    .venv/bin/python bench/colour_accuracy.py [--labels CSV ...] [--images DIR] [--show-errors] [--sheet PNG]

``--sheet`` draws every photo beside its garment mask (background and skin in magenta) with the words said and
labelled, wrong ones first: look at it, never commit it (the photos are not ours; test-artifacts/ is ignored).
"""
import argparse
import csv
import sys
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ml.tagging.colour import colour_words, garment_mask  # noqa: E402

# The rule before issue 12 (wardrobe.services.wardrobe.dominant_colour at cec9da6), frozen here as the baseline:
# the middle of the whole photo, near-white pixels dropped, the most frequent per-pixel name.
_OLD_COLOURS = {
    "red": (200, 30, 40), "orange": (235, 130, 30), "yellow": (235, 210, 50), "green": (50, 140, 60),
    "olive": (110, 110, 50), "teal": (30, 130, 130), "blue": (40, 90, 200), "navy": (25, 35, 80),
    "purple": (120, 60, 150), "pink": (235, 150, 180), "brown": (110, 70, 40), "beige": (215, 195, 160),
}


def old_whole_photo_rule(image) -> str:
    import numpy as np

    width, height = image.size
    middle = image.convert("RGB").crop((width // 5, height // 7, width - width // 5, height - height // 7))
    pixels = np.asarray(middle.resize((64, 64)), dtype=np.float32).reshape(-1, 3)
    high, low = pixels.max(axis=1), pixels.min(axis=1)
    saturation = np.where(high > 0, (high - low) / np.maximum(high, 1), 0)
    background = (low > 235) & (saturation < 0.08)
    if (~background).sum() >= 0.05 * len(pixels):
        pixels, high, saturation = pixels[~background], high[~background], saturation[~background]
    names = np.empty(len(pixels), dtype=object)
    grey = (saturation < 0.25) | (high < 45)
    names[grey & (high < 60)] = "black"
    names[grey & (high >= 60) & (high < 200)] = "grey"
    names[grey & (high >= 200)] = "white"
    chroma = ~grey
    if chroma.any():
        references = np.array(list(_OLD_COLOURS.values()), dtype=np.float32)
        distances = ((pixels[chroma, None, :] - references[None]) ** 2).sum(axis=2)
        names[chroma] = np.array(list(_OLD_COLOURS), dtype=object)[distances.argmin(axis=1)]
    values, counts = np.unique(names.astype(str), return_counts=True)
    return str(values[counts.argmax()])


def accepted(field: str) -> set[str]:
    return {name.strip() for name in field.split("|") if name.strip()}


def score(words: str, row: dict) -> dict:
    names = words.split(" and ")
    optional = row["second"].startswith("?")
    first, second = accepted(row["colour"]), accepted(row["second"].lstrip("?"))
    both = len(names) == 2 and (
        (names[0] in first and names[1] in second) or (names[1] in first and names[0] in second)
    )
    result = {"first": names[0] in first}
    if second and not optional:
        result["both"] = both
    else:
        result["single"] = len(names) == 1 or (optional and both)
    return result


def right(result: dict) -> bool:
    return result["first"] and result.get("both", True) and result.get("single", True)


def summary(scores: list[dict]) -> str:
    def rate(key, rows):
        rows = [s for s in rows if key in s]
        return f"{sum(s[key] for s in rows)}/{len(rows)} = {sum(s[key] for s in rows) / max(len(rows), 1):.2f}"

    return (f"first right {rate('first', scores)}; two-tone both right {rate('both', scores)}; "
            f"no wrong second word {rate('single', scores)}")


LABELS = (ROOT / "data" / "labels" / "item_colours.csv", ROOT / "data" / "labels" / "item_colours_fresh.csv")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--labels", type=Path, nargs="+", default=list(LABELS))
    parser.add_argument("--images", type=Path, default=ROOT.parent / "shared" / "data" / "musinsa" / "dev")
    parser.add_argument("--show-errors", action="store_true")
    parser.add_argument("--sheet", type=Path, help="write a contact sheet of photos, masks and words (PNG)")
    args = parser.parse_args()
    files = {path: list(csv.DictReader(path.open())) for path in args.labels}
    missing = [row["file"] for rows in files.values() for row in rows if not (args.images / row["file"]).exists()]
    if missing:
        print(f"missing photos in {args.images}: {', '.join(missing)}", file=sys.stderr)
        return 2
    decode_s = words_s = 0.0
    photos = []  # (path, words, label row, result) for the contact sheet
    for index, (path, rows) in enumerate(files.items()):
        new, old, errors = [], [], []
        for row in rows:
            started = time.perf_counter()
            with Image.open(args.images / row["file"]) as image:
                image = image.convert("RGB")
            decoded = time.perf_counter()
            words = colour_words(image)
            words_s += time.perf_counter() - decoded
            decode_s += decoded - started
            new.append(score(words, row))
            old.append(score(old_whole_photo_rule(image), row))
            photos.append((args.images / row["file"], words, row, new[-1]))
            if not right(new[-1]):
                errors.append(f"  {row['file']}: said {words!r}, labelled {row['colour']!r} / {row['second']!r}")
        two_tone = sum(bool(r["second"]) and not r["second"].startswith("?") for r in rows)
        print(f"{path.name}: {len(rows)} hand-labelled photos ({two_tone} two-tone)")
        if index == 0 and path == LABELS[0]:
            half = (len(rows) + 1) // 2
            print(f"  tuning half ({half}):    {summary(new[:half])}")
            print(f"  held-out half ({len(rows) - half}): {summary(new[half:])}")
        print(f"  all ({len(rows)}):            {summary(new)}")
        print(f"  old whole-photo rule:  {summary(old)}")
        if args.show_errors:
            print("\n".join(errors))
    count = sum(len(rows) for rows in files.values())
    print(f"time per photo: colour words {1000 * words_s / count:.1f} ms, JPEG decode {1000 * decode_s / count:.1f} ms")
    if args.sheet:
        photos.sort(key=lambda photo: right(photo[3]))
        contact_sheet([p[0] for p in photos], [p[1] for p in photos], [p[2] for p in photos],
                      [right(p[3]) for p in photos], args.sheet)
        print(f"contact sheet: {args.sheet}")
    return 0


def contact_sheet(paths, said, rows, right, target: Path, size: int = 150, columns: int = 4) -> None:
    import numpy as np
    from PIL import ImageDraw

    cell_w, cell_h = 2 * size, size + 30
    sheet = Image.new("RGB", (columns * cell_w, -(-len(paths) // columns) * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (path, words, row, ok) in enumerate(zip(paths, said, rows, right)):
        with Image.open(path) as image:
            image = image.convert("RGB")
        mask, _ = garment_mask(image)
        small = np.asarray(image.resize(mask.shape[::-1], Image.NEAREST)).copy()
        small[~mask] = (255, 0, 255)
        x, y = (i % columns) * cell_w, (i // columns) * cell_h
        for j, picture in enumerate((image, Image.fromarray(small))):
            picture = picture.copy()
            picture.thumbnail((size, size))
            sheet.paste(picture, (x + j * size, y))
        label = row["colour"].split("|")[0] + (" / " + row["second"].split("|")[0] if row["second"] else "")
        draw.text((x + 2, y + size + 2), f"{path.name}: {words}", fill="black" if ok else "red")
        draw.text((x + 2, y + size + 15), f"labelled {label}", fill="grey")
    target.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(target)


if __name__ == "__main__":
    raise SystemExit(main())
