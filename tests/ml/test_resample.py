"""ml.resample: the compiled bilinear resize gives Pillow's pixels to the bit (no Django, no model)."""
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from ml import resample
from ml.images import load_input_pixels, load_rgb
from ml.resample import resize_image, resize_rgb, resize_with_pillow


def test_the_compiled_resize_is_built_and_used():
    # `make deps` builds it; a missing build would only be slower, so say it here rather than in a benchmark
    assert resample.LIBRARY_PATH.exists(), f"{resample.LIBRARY_PATH} is missing: run `make deps`"
    assert resample.NATIVE


def test_the_environment_switch_falls_back_to_pillow():
    code = "from ml import resample; print(resample.NATIVE)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"FASHIONSITE_NATIVE_RESAMPLE": "0", "PYTHONPATH": str(resample.LIBRARY_PATH.parents[2])})
    assert out.stdout.strip() == "False"


def test_same_pixels_as_pillow_on_the_sample_catalogue(sample_dir):
    photos = sorted(sample_dir.rglob("*.jpg"))[::4]  # about 700 photos: every size the catalogue has
    assert len(photos) > 500
    sizes = set()
    for path in photos:
        image = load_rgb(path)
        sizes.add(image.size)
        for side in (224, 260):  # Lite0's input and the trained models'
            expected = resize_with_pillow(image, side, side)
            np.testing.assert_array_equal(resize_image(image, side, side), expected, err_msg=f"{path} at {side}")
            np.testing.assert_array_equal(resize_rgb(np.asarray(image), side, side), expected)
    assert len(sizes) > 3


def test_the_model_input_is_pillows_resize(sample_dir):
    path = sorted(sample_dir.rglob("*.jpg"))[0]
    expected = resize_with_pillow(load_rgb(path, draft_size=224), 224, 224)
    np.testing.assert_array_equal(load_input_pixels(path, 224), expected)


@pytest.mark.parametrize("seed", range(4))
def test_same_pixels_as_pillow_at_random_sizes(seed):
    """Up and down, either pass first (Pillow 13 runs the vertical one first when the height shrinks by more than
    twice the width), one pass only, one pixel."""
    rng = np.random.default_rng(seed)
    shapes = [(1, 1, 1, 1), (1, 7, 5, 1), (9, 1, 1, 13), (400, 333, 224, 224), (333, 400, 224, 224),
              (300, 100, 100, 90), (100, 300, 90, 100), (64, 64, 64, 20), (64, 64, 20, 64)]
    shapes += [tuple(int(v) for v in rng.integers(1, 600, 4)) for _ in range(60)]
    for height, width, out_height, out_width in shapes:
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        image = Image.fromarray(pixels, "RGB")
        expected = resize_with_pillow(image, out_height, out_width)
        label = f"{width}x{height} -> {out_width}x{out_height}"
        np.testing.assert_array_equal(resize_image(image, out_height, out_width), expected, err_msg=label)
        np.testing.assert_array_equal(resize_rgb(pixels, out_height, out_width), expected, err_msg=label)


def test_an_image_pillow_keeps_in_several_blocks():
    # more than Pillow's 16 MB block: no Arrow export, so the array copy; and more scratch than a thread keeps
    rng = np.random.default_rng(5)
    pixels = rng.integers(0, 256, (2200, 2000, 3), dtype=np.uint8)
    image = Image.fromarray(pixels, "RGB")
    with pytest.raises(ValueError):
        image.__arrow_c_array__()
    np.testing.assert_array_equal(resize_image(image, 260, 260), resize_with_pillow(image, 260, 260))


def test_threads_resize_at_once():
    rng = np.random.default_rng(6)
    images = [Image.fromarray(rng.integers(0, 256, (int(h), int(w), 3), dtype=np.uint8), "RGB")
              for h, w in rng.integers(100, 700, (24, 2))]
    expected = [resize_with_pillow(image, 224, 224) for image in images]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(5):
            got = list(pool.map(lambda image: resize_image(image, 224, 224), images))
            for a, b in zip(got, expected):
                np.testing.assert_array_equal(a, b)


def test_bad_input_names_the_problem():
    with pytest.raises(ValueError, match="shape"):
        resize_rgb(np.zeros((4, 4), np.uint8), 2, 2)
    with pytest.raises(ValueError, match="mode L"):
        resize_image(Image.new("L", (4, 4)), 2, 2)
    with pytest.raises(ValueError, match="0x2"):
        resize_rgb(np.zeros((4, 4, 3), np.uint8), 2, 0)


def test_threads_that_end_leave_no_buffers_behind():
    # each thread keeps its buffers between calls; they must go with the thread (the pipeline's decoder is a new
    # thread for every task): 300 threads leaking the ~1 MB a 2000 x 500 photo uses would hold 300 MB
    import threading

    import psutil

    image = Image.fromarray(np.random.default_rng(7).integers(0, 256, (500, 2000, 3), dtype=np.uint8), "RGB")

    def resize_in_a_thread(count):
        for _ in range(count):
            thread = threading.Thread(target=resize_image, args=(image, 224, 224))
            thread.start()
            thread.join()

    resize_in_a_thread(20)  # the allocator's own first growth
    before = psutil.Process().memory_info().rss
    resize_in_a_thread(300)
    grown = psutil.Process().memory_info().rss - before
    assert grown < 60 * 2**20, f"resident memory grew by {grown / 2**20:.0f} MB over 300 threads"
