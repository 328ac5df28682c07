"""Reproducible layers: the digest depends on content and names only."""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import socket
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from promoter.image.layers import Layer, measure_tar, write_gzip_layer
from promoter.image.tarstream import entries_for_tree, tar_chunks


def _tree(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "MLmodel").write_text("flavors: {}\n")
    (root / "sub" / "weights.bin").write_bytes(os.urandom(3000))
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o750)
    (root / "link").symlink_to("MLmodel")
    return root


def test_same_content_gives_same_digest_whatever_times_and_modes(tmp_path: Path) -> None:
    first = _tree(tmp_path / "a")
    second = tmp_path / "b"
    second.mkdir()
    os.system(f"cp -a {first}/. {second}/")
    os.utime(second / "MLmodel", (1, 1))
    (second / "MLmodel").chmod(0o600)
    one = measure_tar(entries_for_tree(first, "opt/ml/model"), "model")
    two = measure_tar(entries_for_tree(second, "opt/ml/model"), "model")
    assert one.diff_id == two.diff_id == one.blob.digest
    (second / "MLmodel").write_text("flavors: {x: 1}\n")
    three = measure_tar(entries_for_tree(second, "opt/ml/model"), "model")
    assert three.diff_id != one.diff_id


def test_tar_is_normalised_and_readable(tmp_path: Path) -> None:
    root = _tree(tmp_path / "m")
    data = b"".join(tar_chunks(entries_for_tree(root, "opt/ml/model")))
    assert len(data) % tarfile.RECORDSIZE == 0
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        members = archive.getmembers()
        names = [m.name for m in members]
        assert names == sorted(names)
        assert names[:3] == ["opt", "opt/ml", "opt/ml/model"]
        by_name = {m.name: m for m in members}
        assert by_name["opt/ml/model/run.sh"].mode == 0o755
        assert by_name["opt/ml/model/MLmodel"].mode == 0o644
        assert by_name["opt/ml/model/link"].issym()
        assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.uname == ""
                   for m in members)
        weights = archive.extractfile("opt/ml/model/sub/weights.bin")
        assert weights is not None
        assert weights.read() == (root / "sub" / "weights.bin").read_bytes()


def test_long_paths_survive(tmp_path: Path) -> None:
    deep = tmp_path / "m" / ("d" * 90) / ("e" * 90)
    deep.mkdir(parents=True)
    (deep / ("f" * 120)).write_text("x")
    data = b"".join(tar_chunks(entries_for_tree(tmp_path / "m", "opt/ml/deps")))
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        assert f"opt/ml/deps/{'d' * 90}/{'e' * 90}/{'f' * 120}" in archive.getnames()


def test_gzip_layer_hashes_both_streams_in_one_pass(tmp_path: Path) -> None:
    import gzip
    import hashlib

    root = _tree(tmp_path / "m")
    entries = entries_for_tree(root, "opt/ml/deps")
    diff_id, digest, size = write_gzip_layer(entries, tmp_path / "layer.tar.gz")
    packed = (tmp_path / "layer.tar.gz").read_bytes()
    assert size == len(packed)
    assert digest == "sha256:" + hashlib.sha256(packed).hexdigest()
    assert diff_id == "sha256:" + hashlib.sha256(gzip.decompress(packed)).hexdigest()
    again = write_gzip_layer(entries, tmp_path / "again.tar.gz")
    assert again == (diff_id, digest, size)


def test_a_symlink_out_of_the_model_is_refused(tmp_path: Path) -> None:
    """In the image, an absolute or escaping target names what the running container has
    there (its service-account token, another mount), not the model's file."""
    import pytest

    from promoter.errors import UserError

    root = _tree(tmp_path / "m")
    (root / "sub" / "back").symlink_to("../MLmodel")     # inside: kept
    assert any(e.link_target == "../MLmodel" for e in entries_for_tree(root, "models"))
    for name, target in (("token", "/var/run/secrets/kubernetes.io/serviceaccount/token"),
                         ("up", "../../etc"), ("sideways", "sub/../../x")):
        (root / name).symlink_to(target)
        with pytest.raises(UserError, match=f"'{name}' is a symlink to .*outside the model"):
            entries_for_tree(root, "models")
        (root / name).unlink()


