"""Training CGD heads on looks, one job per module:

* :mod:`.config`: :class:`TrainConfig` (and the rules every caller gets), :class:`TrainResult`;
* :mod:`.splits`: which looks and images a run sees (subsets, the inner split, the data fingerprint);
* :mod:`.feature_cache`, :mod:`.sampler`: cached backbone feature maps, look-balanced P x K batches;
* :mod:`.loop`: :func:`train`, one head's training loop (validation, early stopping, resume);
* :mod:`.checkpoints`, :mod:`.curves`: the saved training state, the training curve;
* :mod:`.ensemble`: several heads, their joined descriptors;
* :mod:`.selection`: the post-processing defaults and their search on validation looks;
* :mod:`.export`: the model directory (``model.keras`` + :class:`ml.model_card.ModelCard`);
* :mod:`.recipe`: :func:`train_with_selection`, the default recipe (``manage.py train_cgd``, the platform).

No Django imports here.
"""

from .config import INNER_SPLIT_FRACTION, TrainConfig, TrainResult, check_loss_name
from .ensemble import ensemble_vectors, join_descriptors, member_config, train_ensemble
from .export import export_model_dir
from .loop import train
from .recipe import train_with_selection, training_split
from .selection import DEFAULT_POSTPROCESSING, evaluate_vectors, select_postprocessing
from .splits import data_fingerprint, inner_split, subset_dataset, training_images

__all__ = ["TrainConfig", "TrainResult", "INNER_SPLIT_FRACTION", "check_loss_name", "train", "train_ensemble",
           "ensemble_vectors", "join_descriptors", "member_config", "export_model_dir", "train_with_selection",
           "training_split", "DEFAULT_POSTPROCESSING", "evaluate_vectors", "select_postprocessing",
           "data_fingerprint", "inner_split", "subset_dataset", "training_images"]
