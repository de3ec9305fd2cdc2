"""The one image-embedding interface used by the platform and the evaluation.

    emb = load_embedder("untrained-lite0", cache_dir)
    ok_paths, vectors, errors = emb.embed_files(paths)
    for names, vectors, errors in emb.iter_embedded(paths, batch_size=8): ...   # batch by batch

Vectors are float32 and L2-normalised (cosine similarity == dot product).
No Django imports here.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .batching import MicroBatcher
from .images import INPUT_MEAN, INPUT_SCALE, ImageError, load_input_pixels, preprocess_array, read_image_file

__all__ = ["Embedder", "UntrainedEmbedder", "CGDEmbedder", "ModelDirError", "load_embedder", "default_cache_dir",
           "set_tf_threads"]


DECODE_AHEAD = 2
"""Batches read (and decoded) ahead of the forward pass in ``Embedder.iter_embedded`` (memory: this many batches
of files, or of inputs)."""


def _file_error(path, error: Exception) -> str:
    """The message for a file that could not be embedded: an ImageError names the file and the problem already."""
    return str(error) if isinstance(error, ImageError) else f"{path}: {type(error).__name__}: {error}"


def default_cache_dir() -> Path:
    """``$FASHIONSITE_ML_CACHE`` or ``~/.cache/fashionsite-ml``."""
    env = os.environ.get("FASHIONSITE_ML_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "fashionsite-ml"


def set_tf_threads(intra_op: int = 0, inter_op: int = 0) -> bool:
    """Sizes TensorFlow's two thread pools in this process (0: TensorFlow's default, one thread per core):
    ``intra_op`` threads share one operation (a convolution), ``inter_op`` threads run independent operations
    at once. It takes effect only before TensorFlow runs anything in the process (call it before the first
    model loads); returns False, changing nothing, when it is too late.

    The embedding worker uses one inter-op thread: EfficientNet is a chain of operations with little to run side
    by side, and a second pool of runnable threads only competes for the cores with the image decoder and the
    descriptor writer that overlap the forward pass (docs/RESULTS.md, issue 9 point 5)."""
    from . import backbones  # noqa: F401 - TensorFlow's oneDNN switch, read when TensorFlow is first imported
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(int(intra_op))
        tf.config.threading.set_inter_op_parallelism_threads(int(inter_op))
    except RuntimeError:  # TensorFlow is already initialised: its pools keep their sizes
        return False
    return True


def _l2_normalise(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    n = np.linalg.norm(v, axis=1, keepdims=True)
    return (v / np.maximum(n, 1e-12)).astype(np.float32, copy=False)


class Embedder:
    """Base class: subclasses set ``name``, ``dim``, ``input_size`` and implement
    :meth:`embed_batch`."""

    name: str = "embedder"
    dim: int = 0
    input_size: int = 224
    decode_workers: int = 1  # one decoder thread overlaps well with TF on 2 cores
    # Where iter_embedded decodes: None decides by TensorFlow's intra-op threads (decode_in_thread()).
    decode_ahead_in_thread: bool | None = None
    model_batch_size: int = 8  # images per forward pass inside embed_batch (subclasses)

    def embed_batch(self, batch: np.ndarray) -> np.ndarray:
        """(n, size, size, 3) model inputs -> (n, dim) float32, rows L2-normalised. The inputs are either the
        preprocessed float32 arrays (``ml.images.load_input_array``) or the uint8 pixels they are made from
        (``load_input_pixels``): those are normalised inside the graph, the same float32 values to the bit, so
        both give the same descriptors; the pixels are a quarter of the bytes to decode into, stack and copy.

        Subclasses call ``self._compile(forward)`` with their float32 batch -> descriptors function."""
        batch = np.asarray(batch)
        pixels = batch.dtype == np.uint8
        if not pixels:
            batch = batch.astype(np.float32, copy=False)
        if batch.ndim != 4 or batch.shape[1:] != (self.input_size, self.input_size, 3):
            raise ValueError(
                f"{self.name}: expected a batch of shape (n, {self.input_size}, "
                f"{self.input_size}, 3), got {batch.shape}")
        if len(batch) == 0:
            return np.zeros((0, self.dim), np.float32)
        embed = self._embed_pixels if pixels else self._embed
        # small forward batches use the CPU caches better (~25% less CPU per image
        # than one batch of 32 on the 2-core box); results do not depend on it
        step = max(1, int(self.model_batch_size))
        outs = [embed(batch[i:i + step]).numpy() for i in range(0, len(batch), step)]
        return np.concatenate(outs).astype(np.float32, copy=False)

    def _compile(self, forward) -> None:
        """``self._embed`` (float32 inputs) and ``self._embed_pixels`` (uint8 pixels, normalised here as
        ``ml.images.preprocess_array`` does: ``(x - 127) / 128``, exact in float32) from ``forward``, a function
        of a float32 batch (n, size, size, 3) to its L2-normalised descriptors."""
        import tensorflow as tf

        size = self.input_size

        @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)], reduce_retracing=True)
        def _embed(batch):
            return forward(batch)

        @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8)], reduce_retracing=True)
        def _embed_pixels(pixels):
            return forward((tf.cast(pixels, tf.float32) - INPUT_MEAN) * INPUT_SCALE)

        self._embed, self._embed_pixels = _embed, _embed_pixels

    def warm_up(self) -> None:
        """Runs both compiled forward passes (uint8 pixels, float32 inputs) once on a blank image, so that
        TensorFlow traces and optimises their graphs now: about 0.7 s of CPU each on the 2 cores, which
        otherwise lands in the first real call (a worker's first batch, a web process's first search). The
        batch dimension is left open in the graphs, so batches of any size reuse them."""
        blank = np.zeros((1, self.input_size, self.input_size, 3), np.uint8)
        self.embed_batch(blank)
        self.embed_batch(preprocess_array(blank))

    query_batch_size: int = 8  # the most concurrent single-image queries one forward pass takes (embed_one)
    _batcher_lock = threading.Lock()

    def embed_one(self, image: np.ndarray) -> np.ndarray:
        """One preprocessed image (size, size, 3) -> its (dim,) descriptor, as embed_batch computes it.

        For serving: concurrent callers in this process (a web worker's request threads) share forward passes
        (ml.batching.MicroBatcher), which costs less CPU per image than one pass each; a lone caller runs at
        once. With ``query_batch_size`` 1, every call runs its own forward pass, concurrently with the others."""
        if self.query_batch_size <= 1:
            return self.embed_batch(np.asarray(image, dtype=np.float32)[None])[0]
        batcher = self.__dict__.get("_query_batcher")
        if batcher is None:
            with Embedder._batcher_lock:
                batcher = self.__dict__.setdefault(
                    "_query_batcher", MicroBatcher(self.embed_batch, max_batch=self.query_batch_size))
        return batcher(np.asarray(image, dtype=np.float32))

    def _load(self, path, open_file=None) -> np.ndarray:
        """The model's uint8 input pixels of a file (``embed_batch`` normalises them)."""
        if open_file is None:
            return load_input_pixels(path, self.input_size)
        with open_file(path) as handle:  # e.g. a Django storage's file: no local path needed
            return load_input_pixels(handle, self.input_size, name=path)

    def embed_files(self, paths, batch_size: int = 32, progress: bool = False, open_file=None
                    ) -> tuple[list[str], np.ndarray, dict[str, str]]:
        """Embed image files.

        Returns ``(ok_paths, vectors, errors)``: ``vectors[i]`` belongs to
        ``ok_paths[i]`` (input order kept); ``errors`` maps each file that could
        not be loaded to a message.  A bad file never aborts the rest.
        ``open_file(name)``: opens a name as a binary file object (default: the local file ``name``).
        Decoding overlaps the forward pass (:meth:`iter_embedded`).
        """
        ok_paths: list[str] = []
        chunks: list[np.ndarray] = []
        errors: dict[str, str] = {}
        for names, vectors, batch_errors in self.iter_embedded(paths, batch_size, progress, open_file):
            ok_paths.extend(names)
            chunks.append(vectors)
            errors.update(batch_errors)
        vectors = np.concatenate(chunks) if chunks else np.zeros((0, self.dim), np.float32)
        return ok_paths, vectors, errors

    def iter_embedded(self, paths, batch_size: int = 32, progress: bool = False, open_file=None):
        """Embeds image files batch by batch, yielding ``(names, vectors, errors)`` per batch of ``batch_size``
        files in input order (``vectors[i]`` belongs to ``names[i]``; ``errors``: file -> message), so that a
        caller can store one batch while the model runs on the next.

        A background thread works ``DECODE_AHEAD`` batches ahead of the forward pass, one job per batch, so the
        model's thread hands over once per batch (one job per image cost a wait for the GIL per image: up to 5 ms
        each, sys.getswitchinterval, on the 2 cores). It reads and decodes each batch there, or, where
        :meth:`decode_in_thread` says no, only reads the files (storage I/O, which may be a network's) and this
        thread decodes them just before their forward pass.
        """
        paths = [os.fspath(p) for p in paths]
        batch_size = max(1, int(batch_size))
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(paths), desc=f"embedding ({self.name})", unit="img")
        batches = [paths[i:i + batch_size] for i in range(0, len(paths), batch_size)]
        in_thread = self.decode_in_thread()
        job = self._decode_batch if in_thread else self._read_batch
        pool = ThreadPoolExecutor(max_workers=max(1, self.decode_workers), thread_name_prefix="decode")
        try:
            ahead = deque(pool.submit(job, b, open_file) for b in batches[:DECODE_AHEAD])
            for bi in range(len(batches)):
                done = ahead.popleft().result()
                if bi + DECODE_AHEAD < len(batches):  # keep the reader busy while the model runs
                    ahead.append(pool.submit(job, batches[bi + DECODE_AHEAD], open_file))
                arrays, names, errors = done if in_thread else self._decode_read(*done)
                vectors = (np.asarray(self.embed_batch(arrays), dtype=np.float32) if names
                           else np.zeros((0, self.dim), np.float32))
                if bar is not None:
                    bar.update(len(batches[bi]))
                yield names, vectors, errors
        finally:  # also when the caller stops early or fails: what was queued ahead is dropped
            pool.shutdown(wait=True, cancel_futures=True)
            if bar is not None:
                bar.close()

    def decode_in_thread(self) -> bool:
        """Whether iter_embedded decodes in its background thread, beside the forward pass (True), or in the
        model's own thread, between forward passes (False). ``decode_ahead_in_thread`` decides where set;
        otherwise the model's own thread decodes when TensorFlow runs on one intra-op thread in this process:
        the process is then one of several sharing the cores (the bulk worker's pool of one process per core),
        so the others' forward passes keep the cores busy while it decodes, and a decoder thread running beside
        its forward pass cost about 1 ms more CPU an image (Lite0: 16.1 against 17.1 ms, two processes side by
        side, docs/RESULTS.md session 18). A process on every core decodes in the thread, which overlaps the
        forward pass for it."""
        if self.decode_ahead_in_thread is not None:
            return bool(self.decode_ahead_in_thread)
        import tensorflow as tf

        return tf.config.threading.get_intra_op_parallelism_threads() != 1

    def _read_batch(self, paths, open_file=None) -> tuple[list, dict[str, str]]:
        """A batch of files read whole into memory, not decoded: ``([(path, file object)], errors)`` (in the
        background thread: never raises)."""
        read, errors = [], {}
        for p in paths:
            try:
                if open_file is None:
                    read.append((p, read_image_file(p)))
                else:
                    with open_file(p) as handle:
                        read.append((p, read_image_file(handle, name=p)))
            except Exception as e:  # noqa: BLE001 - never abort the whole run
                errors[p] = _file_error(p, e)
        return read, errors

    def _decode_read(self, read, errors) -> tuple[np.ndarray | None, list[str], dict[str, str]]:
        """``_decode_batch``'s result for a batch ``_read_batch`` read, with the files it could not read."""
        arrays, names, decode_errors = self._decode_batch([p for p, _ in read], open_file=dict(read).__getitem__)
        return arrays, names, {**errors, **decode_errors}

    def _decode_batch(self, paths, open_file=None) -> tuple[np.ndarray | None, list[str], dict[str, str]]:
        """Model inputs (uint8 pixels) of a batch of files, stacked: ``(inputs, names of the files decoded, errors)``. A file that
        cannot be read or decoded lands in the errors with its message (in the decoder thread: never raises)."""
        arrays, names, errors = [], [], {}
        for p in paths:
            try:
                arrays.append(self._load(p, open_file))
                names.append(p)
            except Exception as e:  # noqa: BLE001 - never abort the whole run
                errors[p] = _file_error(p, e)
        return (np.stack(arrays) if arrays else None), names, errors

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} dim={self.dim} input={self.input_size}>"


