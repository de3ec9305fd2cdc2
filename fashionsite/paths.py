"""Where the platform keeps what it writes. Imports nothing from Django, so launchers and settings share it.

Everything the platform writes (Postgres data, media files, converted weights, models, logs) lives under one
data directory, `var/` in the checkout by default, so two checkouts never collide.
"""
import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    path = Path(os.environ.get("FASHIONSITE_DATA_DIR", PROJECT_ROOT / "var")).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def sample_catalogue_dir() -> Path:
    return Path(os.environ.get("SAMPLE_CATALOGUE", PROJECT_ROOT.parent / "shared" / "data" / "musinsa" / "dev"))
