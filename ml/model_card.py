"""The model card: what a trained model directory says about its model (``card.json``).

One type for everyone: the trainer's export writes it, the embedder (:class:`ml.embedding.CGDEmbedder`) and
the platform (``recommender.embedders.model_card``) read it.

    card = ModelCard.read(model_dir)        # ModelCardError (a ValueError) names what is wrong
    card.postprocessing                     # ScoringSettings: how queries are scored
    card.recognition                        # RecognitionSettings: when an upload is a catalogue product
    card.write(model_dir)                   # atomic (a reader never sees half a card)

Unknown keys of an older or newer card are kept in ``extra`` (and written back), so reading and writing a
card loses nothing.  No Django imports here.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ml.retrieval.recognition import RecognitionSettings
from ml.retrieval.scoring import ScoringSettings

__all__ = ["ModelCard", "ModelCardError", "CARD_FILE", "CARD_FORMAT", "HUB_REFERENCE_FILE", "DOMAIN_MEANS_FILE"]

CARD_FILE = "card.json"
#: Beside the card: the model's reference items, ``(R, D)`` float32 descriptors that item queries' hubness is
#: measured against (:func:`ml.retrieval.scoring.softmax_hubness`); fixed with the model, so a query's cost
#: never grows with the catalogue.  Written by the export, read by :class:`ml.embedding.CGDEmbedder`.
HUB_REFERENCE_FILE = "hub_reference.npy"
#: Beside the card: the mean descriptor of the model's training snapshots and of its training items (arrays
#: ``snapshot`` and ``item``, :class:`ml.retrieval.scoring.DomainMeans`), which queries are moved by when the
#: post-processing centres them.  Written by the export, read by :class:`ml.embedding.CGDEmbedder`.
DOMAIN_MEANS_FILE = "domain_means.npz"
CARD_FORMAT = "fashionsite-cgd/1"


class ModelCardError(ValueError):
    """A card is missing, not JSON, or lacks what a model needs (the message names the file)."""


@dataclass
class ModelCard:
    backbone: str
    input_size: int
    descriptor_dim: int  # of the exported model's output (an ensemble: the concatenation)
    postprocessing: ScoringSettings = field(default_factory=ScoringSettings)
    recognition: RecognitionSettings = field(default_factory=RecognitionSettings)
    ensemble: int = 1
    member_backbones: list = field(default_factory=list)  # each member's backbone, where they differ
    member_descriptor_dim: int | None = None
    loss: str = ""
    loss_options: dict = field(default_factory=dict)
    branches: list = field(default_factory=list)
    train_config: dict = field(default_factory=dict)
    date: str = ""
    # how it was trained and chosen
    training_data_sha256: str = ""
    training_looks: int = 0
    excluded_test_looks: list = field(default_factory=list)
    selection: str = ""
    epochs_trained: int = 0
    member_epochs_trained: list = field(default_factory=list)
    selected_epochs: int = 0
    member_selected_epochs: list = field(default_factory=list)
    validation_metrics: dict | None = None
    validation_metrics_postprocessed: dict | None = None
    train_seconds: float = 0.0
    skipped_images: list = field(default_factory=list)
    format: str = CARD_FORMAT
    extra: dict = field(default_factory=dict)  # keys this version does not know, kept as they were

    # ------------------------------------------------------------------ dict / JSON
    def to_dict(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        data["postprocessing"] = self.postprocessing.to_dict()
        data["recognition"] = asdict(self.recognition)
        return {**self.extra, **data}

    @classmethod
    def from_dict(cls, data: dict, source: str = "card") -> "ModelCard":
        if not isinstance(data, dict):
            raise ModelCardError(f"{source}: expected a JSON object")
        try:
            backbone = str(data.get("backbone", ""))
            input_size, dim = int(data["input_size"]), int(data["descriptor_dim"])
        except (KeyError, TypeError, ValueError) as error:
            raise ModelCardError(f"{source}: corrupt model card ({type(error).__name__}: {error})") from None
        if input_size < 1 or dim < 1:
            raise ModelCardError(f"{source}: input_size and descriptor_dim must be positive")
        known = {f.name for f in fields(cls)} - {"extra"}
        values = {k: v for k, v in data.items() if k in known}
        values.update(backbone=backbone, input_size=input_size, descriptor_dim=dim,
                      postprocessing=ScoringSettings.from_dict(data.get("postprocessing")),
                      recognition=RecognitionSettings.from_dict(data.get("recognition")))
        return cls(**values, extra={k: v for k, v in data.items() if k not in known})

    @classmethod
    def read(cls, model_dir) -> "ModelCard":
        path = Path(model_dir) / CARD_FILE
        if not path.is_file():
            raise ModelCardError(f"{Path(model_dir)}: missing {CARD_FILE}")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ModelCardError(f"{path}: corrupt model card ({error})") from None
        return cls.from_dict(data, source=str(path))

    def write(self, model_dir) -> Path:
        """Writes ``card.json`` atomically (a temporary file renamed over it)."""
        model_dir = Path(model_dir)
        model_dir.mkdir(parents=True, exist_ok=True)
        tmp = model_dir / "card.tmp.json"
        tmp.write_text(json.dumps(self.to_dict(), indent=1))
        os.replace(tmp, model_dir / CARD_FILE)
        return model_dir / CARD_FILE
