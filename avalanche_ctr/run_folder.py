"""The run folder (``--out``) of ``avalanche-ctr run`` / ``compare``: its lock, its
digested JSON files, the errors of its files and ``avalanche-ctr verify``.

* **Lock** (:func:`lock_folder`): one command at a time per folder. The lock is an
  ``flock`` on ``<out>/.avalanche-ctr.lock``, which holds the holder's PID; the system
  releases it when the holder ends, however it ends, so the lock of a killed command is
  taken over. The worker processes of ``compare --jobs`` run under their parent's lock.
  Taking the lock removes the temporary files that killed writers left
  (:func:`~avalanche_ctr.files.remove_stale_temporaries`).
* **Digests** (:func:`write_digested_json`, :func:`read_digested_json`): the records
  ``runs/<strategy>-seed<k>.json`` and ``runs.json`` hold the SHA-256 of their content,
  checked whenever they are read; a file that is truncated, empty, not JSON, without its
  parts or whose digest differs is :class:`DamagedFile`.
* **Errors** (:func:`folder_errors`): a full disk, a read-only folder, a folder where a
  file belongs or the reverse become one :class:`RunFolderError` naming the path and the
  fix.
* **Verify** (:func:`verify_folder`): every record, checkpoint and ``runs.json`` of a
  folder checked, one line per problem.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from avalanche_ctr.files import atomic_write_bytes, remove_stale_temporaries

__all__ = [
    "RunFolderError",
    "DamagedFile",
    "LOCK_NAME",
    "lock_folder",
    "write_digested_json",
    "read_digested_json",
    "read_record",
    "check_checkpoint",
    "check_zip",
    "check_layout",
    "folder_errors",
    "describe_os_error",
    "verify_folder",
]

LOCK_NAME = ".avalanche-ctr.lock"
"""The lock file of a run folder."""

_held: set[Path] = set()
"""The folders this process holds the lock of."""


class RunFolderError(RuntimeError):
    """A run folder that cannot be used as it is; the message names the path and the fix."""


class DamagedFile(RunFolderError):
    """A file of the run folder that is truncated, not what it should be, or edited."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(f"{path} is damaged ({reason})")
        self.path, self.reason = Path(path), reason

    def __reduce__(self):
        return type(self), (self.path, self.reason)


# ----------------------------------------------------------------------------- lock
def _holder(path: Path) -> int | None:
    """The PID written in the lock file ``path`` (``None`` if there is none)."""
    try:
        text = path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


@contextmanager
def lock_folder(out: str | os.PathLike, log: Callable[[str], None] = print) -> Iterator[None]:
    """Hold the lock of the run folder ``out`` (created if missing) while the block runs.

    Taking it removes the temporary files of writers that are no longer running, and
    says so. Within a process the lock is re-entrant; a process whose parent holds it
    (a worker of ``compare --jobs``) runs under the parent's lock.

    :raises RunFolderError: if another process holds the lock; the message names its PID.
    """
    out = Path(out)
    key = out.resolve()
    if key in _held:
        yield
        return
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_NAME
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        holder = _holder(path)
        if holder is None or holder != os.getppid():
            raise RunFolderError(
                f"{out} is in use by another avalanche-ctr command (process "
                f"{holder if holder is not None else 'unknown'}); wait for it to end, stop "
                "it, or give this command another --out"
            ) from None
        descriptor = None  # a worker process of the command that holds the lock
    if descriptor is None:
        yield
        return
    try:
        previous = _holder(path)
        if previous is not None and previous != os.getpid():
            log(
                f"{out}: taking over the lock of process {previous}, which ended without "
                "releasing it"
            )
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
        for stale in remove_stale_temporaries(out):
            log(f"removed {stale}, a temporary file left by a process that was stopped")
        _held.add(key)
        try:
            yield
        finally:
            _held.discard(key)
            os.ftruncate(descriptor, 0)
    finally:
        os.close(descriptor)  # releases the flock


# ----------------------------------------------------------------------------- digests
def _canonical(body: Any) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def _digest(body: Any) -> str:
    return "sha256:" + hashlib.sha256(_canonical(body)).hexdigest()


