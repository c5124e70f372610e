"""Tests for :mod:`avalanche_ctr.benchmarks.download`: a tiny DSC fixture served over
HTTP on 127.0.0.1 with a manifest of its own (no internet)."""

import hashlib
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from _text_helpers import LENGTH, write_dsc
from avalanche.benchmarks.datasets import dataset_utils

from avalanche_ctr.benchmarks import DSC, DSC_DOMAINS, dsc_domains
from avalanche_ctr.benchmarks import download as downloads
from avalanche_ctr.benchmarks.download import (
    BASE_URL_ENV,
    ChecksumError,
    DownloadError,
    Manifest,
    ManifestFile,
    download_text_data,
    file_sha256,
    text_manifest,
)
from avalanche_ctr.benchmarks.text import ASC_TASKS, _asc_dir
from avalanche_ctr.cli import main


class _Server(ThreadingHTTPServer):
    """Serves ``files`` (URL path -> bytes); ``modes[path]`` is ``"corrupt"`` (one byte
    changed) or ``"truncate"`` (half the bytes, then the connection closes); every
    request's path goes to ``requests``."""

    daemon_threads = True

    def __init__(self, files: dict[str, bytes]):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files, self.modes, self.requests = files, {}, []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (the http.server API)
        path = self.path.lstrip("/")
        self.server.requests.append(path)
        if path not in self.server.files:
            self.send_error(404)
            return
        body = self.server.files[path]
        mode = self.server.modes.get(path)
        if mode == "corrupt":
            body = bytes([body[0] ^ 1]) + body[1:]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if mode == "truncate" else body)
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """The files a server offers: tiny DSC files of the 10 domains."""
    return write_dsc(tmp_path_factory.mktemp("served") / "dsc", n_train=12, n_test=4)


@pytest.fixture(scope="module")
def manifest(source) -> Manifest:
    entries = tuple(
        ManifestFile(
            path=path.name,
            url=f"dat/dsc/{path.name}",
            size=path.stat().st_size,
            sha256=file_sha256(path),
        )
        for path in sorted(source.iterdir())
    )
    return Manifest("test/fixture", "0" * 40, "http://unused.invalid/", {"dsc": entries})


@pytest.fixture
def server(source, manifest):
    files = {e.url: (source / e.path).read_bytes() for e in manifest.datasets["dsc"]}
    httpd = _Server(files)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def verified(root: Path, manifest: Manifest) -> set[str]:
    """The names in ``root``, each checked to be a file of the manifest with its sha256."""
    expected = {e.path: e.sha256 for e in manifest.datasets["dsc"]}
    names = {p.name for p in root.iterdir()}
    for name in names:
        assert expected.get(name) == file_sha256(root / name), name
    return names


def test_a_second_download_fetches_nothing(tmp_path, server, manifest, monkeypatch, capsys):
    root = tmp_path / "dsc"
    result = download_text_data("dsc", root, base_url=server.url, manifest=manifest)
    every = [e.path for e in manifest.datasets["dsc"]]
    assert list(result.downloaded) == every and result.present == ()
    assert verified(root, manifest) == set(every)
    assert len(server.requests) == len(every)
    monkeypatch.setattr(downloads, "text_manifest", lambda: manifest)
    main(["download", "dsc", "--root", str(root), "--base-url", server.url])
    assert len(server.requests) == len(every)  # nothing fetched again
    out = capsys.readouterr().out
    assert f"dsc: 30 files in {root}, each matching the sha256 of the manifest" in out
    assert "0 downloaded, 30 there already" in out


def test_a_corrupted_file_is_refused_and_nothing_takes_its_name(tmp_path, server, manifest):
    entry = manifest.datasets["dsc"][4]
    server.modes[entry.url] = "corrupt"
    served = bytes([server.files[entry.url][0] ^ 1]) + server.files[entry.url][1:]
    root = tmp_path / "dsc"
    with pytest.raises(ChecksumError) as caught:
        download_text_data("dsc", root, base_url=server.url, manifest=manifest)
    message = str(caught.value)
    assert f"{server.url}{entry.url} is not the file of the manifest" in message
    assert f"its sha256 is {hashlib.sha256(served).hexdigest()}" in message
    assert f"the manifest's {entry.sha256}" in message
    assert f"point {BASE_URL_ENV} at a mirror of the pinned commit" in message
    assert entry.path not in verified(root, manifest)  # the four before it, verified
    assert len(list(root.iterdir())) == 4


def test_a_file_there_that_differs_is_not_overwritten(tmp_path, server, manifest):
    root = tmp_path / "dsc"
    download_text_data("dsc", root, base_url=server.url, manifest=manifest)
    edited = root / manifest.datasets["dsc"][0].path
    edited.write_text("mine\t1\n")
    with pytest.raises(ChecksumError, match=r"is there but is not the file of the manifest"):
        download_text_data("dsc", root, base_url=server.url, manifest=manifest)
    assert edited.read_text() == "mine\t1\n"