class UntrainedEmbedder(Embedder):
    """ImageNet EfficientNet-Lite, not fine-tuned: global average pooling of the
    last feature map (``top_activation``), L2-normalised (1280-d)."""

    model_batch_size = 8  # images per forward pass inside embed_batch

    def __init__(self, variant: str = "lite0", cache_dir=None):
        # (imports ml.backbones first: it enables TF's oneDNN kernels, ~2x faster here)
        from .backbones.efficientnet_lite import FEATURE_DIM, VARIANTS
        import tensorflow as tf
        from .backbones.imagenet import feature_model, load_folded_imagenet_efficientnet_lite

        if variant not in VARIANTS:
            raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}")
        self.variant = variant
        self.name = f"untrained-{variant}"
        self.dim = FEATURE_DIM
        self.input_size = VARIANTS[variant].input_size
        cache_dir = default_cache_dir() if cache_dir is None else cache_dir
        self._features = feature_model(load_folded_imagenet_efficientnet_lite(variant, cache_dir))
        features = self._features

        def forward(batch):
            fmap = features(batch, training=False)
            pooled = tf.reduce_mean(fmap, axis=[1, 2])
            return tf.math.l2_normalize(pooled, axis=1, epsilon=1e-24)

        self._compile(forward)


class ModelDirError(ValueError):
    """A trained model directory is missing, incomplete or corrupt (message names it)."""


