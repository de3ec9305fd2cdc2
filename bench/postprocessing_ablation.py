"""What each part of a trained model's recipe adds, on a test split: one row per step, beside `untrained`.

    .venv/bin/python bench/postprocessing_ablation.py --model var/models/cgd-val \
        [--data ../shared/data/musinsa/dev] [--test-looks ../shared/data/musinsa/val_looks.txt]

The descriptors come from the model's own heads (the `model.keras` of MODEL_DIR) applied to the cached backbone
feature maps of the plain images (`var/models/features`, computed if missing), and the untrained baseline from the
cached Lite0 maps (global average pooling, the `untrained` spec), so the rows cost seconds each; the last row
(the card's settings, all members) is what `evaluate_cgd --model` measures end to end from the images (equal up to
float16 rounding of the cached maps). Rows, each adding one step to the row before:

* the first member (head) alone without post-processing, then each member alone with the card's settings;
* all members (the ensemble), no post-processing;
* + the card's snapshot -> items scoring (look transfer, popularity prior, CSLS, QE, DBA), + diversity;
* + item transfer, + link query expansion, + look pooling (item -> snapshots): the card.

Metrics, protocols and ratios as ../shared/docs/EVALUATION.md; the table is `ml.evaluation.report.format_table`.
"""
import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ml.evaluation.dataset import LookDataset, read_look_ids  # noqa: E402
from ml.evaluation.report import format_table  # noqa: E402
from ml.retrieval.scoring import ScoringSettings, normalise  # noqa: E402
from ml.training.feature_cache import FeatureCache  # noqa: E402
from ml.evaluation.pipeline import images_to_embed  # noqa: E402
from ml.model_card import ModelCard  # noqa: E402
from ml.training import evaluate_vectors  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "musinsa"


def cached_maps(dataset, names, variant, cache_dir):
    maps, errors = FeatureCache(cache_dir, variant).features([dataset.root / n for n in names], progress=True)
    for path, message in errors.items():
        print(f"skipped {Path(path).name}: {message}", file=sys.stderr)
    return {Path(p).name: m for (p, _), m in maps.items()}


def member_vectors(model_dir: Path, maps: dict) -> list[dict]:
    """One {name: descriptor} per head of the exported model, from cached feature maps."""
    from ml.embedding import CGDEmbedder

    model = CGDEmbedder(model_dir).model
    heads = [layer for layer in model.layers if layer.name.startswith("descriptor_head_")]
    heads = heads or [layer for layer in model.layers if layer.name.endswith("_descriptor")]
    if not heads:
        raise SystemExit(f"{model_dir}: no descriptor head found in model.keras")
    names = list(maps)
    x = np.stack([maps[n] for n in names]).astype(np.float32)
    out = []
    for head in heads:
        vecs = np.concatenate([np.asarray(head(x[s:s + 128])) for s in range(0, len(x), 128)])
        out.append(dict(zip(names, vecs)))
    return out


def joined(members: list[dict]) -> dict:
    names = list(members[0])
    return dict(zip(names, normalise(np.stack([np.concatenate([m[n] for m in members]) for n in names]))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=SHARED / "dev")
    parser.add_argument("--test-looks", type=Path, default=SHARED / "val_looks.txt")
    parser.add_argument("--features", type=Path, default=ROOT / "var" / "models" / "features")
    parser.add_argument("--json", type=Path, help="also write the rows' metrics here")
    args = parser.parse_args()

    card = ModelCard.read(args.model)
    if card.train_config.get("fine_tune_last_stage"):
        raise SystemExit("a model with a fine-tuned last stage cannot be ablated on cached top feature maps")
    dataset = LookDataset.from_folder(args.data)
    test = read_look_ids(args.test_looks, dataset)
    known = sorted(set(dataset.looks) - test)
    names = images_to_embed(dataset)

    def run(vectors, settings=None):
        zero = np.zeros(len(next(iter(vectors.values()))), np.float32)
        return evaluate_vectors(dataset, {n: vectors.get(n, zero) for n in names}, test, known,
                                settings or ScoringSettings())

    lite0 = cached_maps(dataset, names, "lite0", args.features)
    untrained = {n: m.astype(np.float32).mean(axis=(0, 1)) for n, m in lite0.items()}
    members = member_vectors(args.model, cached_maps(dataset, names, card.backbone, args.features))
    ensemble = joined(members)
    full = card.postprocessing
    s2i_only = replace(full, item_transfer_weight=0.0, item_link_qe=0.0, look_pooling=0.0)
    s2i_plain_order = replace(s2i_only, diversity=0.0)
    rows = {"untrained": run({n: v / max(np.linalg.norm(v), 1e-12) for n, v in untrained.items()})}
    rows["member 1 alone, no post-processing"] = run(members[0])
    for k, member in enumerate(members):
        rows[f"member {k + 1} alone, the card's post-processing"] = run(member, full)
    label = f"{len(members)} members" if len(members) > 1 else "the model"
    rows[f"{label}, no post-processing"] = run(ensemble)
    rows[f"{label} + snapshot->items scoring (look transfer, popularity, ...)"] = run(ensemble, s2i_plain_order)
    rows["+ diversity (variety among the first six)"] = run(ensemble, s2i_only)
    rows["+ item transfer"] = run(ensemble, replace(s2i_only, item_transfer_weight=full.item_transfer_weight))
    rows["+ link query expansion"] = run(ensemble, replace(full, look_pooling=0.0))
    rows["+ look pooling (= the card)"] = run(ensemble, full)
    print(f"model {args.model}: {card.ensemble} member(s), post-processing {full.to_dict()}")
    print(format_table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
