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


def test_entries_past_the_first_bad_line_are_marked_and_not_replayed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A merge appended by hand (no valid hash) showed in `audit show` and answered `audit
    live` as if promoter had sealed it; only `audit verify` said otherwise."""
    config = tmp_path / "promoter.yaml"
    config.write_text(f'state_dir: "{tmp_path / "state"}"\n')
    trail = AuditTrail(tmp_path / "state")
    trail.record("mr.merge", actor="gitlab:alice", model="m", env="prod", version="1",
                 status="merged")
    with (tmp_path / "state" / "audit.jsonl").open("a") as handle:
        handle.write(json.dumps({"time": 2e9, "event": "mr.merge", "actor": "gitlab:mallory",
                                 "model": "m", "env": "prod", "version": "666",
                                 "status": "merged", "prev": "0" * 64, "hash": "1" * 64})
                     + "\n")
    run = cli_runner(capsys)
    code, out, err = run("--config", str(config), "audit", "show")
    assert code == 0, err
    first, forged = out.splitlines()
    assert "[unverified]" not in first and forged.endswith("[unverified]")
    assert "audit.jsonl:2:" in err and "1 entry from there on not verified" in err
    code, out, err = run("--config", str(config), "audit", "show", "--output", "json")
    assert [entry.get("verified", True) for entry in json.loads(out)] == [True, False]
    code, out, err = run("--config", str(config), "audit", "live", "--env", "prod",
                         "--at", "2100-01-01T00:00:00Z", "--output", "json")
    assert code == 0, err
    assert [row["version"] for row in json.loads(out)["live"]] == ["1"]
    assert "not verified" in err


@pytest.mark.parametrize(("command", "moment", "says"), [
    (("show", "--since"), "nan", "out of range"),
    (("show", "--since"), "inf", "out of range"),
    (("live", "--env", "prod", "--at"), "1e20", "out of range"),
    (("live", "--env", "prod", "--at"), "-1e20", "out of range"),
    (("live", "--env", "prod", "--at"), "0001-01-01T00:00:00+01:00", "out of range"),
    (("live", "--env", "prod", "--at"), "2026-13-01", "cannot read the time"),
])
def test_a_time_no_calendar_holds_is_a_usage_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], command: tuple[str, ...],
        moment: str, says: str) -> None:
    """--since nan or inf matched no entry and showed nothing (exit 0); --at 1e20 or year 0
    ended in an unexpected OverflowError/ValueError (exit 3). Each is a typo: exit 2."""
    config = tmp_path / "promoter.yaml"
    config.write_text(f'state_dir: "{tmp_path / "state"}"\n')
    AuditTrail(tmp_path / "state").record("mr.merge", actor="gitlab:alice", model="m",
                                          env="prod", version="1")
    code, _, err = cli_runner(capsys)("--config", str(config), "audit", *command, moment)
    assert code == 2 and says in err and "unexpected" not in err, err


def _reject_constant(name: str) -> float:
    raise AssertionError(f"{name} is not JSON")


def test_entries_without_a_usable_time_are_listed_unverified_and_the_json_stays_json(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Legacy entries (written before the trail was chained, bound by the first chained one:
    they verify) with a time promoter never wrote: `audit show` crashed on a missing or
    textual time, printed NaN, and `--output json` wrote the bare word NaN, which no JSON
    parser reads."""
    config = tmp_path / "promoter.yaml"
    config.write_text(f'state_dir: "{tmp_path / "state"}"\n')
    (tmp_path / "state").mkdir()
    legacy = [{"time": float("nan"), "event": "mr.merge", "model": "m", "env": "prod",
               "version": "1", "replicas": float("inf")},
              {"event": "mr.merge", "model": "m", "env": "prod", "version": "2"},
              {"time": "yesterday", "event": "mr.merge", "model": "m", "env": "prod",
               "version": "3"},
              {"time": True, "event": "mr.close", "model": "m", "env": "prod", "version": "4"}]
    (tmp_path / "state" / "audit.jsonl").write_text(
        "".join(json.dumps(entry) + "\n" for entry in legacy))
    AuditTrail(tmp_path / "state").record("mr.merge", actor="gitlab:alice", model="m",
                                          env="prod", version="5", status="merged")
    run = cli_runner(capsys)
    code, out, err = run("--config", str(config), "audit", "verify")
    assert code == 0, err

    code, out, err = run("--config", str(config), "audit", "show")
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 5 and "nan" not in out.lower()
    assert all(line.startswith("(no valid time)") and line.endswith("[unverified]")
               for line in lines[:4])
    assert "[unverified]" not in lines[4] and "version=5" in lines[4]

    code, out, err = run("--config", str(config), "audit", "show", "--output", "json")
    assert code == 0, err
    shown = json.loads(out, parse_constant=_reject_constant)
    assert [(e["version"], e["time"], e.get("verified", True)) for e in shown[:4]] == [
        ("1", None, False), ("2", None, False), ("3", None, False), ("4", None, False)]
    assert shown[0]["replicas"] is None
    assert isinstance(shown[4]["time"], float) and "verified" not in shown[4]

    # Not placeable before or after --since: listed all the same, never hidden.
    code, out, err = run("--config", str(config), "audit", "show", "--since",
                         "2000-01-01T00:00:00Z")
    assert code == 0, err
    assert len(out.splitlines()) == 5