def test_a_symlink_through_another_link_is_resolved_as_the_kernel_follows_it(
        tmp_path: Path) -> None:
    """``sub/..`` is the parent of wherever ``sub`` points: read as text, ``here -> .`` plus
    ``w -> here/../var/run/…`` looked inside the model, and in the container it reached the
    service-account token. Each link is followed through the tree's other links."""
    import pytest

    from promoter.errors import UserError

    cases = {
        "through a link to '.'": {"here": ".",
                                  "w": "here/../var/run/secrets/kubernetes.io/token"},
        "through a deep link": {"a/b/c/s": "../../..", "w": "a/b/c/s/../../../etc/shadow"},
        "a loop": {"x": "y", "y": "x"},
        "a chain out": {"one": "two", "two": "../outside"},
    }
    for case, links in cases.items():
        root = _tree(tmp_path / case.replace(" ", "-").replace("'", ""))
        for name, target in links.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).symlink_to(target)
        with pytest.raises(UserError, match=r"is a symlink to .*outside the model"):
            entries_for_tree(root, "models")

    kept = _tree(tmp_path / "kept")
    (kept / "sub" / "deeper").mkdir()
    (kept / "here").symlink_to("sub")
    (kept / "via").symlink_to("here/deeper/../../MLmodel")   # sub/deeper/../.. is the root
    (kept / "chain").symlink_to("via")
    assert {e.arcname for e in entries_for_tree(kept, "models") if e.kind == "symlink"} == \
        {"models/link", "models/here", "models/via", "models/chain"}


@pytest.mark.parametrize(("change", "says"), [("grow", "grew"), ("shrink", "shrank")])
def test_a_file_that_changes_size_while_the_layer_is_read_is_an_error(
        tmp_path: Path, change: str, says: str) -> None:
    """The tree is listed (sizes taken) before it is read: weights still being copied in
    must not be packaged cut at the size seen first, and signed as the model."""
    root = _tree(tmp_path / "m")
    entries = entries_for_tree(root, "models")
    weights = root / "sub" / "weights.bin"
    if change == "grow":
        with weights.open("ab") as handle:
            handle.write(b"more")
    else:
        weights.write_bytes(b"x")
    with pytest.raises(OSError, match=says):
        b"".join(tar_chunks(entries))


def _both_finish_writing_before_either_replaces(monkeypatch: pytest.MonkeyPatch,
                                                directory: Path) -> None:
    """Hold each rename into ``directory`` until the other writer reaches its own: the
    interleaving in which two builds of one cache key used to collide, made certain."""
    import threading

    barrier = threading.Barrier(2, timeout=60)  # a guard against a hang, not a timing
    real_replace = os.replace

    def replace_when_both_are_ready(source: str | os.PathLike[str],
                                    target: str | os.PathLike[str]) -> None:
        if Path(target).parent == directory:
            barrier.wait()
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace_when_both_are_ready)


def _in_two_threads(build: Callable[[], object]) -> list[object]:
    import threading

    results: list[object] = []

    def run() -> None:
        try:
            results.append(build())
        except Exception as exc:  # the test reports it, a thread would only print it
            results.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_two_writers_of_one_gzip_layer_at_once_both_succeed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``serve --workers`` or replicas sharing a state dir build the same cache key at once:
    they shared one ``.partial`` file and the second rename found it gone."""
    entries = entries_for_tree(_tree(tmp_path / "m"), "opt/ml/deps")
    cache = tmp_path / "cache"
    cache.mkdir()
    _both_finish_writing_before_either_replaces(monkeypatch, cache)
    first, second = _in_two_threads(lambda: write_gzip_layer(entries, cache / "key.tar.gz"))
    assert first == second == write_gzip_layer(entries, tmp_path / "alone.tar.gz")
    assert (cache / "key.tar.gz").read_bytes() == (tmp_path / "alone.tar.gz").read_bytes()
    assert [path.name for path in cache.iterdir()] == ["key.tar.gz"]


def test_two_builds_of_one_dependency_layer_at_once_both_get_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from promoter.image.dependencies import dependency_layer
    from promoter.image.platform import parse_platform

    class OneModuleInstaller:
        def install(self, requirements: Path, target: Path, **_: object) -> None:
            (target / "numpy").mkdir(parents=True)
            (target / "numpy" / "__init__.py").write_text("version = '1.26'\n")

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "requirements.txt").write_text("numpy==1.26\n")
    cache = tmp_path / "cache"
    cache.mkdir()
    _both_finish_writing_before_either_replaces(monkeypatch, cache)

    def build() -> object:
        layer = dependency_layer(model_dir, cache, OneModuleInstaller(),
                                 platform=parse_platform("linux/amd64"), python_version="3.11",
                                 pip_options=())
        assert layer is not None
        return layer.blob.digest, layer.diff_id, layer.blob.size

    first, second = _in_two_threads(build)
    assert first == second
    assert sorted(path.suffixes[-1] for path in cache.iterdir()) == [".gz", ".json"]


def test_a_failed_gzip_write_leaves_nothing_behind(tmp_path: Path) -> None:
    root = _tree(tmp_path / "m")
    entries = entries_for_tree(root, "opt/ml/deps")
    (root / "sub" / "weights.bin").write_bytes(b"shrunk")
    cache = tmp_path / "cache"
    cache.mkdir()
    with pytest.raises(OSError, match="shrank"):
        write_gzip_layer(entries, cache / "key.tar.gz")
    assert list(cache.iterdir()) == []


@pytest.mark.parametrize("arcname", ["/etc/cron.d/job", "models/../../etc/cron.d/job", "..",
                                     "models/.."])
def test_the_tar_writer_refuses_a_member_outside_the_root(tmp_path: Path, arcname: str) -> None:
    """A last line of defence: whatever builds the entries, no member unpacks outside the
    image's root."""
    from promoter.errors import UserError
    from promoter.image.tarstream import data_entry, tar_size

    entries = [data_entry("models/ok", b"x"), data_entry(arcname, b"* * * * * root id\n")]
    with pytest.raises(UserError, match=r"must be relative and must not contain '\.\.'"):
        b"".join(tar_chunks(entries))
    with pytest.raises(UserError, match="must be relative"):
        tar_size(entries)
    assert b"".join(tar_chunks([data_entry("models/a..b/..c", b"x")]))  # dots are not '..'


