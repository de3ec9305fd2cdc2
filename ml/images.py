"""Robust image loading and model-input preprocessing (no Django).

``load_rgb`` turns any supported image file into a fully decoded 8-bit RGB
``PIL.Image`` with EXIF orientation applied, or raises :class:`ImageError`
with a message naming the file and the problem.  ``to_input_array`` turns it
into the float32 model input the EfficientNet-Lite ImageNet weights expect.

The model input is made in two steps: ``to_input_pixels`` (the resized uint8
pixels) and ``preprocess_array`` (``(x - 127) / 128`` in float32).  The
pipeline's decoder stops after the first (``load_input_pixels``): a quarter of
the bytes to stack and hand over, and the normalisation runs inside the
model's graph (``ml.embedding``), the same float32 values to the bit. The resize is Pillow's bilinear one, computed
by ``ml.resample`` (the same pixels for about half of Pillow's CPU, when ``make deps`` has built it).
"""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from ml.resample import resize_image

__all__ = [
    "ImageError",
    "MAX_PIXELS",
    "read_image_file",
    "load_rgb",
    "to_input_array",
    "load_input_array",
    "load_input_pixels",
    "to_input_pixels",
    "preprocess_array",
    "INPUT_MEAN",
    "INPUT_SCALE",
]

MAX_PIXELS = 40_000_000
"""Images with more pixels than this (width*height) are rejected before decoding."""

# EfficientNet-Lite (TF official ``efficientnet/lite``): MEAN_RGB=127, STDDEV_RGB=128.
INPUT_MEAN = 127.0
INPUT_SCALE = 1.0 / 128.0

_BACKGROUND = (255, 255, 255)


class ImageError(ValueError):
    """An image could not be loaded; the message names the file and the problem."""


def _display_name(source, name) -> str:
    if name:
        return str(name)
    if isinstance(source, (str, bytes, os.PathLike)):
        return os.fsdecode(source)
    n = getattr(source, "name", None)
    if isinstance(n, (str, bytes, os.PathLike)):
        return os.fsdecode(n)
    return "<file object>"


def _read_all(source, label: str) -> bytes:
    """The bytes of a file (path or binary file object); ImageError if it cannot be read or is empty."""
    if isinstance(source, (str, bytes, os.PathLike)):
        try:
            with open(source, "rb") as handle:
                data = handle.read()
        except OSError as e:  # worded as _open words it
            raise ImageError(f"{label}: cannot read file ({e.strerror or e})") from None
    else:
        try:
            data = source.read()
        except Exception as e:  # noqa: BLE001 - a storage's file object may raise anything
            raise ImageError(f"{label}: cannot read file ({e})") from None
    if not data:
        raise ImageError(f"{label}: empty file")
    return data


def read_image_file(source, name=None) -> io.BytesIO:
    """A file (path or binary file object) read whole into memory, to decode later (``load_input_pixels`` takes
    it), with the errors ``load_input_pixels`` gives for a file it cannot read or an empty one."""
    return io.BytesIO(_read_all(source, _display_name(source, name)))


def _open(source, label: str):
    """Return (PIL image (lazy), file handle to close or None)."""
    if isinstance(source, (str, bytes, os.PathLike)):
        try:
            if os.path.getsize(source) == 0:
                raise ImageError(f"{label}: empty file")
            fh = open(source, "rb")
        except ImageError:
            raise
        except OSError as e:
            raise ImageError(f"{label}: cannot read file ({e.strerror or e})") from None
    else:
        fh = io.BytesIO(_read_all(source, label))
    try:
        img = Image.open(fh)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        # the warning only arrives as an exception under ``-W error``
        fh.close()
        raise ImageError(f"{label}: image too large ({e})") from None
    except UnidentifiedImageError:
        fh.close()
        raise ImageError(f"{label}: not an image (unrecognised format)") from None
    except Exception as e:  # noqa: BLE001 - corrupt headers raise all sorts
        fh.close()
        raise ImageError(f"{label}: corrupt image header ({e})") from None
    return img, fh


