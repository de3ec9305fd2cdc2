"""Writing a model directory: ``model.keras`` (image -> unit-norm descriptor) and its :class:`ModelCard`."""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path

import numpy as np

from ml.model_card import DOMAIN_MEANS_FILE, HUB_REFERENCE_FILE, ModelCard

from .config import TrainConfig

__all__ = ["export_model_dir", "hub_reference_items", "write_hub_reference", "write_domain_means",
           "domain_mean_snapshots", "HUB_REFERENCE_FILE", "DOMAIN_MEANS_FILE",
           "MAX_HUB_REFERENCE"]

#: At most this many reference items (evenly spread over the training items): 4096 x 1536 float32 is 25 MB.
MAX_HUB_REFERENCE = 4096


def hub_reference_items(dataset, look_ids, limit: int = MAX_HUB_REFERENCE) -> list[str]:
    """The reference items of a model trained on ``look_ids``: their items (each once, in the data set's
    order), at most ``limit`` of them, evenly spread."""
    keys = {key for look in look_ids for key in dataset.looks[look].items}
    names = [dataset.item_name(key) for key in dataset.items if key in keys]
    if len(names) > limit:
        names = [names[int(i)] for i in np.linspace(0, len(names) - 1, limit).round().astype(int)]
    return names


def write_hub_reference(model_dir, vectors) -> Path:
    """Writes the reference items' descriptors ``(R, D)`` to ``model_dir/HUB_REFERENCE_FILE`` (atomically)."""
    from ml.retrieval.scoring import normalise

    path = Path(model_dir) / HUB_REFERENCE_FILE
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, normalise(vectors))
    os.replace(tmp, path)
    return path


def domain_mean_snapshots(dataset, look_ids, limit: int = MAX_HUB_REFERENCE) -> list[str]:
    """The snapshots the snapshot mean of :data:`DOMAIN_MEANS_FILE` is taken over: those of ``look_ids``,
    in look order, at most ``limit`` evenly spread (the item mean is over :func:`hub_reference_items`)."""
    names = [n for look in sorted(look_ids) for n in dataset.looks[look].snapshots]
    if len(names) > limit:
        names = [names[int(i)] for i in np.linspace(0, len(names) - 1, limit).round().astype(int)]
    return names


def write_domain_means(model_dir, means) -> Path:
    """Writes :class:`ml.retrieval.scoring.DomainMeans` to ``model_dir/DOMAIN_MEANS_FILE`` (atomically)."""
    path = Path(model_dir) / DOMAIN_MEANS_FILE
    tmp = path.with_suffix(".tmp.npz")
    with open(tmp, "wb") as fh:
        np.savez(fh, snapshot=np.asarray(means.snapshot, np.float32), item=np.asarray(means.item, np.float32))
    os.replace(tmp, path)
    return path


def export_model_dir(heads, config: TrainConfig, model_dir, cache_dir, card_fields: dict | None = None,
                     last_stages=None, hub_reference=None, domain_means=None) -> Path:
    """``cache_dir``: where the ImageNet weights are cached (the parent of the feature cache).

    Write MODEL_DIR: ``model.keras`` (image -> unit-norm descriptor) and ``card.json`` (a :class:`ModelCard`
    from the config and ``card_fields``: further :class:`ModelCard` fields, e.g. the post-processing).
    ``heads``: one trained CGD head or a list (an ensemble: the descriptor is the L2-normalised
    concatenation of the heads' descriptors).  The backbone is the folded-BN ImageNet one (each member's own,
    ``config.member_backbones``, all at ``config.model_input_size``: one trunk per backbone);
    ``last_stages`` (one per head, when the last stage was fine-tuned) replace its last stage.
    ``hub_reference`` ``(R, D)``: the descriptors of the model's reference items (:data:`HUB_REFERENCE_FILE`);
    ``domain_means``: its training snapshots' and items' means (:data:`DOMAIN_MEANS_FILE`)."""
    import keras

    from ml.backbones.efficientnet_lite import VARIANTS, at_input_size, split_last_stage
    from ml.backbones.imagenet import feature_model, load_folded_imagenet_efficientnet_lite
    from ml.cgd import build_descriptor_model
    from ml.cgd.pooling import HorizontalFlip, L2Normalize

    heads = list(heads) if isinstance(heads, (list, tuple)) else [heads]
    if last_stages is not None:
        last_stages = list(last_stages) if isinstance(last_stages, (list, tuple)) else [last_stages]
        if all(stage is None for stage in last_stages):
            last_stages = None
        elif len(last_stages) != len(heads) or any(stage is None for stage in last_stages):
            raise ValueError("give one fine-tuned last stage per head, or none")
    variants = [config.member_backbone(k) for k in range(len(heads))]
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    size = config.model_input_size
    image = keras.Input((size, size, 3), name="image")
    # one trunk per backbone, run once per image and shared by its heads; every member at the model's side
    trunks = {}
    for variant in variants:
        if variant not in trunks:
            folded = load_folded_imagenet_efficientnet_lite(variant, Path(cache_dir))
            if size != VARIANTS[variant].input_size:
                folded = at_input_size(folded, variant, size)
            trunks[variant] = feature_model(folded) if last_stages is None else split_last_stage(folded, variant)[0]
    desc_heads = [build_descriptor_model(head, name=f"descriptor_head_{k}" if len(heads) > 1 else None)
                  for k, head in enumerate(heads)]

    def describe(x):
        """The (ensemble) descriptor of an image batch: every layer shared between the calls."""
        outputs = {variant: trunk(x) for variant, trunk in trunks.items()}
        if last_stages is None:
            features = [outputs[variant] for variant in variants]
        else:
            features = [stage(outputs[variant]) for stage, variant in zip(last_stages, variants)]
        parts = [desc_head(f) for desc_head, f in zip(desc_heads, features)]
        if len(parts) == 1:
            return parts[0]
        return L2Normalize()(keras.layers.Concatenate()(parts))

    descriptor = describe(image)
    if config.test_time_flip:  # the mean of the image's and its mirror image's descriptors
        descriptor = L2Normalize(name="flip_mean")(
            keras.layers.Add()([descriptor, describe(HorizontalFlip(name="mirror")(image))]))
    model = keras.Model(image, descriptor, name="cgd_" + "_".join(dict.fromkeys(variants)))
    tmp = model_dir / "model.tmp.keras"
    model.save(tmp)
    os.replace(tmp, model_dir / "model.keras")
    if hub_reference is not None:
        write_hub_reference(model_dir, hub_reference)
    if domain_means is not None:
        write_domain_means(model_dir, domain_means)
    card = ModelCard(
        backbone=config.backbone,
        input_size=size,
        descriptor_dim=int(descriptor.shape[-1]),
        ensemble=len(heads),
        member_backbones=list(variants) if len(set(variants)) > 1 else [],
        member_descriptor_dim=config.descriptor_dim,
        loss=config.loss,
        loss_options=dict(config.loss_options),
        branches=list(config.branches),
        train_config=config.to_dict(),
        date=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **(card_fields or {}),
    )
    card.write(model_dir)
    return model_dir
