"""The SECRET_KEY when DJANGO_SECRET_KEY is not given: generated once per data directory and kept there, so that
sessions and password-reset links survive restarts and every process of one platform signs with the same key.
Imports nothing from Django (settings import it)."""
import os
import secrets
import time
from pathlib import Path

KEY_FILE = "secret_key"


def secret_key_in(data_dir: Path) -> str:
    """The key stored in `data_dir`, created (readable by its owner only) on the first call. Two processes
    starting at once agree: only one creates the file, the other reads it."""
    path = Path(data_dir) / KEY_FILE
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):  # the other process may not have written it yet
            key = path.read_text().strip()
            if key:
                return key
            time.sleep(0.02)
        raise RuntimeError(f"{path} is empty: delete it to generate a new secret key")
    key = secrets.token_urlsafe(50)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(key + "\n")
    return key
