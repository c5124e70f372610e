"""Verified downloads of the CTR paper's text data (Ke et al., NeurIPS 2021, Sec. 5).

The DSC and ASC files come from the repository they were published in,
``ZixuanKe/LifelongSentClass``, pinned at one commit. The packaged manifest
(``text_data.json`` beside this module) lists, per file, its path under the
dataset folder, its URL path under the base URL, its size and its sha256; the
checksums are those of the copies the project's results were measured on, and
agree with the pinned commit's files.

* :func:`download_text_data` -- fetch what is missing of ``dsc`` or ``asc`` into
  a folder (default: Avalanche's ``default_dataset_location(name)``), each file
  written to a temporary name, verified, then renamed into place: a file that is
  there under its own name is always a verified one, so an interrupted download
  leaves nothing that passes for data, and a verified file is never fetched again.
* :func:`download_twenty_news` -- scikit-learn's 20 Newsgroups archive (its own
  download, checksum and cache) into a folder.

The base URL is the pinned raw URL of the repository; the environment variable
:data:`BASE_URL_ENV` (or ``base_url=``) points the downloads at a mirror laid out
as the repository is (``<base>/dat/dsc/...``).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

__all__ = [
    "BASE_URL_ENV",
    "ChecksumError",
    "DownloadError",
    "DownloadResult",
    "Manifest",
    "ManifestFile",
    "default_root",
    "download_text_data",
    "download_twenty_news",
    "file_sha256",
    "text_manifest",
]

BASE_URL_ENV = "AVALANCHE_CTR_DATA_URL"
"""Environment variable naming a mirror of the pinned repository (its base URL)."""

_MANIFEST = Path(__file__).with_name("text_data.json")
_CHUNK = 1 << 16


class DownloadError(OSError):
    """A dataset's files could not be fetched; the message names the files missing and
    how to get them by hand."""


class ChecksumError(DownloadError):
    """A file's bytes are not those of the manifest; the message names the file, both
    digests and what to do."""


@dataclass(frozen=True)
class ManifestFile:
    """One file of a dataset.

    :param path: where it goes, relative to the dataset folder.
    :param url: its URL path, relative to the base URL.
    :param size: its size in bytes.
    :param sha256: its sha256, as 64 hex digits.
    """

    path: str
    url: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """The files of each dataset and where they come from.

    :param source: the repository the files come from.
    :param commit: the commit they are pinned at.
    :param base_url: the URL the files' ``url`` paths are relative to.
    :param datasets: dataset name -> its files.
    """

    source: str
    commit: str
    base_url: str
    datasets: dict[str, tuple[ManifestFile, ...]]

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> Manifest:
        """Read a manifest written as ``text_data.json`` is."""
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(
            source=data["source"],
            commit=data["commit"],
            base_url=data["base_url"],
            datasets={
                name: tuple(ManifestFile(**entry) for entry in entries)
                for name, entries in data["datasets"].items()
            },
        )


@dataclass(frozen=True)
class DownloadResult:
    """What :func:`download_text_data` did.

    :param root: the dataset folder.
    :param downloaded: the files fetched by this call (paths relative to ``root``).
    :param present: the files that were there already and verified.
    """

    root: Path
    downloaded: tuple[str, ...]
    present: tuple[str, ...]


@cache
def text_manifest() -> Manifest:
    """The packaged manifest of the DSC and ASC files."""
    return Manifest.from_json(_MANIFEST)


def default_root(name: str) -> Path:
    """Where dataset ``name`` goes by default: Avalanche's
    ``default_dataset_location(name)`` (``~/.avalanche/data/<name>`` unless Avalanche's
    config file says otherwise), as Avalanche's own benchmarks use."""
    from avalanche.benchmarks.datasets import default_dataset_location

    return Path(default_dataset_location(name))


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 of the file at ``path``, as 64 hex digits."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _base_url(manifest: Manifest, base_url: str | None) -> str:
    base = base_url or os.environ.get(BASE_URL_ENV) or manifest.base_url
    return base if base.endswith("/") else base + "/"


