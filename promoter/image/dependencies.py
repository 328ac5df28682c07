"""The dependency layer: the model's requirements installed for the image's platform and Python.

Installing is I/O behind the ``WheelInstaller`` port (pip, in ``promoter.adapters.pip``); this
module decides what to install for which platform and turns the result into a reproducible
layer, cached under the state dir by the hash of everything that shapes it.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement

from promoter.errors import PermanentError, UserError
from promoter.image.layers import (
    TAR_GZIP,
    Blob,
    Layer,
    file_chunks,
    replacing_file,
    write_gzip_layer,
)
from promoter.image.platform import Platform
from promoter.image.tarstream import entries_for_tree
from promoter.ports.image import WheelInstaller

DEPS_ARCNAME = "opt/ml/deps"
# The machine part of a wheel's platform tag (what `uname -m` says on that architecture).
# arm64 of any variant runs aarch64 wheels (v9 runs v8 code); 32-bit arm wheels name their
# variant, and an arm image.platform without one means v7, as in containerd.
_ARCH_TAGS = {"amd64": "x86_64", "arm64": "aarch64", "ppc64le": "ppc64le", "s390x": "s390x"}
_ARM_TAGS = {"": "armv7l", "v7": "armv7l", "v6": "armv6l"}
_ARCHIVE_SUFFIXES = (".whl", ".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz", ".tar.xz",
                     ".txz", ".tlz", ".tar.lz", ".tar.lzma")
_ALLOWED = ("each line of requirements.txt must be one requirement: a name with optional "
            "[extras], version specifiers and a ; marker, e.g. 'numpy>=1.26; python_version "
            ">= \"3.10\"'. pip options (-r, --index-url, --no-binary …), URLs and file paths "
            "are not allowed; the package index is the operator's (image.pip_options)")
_SHOWN_CHARS = 80


def requirement_lines(model_dir: Path) -> list[str]:
    """The model's requirements, each re-written in its canonical form.

    The file comes from the model's owner, and pip would obey option lines in it (``--no-binary``
    turns source builds, i.e. running the package's code on the builder, back on; ``-r FILE``
    reads any file into pip's error), so only plain requirements pass. pip gets the canonical
    strings, never the file, and the dependency layer's cache key hashes the same strings.
    """
    path = model_dir / "requirements.txt"
    if not path.is_file():
        return []
    try:
        content = path.read_text("utf-8")
    except UnicodeDecodeError:
        raise UserError("the model's requirements.txt is not UTF-8 text",
                        hint=_ALLOWED) from None
    lines = []
    for number, raw in enumerate(content.splitlines(), start=1):
        text = raw.split("#", 1)[0].strip()
        if text:
            lines.append(str(_plain_requirement(number, text)))
    return lines


def _plain_requirement(number: int, text: str) -> Requirement:
    problem = _option_refusal(text)
    if problem is None:
        try:
            requirement = Requirement(text)
        except InvalidRequirement:
            problem = "is not a valid requirement"
        else:
            problem = _reference_refusal(requirement)
            if problem is None:
                return requirement
    raise UserError(f"the model's requirements.txt line {number} {problem}: {_shown(text)}",
                    hint=_ALLOWED)


def _option_refusal(text: str) -> str | None:
    """What pip would act on before (or instead of) reading a requirement."""
    if text.startswith("-"):
        return "is a pip option"
    if "\\" in text:
        return "has a backslash (pip joins a line ending in one with the next)"
    if "${" in text:
        return "names an environment variable"  # pip substitutes ${NAME} from its environment
    return None


def _reference_refusal(requirement: Requirement) -> str | None:
    """A requirement that names where to get the code instead of letting the index decide."""
    if requirement.url is not None:
        return "names a URL"
    if requirement.name.lower().endswith(_ARCHIVE_SUFFIXES):
        return "names a file"  # pip installs "x.whl" or "x.tar.gz" from its working directory
    return None


def _shown(text: str) -> str:
    return repr(text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "…")


def _machine(platform: Platform) -> str | None:
    if platform.architecture == "arm":
        return _ARM_TAGS.get(platform.variant)
    return _ARCH_TAGS.get(platform.architecture)


def pip_platforms(platform: Platform) -> list[str]:
    """pip's --platform tags for ``platform``: manylinux (pip adds the older glibc levels
    itself) and plain linux wheels."""
    machine = _machine(platform)
    if machine is None:
        raise UserError(f"no wheel platform known for {platform}",
                        hint="use linux/amd64, linux/arm64 or linux/arm/v7 as image.platform")
    return [f"manylinux_2_{minor}_{machine}" for minor in (28, 17)] + [f"linux_{machine}"]


def dependency_layer(model_dir: Path, cache_dir: Path, installer: WheelInstaller, *,
                     platform: Platform, python_version: str, pip_options: Sequence[str],
                     status: Callable[[str], None] | None = None) -> Layer | None:
    """The cached dependency layer for ``model_dir``'s requirements; None when there are none.
    ``status`` hears what a slow first build is doing (installing, packing)."""
    lines = requirement_lines(model_dir)
    if not lines:
        return None
    platforms = pip_platforms(platform)
    key_source: dict[str, object] = {
        "requirements": lines, "arch": platform.architecture, "python": python_version,
        "pip_options": list(pip_options), "layout": 1}
    if platform.architecture == "arm":  # armv6l and armv7l wheels differ; others keep their key
        key_source["wheels"] = platforms
    key = hashlib.sha256(json.dumps(key_source, sort_keys=True).encode()).hexdigest()
    cache_dir.mkdir(parents=True, exist_ok=True)
    blob_path, record_path = cache_dir / f"{key}.tar.gz", cache_dir / f"{key}.json"
    record = _cached_record(blob_path, record_path)
    if record is None:
        with tempfile.TemporaryDirectory(prefix="promoter-deps-", dir=cache_dir) as work:
            target = Path(work) / "target"
            requirements = Path(work) / "requirements.txt"
            requirements.write_text("\n".join(lines) + "\n", encoding="utf-8")
            if status is not None:
                status(f"installing {len(lines)} requirements for python {python_version} "
                       f"{platform} into the dependency layer (cached for the next build)")
            installer.install(requirements, target, platforms=platforms,
                              python_version=python_version, options=pip_options)
            _portable_scripts(target / "bin")
            if status is not None:
                status("packing the dependency layer")
            diff_id, digest, size = write_gzip_layer(entries_for_tree(target, DEPS_ARCNAME),
                                                     blob_path)
        record = {"diff_id": diff_id, "digest": digest, "size": size, "inputs": key_source}
        # Replaced whole: another build of this key may be reading the record right now.
        with replacing_file(record_path) as out:
            out.write(json.dumps(record, indent=2).encode("utf-8"))
    digest, size = record["digest"], record["size"]
    return Layer(Blob(TAR_GZIP, digest, size,
                      lambda: _checked_cache_chunks(blob_path, record_path, digest, size)),
                 record["diff_id"], f"dependencies ({len(lines)} requirements)")


def _cached_record(blob_path: Path, record_path: Path) -> dict[str, Any] | None:
    """The cache entry's record, read once; None when the entry is missing, unreadable, or its
    file no longer has the recorded size (then it is rebuilt, not sent)."""
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        if isinstance(record, dict) and blob_path.stat().st_size == record.get("size"):
            return record
    except (OSError, ValueError):
        pass
    return None


def _checked_cache_chunks(blob_path: Path, record_path: Path, digest: str,
                          size: int) -> Iterator[bytes]:
    """The cached layer's bytes, hashed as they are read (only when a registry or layout needs
    them): a file damaged or changed on disk since it was recorded would otherwise fail every
    later build with the registry's bare DIGEST_INVALID (or the reader's "longer than"). It is
    dropped from the cache before the error, so the next build installs the requirements
    again. A longer file is caught before its extra bytes are handed out: readers stop at the
    recorded size and would fail on their own, with the record kept."""
    hasher, seen = hashlib.sha256(), 0
    for chunk in file_chunks(blob_path):
        seen += len(chunk)
        if seen > size:
            break
        hasher.update(chunk)
        yield chunk
    if seen != size or f"sha256:{hasher.hexdigest()}" != digest:
        record_path.unlink(missing_ok=True)
        raise PermanentError(f"the cached dependency layer {blob_path.name} does not have the "
                             f"digest recorded when it was built ({digest[:19]}…): it was "
                             "changed or damaged on disk",
                             hint="it is dropped from the cache: build again (or `promoter "
                                  "jobs retry`) and the requirements are installed anew")


def _portable_scripts(bin_dir: Path) -> None:
    """pip writes this machine's interpreter into script shebangs; the image has its own."""
    if not bin_dir.is_dir():
        return
    for script in bin_dir.iterdir():
        if not script.is_file():
            continue
        data = script.read_bytes()
        if data.startswith(b"#!") and b"python" in data.split(b"\n", 1)[0]:
            rest = data.split(b"\n", 1)[1] if b"\n" in data else b""
            script.write_bytes(b"#!/usr/bin/env python3\n" + rest)
