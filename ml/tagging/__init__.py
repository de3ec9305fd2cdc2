"""Automatic style and category tags (numpy + Keras, no Django).

* :mod:`ml.tagging.category`: an item photo's category from the ImageNet classifier head of the backbone, its
  1000 classes mapped onto the platform's 8 categories.
* :mod:`ml.tagging.style`: a look's (or item's) style from its descriptor, by a small classifier trained on
  hand-labelled looks.
* :mod:`ml.tagging.colour`: a garment's colour words ("navy", "cream and navy") from its product photo's own
  pixels, background and skin left out.
"""
