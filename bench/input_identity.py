"""The pipeline's uint8 model input (ml.images.load_input_pixels, normalised inside the model's graph) against
the float32 input of another revision's ml.images.load_input_array, on every sample file: the inputs and the
descriptors must be the same to the bit (or the change needs evaluate_cgd beside the baseline).

    nice -n 19 .venv/bin/python bench/input_identity.py [--model DIR] [--against REV]
"""
import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from fashionsite.paths import sample_catalogue_dir  # noqa: E402
from ml.embedding import default_cache_dir, load_embedder  # noqa: E402
from ml.images import load_input_pixels, preprocess_array  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="untrained-lite0", help="a model directory or untrained-lite0/2")
    parser.add_argument("--against", default="c398c0c", help="the revision whose load_input_array is the reference")
    parser.add_argument("--cache-dir", default=str(ROOT / "var" / "models"), help="converted ImageNet weights")
    args = parser.parse_args()
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{args.against}:ml/images.py"],
                            capture_output=True, text=True, check=True).stdout
    reference = {}
    exec(compile(source, f"{args.against}:ml/images.py", "exec"), reference)
    cache = Path(args.cache_dir) if Path(args.cache_dir).is_dir() else default_cache_dir()
    embedder = load_embedder(args.model, cache)
    files = sorted(p for p in sample_catalogue_dir().iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    size, same_inputs, same_vectors, max_diff = embedder.input_size, 0, 0, 0.0
    for start in range(0, len(files), 32):
        chunk = files[start:start + 32]
        floats = np.stack([reference["load_input_array"](f, size) for f in chunk])
        pixels = np.stack([load_input_pixels(f, size) for f in chunk])
        same_inputs += int((preprocess_array(pixels) == floats).reshape(len(chunk), -1).all(axis=1).sum())
        a, b = embedder.embed_batch(floats), embedder.embed_batch(pixels)
        same_vectors += int((a == b).all(axis=1).sum())
        max_diff = max(max_diff, float(np.abs(a - b).max()))
    print(f"{embedder.name}, {size} px, {len(files)} files: model inputs identical to {args.against}'s "
          f"load_input_array: {same_inputs}; descriptors identical to the bit: {same_vectors}; "
          f"largest difference {max_diff:.3g}")


if __name__ == "__main__":
    main()
