"""Pillow's bilinear resize of RGB images, the same pixels for less CPU (no Django).

    pixels = resize_image(image, 224, 224)  # an RGB PIL image in, uint8 (224, 224, 3) out
    pixels = resize_rgb(array, 224, 224)    # the same from a uint8 (h, w, 3) array

`ml/native/resample.c` computes what `image.resize((w, h), Image.BILINEAR)` computes, to the bit, with the
passes arranged so that the compiler vectorises them (that file says how): half of Pillow's time on the sample's photos
(`bench/resize_speed.py`, docs/RESULTS.md session 17). It reads a PIL image where Pillow keeps its pixels (Pillow's
Arrow export, no copy). `make deps` builds it into `ml/native/libresample.so`; without it (a deployment that only
ran `pip install`, a machine with no C compiler) this module resizes with Pillow, the same pixels at Pillow's
speed. `NATIVE` says which one runs; FASHIONSITE_NATIVE_RESAMPLE=0 turns the compiled one off.
"""
from __future__ import annotations

import ctypes
import os
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["NATIVE", "LIBRARY_PATH", "resize_image", "resize_rgb", "resize_with_pillow"]

LIBRARY_PATH = Path(__file__).resolve().parent / "native" / "libresample.so"
_PIXELS = ctypes.POINTER(ctypes.c_uint8)


def _load_library():
    if os.environ.get("FASHIONSITE_NATIVE_RESAMPLE", "1") == "0" or not LIBRARY_PATH.exists():
        return None
    try:
        library = ctypes.CDLL(str(LIBRARY_PATH))  # CDLL: the call releases the GIL while it runs
    except OSError:
        return None
    function = library.resample_bilinear_rgb
    function.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int, _PIXELS, ctypes.c_int,
                         ctypes.c_int]
    function.restype = ctypes.c_int
    return function


_resample = _load_library()
NATIVE = _resample is not None
"""Whether the compiled resize is in use (False: Pillow's own, the same pixels)."""


def resize_with_pillow(image: Image.Image, height: int, width: int) -> np.ndarray:
    """Pillow's own `image.resize((width, height), Image.BILINEAR)`, as a uint8 array."""
    return np.asarray(image.resize((width, height), Image.BILINEAR))


def _check_size(height: int, width: int) -> None:
    if height < 1 or width < 1:
        raise ValueError(f"cannot resize to {width}x{height}")


def _native(address: int, pixel_bytes: int, in_height: int, in_width: int, height: int, width: int) -> np.ndarray:
    out = np.empty((height, width, 3), np.uint8)
    if _resample(address, pixel_bytes, in_height, in_width, out.ctypes.data_as(_PIXELS), height, width) != 0:
        raise MemoryError(f"out of memory resizing a {in_width}x{in_height} image")
    return out


def resize_rgb(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """The uint8 (height, width, 3) bilinear resize of a uint8 (h, w, 3) RGB array: Pillow's pixels."""
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"resize_rgb takes an (h, w, 3) array, not one of shape {pixels.shape}")
    _check_size(height, width)
    if _resample is None:
        return resize_with_pillow(Image.fromarray(pixels, "RGB"), height, width)
    return _native(pixels.ctypes.data, 3, pixels.shape[0], pixels.shape[1], height, width)


def resize_image(image: Image.Image, height: int, width: int) -> np.ndarray:
    """The uint8 (height, width, 3) array of an RGB PIL image's bilinear resize: Pillow's pixels."""
    if image.mode != "RGB":
        raise ValueError(f"resize_image takes an RGB image, not mode {image.mode}")
    _check_size(height, width)
    if _resample is None:
        return resize_with_pillow(image, height, width)
    image.load()
    try:
        # Pillow keeps RGB as 4 bytes a pixel (RGBX); its Arrow export hands out that memory as it is
        schema, array = image.__arrow_c_array__()
    except ValueError:  # not in one block (Pillow splits images of more than 16 MB): one copy
        return resize_rgb(np.asarray(image), height, width)
    address = _ArrowArray.pixels_of(array)
    out = _native(address, 4, image.height, image.width, height, width)
    del schema, array  # the capsules release Pillow's pixels when they go (after the call, which reads them)
    return out


_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.restype, _capsule_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]


class _ArrowArray(ctypes.Structure):
    """The Arrow C data interface's ArrowArray (arrow.apache.org/docs/format/CDataInterface.html); Pillow exports
    an RGB image as a fixed-size list of 4 uint8 a pixel, whose child's buffers[1] is the pixels."""

    @classmethod
    def pixels_of(cls, capsule) -> int:
        array = cls.from_address(_capsule_pointer(capsule, b"arrow_array"))
        if array.n_children != 1 or array.children[0].contents.n_buffers != 2:
            raise ValueError("Pillow's Arrow export has an unexpected layout")
        return array.children[0].contents.buffers[1]


_ArrowArray._fields_ = [
    ("length", ctypes.c_int64), ("null_count", ctypes.c_int64), ("offset", ctypes.c_int64),
    ("n_buffers", ctypes.c_int64), ("n_children", ctypes.c_int64),
    ("buffers", ctypes.POINTER(ctypes.c_void_p)), ("children", ctypes.POINTER(ctypes.POINTER(_ArrowArray))),
    ("dictionary", ctypes.c_void_p), ("release", ctypes.c_void_p), ("private_data", ctypes.c_void_p),
]
