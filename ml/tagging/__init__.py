"""Automatic style and category tags (numpy + Keras, no Django).

* :mod:`ml.tagging.category`: an item photo's category from its descriptor (the backbone's pooled ImageNet
  features), by a softmax head trained on hand-labelled items (shipped in ``heads/``); the old mapping of the
  1000 ImageNet classes onto the categories stays as the benchmark's baseline.
* :mod:`ml.tagging.style`: a look's (or item's) style from its descriptor, by a small classifier trained on
  hand-labelled looks.
* :mod:`ml.tagging.colour`: a garment's colour words ("navy", "cream and navy") from its product photo's own
  pixels, background and skin left out.
"""
