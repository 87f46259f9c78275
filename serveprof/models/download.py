"""HTTP download that never leaves a partial file under the final name.

Bytes go to ``<name>.part``; a failed transfer keeps it so the next try (or the next
run) resumes with an HTTP Range request. Only a file whose length matches the
server's Content-Length and whose sha256 matches (when one is given) is renamed to
``<name>``. Connection errors, truncated transfers and 5xx answers are retried with a
short exponential backoff, so an offline machine gives up within seconds.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import time
from pathlib import Path
from typing import IO

import requests

from serveprof.errors import ServeprofError
from serveprof.models.log import log

HASH_BLOCK_BYTES = 1 << 20
# Small reads: when a connection drops, the bytes of the read in progress are lost.
READ_BYTES = 64 << 10
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 60.0
LOG_EVERY_S = 5.0
CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class DownloadFailed(ServeprofError):
    """The file could not be downloaded; ``problem`` says what failed."""


class _Retryable(Exception):
    """A failure another try may fix (connection, 5xx, truncated transfer)."""


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(HASH_BLOCK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def partial_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


class _Progress:
    """A tqdm bar on a terminal; otherwise a log line every few seconds (job logs are files)."""

    def __init__(self, name: str, done: int, total: int | None):
        self.name, self.done, self.total = name, done, total
        self.started = self.last = time.monotonic()
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, unit="B", unit_scale=True, desc=name, file=sys.stderr)

    def update(self, count: int) -> None:
        self.done += count
        if self.bar is not None:
            self.bar.update(count)
            return
        now = time.monotonic()
        if now - self.last >= LOG_EVERY_S:
            self.last = now
            self.log()

    def log(self) -> None:
        of_total = f" of {self.total / 1e6:.1f} MB ({100 * self.done / self.total:.0f}%)" if self.total else ""
        rate = self.done / max(time.monotonic() - self.started, 1e-9) / 1e6
        log("acquire", f"downloading {self.name}: {self.done / 1e6:.1f} MB{of_total}, {rate:.1f} MB/s")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        else:
            self.log()


def _expected_total(response: requests.Response, offset: int) -> int | None:
    """The complete file's length, from Content-Range (206) or Content-Length (200)."""
    if response.status_code == 206:
        found = CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
        if not found or int(found.group(1)) != offset:
            return -1  # a range we did not ask for: restart
        return None if found.group(3) == "*" else int(found.group(3))
    length = response.headers.get("Content-Length")
    return int(length) if length is not None and length.isdigit() else None


def _write_body(response: requests.Response, handle: IO[bytes], progress: _Progress) -> None:
    for chunk in response.iter_content(READ_BYTES):
        handle.write(chunk)
        progress.update(len(chunk))


def _attempt(url: str, part: Path) -> None:
    """One GET that appends to (or restarts) ``part``; raises _Retryable or DownloadFailed."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        with requests.get(url, headers=headers, stream=True, timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S)) as response:
            if response.status_code == 416 and offset:
                part.unlink()  # the partial file is longer than the file: it is not a prefix of it
                raise _Retryable(f"server refused to resume at byte {offset} (HTTP 416); restarting")
            if response.status_code >= 500:
                raise _Retryable(f"HTTP {response.status_code} {response.reason}")
            if response.status_code not in (200, 206):
                raise DownloadFailed(
                    f"download of {url} failed: HTTP {response.status_code} {response.reason}",
                    "check the URL in the model's config entry",
                )
            total = _expected_total(response, offset)
            if total == -1:
                part.unlink()
                raise _Retryable("server answered a different byte range than requested; restarting")
            resumed = response.status_code == 206
            if offset and not resumed:
                log("acquire", f"server ignored the Range request; restarting {part.name} from byte 0")
            progress = _Progress(part.name.removesuffix(".part"), offset if resumed else 0, total)
            try:
                with open(part, "ab" if resumed else "wb") as handle:
                    _write_body(response, handle, progress)
            finally:
                progress.close()
    except requests.RequestException as error:
        raise _Retryable(_describe(error)) from error
    size = part.stat().st_size
    if total is not None and size != total:
        raise _Retryable(f"transfer ended at {size} of {total} bytes")


def _describe(error: requests.RequestException) -> str:
    """The innermost cause, e.g. "connection refused", not urllib3's nested repr."""
    cause: BaseException = error
    while cause.__cause__ is not None or cause.__context__ is not None:
        cause = cause.__cause__ or cause.__context__
    text = str(cause) or type(cause).__name__
    if isinstance(cause, ConnectionRefusedError) or "Connection refused" in text:
        return "connection refused"
    return text.rsplit(": ", 1)[-1] if len(text) > 160 else text


def download(
    url: str, dest: str | os.PathLike, sha256: str | None = None, tries: int = 3, backoff_s: float = 1.0
) -> Path:
    """Download ``url`` to ``dest``; on return ``dest`` is complete and verified.

    Raises DownloadFailed (a ServeprofError) naming what failed. A partial
    ``<dest>.part`` is kept for resuming, except after a sha256 mismatch, where its
    bytes are wrong and resuming would only keep them.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = partial_path(dest)
    last = ""
    for attempt in range(1, tries + 1):
        try:
            _attempt(url, part)
            break
        except _Retryable as error:
            last = str(error)
            if attempt < tries:
                wait = backoff_s * 2 ** (attempt - 1)
                log("acquire", f"download of {url}: {last}; try {attempt + 1} of {tries} in {wait:.1f} s")
                time.sleep(wait)
    else:
        kept = f" ({part.stat().st_size} bytes kept in {part} to resume)" if part.exists() else ""
        raise DownloadFailed(
            f"download of {url} failed after {tries} tries: {last}{kept}",
            f"stage the file at {dest} (download it on a machine with internet) and rerun",
        )
    if sha256 is not None:
        actual = sha256_of(part)
        if actual != sha256.lower():
            part.unlink()
            raise DownloadFailed(
                f"download of {url} has sha256 {actual}, expected {sha256.lower()}",
                "check the sha256 in the model's config entry, or the URL",
            )
    os.replace(part, dest)
    return dest
