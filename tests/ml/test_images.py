"""Tests for ml.images (no Django, no model)."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from ml.images import (
    MAX_PIXELS,
    ImageError,
    load_input_array,
    load_input_pixels,
    load_rgb,
    preprocess_array,
    to_input_array,
)


def _png_header_only(path, width, height):
    """A PNG whose IHDR claims width x height; no real pixel data (cheap bomb)."""

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat)
                     + chunk(b"IEND", b""))
    return path


def _assert_names(excinfo, path):
    assert str(path) in str(excinfo.value)


# ---------------------------------------------------------------- bad files

def test_image_error_is_value_error():
    assert issubclass(ImageError, ValueError)


def test_empty_file(tmp_path):
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    with pytest.raises(ImageError, match="empty") as ei:
        load_rgb(p)
    _assert_names(ei, p)


def test_missing_file(tmp_path):
    p = tmp_path / "nope.jpg"
    with pytest.raises(ImageError) as ei:
        load_rgb(p)
    _assert_names(ei, p)


def test_text_file(tmp_path):
    p = tmp_path / "notes.jpg"
    p.write_text("this is not an image\n" * 10)
    with pytest.raises(ImageError, match="not an image") as ei:
        load_rgb(p)
    _assert_names(ei, p)


def test_truncated_jpeg(tmp_path):
    rng = np.random.default_rng(1)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)).save(buf, "JPEG")
    data = buf.getvalue()
    p = tmp_path / "cut.jpg"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated") as ei:
        load_rgb(p)
    _assert_names(ei, p)


def test_corrupt_png_data(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[60:80] = b"\xff" * 20  # smash the compressed stream
    p = tmp_path / "corrupt.png"
    p.write_bytes(bytes(data))
    with pytest.raises(ImageError) as ei:
        load_rgb(p)
    _assert_names(ei, p)


def test_too_many_pixels_rejected_before_decoding(tmp_path):
    p = _png_header_only(tmp_path / "bomb.png", 10_000, 5_000)  # 50 MP > 40 MP
    assert 10_000 * 5_000 > MAX_PIXELS
    with pytest.raises(ImageError, match="too large") as ei:
        load_rgb(p)
    _assert_names(ei, p)


def test_pil_decompression_bomb_becomes_image_error(tmp_path):
    # > 2 * Image.MAX_IMAGE_PIXELS: PIL itself refuses at open time
    p = _png_header_only(tmp_path / "huge.png", 20_000, 20_000)
    with pytest.raises(ImageError, match="too large") as ei:
        load_rgb(p)
    _assert_names(ei, p)


def test_file_object_errors_use_given_name():
    with pytest.raises(ImageError, match="upload-42.jpg"):
        load_rgb(io.BytesIO(b"garbage, not an image"), name="upload-42.jpg")
    with pytest.raises(ImageError, match="empty"):
        load_rgb(io.BytesIO(b""), name="x.png")


# ---------------------------------------------------------------- conversions

def _save(img, path, fmt, **kw):
    img.save(path, fmt, **kw)
    return path


def _load_rgb_array(path):
    img = load_rgb(path)
    assert img.mode == "RGB"
    return np.asarray(img).astype(int)


def test_rgb_jpeg_and_file_object(tmp_path):
    p = _save(Image.new("RGB", (30, 20), (10, 200, 30)), tmp_path / "a.jpg", "JPEG", quality=95)
    a = _load_rgb_array(p)
    assert a.shape == (20, 30, 3)
    assert np.abs(a - [10, 200, 30]).max() <= 4
    with open(p, "rb") as f:
        img = load_rgb(f)
    assert img.mode == "RGB" and img.size == (30, 20)


def test_cmyk_jpeg(tmp_path):
    p = _save(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), tmp_path / "cmyk.jpg", "JPEG",
              quality=95)
    a = _load_rgb_array(p)
    assert np.abs(a - [255, 0, 0]).max() <= 6  # red


def test_palette_png_with_and_without_transparency(tmp_path):
    pal = Image.new("P", (10, 10), 1)
    pal.putpalette([0, 0, 0, 0, 255, 0] + [0] * (254 * 3))
    a = _load_rgb_array(_save(pal, tmp_path / "p.png", "PNG"))
    assert (a == [0, 255, 0]).all()
    pal2 = pal.copy()
    pal2.paste(0, (0, 0, 5, 10))
    a2 = _load_rgb_array(_save(pal2, tmp_path / "pt.png", "PNG", transparency=0))
    assert (a2[:, :5] == 255).all()  # transparent index -> white
    assert (a2[:, 5:] == [0, 255, 0]).all()


def test_gif_palette(tmp_path):
    img = Image.new("RGB", (8, 8), (0, 0, 255)).convert("P")
    a = _load_rgb_array(_save(img, tmp_path / "g.gif", "GIF"))
    assert (a == [0, 0, 255]).all()


def test_rgba_composited_on_white(tmp_path):
    img = Image.new("RGBA", (10, 10), (0, 0, 255, 255))
    img.paste((255, 0, 0, 0), (0, 0, 5, 10))  # fully transparent red
    img.paste((0, 0, 0, 128), (0, 0, 5, 5))  # half-transparent black
    a = _load_rgb_array(_save(img, tmp_path / "rgba.png", "PNG"))
    assert (a[5:, :5] == 255).all()
    assert np.abs(a[:5, :5] - 127).max() <= 1
    assert (a[:, 5:] == [0, 0, 255]).all()


def test_la_and_greyscale(tmp_path):
    la = Image.new("LA", (6, 6), (50, 255))
    assert (_load_rgb_array(_save(la, tmp_path / "la.png", "PNG")) == 50).all()
    grey = Image.new("L", (6, 6), 77)
    assert (_load_rgb_array(_save(grey, tmp_path / "l.png", "PNG")) == 77).all()
    bw = Image.new("1", (6, 6), 1)
    assert (_load_rgb_array(_save(bw, tmp_path / "bw.png", "PNG")) == 255).all()


def test_16bit_greyscale_png(tmp_path):
    arr = np.full((8, 8), 65535, dtype=np.uint16)
    arr[:4] = 257 * 128
    p = tmp_path / "g16.png"
    Image.fromarray(arr).save(p)
    assert Image.open(p).mode.startswith("I")
    a = _load_rgb_array(p)
    assert (a[4:] == 255).all()
    assert (a[:4] == 128).all()


def test_float_tiff(tmp_path):
    arr = np.full((5, 5), 0.5, dtype=np.float32)
    p = tmp_path / "f.tif"
    Image.fromarray(arr, mode="F").save(p)
    a = _load_rgb_array(p)
    assert np.abs(a - 128).max() <= 1


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation(tmp_path, orientation):
    # stored 40x20: left half red, right half blue
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = orientation
    p = _save(img, tmp_path / f"o{orientation}.jpg", "JPEG", quality=95, exif=exif.tobytes())
    out = load_rgb(p)
    a = np.asarray(out).astype(int)
    red, blue = np.array([255, 0, 0]), np.array([0, 0, 255])

    def near(px, colour):
        return np.abs(px - colour).max() < 40

    if orientation == 3:  # rotated 180: red on the right
        assert out.size == (40, 20)
        assert near(a[10, 35], red) and near(a[10, 5], blue)
    elif orientation == 6:  # display = stored rotated 90 deg clockwise: red on top
        assert out.size == (20, 40)
        assert near(a[5, 10], red) and near(a[35, 10], blue)
    else:  # 8: rotated 90 deg counter-clockwise: red at the bottom
        assert out.size == (20, 40)
        assert near(a[35, 10], red) and near(a[5, 10], blue)


# ---------------------------------------------------------------- model input

@pytest.mark.parametrize("orientation", [1, 6])
def test_load_input_array_is_load_rgb_then_to_input_array(tmp_path, orientation):
    """The worker's and evaluate_cgd's one-pass decode (no pixel copies) gives the same array to the bit as the
    two public steps, for upright and EXIF-rotated JPEGs, RGBA PNGs, from paths and file objects; the pipeline's
    uint8 pixels (load_input_pixels) are that array before its normalisation."""
    rng = np.random.default_rng(orientation)
    img = Image.fromarray(rng.integers(0, 256, (333, 400, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = orientation
    jpeg = _save(img, tmp_path / "photo.jpg", "JPEG", quality=90, exif=exif.tobytes())
    rgba = Image.fromarray(rng.integers(0, 256, (120, 90, 4), dtype=np.uint8), "RGBA")
    png = _save(rgba, tmp_path / "cut-out.png", "PNG")
    for path in (jpeg, png):
        for size in (224, 260):
            expected = to_input_array(load_rgb(path, draft_size=size), size)
            assert np.array_equal(load_input_array(path, size), expected)
            with open(path, "rb") as handle:
                assert np.array_equal(load_input_array(handle, size, name="x"), expected)
            pixels = load_input_pixels(path, size)
            assert pixels.dtype == np.uint8 and pixels.shape == (size, size, 3)
            assert np.array_equal(preprocess_array(pixels), expected)  # the pipeline's input, normalised later
    upright = load_rgb(jpeg)
    assert upright.size == ((400, 333) if orientation == 1 else (333, 400))
    assert getattr(upright, "fp", None) is None  # independent of the file, as documented


def test_to_input_array_normalisation_and_shape():
    white = to_input_array(Image.new("RGB", (50, 80), (255, 255, 255)), 224)
    black = to_input_array(Image.new("RGB", (50, 80), (0, 0, 0)), 224)
    assert white.shape == (224, 224, 3) and white.dtype == np.float32
    np.testing.assert_allclose(white, (255 - 127) / 128)
    np.testing.assert_allclose(black, -127 / 128)


def test_to_input_array_keeps_whole_image_no_crop():
    img = Image.new("RGB", (300, 100), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 30, 100))  # a thin red strip at the far left
    x = to_input_array(img, 224)
    # the strip survives (no centre crop): first ~22 columns are red
    assert (x[:, :15, 0] > 0.9).all() and (x[:, :15, 2] < -0.9).all()
    assert (x[:, 40:, 2] > 0.9).all()


def test_to_input_array_converts_non_rgb():
    x = to_input_array(Image.new("L", (10, 10), 127), 32)
    assert x.shape == (32, 32, 3)
    np.testing.assert_allclose(x, 0.0)


def test_load_input_array_jpeg_draft_close_to_full_decode(tmp_path):
    yy, xx = np.mgrid[0:1500, 0:2000]
    arr = np.stack([xx * 255 // 2000, yy * 255 // 1500, (xx + yy) * 255 // 3500], -1)
    p = _save(Image.fromarray(arr.astype(np.uint8)), tmp_path / "big.jpg", "JPEG", quality=90)
    fast = load_input_array(p, 224)
    full = to_input_array(load_rgb(p), 224)
    assert fast.shape == (224, 224, 3) and fast.dtype == np.float32
    assert np.abs(fast - full).mean() < 0.02


def test_to_input_array_on_unloaded_jpeg_uses_draft(tmp_path):
    yy, xx = np.mgrid[0:1200, 0:1600]
    arr = np.stack([xx * 255 // 1600, yy * 255 // 1200, 0 * xx], -1).astype(np.uint8)
    p = _save(Image.fromarray(arr), tmp_path / "big2.jpg", "JPEG", quality=90)
    lazy = Image.open(p)
    x = to_input_array(lazy, 224)
    assert lazy.size == (400, 300)  # decoded at 1/4 scale
    ref = to_input_array(load_rgb(p), 224)
    assert np.abs(x - ref).mean() < 0.02


def test_bomb_warning_as_error_still_image_error(tmp_path):
    import warnings

    # between MAX_IMAGE_PIXELS and 2x: PIL only warns; under -W error that raises
    p = _png_header_only(tmp_path / "warn.png", 12_000, 8_000)  # 96 MP
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(ImageError, match="too large") as ei:
            load_rgb(p)
    _assert_names(ei, p)


def test_16bit_rgb_png(tmp_path):
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    w, h = 4, 3
    arr = np.zeros((h, w, 3), ">u2")
    arr[..., 0] = 65535
    arr[..., 2] = 257 * 100
    raw = b"".join(b"\x00" + arr[i].tobytes() for i in range(h))
    p = tmp_path / "rgb16.png"
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                  + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    a = _load_rgb_array(p)
    assert a.shape == (3, 4, 3)
    assert (a == [255, 0, 100]).all()
