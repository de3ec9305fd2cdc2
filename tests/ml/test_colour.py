"""Colour words from a garment's own pixels, on small product photos drawn here: a garment on a studio
background, two-tone garments, a garment worn by someone (skin), shading, coloured backgrounds."""
import numpy as np
import pytest
from PIL import Image, ImageDraw

from ml.tagging.colour import PALETTE, colour_words, garment_colours, garment_mask, name_of

WHITE, GREY_WALL, PINK_WALL = (250, 250, 250), (226, 226, 228), (240, 200, 205)
NAVY, CREAM, BLACK, RED, BEIGE = (30, 36, 70), (238, 230, 208), (20, 20, 22), (195, 30, 40), (206, 186, 150)
SKIN = (224, 172, 140)


def photo(background=WHITE, size=(300, 400)):
    image = Image.new("RGB", size, background)
    return image, ImageDraw.Draw(image)


def sweater(draw, colour, box=(60, 80, 240, 360)):
    """A garment's outline: body and sleeves, filled with one colour."""
    left, top, right, bottom = box
    draw.rectangle((left + 30, top, right - 30, bottom), fill=colour)
    draw.polygon([(left + 30, top), (left, bottom - 80), (left + 30, bottom - 70)], fill=colour)
    draw.polygon([(right - 30, top), (right, bottom - 80), (right - 30, bottom - 70)], fill=colour)


def noisy(image, amount=6, seed=0):
    """JPEG-like noise, so no test depends on exact pixel values."""
    pixels = np.asarray(image, dtype=np.int16)
    pixels = pixels + np.random.default_rng(seed).integers(-amount, amount + 1, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def test_the_palette_names_its_own_references():
    from skimage.color import rgb2lab

    for name, rgb in PALETTE:
        assert name_of(rgb2lab(np.array([[rgb]], dtype=float) / 255)[0, 0]) == name


@pytest.mark.parametrize("colour, name", [(NAVY, "navy"), (BLACK, "black"), (RED, "red"), (CREAM, "cream")])
def test_a_solid_garment_on_white_is_named_by_its_colour_not_the_background(colour, name):
    image, draw = photo()
    sweater(draw, colour)
    assert colour_words(noisy(image)) == name


def test_the_background_is_left_out_of_the_mask_whatever_its_colour():
    for background in (WHITE, GREY_WALL, PINK_WALL):
        image, draw = photo(background)
        sweater(draw, BLACK)
        mask, _ = garment_mask(noisy(image))
        truth = np.asarray(image.resize(mask.shape[::-1], Image.NEAREST)).sum(axis=2) < 100
        assert (mask == truth).mean() > 0.97
        assert colour_words(noisy(image)) == "black"


def test_a_two_tone_garment_gets_both_words_larger_share_first():
    image, draw = photo()
    sweater(draw, CREAM)
    draw.rectangle((90, 80, 210, 200), fill=NAVY)  # a navy yoke over the cream body, ~40% of the garment
    words = colour_words(noisy(image))
    assert words == "cream and navy"
    shares = {c.name: c.share for c in garment_colours(noisy(image))}
    assert 0.25 < shares["navy"] < shares["cream"]


def test_a_small_second_colour_is_not_named():
    image, draw = photo()
    sweater(draw, NAVY)
    draw.rectangle((120, 200, 180, 240), fill=CREAM)  # a printed logo: a few percent of the garment
    assert colour_words(noisy(image)) == "navy"


def test_shading_of_one_colour_is_not_a_second_colour():
    image, draw = photo()
    sweater(draw, BLACK)
    draw.rectangle((90, 80, 150, 360), fill=(70, 70, 74))  # the lit side of a black coat, a third of it
    assert colour_words(noisy(image)) == "black"


def test_skin_is_left_out_of_a_worn_garment():
    image, draw = photo(GREY_WALL)
    draw.ellipse((110, 10, 190, 100), fill=SKIN)  # a face
    draw.rectangle((20, 250, 60, 330), fill=SKIN)  # hands below the sleeves
    draw.rectangle((240, 250, 280, 330), fill=SKIN)
    sweater(draw, RED, box=(40, 90, 260, 390))
    image = noisy(image)
    mask, _ = garment_mask(image)
    small = np.asarray(image.resize(mask.shape[::-1], Image.NEAREST)).astype(int)
    skin = (np.abs(small - SKIN).sum(axis=2) < 40)
    assert skin.sum() > 0.08 * small.shape[0] * small.shape[1]
    assert mask[skin].mean() < 0.05, "the skin is not the garment"
    assert colour_words(image) == "red"


def test_a_skin_coloured_garment_keeps_its_colour():
    image, draw = photo()
    sweater(draw, BEIGE)
    assert colour_words(noisy(image)) == "beige"


def test_a_garment_of_the_backgrounds_colour_still_gets_a_name():
    image, draw = photo()
    draw.rectangle((60, 80, 240, 360), fill=(244, 244, 246), outline=(170, 170, 172), width=3)
    assert colour_words(noisy(image, amount=2)) in {"white", "grey"}


@pytest.mark.parametrize(
    "image, name",
    [
        (Image.new("RGB", (1, 1), (40, 85, 170)), "blue"),  # one pixel: background and garment at once
        (Image.new("RGB", (500, 500), (18, 18, 20)), "black"),  # nothing but one colour
        (Image.new("L", (40, 40), 135), "grey"),  # greyscale
        (Image.new("RGB", (4000, 20), (50, 120, 65)), "green"),  # a strip: shrunk on its long side
    ],
)
def test_degenerate_photos_still_get_one_word(image, name):
    assert colour_words(image) == name
