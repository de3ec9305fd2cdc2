"""Checking an uploaded image before anything is stored, and the copy of it that is stored.

In order, cheapest first, so that a hostile file costs next to nothing: the byte size; the format from the
file's first bytes (magic numbers: JPEG, PNG, WebP), before any decoder runs; the dimensions from the header,
with the pixel limit, before any pixel is decoded; only then the full decode (corrupt and truncated files fail
there). A rejected upload raises UploadError with a message naming the file and the problem, and nothing is
stored. Accepted images (CMYK, 16-bit, palette, alpha, EXIF-rotated included) are normalised to 8-bit RGB,
upright.

A search's query is checked the same way up to its header (`check_query`), and its pixels are decoded once,
straight to the model's input, by `ml.images.load_input_array`: the function that reads every catalogue image
for embedding (JPEG draft decoding, one pass of orientation and resizing). So a query's descriptor is the one the
same file gets in the catalogue (what is measured is what is served), and a 12-megapixel phone photo is decoded
at a fraction of its size instead of in full.

What is stored of a wardrobe photo is `stored_copy()`: the upright pixels re-encoded, without EXIF, GPS, XMP or
any other metadata (a photo taken at home carries the home's coordinates).
"""
import hashlib
import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ml.images import MAX_PIXELS, ImageError, load_input_array, load_rgb

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_UPLOAD_PIXELS = MAX_PIXELS  # per image (40 megapixels)
MAX_REQUEST_PIXELS = 250_000_000  # all images of one upload together (20 phone photos of 12 megapixels fit)
FORMATS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}
# Pillow's own guard for every image it opens (it warns above this and refuses above twice this).
Image.MAX_IMAGE_PIXELS = MAX_UPLOAD_PIXELS

# First bytes of the accepted formats, and of common others (named in the refusal).
_SIGNATURES = [
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
]


class UploadError(ValueError):
    pass


def sniff_format(head: bytes) -> str | None:
    """The image format named by a file's first 12 bytes, or None."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypavif"):
        return "HEIF/AVIF"
    for signature, name in _SIGNATURES:
        if head.startswith(signature):
            return name
    return None


@dataclass(frozen=True)
class UploadHeader:
    """An upload whose size, format and dimensions passed; its pixels are not decoded yet."""

    file: object  # the uploaded file, read again by decode()
    name: str
    format: str
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


@dataclass(frozen=True)
class CheckedImage:
    data: bytes  # the file's bytes as uploaded
    image: Image.Image  # decoded, normalised RGB, upright
    sha256: str  # of the bytes as uploaded
    extension: str  # from the detected format, never from the client's file name
    format: str

    def generated_name(self) -> str:
        return f"{self.sha256}{self.extension}"


@dataclass(frozen=True)
class QueryImage:
    """A search's query upload: size, format and dimensions checked (`read_header`), its bytes read, its pixels
    not decoded yet. The search decodes it once, at the model's input size (`model_input`)."""

    data: bytes  # the file's bytes as uploaded
    name: str
    sha256: str  # of the bytes as uploaded (an upload of a catalogue product is recognised by it)
    format: str

    def model_input(self, size: int) -> np.ndarray:
        """The model's (size, size, 3) input, as `ml.images.load_input_array` makes it for a catalogue image of
        the same bytes. A corrupt or truncated file is an UploadError naming it."""
        try:
            return load_input_array(io.BytesIO(self.data), size, name=self.name)
        except ImageError as error:
            raise UploadError(str(error))

    def preview(self, size: int) -> Image.Image:
        """The upright RGB image, decoded at no less than `size` pixels a side where the format allows (JPEG
        draft): for showing the query beside its results."""
        try:
            return load_rgb(io.BytesIO(self.data), name=self.name, draft_size=size)
        except ImageError as error:
            raise UploadError(str(error))