@pytest.mark.parametrize(("name", "reported"), [
    (".wh.tokenizer.json", ".wh.tokenizer.json"), (".wh..wh..opq", ".wh..wh..opq"),
    ("sub/.wh.weights.bin", "sub/.wh.weights.bin"), (".wh.dir/file", ".wh.dir")])
def test_a_model_file_named_like_a_whiteout_is_refused_naming_it(
        tmp_path: Path, name: str, reported: str) -> None:
    """OCI unpackers treat a member named .wh.<x> as "delete x" and never write it: the model
    file would be packed, signed and then missing in the container."""
    from promoter.errors import UserError

    root = _tree(tmp_path / "model")
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    (root / name).write_text("a real file someone named so")
    with pytest.raises(UserError, match=r"named like an OCI whiteout") as refused:
        entries_for_tree(root, "models")
    assert f"the model's {reported!r} is named" in refused.value.message


def test_the_tar_writer_refuses_a_whiteout_member(tmp_path: Path) -> None:
    """The last line of defence covers members not listed from a tree (Triton's files)."""
    from promoter.errors import UserError
    from promoter.image.tarstream import data_entry

    with pytest.raises(UserError, match="is an OCI whiteout"):
        b"".join(tar_chunks([data_entry("models/m/1/.wh.model.onnx_data", b"x")]))
    assert b"".join(tar_chunks([data_entry("models/a.wh.b", b"x")]))  # only as a prefix


def _bound_socket(path: Path) -> None:
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))  # the socket file stays after the socket is closed


@pytest.mark.parametrize(("make", "kind"), [
    (lambda path: os.mkfifo(path), "named pipe (FIFO)"),
    (lambda path: _bound_socket(path), "socket"),
], ids=["fifo", "socket"])
def test_a_special_file_in_the_model_is_refused_naming_it(
        tmp_path: Path, make: Callable[[Path], None], kind: str) -> None:
    """It was left out without a word: the image lacked a file the model had."""
    from promoter.errors import UserError

    root = _tree(tmp_path / "m")
    make(root / "sub" / "feed")
    with pytest.raises(UserError, match=rf"the model's 'sub/feed' is a {re.escape(kind)}"):
        entries_for_tree(root, "models")


_LIST_AS_NOBODY = """
import sys
from pathlib import Path
from promoter.errors import UserError
from promoter.image.tarstream import entries_for_tree
try:
    print([entry.arcname for entry in entries_for_tree(Path(sys.argv[1]), "models")])
except UserError as error:
    print("UserError:", error.message)
"""


def test_a_directory_of_the_model_that_cannot_be_listed_is_an_error() -> None:
    """os.walk skips a directory it cannot list: the image came out without that part of the
    model, signed as if whole. As root every directory is readable, so the listing then runs
    in a process of an unprivileged user."""
    import subprocess
    import sys
    import tempfile

    unprivileged = os.geteuid() == 0
    # Not under tmp_path: pytest keeps its parents owner-only, out of the other user's reach.
    work = Path(tempfile.mkdtemp(prefix="promoter-unlistable-"))
    root = _tree(work / "m")
    (root / "secret").mkdir()
    (root / "secret" / "weights.bin").write_bytes(b"w")
    for path in (work, root, root / "sub"):
        path.chmod(0o755)
    (root / "secret").chmod(0)
    try:
        command = [sys.executable, "-c", _LIST_AS_NOBODY, str(root)]
        if unprivileged:
            command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
        listed = subprocess.run(command, capture_output=True, text=True, check=True,
                                env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
                                cwd="/")
    finally:
        (root / "secret").chmod(0o755)
        shutil.rmtree(work)
    assert "UserError: cannot list the model's directory 'secret'" in listed.stdout, listed


