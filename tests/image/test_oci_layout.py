"""One OCI layout written by several builds at once (serve --workers N, image.oci_layout)."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from promoter.image import layout as layout_module
from promoter.image.layout import REF_NAME, LayoutTarget
from promoter.ports.image import Blob


def _manifest(tag: str) -> bytes:
    return json.dumps({"schemaVersion": 2, "tag": tag}).encode()


def test_two_builds_recording_manifests_at_once_both_stay_in_the_index(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """index.json is read, changed and replaced: two builds doing so at once lost the first's
    manifest. Build A is held just after reading the index while build B records its own."""
    root = tmp_path / "layout"
    first, second = LayoutTarget(root), LayoutTarget(root)
    a_read, release_a = threading.Event(), threading.Event()
    real_loads = json.loads

    def loads_then_wait(text: Any, *args: Any, **kwargs: Any) -> Any:
        found = real_loads(text, *args, **kwargs)
        if threading.current_thread().name == "build-a":
            a_read.set()
            release_a.wait(5)
        return found

    monkeypatch.setattr(layout_module.json, "loads", loads_then_wait)
    build_a = threading.Thread(name="build-a", target=lambda: first.push_manifest(
        _manifest("a"), "application/vnd.oci.image.manifest.v1+json", "a"))
    build_b = threading.Thread(name="build-b", target=lambda: second.push_manifest(
        _manifest("b"), "application/vnd.oci.image.manifest.v1+json", "b"))
    build_a.start()
    assert a_read.wait(5)
    build_b.start()
    build_b.join(0.5)            # B records now, unless it waits for A's index write
    release_a.set()
    build_a.join(5)
    build_b.join(5)
    index = real_loads((root / "index.json").read_text(encoding="utf-8"))
    assert sorted(m["annotations"][REF_NAME] for m in index["manifests"]) == ["a", "b"]


def test_two_builds_writing_the_same_blob_at_once_both_succeed(tmp_path: Path) -> None:
    """Each writer has a temporary file of its own: one name shared by both was renamed away
    under the other."""
    data = b"weights" * 1000
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    both_writing = threading.Barrier(2)

    def chunks() -> Any:
        both_writing.wait(5)     # both have opened their partial file before either renames
        yield data

    root = tmp_path / "layout"
    targets = [LayoutTarget(root), LayoutTarget(root)]
    failures: list[BaseException] = []

    def write(target: LayoutTarget) -> None:
        try:
            target.push_blob(Blob("application/octet-stream", digest, len(data), chunks),
                             origin=None)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=write, args=(target,)) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert failures == []
    assert (root / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes() == data
    assert not list((root / "blobs" / "sha256").glob("*.partial"))


def test_the_layouts_files_follow_the_umask_like_any_other_file(tmp_path: Path) -> None:
    """Another user's skopeo or umoci reads the layout: its blobs and index are not made
    owner-only by the temporary files they are written through."""
    import os

    previous = os.umask(0o022)
    try:
        target = LayoutTarget(tmp_path / "layout")
        data = b"config"
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        target.push_blob(Blob("application/octet-stream", digest, len(data), lambda: iter([data])),
                         origin=None)
        target.push_manifest(_manifest("a"), "application/vnd.oci.image.manifest.v1+json", "a")
    finally:
        os.umask(previous)
    files = [*(tmp_path / "layout" / "blobs" / "sha256").iterdir(),
             tmp_path / "layout" / "index.json"]
    assert len(files) == 3
    assert {oct(path.stat().st_mode & 0o777) for path in files} == {oct(0o644)}


def test_a_second_tag_for_the_same_manifest_keeps_the_first(tmp_path: Path) -> None:
    """Recording a manifest dropped every index entry of its digest: tagging it "latest"
    after "v7" lost "v7". A tag replaces only its own entry (and an untagged one of the
    digest); a push without a tag leaves every tag in place."""
    target = LayoutTarget(tmp_path / "layout")
    oci = "application/vnd.oci.image.manifest.v1+json"

    def recorded() -> list[tuple[str, str | None]]:
        index = json.loads((tmp_path / "layout" / "index.json").read_text(encoding="utf-8"))
        return [(m["digest"][-6:], m.get("annotations", {}).get(REF_NAME))
                for m in index["manifests"]]

    first, second = _manifest("one"), _manifest("two")
    one, two = (hashlib.sha256(body).hexdigest()[-6:] for body in (first, second))
    target.push_manifest(first, oci, None)
    target.push_manifest(first, oci, "v7")
    target.push_manifest(first, oci, "latest")
    assert recorded() == [(one, "v7"), (one, "latest")]
    target.push_manifest(first, oci, None)
    assert recorded() == [(one, "v7"), (one, "latest"), (one, None)]
    target.push_manifest(second, oci, "latest")
    assert recorded() == [(one, "v7"), (one, None), (two, "latest")]


def test_two_builds_creating_a_new_layout_at_once_both_succeed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Build A made blobs/ before writing oci-layout; build B, starting in between, found a
    folder that was not empty and had no oci-layout, and refused it as foreign content."""
    root = tmp_path / "layout"
    a_made_blobs, release_a = threading.Event(), threading.Event()
    real_mkdir = Path.mkdir

    def mkdir_then_wait(self: Path, *args: Any, **kwargs: Any) -> None:
        real_mkdir(self, *args, **kwargs)
        if threading.current_thread().name == "build-a" and self.name == "sha256":
            a_made_blobs.set()
            release_a.wait(5)

    monkeypatch.setattr(Path, "mkdir", mkdir_then_wait)
    failures: list[BaseException] = []

    def create() -> None:
        try:
            LayoutTarget(root).push_manifest(
                _manifest(threading.current_thread().name),
                "application/vnd.oci.image.manifest.v1+json", threading.current_thread().name)
        except BaseException as exc:
            failures.append(exc)

    build_a = threading.Thread(name="build-a", target=create)
    build_a.start()
    assert a_made_blobs.wait(5)
    build_b = threading.Thread(name="build-b", target=create)
    build_b.start()
    build_b.join(5)
    release_a.set()
    build_a.join(5)
    assert failures == []
    assert (root / "oci-layout").read_text(encoding="utf-8") == '{"imageLayoutVersion":"1.0.0"}'
    index = json.loads((root / "index.json").read_text(encoding="utf-8"))
    assert sorted(m["annotations"][REF_NAME] for m in index["manifests"]) == ["build-a",
                                                                             "build-b"]
    assert not list((root / "blobs" / "sha256").glob("*.partial"))


