"""Atomic file writes: a reader sees the old file or the whole new one, never half of it."""

from __future__ import annotations

import os
from glob import escape as glob_escape
from pathlib import Path


def write_bytes(path, data: bytes) -> Path:
    """Write `data` to a temporary file beside `path`, fsync it, then rename it over `path`."""
    path = Path(path)
    if path.parent and not path.parent.is_dir():
        raise FileNotFoundError(f"the folder {str(path.parent)!r} for {path.name!r} does not exist")
    _sweep_stale(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    _fsync_folder(path.parent)
    return path


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (where the platform allows opening a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _sweep_stale(path: Path) -> None:
    """Remove the temporary files that writers of `path` killed mid-write (SIGKILL) left behind.

    Each temporary is named after its writer's process id; one whose process is gone is garbage.
    """
    prefix = f".{path.name}."
    for stale in path.parent.glob(f"{glob_escape(prefix)}*.tmp"):
        try:
            pid = int(stale.name[len(prefix) : -len(".tmp")])
        except ValueError:
            continue  # not one of ours
        if pid != os.getpid() and not _alive(pid):
            stale.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True
