"""The default training recipe (``manage.py train_cgd`` and the platform's background training).

    card = train_with_selection(dataset, out_dir, cache_dir, TrainConfig(), test_look_ids=test)

* ``test_look_ids``: excluded from everything (training, validation, known links).
* with ``val_look_ids``: train on the rest, early-stop on them, choose the post-processing on them,
  export that model.
* without: inner split (:data:`INNER_SPLIT_FRACTION` of the non-test looks, seed ``config.seed``):
  phase 1 trains with early stopping on the inner validation looks and chooses the post-processing
  there; phase 2 trains on all non-test looks for the best epoch count of phase 1 and is exported.
* ``config.ensemble`` > 1: every phase trains that many members (own seeds, own early stopping); the
  post-processing is chosen on the ensemble's descriptors.
* the exported model then measures its own near-duplicate threshold on its training items
  (:func:`measure_own_recognition`, ``ml.evaluation.recognition``) for the card.

Every caller gets the same rules (:mod:`ml.training.config`): the config is checked, and a batch never
holds more looks than the phase trains on.  No Django imports here.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np

from ml.evaluation.dataset import LookDataset
from ml.evaluation.pipeline import images_to_embed
from ml.model_card import ModelCard
from ml.retrieval.scoring import DomainMeans, ScoringSettings

from .config import INNER_SPLIT_FRACTION, TrainConfig, inner_validation_size
from .curves import plot_history
from .ensemble import ensemble_vectors, train_ensemble, with_test_time_flip
from .export import domain_mean_snapshots, export_model_dir, hub_reference_items
from .selection import evaluate_vectors, select_postprocessing
from .splits import data_fingerprint, inner_split, subset_dataset

__all__ = ["train_with_selection", "training_split", "measure_own_recognition", "RECOGNITION_SAMPLE"]

#: training items copied (4 copies each) to measure an exported model's recognition threshold: with the reference
#: items themselves (at most MAX_HUB_REFERENCE), ~1,850 forward passes for the 240 dev looks' 1,050 items
RECOGNITION_SAMPLE = 200


def training_split(dataset: LookDataset, test_look_ids=(), val_look_ids=None) -> tuple[list[int], list[int]]:
    """(the looks a recipe trains on, its validation looks): ValueError when the test and validation looks
    overlap or fewer than two looks with images are left to train on."""
    test = set(test_look_ids)
    val = set(val_look_ids or ())
    if val & test:
        raise ValueError("validation and test looks overlap: " + ", ".join(map(str, sorted(val & test))))
    pool = sorted(set(dataset.looks) - test)
    training = [i for i in pool if i not in val]
    if len([i for i in training if dataset.looks[i].items or dataset.looks[i].snapshots]) < 2:
        raise ValueError("fewer than 2 training looks left after excluding test/validation looks")
    return training, sorted(val)


def train_with_selection(dataset: LookDataset, out_dir, cache_dir, config: TrainConfig,
                         test_look_ids=(), val_look_ids=None, resume: bool = False,
                         progress: bool = True, log=print) -> ModelCard:
    """The recipe (module docstring); writes the model directory ``out_dir`` and returns its card."""
    t0 = time.time()
    config.check()
    out_dir = Path(out_dir)
    work = out_dir / "work"
    test = set(test_look_ids)
    training, val = training_split(dataset, test, val_look_ids)
    pool = sorted(set(dataset.looks) - test)
    n_batch_looks = len(training) if val else len(training) - inner_validation_size(len(training))
    config = config.fitted_to_looks(n_batch_looks)
    kwargs = dict(resume=resume, progress=progress, log=log)
    if val:
        members = train_ensemble(dataset, training, work / "val", cache_dir, config, val_look_ids=val,
                                 known_look_ids=training, **kwargs)
        finals, selection = members, "validation looks (--val-looks)"
        train_ids, sel_val, sel_known = training, val, training
    else:
        tr, inner_val = inner_split(pool, INNER_SPLIT_FRACTION, config.seed)
        members = train_ensemble(dataset, tr, work / "inner", cache_dir, config, val_look_ids=inner_val,
                                 known_look_ids=tr, **kwargs)
        selection = "inner split (1/5 of the training looks, seed %d)" % config.seed
        train_ids, sel_val, sel_known = pool, inner_val, tr
    epochs = [max(1, m.best_epoch) for m in members]
    ev = subset_dataset(dataset, sorted(set(sel_known) | set(sel_val)))
    vecs = ensemble_vectors(members, images_to_embed(ev))
    if config.test_time_flip:  # chosen on what the exported model serves
        vecs = with_test_time_flip(vecs, members, ev, cache_dir, config)
    val_metrics = evaluate_vectors(ev, vecs, sel_val, sel_known, ScoringSettings())
    settings, sel_metrics = select_postprocessing(ev, vecs, sel_val, sel_known, log=log)
    if not val:
        finals = train_ensemble(dataset, pool, work / "final", cache_dir, config, epochs_per_member=epochs,
                                fixed_epochs=True, **kwargs)
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(finals[0].out_dir / "history.json", out_dir / "history.json")
    plot_history([m.history for m in members], out_dir / "training_curve.png")  # the validated phase
    skipped = {n: m for r in members + finals for n, m in r.skipped.items()}
    reference = ensemble_vectors(finals, hub_reference_items(dataset, train_ids))
    snapshots = ensemble_vectors(finals, domain_mean_snapshots(dataset, train_ids))
    if config.test_time_flip:
        reference = with_test_time_flip(reference, finals, dataset, cache_dir, config)
        snapshots = with_test_time_flip(snapshots, finals, dataset, cache_dir, config)
    reference = [v for v in reference.values() if v.any()]
    snapshots = [v for v in snapshots.values() if v.any()]
    # the kinds' means queries are moved by (ScoringSettings.snapshot_centring / item_centring), the same
    # definition as the evaluation's default (the known looks' snapshots and items)
    means = DomainMeans.of(np.stack(snapshots), np.stack(reference)) if snapshots and reference else None
    export_model_dir([f.head for f in finals], config, out_dir, Path(cache_dir).parent,
                     last_stages=[f.last_stage for f in finals],
                     hub_reference=np.stack(reference) if reference else None, domain_means=means,
                     card_fields=dict(
                         postprocessing=settings,
                         training_data_sha256=data_fingerprint(dataset, train_ids),
                         training_looks=len(train_ids),
                         excluded_test_looks=sorted(test),
                         selection=selection,
                         epochs_trained=max(f.epochs_trained for f in finals),
                         member_epochs_trained=[f.epochs_trained for f in finals],
                         selected_epochs=max(epochs),
                         member_selected_epochs=epochs,
                         validation_metrics=val_metrics,
                         validation_metrics_postprocessed=sel_metrics,
                         train_seconds=round(time.time() - t0, 1),
                         skipped_images=[f"{n}: {m}" for n, m in sorted(skipped.items())],
                     ))
    card = ModelCard.read(out_dir)
    measure_own_recognition(out_dir, card, [dataset.root / n for n in hub_reference_items(dataset, train_ids)],
                            progress=progress, log=log)
    return card  # as written (measure_own_recognition writes what it changes)


def measure_own_recognition(model_dir, card: ModelCard, item_paths, sample: int = RECOGNITION_SAMPLE,
                            progress: bool = False, log=print) -> None:
    """Measures the exported model's own near-duplicate threshold on its training items (the cosine at which 1 %
    of unknown products would match moves with every model) and writes it into its card: ``card`` (the one read
    from ``model_dir``) is updated and written back."""
    from ml.embedding import CGDEmbedder
    from ml.evaluation.recognition import measure_recognition

    t0 = time.time()
    measurement = measure_recognition(CGDEmbedder(model_dir), item_paths, sample=sample, progress=progress)
    if measurement is None:
        log("recognition: fewer than two item photos, the default threshold stays")
        return
    card.recognition = measurement.settings()
    card.train_seconds = round(card.train_seconds + time.time() - t0, 1)
    card.write(model_dir)
    recognised = measurement.recognised()
    log(f"recognition threshold: cosine {measurement.threshold:.4f} (false matches "
        f"{measurement.false_matches():.1%} of {len(measurement.outside)} photos of unknown products; recognised: "
        + ", ".join(f"{k} {v:.0%}" for k, v in recognised.items()) + f"; {time.time() - t0:.0f} s)")
