"""Where Embedder.iter_embedded decodes (ml.embedding.Embedder.decode_in_thread): in its background thread beside
the forward pass, or in the model's own thread with the background thread only reading the files. Both give the
same batches, the same descriptors to the bit and the same error messages, for local files and for files opened
through a storage-like `open_file`."""
import io

import numpy as np
import pytest
from django.conf import settings

from ml.embedding import load_embedder


@pytest.fixture(scope="module")
def embedder():
    return load_embedder("untrained-lite0", settings.MODEL_CACHE_DIR)


@pytest.fixture
def files(sample_dir, tmp_path):
    """Good sample photos with a broken, an empty and a missing file among them."""
    good = [str(p) for p in sorted(sample_dir.glob("*_part.jpg"))[:5]]
    bad, empty = tmp_path / "bad.jpg", tmp_path / "empty.jpg"
    bad.write_text("not a jpeg")
    empty.write_bytes(b"")
    return good[:2] + [str(bad)] + good[2:4] + [str(empty), str(tmp_path / "missing.jpg")] + good[4:]


class UnreadableFile(io.BytesIO):
    def read(self, *args):
        raise OSError("connection reset by peer")


def storage_opener(paths):
    """A storage's `open`: file objects with no local path; one file fails as it is read, one as it is opened."""
    stored = {p: open(p, "rb").read() for p in paths if p.endswith("_part.jpg")}
    stored.update({p: b"" for p in paths if p.endswith("empty.jpg")})
    unreadable = next(p for p in paths if p.endswith("_part.jpg"))

    def open_file(name):
        if name == unreadable:
            return UnreadableFile(b"")
        if name.endswith("bad.jpg"):
            return io.BytesIO(b"not a jpeg")
        if name not in stored:
            raise FileNotFoundError(f"no such object: {name}")
        return io.BytesIO(stored[name])

    return open_file


def run(embedder, paths, in_thread, open_file=None):
    embedder.decode_ahead_in_thread = in_thread
    try:
        return list(embedder.iter_embedded(paths, batch_size=3, open_file=open_file))
    finally:
        embedder.decode_ahead_in_thread = None


@pytest.mark.parametrize("through_storage", [False, True], ids=["local files", "storage"])
def test_decoding_in_the_model_thread_gives_what_the_decoder_thread_gives(embedder, files, through_storage):
    open_file = storage_opener(files) if through_storage else None
    in_thread = run(embedder, files, True, open_file)
    in_model_thread = run(embedder, files, False, open_file)

    assert [names for names, _, _ in in_model_thread] == [names for names, _, _ in in_thread]
    assert [errors for _, _, errors in in_model_thread] == [errors for _, _, errors in in_thread]
    for (_, ours, _), (_, theirs, _) in zip(in_model_thread, in_thread):
        np.testing.assert_array_equal(ours, theirs)

    errors = {name: message for _, _, step in in_thread for name, message in step.items()}
    decoded = [name for names, _, _ in in_thread for name in names]
    expected_failures = {p for p in files if not p.endswith("_part.jpg")} | ({files[0]} if through_storage else set())
    assert set(errors) == expected_failures and not set(decoded) & expected_failures
    assert all(name in message for name, message in errors.items()), "each message names its file"
    assert "empty file" in errors[next(p for p in files if p.endswith("empty.jpg"))]
    if through_storage:
        assert "connection reset by peer" in errors[files[0]]


def test_the_model_thread_decodes_where_tensorflow_runs_on_one_thread(embedder):
    import tensorflow as tf

    assert embedder.decode_in_thread() == (tf.config.threading.get_intra_op_parallelism_threads() != 1)
    embedder.decode_ahead_in_thread = False
    try:
        assert embedder.decode_in_thread() is False
    finally:
        embedder.decode_ahead_in_thread = None
