"""Coordinate search over the rows of a `grid` run of bench/item_query_ideas.py, under session 11's rule R1.

    .venv/bin/python bench/item_query_ideas.py --models frozen:0,1,2 --ideas grid \
        --grid lt_weight=0.6,0.7,0.75,0.8,0.85 lt_top_k=20,30,50 pop_weight=0.0,0.05,0.1 diversity=0.5,0.6,0.7 > GRID.md
    .venv/bin/python bench/coordinate_search.py GRID.md --start 0.85,50,0.1,0.5 --direction s2i

Each step moves one knob of the grid to the value whose row passes R1 against the current row with the highest
mAP@100 of the judged direction: none of the seven guarded figures lower (s->i mAP and hit@6, B s->i mAP, item ->
looks mAP and hit@6, unseen item -> looks mAP and hit@6) and the judged direction's mAP@100 +2 %, or its hit@6
+1 point (docs/RESULTS.md, issue 11 session 11). Stops when no step passes; prints the path.
"""
import argparse
import re
from pathlib import Path

#: columns of item_query_ideas' table, in order
COLUMNS = {"s2i": 0, "b_s2i": 1, "i2s": 2, "i2l": 3, "unseen_i2l": 4}


def read_rows(path: Path) -> tuple[list[str], dict]:
    """(knob names, {(value, ...): [(mAP, hit@6) per column]}) of the grid rows of a table."""
    rows, names = {}, None
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        knobs = re.findall(r"(\w+) = ([\w.]+)", cells[0])
        if not line.startswith("| ") or not knobs:
            continue
        names = names or [n for n, _ in knobs]
        rows[tuple(v for _, v in knobs)] = [tuple(float(x) for x in c.split(" / ")) for c in cells[1:]]
    return names or [], rows


def guarded(m) -> list[float]:
    return [m[0][0], m[0][1], m[1][0], m[3][0], m[3][1], m[4][0], m[4][1]]


def passes(new, old, column: int) -> bool:
    if any(a < b - 1e-9 for a, b in zip(guarded(new), guarded(old))):
        return False
    return new[column][0] >= old[column][0] * 1.02 - 1e-9 or new[column][1] >= old[column][1] + 0.01 - 1e-9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("table", type=Path)
    parser.add_argument("--start", required=True, help="the starting values, comma-separated, in the grid's order")
    parser.add_argument("--direction", choices=sorted(COLUMNS), default="s2i")
    args = parser.parse_args()
    names, rows = read_rows(args.table)
    column = COLUMNS[args.direction]
    current = tuple(args.start.split(","))
    if current not in rows:
        raise SystemExit(f"no row for {dict(zip(names, current))} in {args.table}")
    values = [sorted({key[i] for key in rows}, key=float) for i in range(len(names))]
    print("start", dict(zip(names, current)), rows[current][column])
    while True:
        best = None
        for i in range(len(names)):
            for v in values[i]:
                candidate = current[:i] + (v,) + current[i + 1:]
                if candidate == current or candidate not in rows or not passes(rows[candidate], rows[current], column):
                    continue
                if best is None or rows[candidate][column][0] > rows[best][column][0]:
                    best = candidate
        if best is None:
            break
        current = best
        print("step", dict(zip(names, current)), rows[current][column])


if __name__ == "__main__":
    main()