def test_an_interrupted_download_leaves_no_data_and_the_next_call_completes_it(
    tmp_path, server, manifest
):
    entries = manifest.datasets["dsc"]
    broken = entries[7]
    server.modes[broken.url] = "truncate"
    root = tmp_path / "dsc"
    with pytest.raises(DownloadError) as caught:
        download_text_data("dsc", root, base_url=server.url, manifest=manifest)
    message = str(caught.value)
    assert f"broke off after {broken.size // 2} of {broken.size} bytes" in message
    assert f"{len(entries) - 7} file(s) missing in {root}: {broken.path}, " in message
    assert verified(root, manifest) == {e.path for e in entries[:7]}  # no partial file
    domain = broken.path.rsplit("_", 1)[0]
    assert domain not in dsc_domains(root, dev=True)
    (root / f".{broken.path}.killed.part").write_bytes(b"half")  # as a killed process leaves
    assert domain not in dsc_domains(root, dev=True)
    del server.modes[broken.url]
    requested = len(server.requests)
    result = download_text_data("dsc", root, base_url=server.url, manifest=manifest)
    assert list(result.downloaded) == [e.path for e in entries[7:]]
    assert server.requests[requested:] == [e.url for e in entries[7:]]
    assert all(file_sha256(root / e.path) == e.sha256 for e in entries)


def test_offline_names_the_missing_files_and_the_manual_fix(tmp_path, manifest):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}/"
    root = tmp_path / "dsc"
    with pytest.raises(DownloadError) as caught:
        download_text_data("dsc", root, base_url=closed, manifest=manifest)
    message = str(caught.value)
    assert message.startswith(f"could not reach {closed} to download dsc (")
    names = ", ".join(e.path for e in manifest.datasets["dsc"])
    assert f"30 file(s) missing in {root}: {names}." in message
    assert f"download each <file> from {closed}dat/dsc/<file> to {root}/<file>" in message
    assert "pass a folder that holds them (root= / --data-root DIR)" in message
    assert f"set {BASE_URL_ENV} to a mirror" in message
    assert not root.exists() or not any(root.iterdir())


def test_dsc_download_builds_from_what_it_downloaded(
    tmp_path, server, manifest, source, tokenizer, monkeypatch
):
    monkeypatch.setattr(downloads, "text_manifest", lambda: manifest)
    monkeypatch.setenv(BASE_URL_ENV, server.url)
    monkeypatch.setitem(dataset_utils.AVALANCHE_CONFIG, "dataset_location", str(tmp_path))
    domains = list(DSC_DOMAINS[:2])
    kwargs = {"domains": domains, "tokenizer": tokenizer, "max_length": LENGTH, "dev": True}
    benchmark = DSC(download=True, **kwargs)
    assert sorted(server.requests) == sorted(
        f"dat/dsc/{d}_{s}.tsv" for d in domains for s in ("train", "dev", "test")
    )  # only the requested domains, into Avalanche's default location
    assert verified(tmp_path / "dsc", manifest) == {
        f"{d}_{s}.tsv" for d in domains for s in ("train", "dev", "test")
    }
    reference = DSC(source, **kwargs)
    for stream in ("train_stream", "dev_stream", "test_stream"):
        built, wanted = getattr(benchmark, stream), getattr(reference, stream)
        assert len(built) == len(wanted) == 2
        for got, want in zip(built, wanted, strict=True):
            assert torch.equal(samples(got), samples(want))


def samples(experience) -> torch.Tensor:
    """An experience's inputs, each followed by its target, as one tensor."""
    return torch.stack(
        [torch.cat([x.flatten(), torch.tensor([y])]) for x, y, *_ in experience.dataset]
    )


def test_without_download_the_default_folder_says_how_to_get_the_data(tmp_path, monkeypatch):
    monkeypatch.setitem(dataset_utils.AVALANCHE_CONFIG, "dataset_location", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"pass download=True \(or run `avalanche-ctr "):
        DSC(tokenizer="unused")


def test_the_packaged_manifest_covers_the_papers_tasks_at_a_pinned_commit():
    manifest = text_manifest()
    assert re.fullmatch(r"[0-9a-f]{40}", manifest.commit)
    assert manifest.base_url.endswith(f"/ZixuanKe/LifelongSentClass/{manifest.commit}/")
    splits = ("train", "dev", "test")
    dsc = [f"{d}_{s}.tsv" for d in DSC_DOMAINS for s in splits]
    asc = [(_asc_dir(Path(), t) / f"{s}.json").as_posix() for t in ASC_TASKS for s in splits]
    assert [e.path for e in manifest.datasets["dsc"]] == dsc
    assert [e.path for e in manifest.datasets["asc"]] == asc
    for name, prefix in (("dsc", "dat/dsc/"), ("asc", "dat/")):
        for entry in manifest.datasets[name]:
            assert entry.url == prefix + entry.path
            assert re.fullmatch(r"[0-9a-f]{64}", entry.sha256) and entry.size > 0


def test_the_command_line_downloads_into_the_default_folder_without_data_root(
    tmp_path, monkeypatch
):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}/"
    monkeypatch.setenv(BASE_URL_ENV, closed)
    monkeypatch.setitem(dataset_utils.AVALANCHE_CONFIG, "dataset_location", str(tmp_path))
    with pytest.raises(
        SystemExit,
        match=rf"could not reach {closed} to download dsc .* in "
        rf"{tmp_path / 'dsc'}: Tools_and_Home_Improvement_train.tsv, ",
    ):
        main(["run", "--strategy", "naive", "--benchmark", "dsc", "--out", str(tmp_path)])
