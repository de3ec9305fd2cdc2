import argparse
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from ml.backbones.efficientnet_lite import VARIANTS
from ml.evaluation.dataset import LookDataset, read_look_ids
from ml.training import TrainConfig, train_with_selection


class Command(BaseCommand):
    help = (
        "Trains the CGD head (frozen ImageNet EfficientNet-Lite, cached feature maps) on the looks of a data "
        "folder and writes a model directory (model.keras + card.json). Without --val-looks the number of "
        "epochs and the post-processing are chosen on an inner split (a fifth of the training looks), then the "
        "model is trained on all training looks. Uses no database."
    )
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("--data", type=Path, required=True, help="folder in the original layout")
        parser.add_argument("--out", type=Path, required=True, help="model directory to write")
        parser.add_argument("--val-looks", type=Path, help="validation look ids (early stopping, settings)")
        parser.add_argument("--test-looks", type=Path, help="look ids excluded from everything")
        parser.add_argument("--epochs", type=int, default=TrainConfig.epochs, help="maximum epochs")
        parser.add_argument("--batch-size", type=int, default=TrainConfig.P * TrainConfig.K,
                            help="P*K images per batch (K=%d images per look)" % TrainConfig.K)
        parser.add_argument("--backbone", default=TrainConfig.backbone, choices=sorted(VARIANTS),
                            help="the backbone, and the side every member sees images at (default %(default)s)")
        parser.add_argument("--member-backbones", nargs="+", choices=sorted(VARIANTS),
                            help="one backbone per ensemble member (default: %s with the default backbone and "
                                 "ensemble, else --backbone for every member)"
                                 % " ".join(TrainConfig.member_backbones or ["--backbone"]))
        parser.add_argument("--loss", default=TrainConfig.loss,
                            help="arcface+classification, multi_positive, arcface, ... ('+' combines)")
        parser.add_argument("--views", type=int, default=TrainConfig.views, help="augmentation views per image")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--fine-tune-last-stage", action="store_true",
                            help="train the backbone's last stage with the head (slower; cached trunk outputs)")
        parser.add_argument("--last-stage-lr", type=float, default=TrainConfig.last_stage_learning_rate,
                            help="learning rate of the fine-tuned last stage")
        parser.add_argument("--ensemble", type=int,
                            help="heads trained with seeds seed, seed+1, ... (descriptors concatenated; default: "
                                 "one per --member-backbones, else %d)" % TrainConfig.ensemble)
        parser.add_argument("--test-time-flip", action=argparse.BooleanOptionalAction,
                            default=TrainConfig.test_time_flip,
                            help="the model describes an image by the mean of it and its mirror image")
        parser.add_argument("--resume", action="store_true", help="continue from the checkpoints in --out")

    def handle(self, data, out, val_looks, test_looks, epochs, batch_size, backbone, loss, views, seed, resume,
               fine_tune_last_stage, last_stage_lr, ensemble, test_time_flip, member_backbones, **options):
        try:
            config = TrainConfig.from_batch_size(
                batch_size, backbone=backbone, epochs=epochs, loss=loss, views=views, seed=seed,
                fine_tune_last_stage=fine_tune_last_stage, last_stage_learning_rate=last_stage_lr,
                test_time_flip=test_time_flip, **ensemble_members(backbone, ensemble, member_backbones),
            ).check()
            dataset = LookDataset.from_folder(data)
            test = read_look_ids(test_looks, dataset) if test_looks else set()
            val = read_look_ids(val_looks, dataset) if val_looks else None
        except (OSError, ValueError) as error:
            raise CommandError(str(error))
        cache_dir = Path(settings.MODEL_CACHE_DIR) / "features"
        verbose = options.get("verbosity", 1) > 0
        try:
            card = train_with_selection(dataset, out, cache_dir, config, test_look_ids=test,
                                        val_look_ids=val, resume=resume, progress=verbose,
                                        log=(lambda m: self.stdout.write(m)) if verbose else (lambda m: None))
        except (FileNotFoundError, ValueError) as error:
            raise CommandError(str(error))
        for name in card.skipped_images:
            self.stderr.write(f"skipped {name}")
        self.stdout.write(f"model written to {out} ({card.epochs_trained} epochs, "
                          f"{card.train_seconds} s); post-processing {card.postprocessing.to_dict()}")


def ensemble_members(backbone: str, ensemble: int | None, member_backbones: list | None) -> dict:
    """The ensemble's size and members' backbones from the options: those given; with neither, the default
    recipe's members when the backbone is the default one; otherwise every member on ``--backbone`` (so that
    ``--backbone lite0`` or ``--ensemble 1`` alone mean what they say)."""
    if member_backbones:
        return dict(ensemble=len(member_backbones) if ensemble is None else ensemble,
                    member_backbones=tuple(member_backbones))
    if ensemble is None and backbone == TrainConfig.backbone:
        return dict(ensemble=TrainConfig.ensemble, member_backbones=TrainConfig.member_backbones)
    return dict(ensemble=TrainConfig.ensemble if ensemble is None else ensemble, member_backbones=())
