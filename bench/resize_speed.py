"""The model-input resize, compiled (ml.resample) against Pillow's own, on the sample catalogue's photos, one thread.

    .venv/bin/python bench/resize_speed.py [--side 224] [--photos 400] [--repeats 5]

Both resize the same decoded photos, one after the other (each photo a different one, as in the pipeline, so
none is in the cache from the pass before), in the same run; the best of --repeats passes is printed for each,
with the whole decode (file, JPEG, resize, as `load_input_pixels`) both ways. It also checks that the pixels are
the same.
"""
import argparse
import io
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from fashionsite.paths import sample_catalogue_dir  # noqa: E402
from ml import resample  # noqa: E402
from ml.images import load_rgb  # noqa: E402


def best_ms(function, items, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for item in items:
            function(item)
        best = min(best, time.perf_counter() - started)
    return best / len(items) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=224)
    parser.add_argument("--photos", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if not resample.NATIVE:
        sys.exit(f"the compiled resize is not built ({resample.LIBRARY_PATH}): run `make deps`")
    files = sorted(Path(sample_catalogue_dir()).rglob("*.jpg"))[: args.photos]
    decoded = [load_rgb(f) for f in files]
    side = args.side
    for image in decoded:
        if not np.array_equal(resample.resize_image(image, side, side), resample.resize_with_pillow(image, side, side)):
            sys.exit(f"pixels differ from Pillow's for {image.size}")
    native = best_ms(lambda im: resample.resize_image(im, side, side), decoded, args.repeats)
    pillow = best_ms(lambda im: resample.resize_with_pillow(im, side, side), decoded, args.repeats)
    print(f"{len(decoded)} photos to {side} x {side}, the same pixels both ways; resize, one thread: "
          f"compiled {native:.3f} ms, Pillow {pillow:.3f} ms a photo ({pillow / native:.1f}x)")

    data = [f.read_bytes() for f in files]
    whole = {name: best_ms(lambda b: fn(load_rgb(io.BytesIO(b), draft_size=side), side, side), data, args.repeats)
             for name, fn in (("compiled", resample.resize_image), ("Pillow", resample.resize_with_pillow))}
    print(f"whole decode (file, JPEG, resize: what load_input_pixels does), one thread: compiled resize "
          f"{whole['compiled']:.3f} ms, Pillow's {whole['Pillow']:.3f} ms a photo")
    print(f"(load average now: {' '.join(f'{v:.2f}' for v in os.getloadavg())})")


if __name__ == "__main__":
    main()
