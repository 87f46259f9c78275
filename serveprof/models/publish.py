"""Build a model version folder beside its final place and rename it there only when complete.

TF Serving loads any numeric folder under the base path as soon as it appears, so a
half-written ``1/`` would be loaded (and fail, or serve a broken model). The folder is
built as ``.1.<random>.building`` (not numeric, so ignored) and renamed onto ``1``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def building_dir(out: str | os.PathLike) -> Iterator[Path]:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".building", dir=out.parent))
    try:
        yield scratch
        # mkdtemp makes it private (0700); a server running as another user must read it.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(scratch, 0o777 & ~umask)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.replace(out, old / out.name)
            shutil.rmtree(old)
        os.replace(scratch, out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
