"""An item photo's category from the backbone's ImageNet features: a trained softmax head (numpy, no Django).

The head is multinomial logistic regression on the L2-normalised global average of the EfficientNet-Lite
ImageNet feature map (``top_activation``, 1280-d): exactly the descriptor of the ``untrained-lite0`` model
version, so the platform classifies from the descriptor the embedding already produced (no second forward
pass). It is trained on the hand-labelled catalogue (``data/labels/item_categories.csv``) plus the users' and
admins' corrections, chosen by cross-validation (:func:`cross_validate`), and ships as a small ``.npz``
(``ml/tagging/heads/imagenet-lite0.npz``, written by ``manage.py train_tagger`` or
``bench/tagger_accuracy.py --write-head``)::

    head = CategoryHead(l2=1e-3).fit(vectors, categories)        # vectors (n, d), categories: n names
    category, confidence = head.predict(vectors)[0]
    head.save(path, meta={...}); head = CategoryHead.load(path)

    tagger = CategoryTagger("lite0")                             # backbone + shipped head, for files
    tags, errors = tagger.tag_files(paths)                       # tags[i] = Tag(path, category, confidence)

``confidence`` is the head's softmax probability of the category it answers (0..1); below
``SUGGESTION_THRESHOLD`` the platform shows the tag as a suggestion to confirm.

The first tagger (the ImageNet classifier's 1000 classes mapped onto the categories by name,
:func:`category_matrix`) stays as the baseline the benchmark prints beside the trained head.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["CATEGORIES", "CATEGORY_CLASSES", "Tag", "CategoryHead", "CategoryTagger", "cross_validate",
           "stratified_folds", "held_out_split", "feature_space_of", "shipped_head_path", "category_matrix",
           "category_scores", "tags_from_probabilities", "softmax", "REFINEMENTS", "SUGGESTION_THRESHOLD",
           "HEADS_DIR"]

# The platform's categories (recommender.taxonomy.CATEGORIES; repeated here: ml imports nothing from Django).
CATEGORIES = ("top", "outerwear", "bottom", "dress", "shoes", "bag", "hat", "accessory")

# A tag below this confidence is shown to the user as a suggestion to confirm or change (chosen in
# docs/RESULTS.md, issue 12: on the held-out items, tags at or above it are right far more often).
SUGGESTION_THRESHOLD = 0.8

HEADS_DIR = Path(__file__).resolve().parent / "heads"


def feature_space_of(spec: str) -> str | None:
    """The ImageNet feature space a model-version spec's descriptor lives in (``untrained-lite0`` ->
    ``imagenet-lite0``), or None for a trained model (its descriptor is a learned projection)."""
    spec = os.fspath(spec)
    if spec.startswith("untrained-"):
        return "imagenet-" + spec[len("untrained-"):]
    return None


def shipped_head_path(space: str = "imagenet-lite0") -> Path:
    return HEADS_DIR / f"{space}.npz"


# --------------------------------------------------------------------------------------------- the head


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if x.ndim == 1:
        x = x[None, :]
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float32)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


class CategoryHead:
    """Multinomial logistic regression with an L2 penalty on unit-norm vectors, standardised per feature.

    Deterministic full-batch training (Nesterov-accelerated gradient descent, step from the largest
    eigenvalue of the data's covariance). ``class_weight="balanced"`` weighs each labelled vector by the
    inverse frequency of its category, so a rare category (dress) is not drowned by the frequent ones.
    Categories without a single label get no weights and are never answered.
    """

    def __init__(self, l2: float = 1e-3, class_weight: str | None = "balanced", steps: int = 400):
        if class_weight not in (None, "balanced"):
            raise ValueError(f"class_weight must be None or 'balanced', not {class_weight!r}")
        self.l2, self.class_weight, self.steps = float(l2), class_weight, int(steps)
        self.mean_: np.ndarray | None = None
        self.scale_: np.ndarray | None = None
        self.weights_: np.ndarray | None = None  # (d, len(CATEGORIES))
        self.bias_: np.ndarray | None = None
        self.meta: dict = {}

    # .............................................................................................. fit
    def fit(self, vectors, categories) -> "CategoryHead":
        x = _unit_rows(vectors)
        categories = list(categories)
        if len(x) != len(categories):
            raise ValueError(f"{len(x)} vectors but {len(categories)} categories")
        unknown = sorted(set(categories) - set(CATEGORIES))
        if unknown:
            raise ValueError(f"unknown categories {unknown}; expected names from {CATEGORIES}")
        seen = sorted({CATEGORIES.index(c) for c in categories})
        if len(seen) < 2:
            raise ValueError("a category head needs labelled vectors of at least two categories")
        y = np.array([CATEGORIES.index(c) for c in categories])
        self.mean_ = x.mean(axis=0)
        self.scale_ = np.maximum(x.std(axis=0), 1e-6)
        z = ((x - self.mean_) / self.scale_).astype(np.float32)  # float32: twice as fast, same answers
        n, d = z.shape
        k = len(CATEGORIES)
        counts = np.bincount(y, minlength=k).astype(np.float64)
        if self.class_weight == "balanced":
            sample_weight = (n / (len(seen) * counts[y]))
        else:
            sample_weight = np.ones(n)
        sample_weight = (sample_weight / sample_weight.sum()).astype(np.float32)
        target = np.zeros((n, k), np.float32)
        target[np.arange(n), y] = 1.0
        present = counts > 0
        # the softmax loss's Hessian is at most 1/2 (weighted covariance) + l2: a safe step
        weighted = z * np.sqrt(sample_weight)[:, None]
        v = np.ones(d, np.float32) / np.sqrt(d)
        for _ in range(30):
            v = weighted.T @ (weighted @ v)
            v /= np.linalg.norm(v)
        lipschitz = 0.5 * float(v @ (weighted.T @ (weighted @ v))) + self.l2
        step = np.float32(1.0 / max(lipschitz, 1e-12))
        w, b = np.zeros((d, k), np.float32), np.zeros(k, np.float32)
        w_prev, b_prev = w.copy(), b.copy()
        for t in range(1, self.steps + 1):
            momentum = np.float32((t - 1) / (t + 2))
            wy, by = w + momentum * (w - w_prev), b + momentum * (b - b_prev)
            logits = z @ wy + by
            logits[:, ~present] = -np.inf
            p = softmax(logits)
            g = (p - target) * sample_weight[:, None]
            grad_w = z.T @ g + np.float32(self.l2) * wy
            grad_b = g.sum(axis=0)
            w_prev, b_prev = w, b
            w, b = wy - step * grad_w, by - step * grad_b
        w[:, ~present] = 0.0
        b[~present] = -1e9  # never answered: no label to learn it from
        self.weights_, self.bias_ = w.astype(np.float32), b.astype(np.float32)
        return self

    # .......................................................................................... predict
    @property
    def dim(self) -> int:
        self._check_fitted()
        return int(self.weights_.shape[0])

    def _check_fitted(self):
        if self.weights_ is None:
            raise RuntimeError("the category head is not trained (fit or load it first)")

    def probabilities(self, vectors) -> np.ndarray:
        """(n, d) vectors -> (n, 8) probabilities, columns in CATEGORIES order."""
        self._check_fitted()
        x = _unit_rows(vectors)
        if x.shape[1] != self.dim:
            raise ValueError(f"the category head expects {self.dim}-d vectors, got {x.shape[1]}-d")
        z = (x - self.mean_) / self.scale_
        return softmax(z @ self.weights_ + self.bias_)

    def predict(self, vectors) -> list[tuple[str, float]]:
        """(category, confidence) per vector: the most probable category and its probability."""
        p = self.probabilities(vectors)
        best = p.argmax(axis=1)
        return [(CATEGORIES[j], float(p[i, j])) for i, j in enumerate(best)]

    # ........................................................................................ save/load
    def save(self, path, meta: dict | None = None) -> Path:
        """Writes the head atomically (a reader never sees half a file). ``meta``: JSON-able facts kept
        with it (feature space, label count, cross-validated accuracy, ...)."""
        self._check_fitted()
        from ml.files import atomic_target

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.meta = dict(meta or self.meta)
        params = {"l2": self.l2, "class_weight": self.class_weight, "steps": self.steps}
        with atomic_target(path, ".npz") as tmp:
            with open(tmp, "wb") as handle:
                np.savez(handle, mean=self.mean_.astype(np.float32), scale=self.scale_.astype(np.float32),
                         weights=self.weights_, bias=self.bias_, categories=np.array(CATEGORIES),
                         params=json.dumps(params), meta=json.dumps(self.meta))
        return path

    @classmethod
    def load(cls, path) -> "CategoryHead":
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                if tuple(str(c) for c in data["categories"]) != CATEGORIES:
                    raise ValueError(f"{path}: trained for other categories {list(data['categories'])}")
                params = json.loads(str(data["params"]))
                head = cls(params["l2"], params["class_weight"], params["steps"])
                head.mean_, head.scale_ = data["mean"].astype(np.float64), data["scale"].astype(np.float64)
                head.weights_, head.bias_ = data["weights"], data["bias"]
                head.meta = json.loads(str(data["meta"]))
        except (OSError, KeyError, ValueError) as error:
            raise ValueError(f"{path}: not a category head ({error})") from None
        return head


# ------------------------------------------------------------------------------- splits and selection


def stratified_folds(categories, folds: int = 5, seed: int = 0) -> np.ndarray:
    """Fold index (0..folds-1) per label, each category spread evenly over the folds (seeded shuffle)."""
    categories = list(categories)
    rng = np.random.default_rng(seed)
    fold = np.zeros(len(categories), int)
    for category in sorted(set(categories)):
        members = np.array([i for i, c in enumerate(categories) if c == category])
        rng.shuffle(members)
        offset = int(rng.integers(folds))
        fold[members] = (np.arange(len(members)) + offset) % folds
    return fold


def held_out_split(keys, categories, fraction: float = 0.2, seed: int = 12) -> set:
    """The keys held out for the final measurement: ``fraction`` of each category (at least one per
    category with two or more labels), chosen by a seeded shuffle."""
    keys, categories = list(keys), list(categories)
    rng = np.random.default_rng(seed)
    held = set()
    for category in sorted(set(categories)):
        members = sorted(k for k, c in zip(keys, categories) if c == category)
        if len(members) < 2:
            continue
        order = rng.permutation(len(members))
        take = max(1, int(round(fraction * len(members))))
        held.update(members[i] for i in order[:take])
    return held


def cross_validate(vectors, categories, candidates, folds: int = 5, seed: int = 0) -> list[dict]:
    """Accuracy of each candidate (a dict of CategoryHead arguments) by stratified k-fold cross-validation;
    every label is predicted once by a head that never saw it. Returns one dict per candidate, best first:
    ``{"params", "accuracy", "balanced_accuracy", "predicted"}``."""
    x = _unit_rows(vectors)
    categories = list(categories)
    fold = stratified_folds(categories, folds, seed)
    truth = np.array(categories)
    results = []
    for params in candidates:
        predicted = np.empty(len(categories), dtype=object)
        for f in range(folds):
            test = fold == f
            head = CategoryHead(**params).fit(x[~test], truth[~test].tolist())
            predicted[test] = [c for c, _ in head.predict(x[test])]
        correct = predicted == truth
        recalls = [correct[truth == c].mean() for c in sorted(set(categories))]
        results.append({"params": dict(params), "accuracy": float(correct.mean()),
                        "balanced_accuracy": float(np.mean(recalls)), "predicted": predicted.tolist()})
    return sorted(results, key=lambda r: (-r["accuracy"], -r["balanced_accuracy"]))


# ------------------------------------------------------------------------------------- the file tagger


@dataclass(frozen=True)
class Tag:
    path: str
    category: str
    confidence: float  # the head's probability of that category


class CategoryTagger:
    """EfficientNet-Lite (ImageNet weights, BatchNorm folded) + a trained category head, for image files.
    What tags an image that has no descriptor in the head's feature space (and what an outside checker
    runs on photos the project has never seen). Load it once per process: building it takes seconds."""

    model_batch_size = 8

    def __init__(self, variant: str = "lite0", cache_dir=None, head: CategoryHead | str | os.PathLike | None = None):
        # (ml.embedding first: it switches on TensorFlow's oneDNN kernels before TensorFlow loads)
        from ml.embedding import UntrainedEmbedder

        self.embedder = UntrainedEmbedder(variant, cache_dir)  # its descriptor is the head's input
        self.variant, self.input_size = variant, self.embedder.input_size
        if head is None:
            head = shipped_head_path(f"imagenet-{variant}")
        self.head = head if isinstance(head, CategoryHead) else CategoryHead.load(head)
        if self.head.dim != self.embedder.dim:
            raise ValueError(f"the head takes {self.head.dim}-d vectors, {variant} gives {self.embedder.dim}-d")

    def tag_vectors(self, paths, vectors) -> list[Tag]:
        return [Tag(os.fspath(p), c, conf) for p, (c, conf) in zip(paths, self.head.predict(vectors))]

    def tag_files(self, paths, batch_size: int = 32, open_file=None) -> tuple[list[Tag], dict[str, str]]:
        """Tags image files: ``(tags, errors)``, tags in input order for the readable files, ``errors`` maps
        each unreadable file to its message (a bad file never stops the rest). ``open_file(name)`` opens a
        name as a binary file object (default: the local file ``name``; e.g. a Django storage's file)."""
        ok, vectors, errors = self.embedder.embed_files(paths, batch_size=batch_size, open_file=open_file)
        return (self.tag_vectors(ok, vectors) if ok else []), errors


# ----------------------------------------------------------------- the baseline: ImageNet classes by name

# category -> ImageNet class names (ml/backbones/imagenet_classes.json). A name may stand for several indices
# (ImageNet repeats a few names); all of them count. Written from the class names alone (issue 4).
CATEGORY_CLASSES: dict[str, tuple[str, ...]] = {
    "top": ("jersey", "sweatshirt", "cardigan", "wool", "brassiere", "maillot", "maillot tank suit", "bikini",
            "pajama", "bib"),
    "outerwear": ("trench coat", "fur coat", "lab coat", "suit", "military uniform", "cloak", "poncho",
                  "bulletproof vest", "academic gown", "vestment"),
    "bottom": ("jean", "miniskirt", "sarong", "swimming trunks", "knee pad"),
    "dress": ("gown", "overskirt", "abaya", "kimono", "hoopskirt", "apron"),
    "shoes": ("running shoe", "Loafer", "sandal", "clog", "cowboy boot", "sock", "shoe shop"),
    "bag": ("backpack", "purse", "mailbag", "plastic bag", "wallet", "pencil box", "shopping basket", "holster"),
    "hat": ("cowboy hat", "sombrero", "bonnet", "crash helmet", "football helmet", "bathing cap", "shower cap",
            "mortarboard", "pickelhaube", "bearskin", "ski mask"),
    "accessory": ("sunglasses", "sunglass", "necklace", "digital watch", "analog clock", "stopwatch", "bow tie",
                  "Windsor tie", "bolo tie", "stole", "feather boa", "chain", "buckle", "hair slide", "mitten",
                  "handkerchief", "umbrella"),
}

# Second pass of the baseline (issue 4, made on unlabelled items): class -> category.
REFINEMENTS: dict[str, str] = {"sleeping bag": "outerwear", "velvet": "outerwear", "vase": "shoes"}


def _imagenet_classes() -> list[str]:
    path = Path(__file__).resolve().parent.parent / "backbones" / "imagenet_classes.json"
    return json.loads(path.read_text(encoding="utf-8"))


def category_matrix(classes: list[str] | None = None, refined: bool = True) -> np.ndarray:
    """Baseline: (1000, 8) 0/1 matrix, ImageNet class i belongs to category j. Raises on a name ImageNet
    lacks or a class mapped to two categories. ``refined=False``: without ``REFINEMENTS``."""
    classes = _imagenet_classes() if classes is None else classes
    index: dict[str, list[int]] = {}
    for i, name in enumerate(classes):
        index.setdefault(name, []).append(i)
    matrix = np.zeros((len(classes), len(CATEGORIES)), np.float32)
    for j, category in enumerate(CATEGORIES):
        for name in CATEGORY_CLASSES[category]:
            if name not in index:
                raise ValueError(f"CATEGORY_CLASSES[{category!r}]: {name!r} is not an ImageNet class")
            for i in index[name]:
                if matrix[i].any() and not matrix[i, j]:
                    raise ValueError(f"ImageNet class {name!r} is mapped to two categories")
                matrix[i, j] = 1.0
    if refined:
        for name, category in REFINEMENTS.items():
            if name not in index:
                raise ValueError(f"REFINEMENTS: {name!r} is not an ImageNet class")
            for i in index[name]:
                matrix[i] = 0.0
                matrix[i, CATEGORIES.index(category)] = 1.0
    return matrix


def category_scores(probabilities: np.ndarray, matrix: np.ndarray | None = None) -> np.ndarray:
    """Baseline: (n, 1000) ImageNet softmax probabilities -> (n, 8) summed probability per category."""
    matrix = category_matrix() if matrix is None else matrix
    return np.asarray(probabilities, np.float32) @ matrix


def tags_from_probabilities(paths, probabilities: np.ndarray, matrix: np.ndarray | None = None) -> list[Tag]:
    """Baseline tags from ImageNet probabilities (the category with the largest summed probability)."""
    scores = category_scores(probabilities, matrix)
    best = scores.argmax(axis=1)
    return [Tag(os.fspath(p), CATEGORIES[b], float(scores[i, b])) for i, (p, b) in enumerate(zip(paths, best))]