@pytest.mark.parametrize("swap", ["file", "parent"])
def test_a_file_swapped_for_a_link_after_listing_is_not_read(tmp_path: Path, swap: str) -> None:
    """The tree is listed, then read: a file (or a directory above it) replaced by a symlink
    in between must not put what the link names (a mounted secret) into a signed layer."""
    root = _tree(tmp_path / "m")
    secret = tmp_path / "secret"
    (secret / "sub").mkdir(parents=True)
    weights = root / "sub" / "weights.bin"
    (secret / "sub" / "weights.bin").write_bytes(weights.read_bytes())   # same size
    entries = entries_for_tree(root, "models")
    if swap == "file":
        weights.unlink()
        weights.symlink_to(secret / "sub" / "weights.bin")
    else:
        (root / "sub").rename(tmp_path / "moved")
        (root / "sub").symlink_to(secret / "sub")
    with pytest.raises(OSError, match="was replaced by another file after it was listed"):
        b"".join(tar_chunks(entries))


class OneModuleInstaller:
    """Installs one small module and counts the installs."""

    def __init__(self) -> None:
        self.installs = 0

    def install(self, requirements: Path, target: Path, **_: object) -> None:
        self.installs += 1
        (target / "numpy").mkdir(parents=True)
        (target / "numpy" / "__init__.py").write_text("version = '1.26'\n" * 50)


def _dependency_layer(tmp_path: Path, installer: OneModuleInstaller) -> Layer:
    from promoter.image.dependencies import dependency_layer
    from promoter.image.platform import parse_platform

    model_dir = tmp_path / "model"
    model_dir.mkdir(exist_ok=True)
    (model_dir / "requirements.txt").write_text("numpy==1.26\n")
    built = dependency_layer(model_dir, tmp_path / "cache", installer,
                             platform=parse_platform("linux/amd64"), python_version="3.11",
                             pip_options=())
    assert built is not None
    return built


def _damage(cached: Path, how: str) -> None:
    data = bytearray(cached.read_bytes())
    if how == "flipped":
        data[len(data) // 2] ^= 0xFF          # same size: only the bytes tell
    elif how == "grown":
        data += b"garbage"
    else:
        del data[-7:]
    cached.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["flipped", "grown", "shortened"])
def test_a_damaged_cached_dependency_layer_is_named_and_dropped(tmp_path: Path,
                                                                how: str) -> None:
    """A cached layer changed on disk after its layer was handed out used to be sent under
    the recorded digest; the registry refused it (DIGEST_INVALID), or the reader found it
    longer than recorded, on every later build, the hint saying "build again". Reading it now
    names the damage and drops it, and the next build installs the requirements anew."""
    from promoter.errors import PermanentError

    installer = OneModuleInstaller()
    first = _dependency_layer(tmp_path, installer)
    (cached,) = (tmp_path / "cache").glob("*.tar.gz")
    _damage(cached, how)
    with pytest.raises(PermanentError, match="does not have the digest recorded") as caught:
        for _ in first.blob.chunks():     # as a reader does: no byte past the recorded size
            pass
    assert "dropped from the cache" in (caught.value.hint or "")
    again = _dependency_layer(tmp_path, installer)
    assert installer.installs == 2
    data = b"".join(again.blob.chunks())
    assert (again.blob.digest, again.blob.size) == (first.blob.digest, first.blob.size)
    assert "sha256:" + hashlib.sha256(data).hexdigest() == first.blob.digest


@pytest.mark.parametrize("how", ["grown", "shortened"])
def test_a_cached_dependency_layer_of_another_size_is_rebuilt_before_use(tmp_path: Path,
                                                                         how: str) -> None:
    installer = OneModuleInstaller()
    first = _dependency_layer(tmp_path, installer)
    (cached,) = (tmp_path / "cache").glob("*.tar.gz")
    _damage(cached, how)
    again = _dependency_layer(tmp_path, installer)
    assert installer.installs == 2
    assert b"".join(again.blob.chunks()) == b"".join(first.blob.chunks()) == \
        cached.read_bytes()


def test_a_grown_cache_file_is_caught_before_its_extra_bytes_are_handed_out(
        tmp_path: Path) -> None:
    """Readers stop at the recorded size and fail on their own ("longer than expected"),
    keeping the record: the check must fire first."""
    from promoter.errors import PermanentError

    layer = _dependency_layer(tmp_path, OneModuleInstaller())
    (cached,) = (tmp_path / "cache").glob("*.tar.gz")
    _damage(cached, "grown")
    handed_out = 0
    with pytest.raises(PermanentError, match="does not have the digest recorded"):
        for chunk in layer.blob.chunks():
            handed_out += len(chunk)
    assert handed_out <= layer.blob.size
    assert list((tmp_path / "cache").glob("*.json")) == []
