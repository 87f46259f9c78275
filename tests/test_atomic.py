"""serveprof.atomic: whole files or none, with the permissions a plain open() would give."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

import pytest

from serveprof.atomic import atomic_open, atomic_write_bytes, atomic_write_text


@contextlib.contextmanager
def umask(value: int):
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o027, 0o077, 0o000])
@pytest.mark.parametrize("write", [atomic_write_text, atomic_write_bytes], ids=["text", "bytes"])
def test_new_file_has_the_mode_a_plain_open_gives(tmp_path, mask, write):
    plain, atomic = tmp_path / "plain.csv", tmp_path / "atomic.csv"
    with umask(mask):
        plain.write_text("x")
        write(atomic, "x" if write is atomic_write_text else b"x")
    assert mode_of(atomic) == 0o666 & ~mask == mode_of(plain)


def test_replacing_a_file_takes_the_mode_from_the_umask_not_from_the_old_file(tmp_path):
    target = tmp_path / "summary.csv"
    target.write_text("old")
    target.chmod(0o600)
    with umask(0o002):
        atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert mode_of(target) == 0o664


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "results" / "b1.json"
    atomic_write_text(target, "complete\n")
    with pytest.raises(RuntimeError, match="interrupted"):
        with atomic_open(target, "w", encoding="utf-8") as handle:
            handle.write("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "complete\n"
    assert sorted(path.name for path in target.parent.iterdir()) == ["b1.json"]


def test_a_bad_mode_leaves_no_temporary_and_no_open_descriptor(tmp_path):
    fds_before = set(os.listdir("/proc/self/fd")) if Path("/proc/self/fd").is_dir() else None
    with pytest.raises(ValueError):
        with atomic_open(tmp_path / "x.csv", "not-a-mode"):
            pass
    assert list(tmp_path.iterdir()) == []
    if fds_before is not None:
        assert set(os.listdir("/proc/self/fd")) <= fds_before


def test_creates_missing_folders_and_writes_through_the_handle(tmp_path):
    target = tmp_path / "a" / "b" / "tables.csv"
    with atomic_open(target, "w", encoding="utf-8", newline="") as handle:
        handle.write("x,y\r\n")
    assert target.read_bytes() == b"x,y\r\n"
    assert sorted(path.name for path in target.parent.iterdir()) == ["tables.csv"]