def read_header(uploaded, name: str | None = None) -> UploadHeader:
    """Checks size, format (magic bytes) and dimensions (header only): no decoder runs on the pixels."""
    name = name or getattr(uploaded, "name", None) or "upload"
    size = getattr(uploaded, "size", None)
    if size is not None and size > MAX_UPLOAD_BYTES:
        raise UploadError(f"{name}: the file is {size / 2**20:.1f} MB; the limit is {MAX_UPLOAD_BYTES // 2**20} MB")
    _rewind(uploaded)
    head = uploaded.read(16)
    if not head:
        raise UploadError(f"{name}: the file is empty")
    detected = sniff_format(head)
    if detected is None:
        raise UploadError(f"{name}: not an image (unrecognised format); upload a JPEG, PNG or WebP image")
    if detected not in FORMATS:
        raise UploadError(f"{name}: a {detected} image; upload a JPEG, PNG or WebP image")
    _rewind(uploaded)
    try:
        with warnings.catch_warnings():  # Pillow's bomb warning: the limit is checked just below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(uploaded, formats=[detected]) as image:  # parses the header only
                width, height = image.size
    except Image.DecompressionBombError as error:
        raise UploadError(f"{name}: image too large ({error})")
    except Exception as error:  # noqa: BLE001 - a broken header raises all sorts
        raise UploadError(f"{name}: corrupt {detected} header ({error})")
    if width * height > MAX_UPLOAD_PIXELS:
        raise UploadError(
            f"{name}: image too large ({width}x{height} = {width * height / 1e6:.1f} megapixels, "
            f"limit {MAX_UPLOAD_PIXELS / 1e6:.0f})"
        )
    return UploadHeader(file=uploaded, name=name, format=detected, width=width, height=height)


def read_bytes(header: UploadHeader) -> bytes:
    """The bytes of an upload whose header passed (at most 10 MB, whatever its announced size said)."""
    _rewind(header.file)
    data = header.file.read(MAX_UPLOAD_BYTES + 1)
    if len(data) > MAX_UPLOAD_BYTES:
        raise UploadError(f"{header.name}: the file is over the {MAX_UPLOAD_BYTES // 2**20} MB limit")
    return data


def decode(header: UploadHeader) -> CheckedImage:
    """Reads and decodes an upload whose header passed (one image in memory at a time, at most 10 MB of file
    and 40 megapixels of pixels)."""
    data = read_bytes(header)
    try:
        image = load_rgb(io.BytesIO(data), name=header.name)  # corrupt, truncated
    except ImageError as error:
        raise UploadError(str(error))
    return CheckedImage(
        data=data, image=image, sha256=hashlib.sha256(data).hexdigest(), extension=FORMATS[header.format],
        format=header.format,
    )


def check_upload(uploaded, name: str | None = None) -> CheckedImage:
    """`uploaded` is a Django UploadedFile or any seekable binary file object."""
    return decode(read_header(uploaded, name))


def check_query(uploaded, name: str | None = None) -> QueryImage:
    """A search's query upload (a Django UploadedFile or any seekable binary file object), checked up to its
    header; its pixels are decoded by the search, once (QueryImage.model_input)."""
    header = read_header(uploaded, name)
    data = read_bytes(header)
    return QueryImage(data=data, name=header.name, sha256=hashlib.sha256(data).hexdigest(), format=header.format)


def stored_copy(checked: CheckedImage) -> bytes:
    """The file to store: the upright RGB pixels in the upload's format, with no metadata at all (a new image,
    so nothing of the original's EXIF, GPS, XMP or comments is carried over)."""
    clean = Image.new("RGB", checked.image.size)
    clean.paste(checked.image)
    buffer = io.BytesIO()
    if checked.format == "JPEG":
        clean.save(buffer, "JPEG", quality=92, optimize=False)
    elif checked.format == "WEBP":
        clean.save(buffer, "WEBP", quality=90)
    else:
        clean.save(buffer, "PNG", compress_level=6)
    return buffer.getvalue()


def _rewind(uploaded) -> None:
    try:
        uploaded.seek(0)
    except (AttributeError, OSError):
        pass
