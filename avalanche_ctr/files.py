"""Atomic file writes, shared by checkpoints and by everything else a run folder holds.

:func:`atomic_write_bytes` writes to a temporary file beside the target (named
``.<name>.<pid>.tmp``), flushes and fsyncs it, renames it over the target and fsyncs the
folder: a reader sees the old file or the new one, never a part, and a kill or a full
disk during the write leaves the old file as it was. A process killed during the write
leaves its temporary file behind; :func:`remove_stale_temporaries` removes those of
processes that are no longer running.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["atomic_write_bytes", "remove_stale_temporaries"]

_TEMPORARY = re.compile(r"^\..+\.(\d+)\.tmp$")
"""The name of a temporary file of :func:`atomic_write_bytes`; group 1 is the writer's PID."""


def atomic_write_bytes(path: str | os.PathLike, data: bytes | memoryview) -> None:
    """Write ``data`` to ``path`` atomically (see the module documentation).

    :raises OSError: as the system raised it (``ENOSPC``, ``EACCES``, ...), with
        ``filename`` set to ``path`` where the system gave none; ``path`` is unchanged.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except OSError as error:
        if error.filename is None or error.filename == str(tmp):
            error.filename = str(path)
        raise


def _process_alive(pid: int) -> bool:
    """Whether a process with id ``pid`` is running on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files of :func:`atomic_write_bytes` under ``folder`` whose
    writer is no longer running; return their paths."""
    removed = []
    for path in sorted(Path(folder).rglob(".*.tmp")):
        match = _TEMPORARY.match(path.name)
        if match and path.is_file() and not _process_alive(int(match.group(1))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
