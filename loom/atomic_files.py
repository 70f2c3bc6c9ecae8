"""Atomic, durable file writes: a temporary sibling, fsync, rename over the target, fsync of the folder.

A crash at any moment leaves either the old or the new file. The temporary file is removed on every
error (``KeyboardInterrupt`` included); temporaries left by writers that were killed (their process
no longer runs) are removed by the next write to the same path. Used by model saves, ``loom predict``,
``loom dataset`` and the loss plots.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

__all__ = ["remove_stale_temporaries", "write_file_atomically"]


def _temp_pattern(target: Path) -> re.Pattern[str]:
    return re.compile(re.escape(f".{target.name}.loom-") + r"(\d+)-[A-Za-z0-9_]+\.tmp")


def _process_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # exists under another user, or cannot tell: keep its file
    return True


def remove_stale_temporaries(target: Path) -> list[Path]:
    """Delete ``target``'s temporary siblings left by killed writers (only loom's own name pattern)."""
    pattern, removed = _temp_pattern(target), []
    try:
        siblings = list(target.parent.iterdir())
    except OSError:
        return removed
    for sibling in siblings:
        match = pattern.fullmatch(sibling.name)
        if match and int(match.group(1)) != os.getpid() and not _process_running(int(match.group(1))):
            try:
                sibling.unlink()
                removed.append(sibling)
            except OSError:
                pass
    return removed


def _fsync_directory(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # platforms without directory handles (Windows)
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_file_atomically(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` through an fsynced temporary sibling and a rename, then fsync the folder."""
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.loom-{os.getpid()}-", suffix=".tmp", dir=target.parent)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
        tmp = None
        _fsync_directory(target.parent)
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
