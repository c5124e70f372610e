"""Atomic writes leave the old file or the new one, never a part, and no temporary file;
the temporary files of writers that were killed are found and removed."""

import errno
import os
import subprocess
import sys

import pytest

from avalanche_ctr import files
from avalanche_ctr.files import atomic_write_bytes, remove_stale_temporaries


def test_a_write_replaces_the_file_and_leaves_nothing_else(tmp_path):
    path = tmp_path / "deep" / "record.json"
    atomic_write_bytes(path, b"first")
    atomic_write_bytes(path, b"second")
    assert path.read_bytes() == b"second"
    assert [p.name for p in path.parent.iterdir()] == ["record.json"]


@pytest.mark.parametrize("failure", ["full disk", "kill"])
def test_a_write_stopped_half_way_leaves_the_old_file(failure, tmp_path, monkeypatch):
    path = tmp_path / "record.json"
    path.write_bytes(b"old content")
    real_open = open

    class HalfWritten:
        def __init__(self, *args, **kwargs):
            self.handle = real_open(*args, **kwargs)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, data):
            self.handle.write(bytes(data)[: len(data) // 2])
            if failure == "kill":
                raise KeyboardInterrupt
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files, "open", HalfWritten, raising=False)
    with pytest.raises(KeyboardInterrupt if failure == "kill" else OSError) as caught:
        atomic_write_bytes(path, b"new content, longer than the old one")
    if failure == "full disk":
        assert caught.value.errno == errno.ENOSPC
        assert caught.value.filename == str(path)  # names the file it could not write
    assert path.read_bytes() == b"old content"
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]


def test_only_the_temporaries_of_stopped_writers_are_removed(tmp_path):
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    dead = int(finished.stdout)
    (tmp_path / "checkpoints").mkdir()
    stale = tmp_path / "checkpoints" / f".naive-seed0.pt.{dead}.tmp"
    live = tmp_path / f".runs.json.{os.getpid()}.tmp"
    other = tmp_path / ".notes.tmp"  # not one of ours: no PID in its name
    for path in (stale, live, other):
        path.write_bytes(b"partial")
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert not stale.exists() and live.exists() and other.exists()
