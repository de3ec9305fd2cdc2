"""Writing cache files so that a reader (another process) never sees a half-written one."""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_target(target: Path, suffix: str):
    """Yields a fresh temporary path beside `target` (ending in `suffix`, which some writers require); when the
    block succeeds, the file replaces `target` in one rename, otherwise it is removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp" + suffix, dir=str(target.parent))
    os.close(fd)
    os.unlink(tmp)  # writers create it themselves
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
