"""Atomic result files: a reader sees the whole file or no file, never a half-written one.

The file gets the permissions a plain ``open(path, "w")`` would give a new file:
``0o666`` less the process umask (and the directory's default ACL, where there is
one), so on a shared file system the group can read results when the umask says so.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO

# What open() asks of the kernel for a new file; the kernel then applies the umask.
NEW_FILE_MODE = 0o666
_TEMP_ATTEMPTS = 100


def _create_temporary(target: Path) -> tuple[int, Path]:
    """Create a new, empty file beside ``target``; return its descriptor and path.

    ``tempfile.mkstemp`` would create it with mode 0600 whatever the umask, and
    ``os.replace`` would carry that mode onto the result. ``O_CREAT | O_EXCL`` with
    ``NEW_FILE_MODE`` lets the kernel apply the umask, exactly as for a normal open,
    and still never reuses an existing file.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(_TEMP_ATTEMPTS):
        tmp = target.parent / f".{target.name}.{secrets.token_hex(4)}.tmp"
        try:
            return os.open(tmp, flags, NEW_FILE_MODE), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {target} after {_TEMP_ATTEMPTS} attempts")


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator[IO]:
    """Open a temporary file beside ``path``; rename it onto ``path`` only on success.

    On any exception the temporary file is removed and ``path`` is left as it was, so
    a crash can never leave a truncated file that looks like a valid result. The new
    file's permissions follow the umask, as with ``open``; a file it replaces does not
    pass its own permissions on.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temporary(target)
    try:
        try:
            handle = os.fdopen(fd, mode, **kwargs)
        except BaseException:
            os.close(fd)
            raise
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)