class CGDEmbedder(Embedder):
    """A trained CGD model directory (``manage.py train_cgd``): ``model.keras``
    (image -> unit-norm descriptor) and its :class:`ml.model_card.ModelCard` (``self.card``: backbone,
    input size, descriptor dim, post-processing and recognition settings, ...)."""

    def __init__(self, model_dir):
        import tensorflow as tf

        from .model_card import ModelCard, ModelCardError

        model_dir = Path(model_dir)
        model_path = model_dir / "model.keras"
        if not model_dir.is_dir():
            raise ModelDirError(f"model directory not found: {model_dir}")
        try:
            self.card = ModelCard.read(model_dir)
        except ModelCardError as e:
            raise ModelDirError(str(e)) from None
        if not model_path.is_file():
            raise ModelDirError(f"{model_dir}: missing {model_path.name}")
        self.dim = self.card.descriptor_dim
        self.input_size = self.card.input_size
        import keras

        import ml.cgd  # noqa: F401 - registers the custom layers

        try:
            self.model = keras.saving.load_model(str(model_path), compile=False)
        except Exception as e:  # noqa: BLE001
            raise ModelDirError(f"{model_path}: cannot load the model ({type(e).__name__}: {e})") from None
        shape = tuple(self.model.output.shape)
        if shape[-1] != self.dim:
            raise ModelDirError(f"{model_dir}: model outputs {shape[-1]}-d, card says {self.dim}")
        self.model_dir = model_dir
        self.hub_reference = self._hub_reference(model_dir)
        self.domain_means = self._domain_means(model_dir)
        backbones = "+".join(dict.fromkeys(self.card.member_backbones or [self.card.backbone or "?"]))
        self.name = f"cgd-{backbones}-{model_dir.name}"
        model = self.model

        def forward(batch):
            return tf.math.l2_normalize(model(batch, training=False), axis=1, epsilon=1e-24)

        self._compile(forward)


    def _domain_means(self, model_dir: Path):
        """The model's :class:`ml.retrieval.scoring.DomainMeans` (``domain_means.npz``), None when it has none
        (an older model: queries are then scored where they are, whatever the card's centring says)."""
        from .model_card import DOMAIN_MEANS_FILE
        from .retrieval.scoring import DomainMeans

        path = model_dir / DOMAIN_MEANS_FILE
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                means = DomainMeans(snapshot=data["snapshot"].astype(np.float32), item=data["item"].astype(np.float32))
        except (OSError, ValueError, KeyError) as e:
            raise ModelDirError(f"{path}: cannot read the domain means ({e})") from None
        if means.snapshot.shape != (self.dim,) or means.item.shape != (self.dim,):
            raise ModelDirError(f"{path}: means of shapes {means.snapshot.shape} / {means.item.shape}, "
                                f"expected ({self.dim},)")
        return means

    def _hub_reference(self, model_dir: Path):
        """The model's reference items ``(R, dim)`` (``hub_reference.npy``), None when it has none (an older
        model: item queries are then scored without the hubness correction)."""
        from .model_card import HUB_REFERENCE_FILE

        path = model_dir / HUB_REFERENCE_FILE
        if not path.is_file():
            return None
        try:
            reference = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise ModelDirError(f"{path}: cannot read the reference items ({e})") from None
        if reference.ndim != 2 or reference.shape[1] != self.dim:
            raise ModelDirError(f"{path}: reference items of shape {reference.shape}, expected (n, {self.dim})")
        from .retrieval.scoring import normalise

        return normalise(reference)


def load_embedder(spec, cache_dir=None) -> Embedder:
    """Embedder from a model-version spec: ``"untrained-lite0"``, ``"untrained-lite2"``,
    or the path of a trained model directory (:class:`CGDEmbedder`)."""
    specs = {"untrained-lite0": "lite0", "untrained-lite2": "lite2"}
    if isinstance(spec, (str, os.PathLike)) and os.fspath(spec) in specs:
        return UntrainedEmbedder(specs[os.fspath(spec)], cache_dir)
    if isinstance(spec, os.PathLike) or (isinstance(spec, str) and (os.sep in spec or Path(spec).is_dir())):
        return CGDEmbedder(spec)
    raise ValueError(f"unknown embedder spec {spec!r}; known: {sorted(specs)} or a model directory")
