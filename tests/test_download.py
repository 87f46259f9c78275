"""Downloads over real HTTP on loopback (tests/fixtures/http_server.py), and tarball safety.

No TensorFlow here: the tarballs are zoo-shaped (``<name>/saved_model/saved_model.pb``)
but hold random bytes, which is all acquisition looks at.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from pathlib import Path

import pytest

from serveprof.models.acquire import acquire
from serveprof.models.archive import BadArchive, check_zoo_tarball, extract_zoo_tarball
from serveprof.models.download import DownloadFailed, download, partial_path
from tests.fixtures.http_server import FileServer
from tests.fixtures.tarballs import add_file, zoo_shaped_tarball

ZOO_SPEC = {"source": "tf2_zoo", "type": "detection"}
FAST = {"backoff_s": 0.01}


@pytest.fixture
def served(tmp_path):
    directory = tmp_path / "served"
    directory.mkdir()
    return zoo_shaped_tarball(directory / "model.tar.gz")


def test_complete_download_is_byte_identical_and_leaves_no_partial_file(served, tmp_path):
    dest = tmp_path / "dl" / "model.tar.gz"
    with FileServer(served.parent) as server:
        download(server.url_for("model.tar.gz"), dest, sha256=hashlib.sha256(served.read_bytes()).hexdigest())
        assert server.request_count() == 1
    assert dest.read_bytes() == served.read_bytes()
    assert not partial_path(dest).exists()


def test_sha256_mismatch_fails_and_leaves_no_file(served, tmp_path):
    dest = tmp_path / "model.tar.gz"
    with FileServer(served.parent) as server, pytest.raises(DownloadFailed, match="sha256") as failure:
        download(server.url_for("model.tar.gz"), dest, sha256="0" * 64)
    assert "0" * 64 in str(failure.value)
    assert not dest.exists() and not partial_path(dest).exists()


def test_truncated_transfer_keeps_the_partial_file_and_a_rerun_resumes_it(served, tmp_path):
    dest = tmp_path / "model.tar.gz"
    with FileServer(served.parent, cut_after=100_000) as server:
        with pytest.raises(DownloadFailed) as failure:
            download(server.url_for("model.tar.gz"), dest, tries=1)
        assert "to resume" in str(failure.value)
        assert not dest.exists()
        kept = partial_path(dest).stat().st_size
        assert 0 < kept <= 100_000  # whole reads only: the one the drop interrupted is lost
        server.cut_after = None
        download(server.url_for("model.tar.gz"), dest)
        assert [(r.range, r.status) for r in server.requests] == [(None, 200), (f"bytes={kept}-", 206)]
    assert dest.read_bytes() == served.read_bytes()
    assert not partial_path(dest).exists()


def test_retries_resume_a_connection_that_keeps_dropping(served, tmp_path):
    dest = tmp_path / "model.tar.gz"
    size = served.stat().st_size
    with FileServer(served.parent, cut_after=size // 2 + 70_000) as server:
        download(server.url_for("model.tar.gz"), dest, tries=2, **FAST)
        assert [r.status for r in server.requests] == [200, 206]
    assert dest.read_bytes() == served.read_bytes()


def test_a_server_that_ignores_range_restarts_the_file_cleanly(served, tmp_path):
    dest = tmp_path / "model.tar.gz"
    partial_path(dest).write_bytes(b"\xff" * 5000)  # not a prefix of the file: appending would corrupt it
    with FileServer(served.parent, ignore_range=True) as server:
        download(server.url_for("model.tar.gz"), dest)
        assert [(r.range, r.status) for r in server.requests] == [("bytes=5000-", 200)]
    assert dest.read_bytes() == served.read_bytes()


def test_a_partial_file_longer_than_the_file_restarts(served, tmp_path):
    dest = tmp_path / "model.tar.gz"
    partial_path(dest).write_bytes(b"\x00" * (served.stat().st_size + 10))
    with FileServer(served.parent) as server:
        download(server.url_for("model.tar.gz"), dest, **FAST)
        assert [r.status for r in server.requests] == [416, 200]
    assert dest.read_bytes() == served.read_bytes()


def test_server_errors_are_retried(served, tmp_path):
    dest = tmp_path / "model.tar.gz"
    with FileServer(served.parent, fail_first=2) as server:
        download(server.url_for("model.tar.gz"), dest, tries=3, **FAST)
        assert [r.status for r in server.requests] == [500, 500, 200]
    assert dest.read_bytes() == served.read_bytes()


def test_persistent_server_errors_fail_after_the_tries(served, tmp_path):
    dest = tmp_path / "model.tar.gz"
    with (
        FileServer(served.parent, fail_first=5) as server,
        pytest.raises(DownloadFailed, match="after 3 tries: HTTP 500"),
    ):
        download(server.url_for("model.tar.gz"), dest, tries=3, **FAST)
    assert server.request_count() == 3 and not dest.exists()


def test_not_found_is_unavailable_without_retrying(served, tmp_path):
    with FileServer(served.parent) as server:
        status = acquire("gone", {**ZOO_SPEC, "url": server.url_for("missing.tar.gz")}, tmp_path / "dl")
        assert server.request_count() == 1
    assert status["status"] == "unavailable"
    assert "HTTP 404" in status["reason"] and "missing.tar.gz" in status["reason"]
    assert str(tmp_path / "dl" / "missing.tar.gz") in status["fix"]
    assert not (tmp_path / "dl" / "missing.tar.gz").exists()


def test_a_staged_tarball_is_used_without_any_request(served, tmp_path):
    staged = tmp_path / "dl" / "model.tar.gz"
    staged.parent.mkdir()
    staged.write_bytes(served.read_bytes())
    digest = hashlib.sha256(served.read_bytes()).hexdigest()
    with FileServer(served.parent) as server:
        status = acquire("staged", {**ZOO_SPEC, "url": server.url_for("model.tar.gz"), "sha256": digest}, staged.parent)
        assert server.request_count() == 0
    assert status["status"] == "ok" and status["weights"] == "zoo"
    assert status["artifact"] == str(staged) and status["sha256"] == digest


def test_a_staged_tarball_with_another_sha256_is_unavailable(served, tmp_path):
    staged = tmp_path / "model.tar.gz"
    staged.write_bytes(served.read_bytes())
    status = acquire("staged", {**ZOO_SPEC, "url": "http://127.0.0.1:9/model.tar.gz", "sha256": "a" * 64}, tmp_path)
    assert status["status"] == "unavailable" and "sha256" in status["reason"]
    assert str(staged) in status["fix"]


def test_a_truncated_staged_tarball_is_unavailable_with_a_clear_reason(served, tmp_path):
    staged = tmp_path / "model.tar.gz"
    staged.write_bytes(served.read_bytes()[: served.stat().st_size // 2])
    status = acquire("cut", {**ZOO_SPEC, "url": "http://127.0.0.1:9/model.tar.gz"}, tmp_path)
    assert status["status"] == "unavailable"
    assert "truncated or corrupt" in status["reason"] and f"delete {staged}" in status["fix"]
    assert staged.exists()  # the user's file: reported, not deleted


def test_a_corrupt_download_is_not_kept_under_the_final_name(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    (served / "model.tar.gz").write_bytes(os.urandom(2000))
    with FileServer(served) as server:
        status = acquire("corrupt", {**ZOO_SPEC, "url": server.url_for("model.tar.gz")}, tmp_path / "dl")
    assert status["status"] == "unavailable" and "not a readable gzip tar" in status["reason"]
    assert not (tmp_path / "dl" / "model.tar.gz").exists()


def test_a_tarball_without_a_saved_model_is_refused(tmp_path):
    tarball = tmp_path / "other.tar.gz"
    with tarfile.open(tarball, "w:gz") as archive:
        add_file(archive, "other/README", b"hello")
    with pytest.raises(BadArchive, match="holds no saved_model.pb"):
        check_zoo_tarball(tarball)


def test_the_saved_model_is_found_whatever_the_top_folder_is_called(tmp_path):
    tarball = zoo_shaped_tarball(
        tmp_path / "centernet_mobilenetv2fpn_512x512_coco17_od.tar.gz", name="centernet_mobilenetv2_fpn_od"
    )
    assert check_zoo_tarball(tarball) == "centernet_mobilenetv2_fpn_od/saved_model"
    found = extract_zoo_tarball(tarball, tmp_path / "out")
    assert found == tmp_path / "out" / "centernet_mobilenetv2_fpn_od" / "saved_model"
    assert (found / "saved_model.pb").stat().st_size == 300_000


def evil_symlink(archive: tarfile.TarFile) -> None:
    link = tarfile.TarInfo("evil/saved_model/link")
    link.type, link.linkname = tarfile.SYMTYPE, "../../../outside"
    archive.addfile(link)


def evil_hardlink(archive: tarfile.TarFile) -> None:
    link = tarfile.TarInfo("evil/saved_model/hard")
    link.type, link.linkname = tarfile.LNKTYPE, "../outside"
    archive.addfile(link)


@pytest.mark.parametrize(
    ("write_evil", "entry", "why"),
    [
        (lambda archive: add_file(archive, "../evil", b"escaped"), "../evil", "contains '..'"),
        (lambda archive: add_file(archive, "evil/../../evil", b"escaped"), "evil/../../evil", "contains '..'"),
        (lambda archive: add_file(archive, "/tmp/serveprof-evil", b"escaped"), "/tmp/serveprof-evil", "absolute path"),
        (evil_symlink, "evil/saved_model/link", "symlink pointing outside"),
        (evil_hardlink, "evil/saved_model/hard", "hard link pointing outside"),
    ],
)
def test_an_entry_escaping_the_target_is_refused_by_name_and_nothing_is_written(tmp_path, write_evil, entry, why):
    tarball = tmp_path / "evil.tar.gz"
    with tarfile.open(tarball, "w:gz") as archive:
        add_file(archive, "evil/saved_model/saved_model.pb", b"pb")
        write_evil(archive)
    target = tmp_path / "deep" / "target"
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(BadArchive) as refused:
        extract_zoo_tarball(tarball, target)
    assert repr(entry) in refused.value.problem and why in refused.value.problem
    assert sorted(tmp_path.rglob("*")) == before
    assert not Path("/tmp/serveprof-evil").exists()
    status = acquire("evil", {**ZOO_SPEC, "url": "http://127.0.0.1:9/evil.tar.gz"}, tmp_path)
    assert status["status"] == "unavailable" and repr(entry) in status["reason"]