def _rescale_to_uint8(arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr, dtype=np.float64)
    finite = arr[np.isfinite(arr)]
    hi = float(finite.max()) if finite.size else 0.0
    lo = float(finite.min()) if finite.size else 0.0
    if arr.dtype.kind == "f" and lo >= 0.0 and hi <= 1.0:
        arr = arr * 255.0  # float image in [0, 1]
    elif hi > 255.0:
        arr = arr / 257.0 if hi <= 65535.0 else (arr - lo) * (255.0 / max(hi - lo, 1e-12))
    arr = np.nan_to_num(arr, nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(np.rint(arr), 0, 255).astype(np.uint8)


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("I", "F") or mode.startswith("I;16"):
        arr = np.asarray(img)
        if arr.ndim == 3:  # multi-channel high bit depth (rare)
            arr = arr[..., :3]
        grey = Image.fromarray(_rescale_to_uint8(arr))
        return grey.convert("RGB")
    if mode == "PA":
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBa", "La"):
        img = img.convert("RGBA" if mode == "RGBa" else "LA")
        mode = img.mode
    if mode in ("RGBA", "LA") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV, ...


def load_rgb(source, name=None, *, draft_size: int | None = None) -> Image.Image:
    """Load ``source`` (path or binary file object) as a decoded 8-bit RGB image.

    * checks the pixel count (``MAX_PIXELS``) before decoding;
    * fully decodes (so truncated/corrupt files fail here);
    * applies EXIF orientation; converts CMYK, palette, alpha (composited on
      white), 16-bit / I / F and greyscale images to RGB.

    ``draft_size``: for JPEGs, let the decoder downscale by 1/2, 1/4 or 1/8
    while both sides stay >= ``draft_size`` (much faster for big photos).

    The image returned is independent of ``source`` (which may be closed).
    Raises :class:`ImageError` naming the file (``name`` if given).
    """
    label = _display_name(source, name)
    img, fh = _open(source, label)
    try:
        rgb = _decode_rgb(img, label, draft_size)
        if rgb is img and getattr(img, "fp", None) is not None:
            rgb = img.copy()  # detach from the file handle we are about to close
        return rgb
    finally:
        fh.close()


def _decode_rgb(img: Image.Image, label: str, draft_size: int | None) -> Image.Image:
    """What ``load_rgb`` does to an opened image (checks, decode, orientation, RGB), without detaching the result
    from its file: a caller that uses the pixels before closing the file saves a copy of every image."""
    w, h = img.size
    if w <= 0 or h <= 0:
        raise ImageError(f"{label}: invalid image size {w}x{h}")
    if w * h > MAX_PIXELS:
        raise ImageError(
            f"{label}: image too large ({w}x{h} = {w * h / 1e6:.1f} megapixels, "
            f"limit {MAX_PIXELS / 1e6:.0f})")
    if draft_size and img.format == "JPEG":
        try:
            img.draft(None, (int(draft_size), int(draft_size)))
        except Exception:  # noqa: BLE001 - draft is only an optimisation
            pass
    try:
        if ImageFile.LOAD_TRUNCATED_IMAGES:
            raise ImageError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES must be False")
        img.load()
    except Image.DecompressionBombError as e:
        raise ImageError(f"{label}: image too large ({e})") from None
    except ImageError:
        raise
    except Exception as e:  # noqa: BLE001 - OSError, SyntaxError, ValueError, ...
        msg = str(e) or type(e).__name__
        if "truncated" in msg.lower():
            raise ImageError(f"{label}: truncated image file ({msg})") from None
        raise ImageError(f"{label}: corrupt image data ({msg})") from None
    try:
        # in place: an upright image (nearly all of them) is not copied; a rotated one is transposed as before
        ImageOps.exif_transpose(img, in_place=True)
    except Exception:  # noqa: BLE001 - a broken EXIF block should not lose the image
        pass
    try:
        return _to_rgb(img)
    except Exception as e:  # noqa: BLE001
        raise ImageError(f"{label}: cannot convert mode {img.mode} to RGB ({e})") from None


def preprocess_array(rgb_uint8: np.ndarray) -> np.ndarray:
    """uint8 RGB (..., 3) -> float32 ``(x - 127) / 128``."""
    x = np.asarray(rgb_uint8, dtype=np.float32)
    x -= INPUT_MEAN
    x *= INPUT_SCALE  # exact: 1/128 is a power of two
    return x


def to_input_pixels(img: Image.Image, size: int) -> np.ndarray:
    """Resize the WHOLE image to ``size`` x ``size`` (bilinear, no crop, aspect not
    kept, so the full item stays in view): uint8 RGB (size, size, 3), not normalised."""
    if img.format == "JPEG" and len(getattr(img, "tile", ()) or ()) == 1:
        # not decoded yet (a bare Image.open): let libjpeg downscale by 1/2..1/8
        # while both sides stay >= size.  No-op for loaded images (load_rgb output).
        try:
            img.draft(None, (size, size))
        except Exception:  # noqa: BLE001 - only an optimisation
            pass
    if img.mode != "RGB":
        img = _to_rgb(img)
    if img.size != (size, size):
        return resize_image(img, size, size)  # Pillow's BILINEAR pixels, from ml/native when it is built
    return np.asarray(img)


def to_input_array(img: Image.Image, size: int) -> np.ndarray:
    """The model input of an image: ``to_input_pixels`` normalised by ``preprocess_array``, float32
    (size, size, 3)."""
    return preprocess_array(to_input_pixels(img, size))


def load_input_pixels(source, size: int, name=None) -> np.ndarray:
    """The resized uint8 pixels of an image file (path or binary file object) that ``load_input_array``
    normalises: ``to_input_pixels(load_rgb(source, name, draft_size=size), size)``, resized before the file is
    closed, so no pixel copy."""
    label = _display_name(source, name)
    img, fh = _open(source, label)
    try:
        return to_input_pixels(_decode_rgb(img, label, size), size)
    finally:
        fh.close()


def load_input_array(source, size: int, name=None) -> np.ndarray:
    """``to_input_array(load_rgb(source, name, draft_size=size), size)``: the model input of an image file (path
    or binary file object), the same array to the bit (``preprocess_array(load_input_pixels(...))``)."""
    return preprocess_array(load_input_pixels(source, size, name))