def test_a_folder_holding_other_files_is_not_taken_for_a_layout(tmp_path: Path) -> None:
    from promoter.errors import UserError

    (tmp_path / "blobs").mkdir()
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="is not an OCI layout"):
        LayoutTarget(tmp_path)
    assert not (tmp_path / "oci-layout").exists()


@pytest.mark.parametrize("failing", ["manifest", "index"])
def test_a_failed_manifest_or_index_write_leaves_no_temporary_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str) -> None:
    """A full disk while writing a manifest or index.json left its temporary file in
    blobs/sha256, unlike a failed blob write."""
    import errno

    target = LayoutTarget(tmp_path / "layout")
    real_write_bytes = Path.write_bytes
    writes = {"manifest": 0, "index": 1}[failing]   # the manifest is written first

    def disk_full(self: Path, data: bytes) -> int:
        nonlocal writes
        writes -= 1
        if writes >= 0:
            return real_write_bytes(self, data)
        real_write_bytes(self, data[:3])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", disk_full)
    with pytest.raises(OSError, match="No space left"):
        target.push_manifest(_manifest("a"), "application/vnd.oci.image.manifest.v1+json", "a")
    assert not list((tmp_path / "layout" / "blobs" / "sha256").glob("*.partial"))


def test_a_layout_is_created_where_the_filesystem_has_no_hard_links(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """vfat, FUSE and SMB mounts refuse os.link (EPERM, ENOTSUP): oci-layout is then
    created exclusively, whole, and the layout works."""
    import errno
    import os

    layout = layout_module

    def no_links(source: object, target: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(layout.os, "link", no_links)
    root = tmp_path / "layout"
    layout.LayoutTarget(root)
    assert (root / "oci-layout").read_text() == layout.OCI_LAYOUT
    assert json.loads((root / "index.json").read_text())["manifests"] == []
    assert sorted(path.name for path in (root / "blobs" / "sha256").iterdir()) == []
    layout.LayoutTarget(root)                                    # opened again: unchanged
    assert (root / "oci-layout").read_text() == layout.OCI_LAYOUT
    assert not [path for path in root.rglob("*") if "partial" in path.name]
    assert os.stat(root / "oci-layout").st_nlink == 1