def write_digested_json(path: str | os.PathLike, body: dict[str, Any]) -> None:
    """Write ``body`` (a JSON-ready dict) and its digest to ``path``, atomically."""
    body = json.loads(json.dumps(body))  # the values as they will be read back
    text = json.dumps({**body, "digest": _digest(body)}, indent=1) + "\n"
    atomic_write_bytes(path, text.encode())


def read_digested_json(path: str | os.PathLike, parts: tuple[str, ...] = ()) -> dict[str, Any]:
    """The content :func:`write_digested_json` wrote to ``path``, its digest checked.

    :param parts: keys the content must have.
    :raises DamagedFile: if it is empty, not UTF-8, not a JSON object, lacks a part or
        its digest, or its digest differs from its content's.
    """
    path = Path(path)
    data = path.read_bytes()
    if not data.strip():
        raise DamagedFile(path, "empty")
    try:
        found = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise DamagedFile(path, "not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise DamagedFile(path, f"not JSON: {error}") from None
    if not isinstance(found, dict):
        raise DamagedFile(path, f"a JSON {type(found).__name__}, not an object")
    missing = [key for key in (*parts, "digest") if key not in found]
    if missing:
        raise DamagedFile(path, f"no {', '.join(repr(key) for key in missing)}")
    stored = found.pop("digest")
    if stored != _digest(found):
        raise DamagedFile(path, "its digest does not match its content: edited or corrupted")
    return found


def read_record(path: str | os.PathLike) -> dict[str, Any]:
    """A finished run's record file, ``{"identity": ..., "record": ...}``, its digest
    checked (:class:`DamagedFile` otherwise)."""
    found = read_digested_json(path, ("identity", "record"))
    if not isinstance(found["record"], dict) or not isinstance(found["identity"], dict):
        raise DamagedFile(path, "its identity or record is not an object")
    return found


def check_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The contents of the checkpoint ``path``, checked to be whole
    (:func:`~avalanche_ctr.checkpoint.read_checkpoint`).

    :raises CheckpointError: naming the file, if it is not a checkpoint or is damaged.
    """
    from avalanche_ctr.checkpoint import read_checkpoint

    path = Path(path)
    check_zip(path)
    return read_checkpoint(path)


def check_zip(path: Path) -> None:
    """:class:`~avalanche_ctr.checkpoint.CheckpointError` if the file ``path`` is not a
    zip archive, as every checkpoint is."""
    import zipfile

    from avalanche_ctr.checkpoint import CheckpointError

    if path.is_file() and not zipfile.is_zipfile(path):
        what = "not a zip archive" if path.stat().st_size else "empty"
        raise CheckpointError(
            f"checkpoint {path} is not a checkpoint file ({what}); delete it to start the run "
            "over, or restore a copy"
        )


# ----------------------------------------------------------------------------- errors
def check_layout(out: Path, files: list[Path]) -> None:
    """:class:`RunFolderError` if a folder of ``out`` (``out``, ``runs``, ``checkpoints``,
    ``tensorboard``) is a file, or one of ``files`` is a folder."""
    for folder in (out, out / "runs", out / "checkpoints", out / "tensorboard"):
        if folder.exists() and not folder.is_dir():
            raise RunFolderError(_misplaced(folder, "a file", "a folder"))
    for path in files:
        if path.is_dir():
            raise RunFolderError(_misplaced(path, "a folder", "a file"))


def _misplaced(path: Path, found: str, belongs: str) -> str:
    return (
        f"{path} is {found} where avalanche-ctr keeps {belongs}; move it out of the way, or "
        "give another --out"
    )


def _first_file(path: Path) -> Path:
    """The first ancestor of ``path`` that is a file (where a folder should be)."""
    for parent in reversed(path.parents):
        if parent.exists() and not parent.is_dir():
            return parent
    return path


def describe_os_error(error: OSError) -> str:
    """What went wrong with a file of a run folder, and what to do about it."""
    path = Path(error.filename)
    code = error.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        return (
            f"cannot write {path}: no space left on the device; free some space (or give an "
            "--out on another disk) and repeat the command: finished runs are kept and the "
            "others resume from their last checkpoint"
        )
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (
            f"cannot write {path}: {error.strerror.lower()}; make the folder writable, or give "
            "another --out"
        )
    if code == errno.EISDIR:
        return _misplaced(path, "a folder", "a file")
    if code == errno.ENOTDIR:
        return _misplaced(_first_file(path), "a file", "a folder")
    if code == errno.EEXIST and path.exists() and not path.is_dir():
        return _misplaced(path, "a file", "a folder")
    return f"cannot use {path}: {error.strerror}"


@contextmanager
def folder_errors(out: str | os.PathLike) -> Iterator[None]:
    """Turn an :class:`OSError` on a path in ``out`` into a :class:`RunFolderError` that
    names the path and the fix (:func:`describe_os_error`); other errors pass."""
    root = Path(out).absolute()
    try:
        yield
    except OSError as error:
        if error.filename is None:
            raise
        path = Path(os.fsdecode(error.filename)).absolute()
        if path != root and root not in path.parents:
            raise
        raise RunFolderError(describe_os_error(error)) from None


# ----------------------------------------------------------------------------- verify
def verify_folder(out: str | os.PathLike) -> tuple[list[str], dict[str, int]]:
    """Check every record, checkpoint and ``runs.json`` of the run folder ``out``.

    :return: one line per problem (the file, what is wrong, what to do), and how many
        records, checkpoints and ``runs.json`` files were checked.
    :raises RunFolderError: if ``out`` is not a folder.
    """
    from avalanche_ctr.checkpoint import CheckpointError

    out = Path(out)
    if not out.is_dir():
        raise RunFolderError(f"{out} is not a folder; give the --out of a run or compare")
    problems: list[str] = []
    checked = {"records": 0, "checkpoints": 0, "runs.json": 0}
    records: dict[str, dict[str, Any]] = {}
    saved: dict[str, dict[str, Any]] = {}
    for path in sorted((out / "checkpoints").glob("*.pt")):
        checked["checkpoints"] += 1
        try:
            saved[path.stem] = check_checkpoint(path).get("meta", {})
        except (CheckpointError, OSError) as error:
            problems.append(str(error))
    for path in sorted((out / "runs").glob("*.json")):
        checked["records"] += 1
        try:
            found = read_record(path)
        except (DamagedFile, OSError) as error:
            meta = saved.get(path.stem, {})
            rebuilt = "record" in meta and _finished(meta["record"])
            fix = (
                f"the next command on this --out rebuilds it from checkpoints/{path.stem}.pt"
                if rebuilt
                else f"delete it and checkpoints/{path.stem}.pt to train the run again"
            )
            problems.append(f"{error}; {fix}")
            continue
        records[path.stem] = found["record"]
        meta = saved.get(path.stem)
        if meta is not None and "record" in meta and not _same_record(found["record"], meta):
            problems.append(
                f"{path} differs from the record in checkpoints/{path.stem}.pt; delete the "
                "record to rebuild it from the checkpoint"
            )
    runs_json = out / "runs.json"
    if runs_json.exists():
        checked["runs.json"] += 1
        problems += _verify_runs_json(runs_json, records)
    return problems, checked


def _finished(record: dict[str, Any]) -> bool:
    return len(record.get("acc_matrix", [])) == record.get("n_experiences")


def _same_record(record: dict[str, Any], meta: dict[str, Any]) -> bool:
    """Whether a finished run's record is the one its checkpoint holds (which lacks
    the summary, computed from it)."""
    if not _finished(meta["record"]):
        return False
    mine = {key: value for key, value in record.items() if key != "summary"}
    return _canonical(mine) == _canonical(json.loads(json.dumps(meta["record"])))


def _verify_runs_json(path: Path, records: dict[str, dict[str, Any]]) -> list[str]:
    try:
        found = read_digested_json(path, ("settings", "runs"))
    except (DamagedFile, OSError) as error:
        return [f"{error}; the next compare on this --out writes it again"]
    problems = []
    for run in found["runs"]:
        name = f"{run.get('strategy')}-seed{run.get('seed')}"
        if name in records and _canonical(records[name]) != _canonical(run):
            problems.append(
                f"{path}: its run {name} differs from runs/{name}.json; repeat the compare "
                "to write it again"
            )
    return problems
