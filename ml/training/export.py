"""Writing a model directory: ``model.keras`` (image -> unit-norm descriptor) and its :class:`ModelCard`."""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path

from ml.model_card import ModelCard

from .config import TrainConfig

__all__ = ["export_model_dir"]


def export_model_dir(heads, config: TrainConfig, model_dir, cache_dir, card_fields: dict | None = None,
                     last_stages=None) -> Path:
    """``cache_dir``: where the ImageNet weights are cached (the parent of the feature cache).

    Write MODEL_DIR: ``model.keras`` (image -> unit-norm descriptor) and ``card.json`` (a :class:`ModelCard`
    from the config and ``card_fields``: further :class:`ModelCard` fields, e.g. the post-processing).
    ``heads``: one trained CGD head or a list (an ensemble: the descriptor is the L2-normalised
    concatenation of the heads' descriptors).  The backbone is the folded-BN ImageNet one;
    ``last_stages`` (one per head, when the last stage was fine-tuned) replace its last stage."""
    import keras

    from ml.backbones.efficientnet_lite import VARIANTS, split_last_stage
    from ml.backbones.imagenet import feature_model, load_folded_imagenet_efficientnet_lite
    from ml.cgd import build_descriptor_model
    from ml.cgd.pooling import L2Normalize

    heads = list(heads) if isinstance(heads, (list, tuple)) else [heads]
    if last_stages is not None:
        last_stages = list(last_stages) if isinstance(last_stages, (list, tuple)) else [last_stages]
        if all(stage is None for stage in last_stages):
            last_stages = None
        elif len(last_stages) != len(heads) or any(stage is None for stage in last_stages):
            raise ValueError("give one fine-tuned last stage per head, or none")
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    folded = load_folded_imagenet_efficientnet_lite(config.backbone, Path(cache_dir))
    size = VARIANTS[config.backbone].input_size
    image = keras.Input((size, size, 3), name="image")
    if last_stages is None:
        shared = feature_model(folded)(image)
        features = [shared] * len(heads)
    else:
        trunk, _ = split_last_stage(folded, config.backbone)
        boundary = trunk(image)
        features = [stage(boundary) for stage in last_stages]
    descriptors = []
    for k, (head, f) in enumerate(zip(heads, features)):
        desc_head = build_descriptor_model(head, name=f"descriptor_head_{k}" if len(heads) > 1 else None)
        descriptors.append(desc_head(f))
    if len(descriptors) == 1:
        descriptor = descriptors[0]
    else:
        descriptor = L2Normalize(name="ensemble_descriptor")(
            keras.layers.Concatenate(name="ensemble_concat")(descriptors))
    model = keras.Model(image, descriptor, name=f"cgd_{config.backbone}")
    tmp = model_dir / "model.tmp.keras"
    model.save(tmp)
    os.replace(tmp, model_dir / "model.keras")
    card = ModelCard(
        backbone=config.backbone,
        input_size=size,
        descriptor_dim=int(descriptor.shape[-1]),
        ensemble=len(heads),
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
