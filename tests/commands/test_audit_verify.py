"""`promoter audit verify` says exactly what it checked: a chain cut short with its head
deleted is a finding (exit 1), and so is a trail with no chained entry and no head (nothing
there can be verified)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from promoter.service.audit import AuditTrail
from tests.conftest import cli_runner
from tests.test_audit_trail import append_elsewhere_once_the_head_is_read


def _config(tmp_path: Path) -> str:
    config = tmp_path / "promoter.yaml"
    config.write_text(f'state_dir: "{tmp_path / "state"}"\n')
    return str(config)


def test_a_trail_cut_short_with_its_head_deleted_fails(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path)
    trail = AuditTrail(tmp_path / "state")
    for version in ("1", "2", "3"):
        trail.record("job.created", actor="webhook:mlflow", model="m", version=version)
    run = cli_runner(capsys)
    code, out, err = run("--config", config, "audit", "verify")
    assert code == 0, err
    assert "ok: 3 chained entries in" in out and "link up to the recorded head" in out

    lines = trail.path.read_text().splitlines()
    trail.path.write_text(lines[0] + "\n")
    trail.head_path.unlink()
    code, out, err = run("--config", config, "audit", "verify")
    assert code == 1 and "chain" not in out
    assert f"{trail.path}:2: no chain head is recorded" in err


def test_a_trail_without_any_chain_or_head_does_not_pass(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Entries from before chaining look exactly like a chained trail stripped of its hashes
    with audit.head deleted (an edit that needs no hashing): neither can be vouched for."""
    config = _config(tmp_path)
    (tmp_path / "state").mkdir(mode=0o700)
    (tmp_path / "state" / "audit.jsonl").write_text(
        json.dumps({"time": 1.0, "event": "job.created", "model": "m"}) + "\n")
    code, out, err = cli_runner(capsys)("--config", config, "audit", "verify")
    assert code == 1 and out == ""
    assert ":1: none of the 1 entries is chained and no chain head is recorded" in err
    assert "--against-git" in err


def test_an_entry_appended_while_verify_reads_is_neither_a_finding_nor_counted(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The check, the entry count and the anchors are read from one snapshot of the trail:
    an entry `promoter serve` appends meanwhile is in none of them."""
    config = _config(tmp_path)
    trail = AuditTrail(tmp_path / "state")
    for version in ("1", "2", "3"):
        trail.record("job.created", actor="webhook:mlflow", model="m", version=version)
    appender = append_elsewhere_once_the_head_is_read(monkeypatch, tmp_path / "state")
    code, out, err = cli_runner(capsys)("--config", config, "audit", "verify", "--output",
                                        "json")
    appender.join(10)
    assert code == 0, err
    report = json.loads(out)
    assert report["ok"] is True and report["entries"] == 3
    assert len(list(trail.entries())) == 4


@pytest.mark.parametrize(("value", "problem"), [
    ('"\\ud800"', "its hash does not match its content (the entry was edited)"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply (the entry was edited)"),
], ids=["lone-surrogate", "deep-nesting"])
def test_an_entry_edited_beyond_hashing_or_parsing_is_named(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str, problem: str) -> None:
    """README: verify names the first bad line (exit 1). These edits made it crash (exit 3,
    "unexpected error"): hashing a lone surrogate, parsing nesting deeper than the stack."""
    config = _config(tmp_path)
    trail = AuditTrail(tmp_path / "state")
    for version in ("1", "2", "3"):
        trail.record("job.created", actor="webhook:mlflow", model="m", version=version)
    lines = trail.path.read_text().splitlines()
    lines[1] = lines[1].replace('"model": "m"', f'"model": {value}')
    trail.path.write_text("\n".join(lines) + "\n")
    code, out, err = cli_runner(capsys)("--config", config, "audit", "verify")
    assert code == 1 and out == ""
    assert err.startswith(f"{trail.path}:2: ") and problem in err
    assert [entry["version"] for entry in trail.entries()][-1] == "3"  # readers go on past it


@pytest.mark.parametrize("command", ["show", "live"])
def test_an_environment_neither_configured_nor_in_the_trail_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str) -> None:
    """`audit show|live --env` refuse a typo as render and status do (exit 1), and still
    answer for an environment the configuration dropped but the trail remembers."""
    config = _config(tmp_path)
    trail = AuditTrail(tmp_path / "state")
    trail.record("mr.merged", actor="gitlab", model="m", version="3", env="retired",
                 mr_url="local:!1")
    run = cli_runner(capsys)
    code, out, err = run("--config", config, "audit", command, "--env", "nope")
    assert code == 1 and "unknown environment" in err and not out, (out, err)
    code, _, err = run("--config", config, "audit", command, "--env", "retired")
    assert code == 0, err
    code, _, err = run("--config", config, "audit", command, "--env", "production")
    assert code == 0, err
