"""Reproducible tar streams: sorted entries, mtime 0, uid/gid 0, fixed modes, no owner names.

The stream is a generator of byte chunks, so a layer can be hashed in one pass and uploaded
in another without ever being held in memory or written to a temporary file.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from promoter.errors import UserError

READ_SIZE = 1024 * 1024
# OCI layers mark deletions with members named ``.wh.<name>`` (and ``.wh..wh..opq``): an
# unpacker removes ``<name>`` and never writes the member, so a model file named so is lost.
WHITEOUT_PREFIX = ".wh."
_BLOCK = tarfile.BLOCKSIZE
_RECORD = tarfile.RECORDSIZE


@dataclass(frozen=True)
class TarEntry:
    """One member: ``arcname`` inside the image, ``source`` on disk (None for a directory),
    or ``data`` for a small generated file (e.g. Triton's config.pbtxt)."""

    arcname: str
    source: Path | None
    kind: str  # "dir" | "file" | "symlink"
    size: int = 0
    executable: bool = False
    link_target: str = ""
    data: bytes | None = None
    # (st_dev, st_ino) of the file when the tree was listed: the file read later must be that
    # one, not whatever a path swapped for a symlink in between names (a mounted secret).
    identity: tuple[int, int] | None = None


def data_entry(arcname: str, data: bytes) -> TarEntry:
    """A generated file held in memory (small: a config, never weights)."""
    return TarEntry(arcname, None, "file", size=len(data), data=data)


def file_entry(arcname: str, path: Path, info: os.stat_result) -> TarEntry:
    """A regular file, as ``lstat`` saw it while listing."""
    return TarEntry(arcname, path, "file", size=info.st_size,
                    executable=bool(info.st_mode & 0o111), identity=(info.st_dev, info.st_ino))


def entries_for_tree(root: Path, prefix: str) -> list[TarEntry]:
    """Every directory, file and symlink under ``root``, placed at ``prefix`` (e.g. opt/ml/model).

    Parent directories of ``prefix`` are included so the layer unpacks on an empty base.
    """
    prefix = prefix.strip("/")
    parts = prefix.split("/")
    entries = [TarEntry("/".join(parts[: i + 1]), None, "dir") for i in range(len(parts))]
    links: dict[str, str] = {}     # each symlink's path under root → its target
    for dirpath, dirnames, filenames in os.walk(root, onerror=_unreadable(root)):
        dirnames.sort()
        base = Path(dirpath)
        relative = base.relative_to(root).as_posix()
        here = prefix if relative == "." else f"{prefix}/{relative}"
        for name in sorted(dirnames + filenames):
            path = base / name
            if name.startswith(WHITEOUT_PREFIX):
                relative_name = path.relative_to(root).as_posix()
                raise UserError(f"the model's {relative_name[:200]!r} is named like an OCI "
                                f"whiteout ({WHITEOUT_PREFIX}*): unpacking the image would "
                                "delete a file instead of writing this one",
                                hint=f"rename it so its name does not start with "
                                     f"{WHITEOUT_PREFIX!r}")
            info = path.lstat()
            arcname = f"{here}/{name}"
            if stat.S_ISLNK(info.st_mode):
                target = os.readlink(path)
                links[path.relative_to(root).as_posix()] = target
                entries.append(TarEntry(arcname, path, "symlink", link_target=target))
            elif stat.S_ISDIR(info.st_mode):
                entries.append(TarEntry(arcname, None, "dir"))
            elif stat.S_ISREG(info.st_mode):
                entries.append(file_entry(arcname, path, info))
            else:
                # Left out silently, the image would lack a file the model may need.
                relative_name = path.relative_to(root).as_posix()
                raise UserError(f"the model's {relative_name[:200]!r} is a "
                                f"{_special_kind(info.st_mode)}, not a file, directory or "
                                "symlink: a model's files cannot hold it",
                                hint="remove it from the model directory (or save what it "
                                     "provides as a regular file)")
    link = _first_link_leaving(links)
    if link is not None:
        raise UserError(f"the model's {link[:200]!r} is a symlink to {links[link][:200]!r}, "
                        "outside the model's files",
                        hint="replace the link with the file it points to")
    entries.sort(key=lambda entry: entry.arcname)
    return entries


def _unreadable(root: Path) -> Callable[[OSError], None]:
    """os.walk's error handler: a directory that cannot be listed is an error, not a part of
    the model quietly left out of the image (os.walk skips it by default)."""

    def refuse(error: OSError) -> None:
        where = Path(error.filename or root)
        shown = where.relative_to(root).as_posix() if where.is_relative_to(root) else str(where)
        raise UserError(f"cannot list the model's directory {shown[:200]!r}: "
                        f"{error.strerror or error}",
                        hint="make every directory of the model readable to promoter")

    return refuse


def _special_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device file"
    return "special file"


def check_merged_links(entries: list[TarEntry], prefix: str) -> None:
    """Refuse a symlink that leaves ``prefix`` once several trees are merged there (vLLM's
    /models from an MLflow model's ``model/`` and ``components/<name>/``). Each tree's own
    check cannot see this: ``model/d -> e/..`` and ``components/tok/e -> .`` each stay in
    their folder, but merged, ``d`` leads through ``e`` to the parent of /models."""
    prefix = prefix.strip("/")
    links = {entry.arcname.removeprefix(f"{prefix}/"): entry.link_target
             for entry in entries if entry.kind == "symlink"}
    link = _first_link_leaving(links)
    if link is not None:
        raise UserError(f"{prefix}/{link[:200]} is a symlink to {links[link][:200]!r}: with "
                        f"the model's directories merged into /{prefix}, it leads outside them",
                        hint="replace the link with the file it points to")


def _first_link_leaving(links: dict[str, str]) -> str | None:
    """The first (sorted) of ``links`` (path under the root → target) that leaves the root."""
    return next((link for link in sorted(links) if _resolve(links, link, 0) is None), None)


_MAX_LINKS = 40   # links followed in one resolution, as Linux allows (ELOOP beyond)


def _resolve(links: dict[str, str], link: str, depth: int) -> list[str] | None:
    """Where symlink ``link`` (a path under the root) leads, as the container's kernel will
    follow it: component by component, through every other link of the tree on the way
    (``sub/..`` is the parent of wherever ``sub`` points, not "here"). None when it leaves
    the tree (then, in the image, it names whatever the running container has there: a
    service-account token, another mount), is absolute, or loops."""
    target = links[link]
    if depth > _MAX_LINKS or posixpath.isabs(target):
        return None
    parts = link.split("/")[:-1]
    for component in target.split("/"):
        if component in ("", "."):
            continue
        if component == "..":
            if not parts:
                return None
            parts.pop()
            continue
        parts.append(component)
        here = "/".join(parts)
        if here in links:
            resolved = _resolve(links, here, depth + 1)
            if resolved is None:
                return None
            parts = resolved
    return parts


def _checked_arcname(arcname: str) -> str:
    """A member name that unpacks inside the image's root: an absolute name or a ``..``
    component would write wherever it points when the layer is extracted. Names are built by
    promoter (a prefix plus the model's relative paths), so this is a last line of defence."""
    if posixpath.isabs(arcname) or ".." in arcname.split("/"):
        raise UserError(f"refusing to put {arcname[:200]!r} into a layer: a member name must "
                        "be relative and must not contain '..'")
    if posixpath.basename(arcname).startswith(WHITEOUT_PREFIX):
        raise UserError(f"refusing to put {arcname[:200]!r} into a layer: a name starting "
                        f"with {WHITEOUT_PREFIX!r} is an OCI whiteout, which deletes a file "
                        "when the layer is unpacked")
    return arcname


def _header(entry: TarEntry) -> bytes:
    info = tarfile.TarInfo(_checked_arcname(entry.arcname))
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if entry.kind == "dir":
        info.type, info.mode = tarfile.DIRTYPE, 0o755
    elif entry.kind == "symlink":
        info.type, info.mode, info.linkname = tarfile.SYMTYPE, 0o777, entry.link_target
    else:
        info.type, info.size = tarfile.REGTYPE, entry.size
        info.mode = 0o755 if entry.executable else 0o644
    # PAX only adds extended records for names that do not fit USTAR; otherwise plain USTAR.
    return info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="strict")