def _manual_fix(
    manifest: Manifest, name: str, root: Path, base: str, missing: Sequence[ManifestFile]
) -> str:
    prefixes = {e.url.removesuffix(e.path) for e in missing}
    where = (
        f"{base}{prefixes.pop()}<file> to {root}/<file>"
        if len(prefixes) == 1 and all(e.url.endswith(e.path) for e in missing)
        else f"{base}<its URL path in the manifest> into {root}"
    )
    return (
        f"To get them by hand, download each <file> from {where} (the {name} files of "
        f"{manifest.source} at commit {manifest.commit}); or pass a folder that holds them "
        f"(root= / --data-root DIR); or set {BASE_URL_ENV} to a mirror laid out as that "
        f"repository"
    )


def _missing_message(missing: Sequence[ManifestFile], root: Path) -> str:
    return f"{len(missing)} file(s) missing in {root}: {', '.join(e.path for e in missing)}"


def _select(manifest: Manifest, name: str, files: Iterable[str] | None) -> list[ManifestFile]:
    if name not in manifest.datasets:
        raise ValueError(
            f"no dataset {name!r} in the manifest; it lists: {', '.join(manifest.datasets)}"
        )
    entries = list(manifest.datasets[name])
    if files is None:
        return entries
    wanted = [str(Path(f).as_posix()) for f in files]
    known = {e.path: e for e in entries}
    unknown = [f for f in wanted if f not in known]
    if unknown:
        raise ValueError(f"{unknown} are not {name} files of the manifest")
    return [known[f] for f in dict.fromkeys(wanted)]


def _check_present(target: Path, entry: ManifestFile, manifest: Manifest) -> None:
    """Raise :class:`ChecksumError` unless ``target`` is the manifest's file."""
    size = target.stat().st_size
    actual = file_sha256(target)
    if size != entry.size or actual != entry.sha256:
        raise ChecksumError(
            f"{target} is there but is not the file of the manifest ({manifest.source} "
            f"@{manifest.commit}:{entry.url}): sha256 {actual} ({size} bytes), expected "
            f"{entry.sha256} ({entry.size} bytes). Delete it so that it is downloaded again, "
            f"or read the files as they are (download=False, or --data-root DIR)"
        )


