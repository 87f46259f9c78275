"""Zoo tarballs: check, then extract without letting any entry escape the target folder.

Every member is checked before anything is written (absolute paths, ``..``, links
pointing outside, devices), so a hostile or broken tarball is refused with the entry
named and nothing extracted. Extraction then also uses tarfile's ``data`` filter,
which enforces the same rules inside the standard library.
"""

from __future__ import annotations

import os
import posixpath
import tarfile
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from serveprof.errors import ServeprofError

SAVED_MODEL_PB = "saved_model.pb"


def tarball_file_name(url: str) -> str:
    """The file a zoo tarball is stored as in the download folder: the last segment of the URL's path."""
    return urlsplit(url).path.rsplit("/", 1)[-1]


class BadArchive(ServeprofError):
    """The tarball is unreadable, unsafe or not a zoo release."""


def _inside(path: str) -> bool:
    """True when ``path`` (relative, POSIX) stays inside the folder it is resolved against."""
    normal = posixpath.normpath(path)
    return not (posixpath.isabs(path) or normal == ".." or normal.startswith("../"))


def unsafe_reason(member: tarfile.TarInfo) -> str | None:
    """Why extracting ``member`` could write outside the target folder, or None if it cannot."""
    name = member.name
    if name.startswith(("/", "\\")) or PurePosixPath(name).is_absolute() or (len(name) > 1 and name[1] == ":"):
        return "is an absolute path"
    if ".." in PurePosixPath(name).parts:
        return "contains '..'"
    if member.issym():
        target = posixpath.join(posixpath.dirname(name), member.linkname)
        if posixpath.isabs(member.linkname) or not _inside(target):
            return f"is a symlink pointing outside the archive ({member.linkname})"
    if member.islnk() and (posixpath.isabs(member.linkname) or not _inside(member.linkname)):
        return f"is a hard link pointing outside the archive ({member.linkname})"
    if member.isdev():
        return "is a device file"
    return None


def _members(tarball: Path) -> list[tarfile.TarInfo]:
    try:
        with tarfile.open(tarball, "r:gz") as archive:
            return archive.getmembers()
    except (tarfile.TarError, EOFError, OSError) as error:
        raise BadArchive(
            f"{tarball} is not a readable gzip tar archive ({error}): truncated or corrupt",
            f"delete {tarball} and rerun to download it again, or stage a complete copy",
        ) from None


def check_zoo_tarball(tarball: str | os.PathLike) -> str:
    """Read the whole archive and return the member path of its SavedModel directory.

    Raises BadArchive when the archive is truncated, corrupt, unsafe, or holds no
    ``saved_model/saved_model.pb``.
    """
    tarball = Path(tarball)
    members = _members(tarball)
    for member in members:
        reason = unsafe_reason(member)
        if reason:
            raise BadArchive(
                f"{tarball}: entry {member.name!r} {reason}; refusing to extract it",
                "use the tarball from the model's official URL; this one is not a model release",
            )
    found = [PurePosixPath(m.name) for m in members if m.isfile() and PurePosixPath(m.name).name == SAVED_MODEL_PB]
    if not found:
        raise BadArchive(
            f"{tarball} holds no {SAVED_MODEL_PB}: not a TF2 Detection Zoo release",
            "check the model's url: it must name a zoo tarball with <name>/saved_model/saved_model.pb",
        )
    # The zoo layout is <top>/saved_model/saved_model.pb, whatever <top> is named
    # (CenterNet MobileNetV2 unpacks to centernet_mobilenetv2_fpn_od/); prefer it, then the shallowest.
    found.sort(key=lambda path: (path.parent.name != "saved_model", len(path.parts)))
    return str(found[0].parent)


def extract_zoo_tarball(tarball: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Check and extract ``tarball`` into ``target``; return the SavedModel directory inside it."""
    saved_model = check_zoo_tarball(tarball)
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(tarball, "r:gz") as archive:
            archive.extractall(target, filter="data")
    except tarfile.FilterError as error:
        raise BadArchive(
            f"{tarball}: {error}; refusing to extract it",
            "use the tarball from the model's official URL; this one is not a model release",
        ) from None
    return target / saved_model
