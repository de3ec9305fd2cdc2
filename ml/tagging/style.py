"""A look's (or an item's) style from its descriptor: a small classifier trained on hand-labelled looks (numpy).

    clf = StyleClassifier("logreg").fit(vectors, styles)      # vectors (n, d), styles: n names
    style, confidence = clf.suggest(vector)                    # the most probable style and its probability

Three methods, all on L2-normalised descriptors:

* ``"centroid"``: nearest class centroid by cosine similarity (probabilities: softmax of similarity / 0.05);
* ``"knn"``: the k most similar labelled vectors vote, weighted by similarity;
* ``"logreg"``: multinomial logistic regression with L2 penalty on the centred vectors (full-batch gradient
  descent, deterministic).

``look_vector`` averages the descriptors of a look's snapshots.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

__all__ = ["StyleClassifier", "look_vector", "normalise", "METHODS", "majority_style"]

METHODS = ("centroid", "knn", "logreg")


def normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if x.ndim == 1:
        x = x[None, :]
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def look_vector(snapshot_vectors) -> np.ndarray:
    """One vector for a look: the normalised mean of its snapshots' normalised descriptors."""
    vectors = normalise(np.asarray(snapshot_vectors, np.float64))
    return normalise(vectors.mean(axis=0))[0]


def majority_style(styles) -> str:
    """The most frequent style (ties: the alphabetically first), the baseline every classifier must beat."""
    counts = Counter(styles)
    return min(counts, key=lambda s: (-counts[s], s))


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class StyleClassifier:
    def __init__(self, method: str = "logreg", *, k: int = 10, temperature: float = 0.05,
                 l2: float = 1e-3, steps: int = 300, learning_rate: float = 0.5):
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
        self.method, self.k, self.temperature = method, k, temperature
        self.l2, self.steps, self.learning_rate = l2, steps, learning_rate
        self.classes_: list[str] = []

    def fit(self, vectors, styles) -> "StyleClassifier":
        x = normalise(vectors)
        styles = list(styles)
        if len(styles) != len(x) or not styles:
            raise ValueError(f"need as many styles as vectors (got {len(styles)} and {len(x)}), at least one")
        self.classes_ = sorted(set(styles))
        y = np.array([self.classes_.index(s) for s in styles])
        self.dim = x.shape[1]
        if self.method == "centroid":
            self.centroids_ = normalise(np.stack([x[y == c].mean(axis=0) for c in range(len(self.classes_))]))
        elif self.method == "knn":
            self.x_, self.y_ = x, y
        else:
            self.mean_ = x.mean(axis=0)
            xc = (x - self.mean_) * np.sqrt(x.shape[1])  # centred, unit variance per dimension on average
            onehot = np.eye(len(self.classes_))[y]
            w = np.zeros((x.shape[1], len(self.classes_)))
            b = np.zeros(len(self.classes_))
            for _ in range(self.steps):
                p = _softmax(xc @ w + b)
                grad = (p - onehot) / len(x)
                w -= self.learning_rate * (xc.T @ grad + self.l2 * w)
                b -= self.learning_rate * grad.sum(axis=0)
            self.w_, self.b_ = w, b
        return self

    def predict_proba(self, vectors) -> np.ndarray:
        """(n, d) -> (n, len(classes_)) probabilities."""
        if not self.classes_:
            raise RuntimeError("fit the classifier first")
        x = normalise(vectors)
        if x.shape[1] != self.dim:
            raise ValueError(f"vectors are {x.shape[1]}-d, the classifier was trained on {self.dim}-d")
        if self.method == "centroid":
            return _softmax(x @ self.centroids_.T / self.temperature)
        if self.method == "knn":
            sims = x @ self.x_.T
            k = min(self.k, sims.shape[1])
            top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
            votes = np.zeros((len(x), len(self.classes_)))
            for row, neighbours in enumerate(top):
                for j in neighbours:
                    votes[row, self.y_[j]] += max(sims[row, j], 0.0) + 1e-6
            return votes / votes.sum(axis=1, keepdims=True)
        xc = (x - self.mean_) * np.sqrt(x.shape[1])
        return _softmax(xc @ self.w_ + self.b_)

    def predict(self, vectors) -> list[str]:
        return [self.classes_[i] for i in self.predict_proba(vectors).argmax(axis=1)]

    def suggest(self, vector) -> tuple[str, float]:
        """(style, probability) for one vector."""
        p = self.predict_proba(np.asarray(vector)[None, :] if np.ndim(vector) == 1 else vector)[0]
        i = int(p.argmax())
        return self.classes_[i], float(p[i])
