"""`promoter audit show` prints one line per entry, whatever an entry quotes from outside."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from promoter.service.audit import AuditTrail
from tests.conftest import cli_runner

HOSTILE = ("registry said: boom\n2026-01-01T00:00:00Z  mr.merge  model=m version=666 "
           "env=prod actor=gitlab:admin\x1b[2K\r\u2028\x85end")


def test_a_reason_quoting_line_breaks_and_escapes_shows_as_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A failure reason quoted from an error body, with a newline, showed as a made-up entry
    line of its own (and an ESC drove the terminal). The text output escapes such characters;
    --output json keeps the value as it was recorded."""
    config = tmp_path / "promoter.yaml"
    config.write_text(f'state_dir: "{tmp_path / "state"}"\n')
    trail = AuditTrail(tmp_path / "state")
    trail.record("mr.merge", actor="gitlab:alice", model="m", env="prod", version="1")
    trail.record("job.failed", model="m", env="prod", version="2", reason=HOSTILE)
    run = cli_runner(capsys)
    code, out, err = run("--config", str(config), "audit", "show")
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 2 and "version=666" in lines[1]
    assert not any(c in out for c in "\x1b\r\u2028\x85")
    assert ("reason=registry said: boom\\n2026-01-01T00:00:00Z" in lines[1]
            and "\\x1b[2K\\r\\u2028\\x85end" in lines[1])
    code, out, err = run("--config", str(config), "audit", "show", "--output", "json")
    assert code == 0, err
    assert json.loads(out)[1]["reason"] == HOSTILE
