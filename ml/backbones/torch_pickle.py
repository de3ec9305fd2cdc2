"""Read a legacy (pre-1.6, non-zip) PyTorch ``state_dict`` file without torch.

Legacy layout (``torch.save(..., _use_new_zipfile_serialization=False)``)::

    pickle(magic number) pickle(protocol version) pickle(sys_info)
    pickle(object)            # persistent ids reference storages
    pickle(list of storage keys)
    for each key: int64 little-endian element count, then the raw data

The unpickler is restricted: only ``collections.OrderedDict``,
``torch._utils._rebuild_tensor_v2`` and a few ``torch.*Storage`` types are
resolvable, so a malicious file cannot run code.  Tensors are returned as
numpy arrays (copies, C-contiguous) keyed by parameter name.
"""

from __future__ import annotations

import collections
import os
import pickle
import struct
from typing import Any

import numpy as np

__all__ = ["load_legacy_state_dict", "TorchPickleError"]

_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_PROTOCOL_VERSION = 1001

# storage type name -> numpy dtype (little endian)
_STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"),
    "LongStorage": np.dtype("<i8"),
}


class TorchPickleError(ValueError):
    """The file is not a legacy PyTorch pickle this loader can read."""


class _StorageType:
    def __init__(self, name: str):
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"torch.{self.name}"


class _TensorStub:
    """A tensor whose storage bytes are read after the object pickle."""

    __slots__ = ("storage_key", "dtype", "offset", "size", "stride")

    def __init__(self, storage_key, dtype, offset, size, stride):
        self.storage_key = storage_key
        self.dtype = dtype
        self.offset = offset
        self.size = tuple(int(s) for s in size)
        self.stride = tuple(int(s) for s in stride)


class _StorageRef:
    __slots__ = ("key", "dtype", "numel", "view")

    def __init__(self, key, dtype, numel, view):
        self.key = key
        self.dtype = dtype
        self.numel = numel
        self.view = view  # None or (view_key, offset, view_size)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    if not isinstance(storage, _StorageRef):
        raise pickle.UnpicklingError("tensor storage is not a persistent storage reference")
    offset = int(storage_offset)
    key = storage.key
    if storage.view is not None:
        _view_key, view_offset, _view_size = storage.view
        offset += int(view_offset)
    return _TensorStub(key, storage.dtype, offset, size, stride)


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, storages: dict):
        super().__init__(file)
        self._storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid[:5]
        view = pid[5] if len(pid) > 5 else None
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unsupported storage type {storage_type!r}")
        key = str(key)
        ref = _StorageRef(key, storage_type.dtype, int(numel), view)
        if key not in self._storages:
            self._storages[key] = ref
        return ref


class _PlainUnpickler(pickle.Unpickler):
    """For the header/footer pickles, which must be plain data only."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed here")


def _materialise(stub: _TensorStub, buf: np.ndarray) -> np.ndarray:
    itemsize = buf.dtype.itemsize
    if not stub.size:
        return np.array(buf[stub.offset], dtype=buf.dtype)
    # bounds check: largest element index reached by this view
    last = stub.offset + sum((s - 1) * st for s, st in zip(stub.size, stub.stride) if s > 0)
    if any(s == 0 for s in stub.size):
        return np.zeros(stub.size, dtype=buf.dtype)
    if stub.offset < 0 or last >= buf.size or any(st < 0 for st in stub.stride):
        raise TorchPickleError(
            f"tensor view (offset {stub.offset}, size {stub.size}, stride {stub.stride}) "
            f"exceeds its storage of {buf.size} elements")
    view = np.lib.stride_tricks.as_strided(
        buf[stub.offset:],
        shape=stub.size,
        strides=tuple(st * itemsize for st in stub.stride),
        writeable=False,
    )
    return np.array(view, copy=True, order="C")  # own, writable memory


def load_legacy_state_dict(path) -> dict[str, np.ndarray]:
    """Load a legacy PyTorch state dict file as ``{name: np.ndarray}``.

    Raises :class:`TorchPickleError` (a ``ValueError``) naming the file if it
    is not a legacy PyTorch pickle or uses anything beyond plain tensors.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            head = f.read(4)
            if head[:2] == b"PK":
                raise TorchPickleError(
                    f"{path}: is a zip-format PyTorch file (torch>=1.6), not a legacy pickle")
            f.seek(0)
            try:
                magic = _PlainUnpickler(f).load()
            except Exception as e:  # noqa: BLE001 - any failure means "not ours"
                raise TorchPickleError(f"{path}: not a legacy PyTorch pickle ({e})") from None
            if magic != _MAGIC_NUMBER:
                raise TorchPickleError(f"{path}: not a legacy PyTorch pickle (bad magic number)")
            try:
                protocol = _PlainUnpickler(f).load()
                if protocol != _PROTOCOL_VERSION:
                    raise TorchPickleError(
                        f"{path}: unsupported PyTorch pickle protocol version {protocol!r}")
                sys_info = _PlainUnpickler(f).load()
                if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
                    raise TorchPickleError(f"{path}: big-endian PyTorch files are not supported")

                storages: dict[str, _StorageRef] = {}
                obj = _RestrictedUnpickler(f, storages).load()
                keys = _PlainUnpickler(f).load()
            except TorchPickleError:
                raise
            except Exception as e:  # noqa: BLE001
                raise TorchPickleError(f"{path}: cannot read legacy PyTorch pickle: {e}") from None
            if not isinstance(keys, list):
                raise TorchPickleError(f"{path}: malformed storage key list")

            buffers: dict[str, np.ndarray] = {}
            for key in keys:
                key = str(key)
                ref = storages.get(key)
                if ref is None:
                    raise TorchPickleError(f"{path}: storage {key} is not referenced")
                raw = f.read(8)
                if len(raw) != 8:
                    raise TorchPickleError(f"{path}: truncated (storage {key} header)")
                (numel,) = struct.unpack("<q", raw)
                nbytes = numel * ref.dtype.itemsize
                data = f.read(nbytes)
                if len(data) != nbytes:
                    raise TorchPickleError(f"{path}: truncated (storage {key} data)")
                buffers[key] = np.frombuffer(data, dtype=ref.dtype)
    except OSError as e:
        raise TorchPickleError(f"{path}: cannot open: {e}") from None

    if not isinstance(obj, dict):
        raise TorchPickleError(f"{path}: top-level object is {type(obj).__name__}, not a state dict")
    out: dict[str, np.ndarray] = {}
    for name, value in obj.items():
        if not isinstance(value, _TensorStub):
            raise TorchPickleError(f"{path}: entry {name!r} is not a tensor")
        buf = buffers.get(value.storage_key)
        if buf is None:
            raise TorchPickleError(f"{path}: data for storage {value.storage_key} missing")
        arr = _materialise(value, buf)
        out[str(name)] = arr.astype(arr.dtype.newbyteorder("="), copy=False)
    return out
