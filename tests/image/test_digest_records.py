"""The build caches' digest records: a cache, so writers never fail a build."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from promoter.image.digest_records import DigestRecords

KEY = "sha256:" + "ab" * 32


def test_threads_writing_one_record_at_once_all_succeed(tmp_path: Path) -> None:
    """Two environments promoting one version build the same inputs in one process: a
    temporary file named by the process alone made their writes collide."""
    records = DigestRecords(tmp_path / "pushed")
    failures: list[BaseException] = []

    def write(index: int) -> None:
        try:
            for round_ in range(200):
                records.put(KEY, f"sha256:{index:02x}{round_:062x}")
        except BaseException as exc:  # the test reports it below
            failures.append(exc)

    threads = [threading.Thread(target=write, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failures == []
    assert (records.get(KEY) or "").startswith("sha256:")
    assert [path.name for path in (tmp_path / "pushed").iterdir()] == [f"{'ab' * 32}.json"]


def test_a_record_that_cannot_be_written_is_logged_not_raised(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "file").write_text("not a directory")
    records = DigestRecords(tmp_path / "file" / "pushed")
    records.put(KEY, "sha256:" + "0" * 64)
    assert records.get(KEY) is None
    assert "could not record" in caplog.text


def test_keys_are_digests_never_paths(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a sha256 digest"):
        DigestRecords(tmp_path).put("sha256:../../etc/passwd", "sha256:" + "0" * 64)