def tar_chunks(entries: list[TarEntry]) -> Iterator[bytes]:
    """The tar bytes of ``entries`` in order; a file that changed size mid-read is an error."""
    written = 0
    for entry in entries:
        header = _header(entry)
        written += len(header)
        yield header
        if entry.kind != "file":
            continue
        if entry.data is not None:
            written += len(entry.data)
            yield entry.data
        elif entry.source is None:
            continue
        else:
            yield from _file_chunks(entry)
            written += entry.size
        padding = (-entry.size) % _BLOCK
        if padding:
            written += padding
            yield b"\0" * padding
    trailer = 2 * _BLOCK
    trailer += (-(written + trailer)) % _RECORD
    yield b"\0" * trailer


def _file_chunks(entry: TarEntry) -> Iterator[bytes]:
    assert entry.source is not None
    remaining = entry.size
    with _open_listed(entry) as handle:
        while remaining > 0:
            chunk = handle.read(min(READ_SIZE, remaining))
            if not chunk:
                raise OSError(f"{entry.source} shrank while being read")
            remaining -= len(chunk)
            yield chunk
        # A file still being written (weights being copied in) must not be cut at the size
        # seen when the tree was listed: the layer would hold, and sign, a truncated file.
        if handle.read(1):
            raise OSError(f"{entry.source} grew while being read")


def _open_listed(entry: TarEntry) -> BinaryIO:
    """``entry``'s file, opened only if it is still the regular file that was listed: a
    symlink put in its place (O_NOFOLLOW), or a parent directory swapped for a link to
    elsewhere (another inode), would put another file's bytes into a signed layer."""
    assert entry.source is not None
    replaced = OSError(f"{entry.source} was replaced by another file after it was listed")
    try:
        descriptor = os.open(entry.source, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as error:
        if error.errno == errno.ELOOP:   # the last component is a symlink now
            raise replaced from None
        raise
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode) or (
                entry.identity is not None and (info.st_dev, info.st_ino) != entry.identity):
            raise replaced
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def tar_size(entries: list[TarEntry]) -> int:
    """The length of ``tar_chunks(entries)``, from headers and file sizes (nothing read)."""
    written = 0
    for entry in entries:
        written += len(_header(entry))
        if entry.kind == "file" and (entry.data is not None or entry.source is not None):
            written += entry.size + (-entry.size) % _BLOCK
    trailer = 2 * _BLOCK
    return written + trailer + (-(written + trailer)) % _RECORD
