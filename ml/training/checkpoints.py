"""Saving and restoring a run's training state (``checkpoint/state.npz`` + ``state.json``), atomically:
a run killed mid-write resumes from the previous epoch, never from half a file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

__all__ = ["CHECKPOINT", "save_state", "load_state", "save_weights", "load_weights"]

CHECKPOINT = "checkpoint"


def save_state(path: Path, variables, extra: dict) -> None:
    path.mkdir(parents=True, exist_ok=True)
    tmp = path / "state.tmp.npz"
    np.savez(tmp, *[np.asarray(v.numpy()) for v in variables])
    os.replace(tmp, path / "state.npz")
    (path / "state.tmp.json").write_text(json.dumps(extra, indent=1))
    os.replace(path / "state.tmp.json", path / "state.json")


def load_state(path: Path, variables) -> dict:
    with np.load(path / "state.npz") as data:
        arrays = [data[f"arr_{i}"] for i in range(len(data.files))]
    if len(arrays) != len(variables):
        raise ValueError(f"checkpoint {path} does not match the model ({len(arrays)} vs {len(variables)} variables)")
    for v, a in zip(variables, arrays):
        if tuple(v.shape) != a.shape:
            raise ValueError(f"checkpoint {path}: variable shape {a.shape} != {tuple(v.shape)}")
        v.assign(a)
    return json.loads((path / "state.json").read_text())



def save_weights(path: Path, arrays) -> None:
    """A list of arrays as ``path`` (.npz, arr_0, arr_1, ...), written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, *[np.asarray(a) for a in arrays])
    os.replace(tmp, path)


def load_weights(path: Path) -> list[np.ndarray]:
    with np.load(path) as data:
        return [data[f"arr_{i}"] for i in range(len(data.files))]