def _fetch(url: str, target: Path, entry: ManifestFile, timeout: float) -> None:
    """Stream ``url`` into a temporary file beside ``target``, check its size and sha256,
    then rename it to ``target``; the temporary file is removed on any failure.

    :raises urllib.error.URLError: when the server cannot be reached (nothing written).
    :raises DownloadError: when the transfer breaks off or the server refuses the file.
    :raises ChecksumError: when the bytes received are not the manifest's.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        digest, size = hashlib.sha256(), 0
        with os.fdopen(fd, "wb") as out:
            try:
                response = urllib.request.urlopen(url, timeout=timeout)
            except urllib.error.HTTPError as error:
                raise DownloadError(f"{url} answered HTTP {error.code} ({error.reason})") from None
            with response:
                try:
                    while size <= entry.size and (chunk := response.read(_CHUNK)):
                        out.write(chunk)
                        digest.update(chunk)
                        size += len(chunk)
                except (OSError, http.client.HTTPException) as error:
                    raise DownloadError(
                        f"the download of {url} broke off after {size} of {entry.size} bytes "
                        f"({error!r})"
                    ) from None
        if size < entry.size:
            raise DownloadError(
                f"the download of {url} broke off after {size} of {entry.size} bytes"
            )
        if size != entry.size or digest.hexdigest() != entry.sha256:
            raise ChecksumError(
                f"{url} is not the file of the manifest: its sha256 is {digest.hexdigest()} "
                f"({size}{'+' if size > entry.size else ''} bytes), the manifest's "
                f"{entry.sha256} ({entry.size} bytes); nothing was written to {target}. The "
                f"server (base URL) serves another version of the file: point {BASE_URL_ENV} "
                f"at a mirror of the pinned commit, or put the right file there by hand"
            )
        os.chmod(temp, 0o644)
        os.replace(temp, target)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)


def download_text_data(
    name: str,
    root: str | os.PathLike[str] | None = None,
    *,
    files: Iterable[str] | None = None,
    base_url: str | None = None,
    manifest: Manifest | None = None,
    timeout: float = 60.0,
) -> DownloadResult:
    """Make ``root`` hold the manifest's files of dataset ``name`` (``"dsc"`` or
    ``"asc"``), verified.

    A file already there is checked (size and sha256) and kept; a missing one is
    fetched from ``<base URL><url path>`` to a temporary name in its folder, checked,
    then renamed into place.

    :param name: the dataset: ``"dsc"`` or ``"asc"`` (any key of the manifest).
    :param root: the dataset folder (default :func:`default_root`).
    :param files: only these files (paths relative to ``root``); default all of them.
    :param base_url: the server to fetch from (default: :data:`BASE_URL_ENV`, else the
        pinned raw URL of the manifest).
    :param manifest: the manifest (default the packaged one, :func:`text_manifest`).
    :param timeout: seconds to wait on the server.
    :return: the folder and what was fetched and what was there.
    :raises ChecksumError: when a file there, or a file fetched, is not the manifest's
        (nothing is written under the file's name then).
    :raises DownloadError: when the server cannot be reached, refuses a file, or a
        transfer breaks off; the message names the files still missing and the manual fix.
    :raises ValueError: on a dataset or file the manifest does not list.
    """
    manifest = manifest or text_manifest()
    entries = _select(manifest, name, files)
    folder = default_root(name) if root is None else Path(root).expanduser()
    base = _base_url(manifest, base_url)
    present, missing = [], []
    for entry in entries:
        target = folder / entry.path
        if target.is_file():
            _check_present(target, entry, manifest)
            present.append(entry.path)
        else:
            missing.append(entry)
    downloaded: list[str] = []
    for index, entry in enumerate(missing):
        try:
            _fetch(base + entry.url, folder / entry.path, entry, timeout)
        except ChecksumError:
            raise
        except DownloadError as error:
            raise DownloadError(
                f"could not download {name}: {error}. {_missing_message(missing[index:], folder)}"
                f". Run the same call again to fetch them (verified files are kept). "
                f"{_manual_fix(manifest, name, folder, base, missing[index:])}"
            ) from None
        except OSError as error:  # URLError, refused connection, timeout: offline
            reason = getattr(error, "reason", error)
            raise DownloadError(
                f"could not reach {base} to download {name} ({reason}). "
                f"{_missing_message(missing[index:], folder)}. "
                f"{_manual_fix(manifest, name, folder, base, missing[index:])}"
            ) from None
        downloaded.append(entry.path)
    return DownloadResult(folder, tuple(downloaded), tuple(present))


def download_twenty_news(root: str | os.PathLike[str] | None = None) -> Path:
    """Fetch 20 Newsgroups with scikit-learn's ``fetch_20newsgroups`` into ``root``
    (scikit-learn's ``data_home``; default :func:`default_root` ``("20news")``), which
    downloads the "bydate" archive once, checks its sha256 and caches it there as
    ``20news-bydate_py3.pkz``.

    :return: the folder.
    :raises DownloadError: when the archive cannot be fetched (offline), with the
        manual fix.
    """
    from sklearn.datasets import fetch_20newsgroups

    folder = default_root("20news") if root is None else Path(root).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        fetch_20newsgroups(data_home=str(folder), subset="all", shuffle=False)
    except OSError as error:
        raise DownloadError(
            f"could not download 20 Newsgroups into {folder} ({error}). Connect to the "
            f"internet once so that scikit-learn fetches it, or pass a folder holding one "
            f"folder per newsgroup with one message per file (root= / --data-root DIR)"
        ) from None
    return folder
