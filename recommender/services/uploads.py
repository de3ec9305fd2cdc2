"""Checking an uploaded image before anything is stored: size, format, readability, pixel count.

A rejected upload raises UploadError with a message naming the problem, and nothing is stored. Accepted images
(CMYK, 16-bit, palette, alpha, EXIF-rotated included) come back normalised to 8-bit RGB, upright.
"""
import hashlib
import io
from dataclasses import dataclass

from PIL import Image

from ml.images import ImageError, load_rgb

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
FORMATS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}


class UploadError(ValueError):
    pass


@dataclass(frozen=True)
class CheckedImage:
    data: bytes  # the file's bytes as uploaded
    image: Image.Image  # decoded, normalised RGB
    sha256: str
    extension: str  # from the detected format, never from the client's file name

    def generated_name(self) -> str:
        return f"{self.sha256}{self.extension}"


def check_upload(uploaded, name: str | None = None) -> CheckedImage:
    """`uploaded` is a Django UploadedFile or any binary file object."""
    name = name or getattr(uploaded, "name", None) or "upload"
    size = getattr(uploaded, "size", None)
    if size is not None and size > MAX_UPLOAD_BYTES:
        raise UploadError(f"{name}: the file is {size / 2**20:.1f} MB; the limit is {MAX_UPLOAD_BYTES // 2**20} MB")
    data = uploaded.read(MAX_UPLOAD_BYTES + 1)
    if len(data) > MAX_UPLOAD_BYTES:
        raise UploadError(f"{name}: the file is over the {MAX_UPLOAD_BYTES // 2**20} MB limit")
    if not data:
        raise UploadError(f"{name}: the file is empty")
    try:
        image = load_rgb(io.BytesIO(data), name=name)  # empty, corrupt, truncated, over 40 megapixels
    except ImageError as error:
        raise UploadError(str(error))
    detected = Image.open(io.BytesIO(data)).format
    if detected not in FORMATS:
        raise UploadError(f"{name}: a {detected} image; upload a JPEG, PNG or WebP image")
    return CheckedImage(data=data, image=image, sha256=hashlib.sha256(data).hexdigest(), extension=FORMATS[detected])
