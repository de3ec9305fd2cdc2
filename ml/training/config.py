"""What a training run is asked to do (:class:`TrainConfig`), the rules every caller gets, and what a run
returns (:class:`TrainResult`).

The rules live here, not in a command, so that ``manage.py train_cgd`` and the platform's background
training (recommender.services.training) train under the same ones:

* :meth:`TrainConfig.check`: every number in range and the loss a registered one (ValueError naming it);
* :meth:`TrainConfig.from_batch_size`: a batch size as P looks x K images (K = 4 from 8 images up, else 2);
* :meth:`TrainConfig.fitted_to_looks`: P never above the looks a phase trains on (a look-balanced batch
  cannot hold more looks than there are);
* :data:`INNER_SPLIT_FRACTION`: the share of the training looks an inner split holds out.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

__all__ = ["TrainConfig", "TrainResult", "INNER_SPLIT_FRACTION", "inner_validation_size", "check_loss_name"]

#: the share of the training looks held out by the inner split (when no validation looks are given)
INNER_SPLIT_FRACTION = 0.2


def inner_validation_size(n_looks: int, fraction: float = INNER_SPLIT_FRACTION) -> int:
    """How many of ``n_looks`` the inner split holds out (at least one)."""
    return max(1, int(round(n_looks * fraction)))


@dataclass
class TrainConfig:
    backbone: str = "lite2"     # chosen on the inner split over lite0 (docs/RESULTS.md)
    epochs: int = 30
    P: int = 16
    K: int = 4
    learning_rate: float = 1e-3
    descriptor_dim: int = 512
    loss: str = "arcface+classification"
    loss_options: dict = field(default_factory=dict)
    branches: tuple = ("spoc", "gem")
    seed: int = 0
    patience: int = 6
    views: int = 1              # 1 view measured no worse than 3 on the inner split, and cheaper
    fine_tune_last_stage: bool = False  # train the backbone's last stage too (on cached trunk outputs)
    last_stage_learning_rate: float = 1e-4  # its own Adam: pretrained weights move slower than the new head
    ensemble: int = 3           # heads trained independently (seeds seed, seed+1, ...), descriptors concatenated
    test_time_flip: bool = False  # the exported model describes an image by the mean of it and its mirror image
    # the backbone of each ensemble member, one per member (empty: ``backbone`` for all). Every member sees the
    # image at the side of ``backbone``: the exported model decodes and resizes an image once (EfficientNet's
    # layers run at any side; docs/RESULTS.md session 21)
    member_backbones: tuple = ()
    input_size: int = 0         # the side images are resized to (0: the backbone's own)

    @property
    def model_input_size(self) -> int:
        """The side the images are resized to: ``input_size``, or the backbone's own."""
        from ml.backbones.efficientnet_lite import VARIANTS

        return int(self.input_size) or VARIANTS[self.backbone].input_size

    def member_backbone(self, member: int) -> str:
        """The backbone of ensemble member ``member``."""
        return self.member_backbones[member] if self.member_backbones else self.backbone

    @property
    def batch_size(self) -> int:
        return self.P * self.K

    def to_dict(self) -> dict:
        d = asdict(self)
        d["branches"] = list(self.branches)
        d["member_backbones"] = list(self.member_backbones)
        return d

    @classmethod
    def from_batch_size(cls, batch_size: int, **options) -> "TrainConfig":
        """P x K from a number of images per batch: K = 4 images per look from 8 images up, else 2."""
        if batch_size < 2:
            raise ValueError(f"the batch size must be at least 2 images, got {batch_size}")
        K = 4 if batch_size >= 8 else 2
        return cls(P=max(1, batch_size // K), K=K, **options)

    def fitted_to_looks(self, n_looks: int) -> "TrainConfig":
        """This config with at most ``n_looks`` looks per batch (the looks the phase trains on)."""
        return replace(self, P=min(self.P, max(1, int(n_looks))))

    def check(self) -> "TrainConfig":
        """ValueError naming the first setting out of range or the unknown loss; returns self."""
        from ml.backbones.efficientnet_lite import VARIANTS

        for name, low in (("epochs", 1), ("P", 1), ("K", 1), ("views", 1), ("ensemble", 1),
                          ("descriptor_dim", 1), ("patience", 0), ("input_size", 0)):
            if int(getattr(self, name)) < low:
                raise ValueError(f"{name} must be at least {low}, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise ValueError(f"a batch needs at least 2 images (P x K = {self.P} x {self.K})")
        if self.backbone not in VARIANTS:
            raise ValueError(f"unknown backbone {self.backbone!r}; known: {', '.join(sorted(VARIANTS))}")
        if self.member_backbones and len(self.member_backbones) != self.ensemble:
            raise ValueError(f"member_backbones names {len(self.member_backbones)} backbones "
                             f"({', '.join(self.member_backbones)}) for an ensemble of {self.ensemble}: give one "
                             f"per member, or none for {self.backbone} on every member")
        unknown = [b for b in self.member_backbones if b not in VARIANTS]
        if unknown:
            raise ValueError(f"unknown member backbone {unknown[0]!r}; known: {', '.join(sorted(VARIANTS))}")
        if self.fine_tune_last_stage and {self.member_backbone(k) for k in range(self.ensemble)} != {self.backbone}:
            raise ValueError("fine_tune_last_stage trains one backbone's last stage: it takes no ensemble members "
                             "on other backbones (member_backbones)")
        if self.input_size and self.fine_tune_last_stage:
            raise ValueError("fine_tune_last_stage runs the backbone at its own input side: leave input_size 0")
        check_loss_name(self.loss)
        return self


def check_loss_name(loss: str) -> None:
    """ValueError unless ``loss`` is a registered loss or a '+'-joined combination of them."""
    from ml.losses import LOSSES

    if loss not in LOSSES and not all(part in LOSSES for part in loss.split("+")):
        raise ValueError(f"unknown loss {loss!r}; known: {', '.join(sorted(LOSSES))}")


@dataclass
class TrainResult:
    """One trained head: its run directory, per-epoch history and what the recipe needs next."""

    out_dir: Path
    history: list
    best_epoch: int
    epochs_trained: int
    val_metrics: dict | None
    seconds: float
    head: object = None          # the trained CGD head (keras model)
    last_stage: object = None    # the fine-tuned last backbone stage, or None
    feature_shape: tuple = ()    # shape of one cached feature map
    vectors_fn: object = None    # names -> (n, descriptor_dim) descriptors of the cached maps
    index: dict = field(default_factory=dict)    # image name -> row of the feature tensor
    skipped: dict = field(default_factory=dict)  # image name -> why it could not be read
    config: TrainConfig | None = None            # the config the head was trained with (its backbone, side)
