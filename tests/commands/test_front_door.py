"""The CLI as a new user meets it: help without stray metavars, shell completion that
completes, `--version` naming the tools promoter found, progress only on a terminal."""

from __future__ import annotations

import io
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from promoter import cli
from promoter.progress import Progress
from tests.conftest import ROOT


def promoter(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "100", **(env or {})}
    return subprocess.run([sys.executable, "-m", "promoter", *args], capture_output=True,
                          text=True, env=environ, cwd=ROOT, check=False,
                          stdin=subprocess.DEVNULL, timeout=60)


def command_paths() -> list[tuple[str, ...]]:
    """Every command and group of the real command tree, as typed after `promoter`."""
    paths: list[tuple[str, ...]] = []
    pending: list[tuple[tuple[str, ...], object]] = [((), cli.command())]
    while pending:
        path, node = pending.pop()
        paths.append(path)
        for name, child in getattr(node, "commands", {}).items():
            pending.append(((*path, name), child))
    return sorted(paths)


@pytest.mark.parametrize("args", [("--help",), ("render", "--help")])
def test_help_shows_no_metavar_after_flags(args: tuple[str, ...]) -> None:
    shown = promoter(*args)
    assert shown.returncode == 0, shown.stderr
    assert "<bool>" not in shown.stdout, shown.stdout
    assert re.search(r"--debug +show tracebacks|--dry-run +print, write nothing", shown.stdout)
    assert re.search(r"--help +Show this message", shown.stdout), shown.stdout


def test_no_command_shows_a_metavar_after_a_flag(capsys: pytest.CaptureFixture[str]) -> None:
    paths = command_paths()
    assert ("mr", "approve") in paths and ("demo",) in paths
    for path in paths:
        with pytest.raises(SystemExit) as exited:
            cli.main([*path, "--help"])
        assert exited.value.code == 0, path
        shown = capsys.readouterr().out
        assert "Usage: promoter" in shown, path
        assert "<bool>" not in shown, (path, shown)
    # options that take a value keep their type
    with pytest.raises(SystemExit):
        cli.main(["render", "--help"])
    assert re.search(r"--env +-e +<str>", capsys.readouterr().out)


@pytest.mark.parametrize(("shell", "marker"), [
    ("bash", "complete -o default -F _promoter_completion promoter"),
    ("zsh", "compdef _promoter_completion promoter"),
    ("fish", "complete --command promoter"),
])
def test_completion_script_for_each_shell(shell: str, marker: str) -> None:
    # typer detects the running shell; this switch (typer's own) makes it take the name.
    shown = promoter("--show-completion", shell,
                     env={"_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"})
    assert shown.returncode == 0, shown.stderr
    assert marker in shown.stdout
    assert "_PROMOTER_COMPLETE" in shown.stdout


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_bash_completes_commands_and_subcommands(tmp_path: Path) -> None:
    """The generated script, sourced into a real bash, completes what a user half-typed."""
    wrapper = tmp_path / "promoter"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m promoter "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    script = ('source <(promoter --show-completion bash)\n'
              'COMP_WORDS=(promoter jo); COMP_CWORD=1; _promoter_completion promoter\n'
              'echo "[${COMPREPLY[*]}]"\n'
              'COMP_WORDS=(promoter mr ap); COMP_CWORD=2; _promoter_completion promoter\n'
              'echo "[${COMPREPLY[*]}]"\n')
    done = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "PYTHONPATH": str(ROOT),
             "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["[jobs]", "[approve]"], done.stdout + done.stderr


def test_version_names_the_tools_promoter_found() -> None:
    shown = promoter("--version")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert re.fullmatch(r"promoter \d+\.\d+\.\d+\S*", lines[0])
    tools = dict(line.split(": ", 1) for line in lines[1:])
    assert set(tools) >= {"python", "kubectl", "kustomize", "docker-registry", "skopeo"}
    if shutil.which("skopeo"):
        assert re.fullmatch(r"\d+\.\d+\.\d+\S*", tools["skopeo"]), tools
    if shutil.which("kubectl"):
        assert tools["kubectl"].startswith("v") and tools["kustomize"].startswith("v"), tools


def test_version_says_not_found_for_missing_tools(tmp_path: Path) -> None:
    python_only = tmp_path / "bin"
    python_only.mkdir()
    (python_only / "python").symlink_to(sys.executable)
    shown = promoter("--version", env={"PATH": str(python_only)})
    assert shown.returncode == 0, shown.stderr
    assert "skopeo: not found" in shown.stdout
    assert "kubectl: not found" in shown.stdout and "kustomize: not found" in shown.stdout


def test_progress_off_a_terminal_prints_nothing(capfd: pytest.CaptureFixture[str]) -> None:
    progress = Progress.for_output("text")  # pytest's stdout is not a terminal
    assert not progress.enabled
    with progress.task("uploading") as task:
        task.status("still waiting …")
        task.transfer("layer", 10, 100)
    assert Progress.for_output("json").enabled is False
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_progress_on_a_terminal_shows_bytes_and_rate() -> None:
    from rich.console import Console

    progress = Progress(True)
    sink = io.StringIO()
    progress._console = Console(file=sink, force_terminal=True, width=100)
    with progress.task("uploading") as task:
        task.transfer("layer sha256:abc", 0, 10 * 1024 * 1024)
        time.sleep(0.2)
        task.transfer("layer sha256:abc", 5 * 1024 * 1024, 10 * 1024 * 1024)
        progress.line("a line above the live display")
    shown = sink.getvalue()
    assert "a line above the live display" in shown
    assert re.search(r"uploading: \d+\.\d s", shown)
    assert re.search(r"5\.2/10\.5 MB at [\d.]+ MB/s", shown)  # bytes done/total, rate


def test_install_completion_writes_into_the_users_home(tmp_path: Path) -> None:
    done = promoter("--install-completion", "bash", env={
        "HOME": str(tmp_path), "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"})
    assert done.returncode == 0, done.stderr
    script = tmp_path / ".bash_completions" / "promoter.sh"
    assert "_PROMOTER_COMPLETE=complete_bash" in script.read_text()
    assert f"source '{script}'" in (tmp_path / ".bashrc").read_text()


def test_help_paragraphs_are_reflowed_for_the_terminal_and_lists_kept() -> None:
    """The sources wrap help at 100 columns; kept as is, every line broke in two on an
    80-column terminal. A paragraph's lines are joined; list items and indented lines stay."""
    from promoter.cli import command, reflow

    assert reflow("One line\nof a first paragraph.\n\nA second\nparagraph:\n- one\n- two"
                  "\n  indented\n1. first") == \
        "One line of a first paragraph.\n\nA second paragraph:\n- one\n- two\n  indented\n1. first"
    status = command().commands["status"].help
    assert "a\nchange" not in status and "a change is also written back" in status


def test_every_bracketed_word_in_a_help_text_is_shown(capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    """Rich reads `[word]` in a help text as a markup tag and drops it: `audit show --help`
    lost the `[unverified]` mark it names. Every bracketed word written (escaped `\\[`) in a
    command's or option's help must appear in what `--help` shows."""
    import click

    checked = 0
    for path in command_paths():
        node = cli.command()
        for name in path:
            node = node.commands[name]  # type: ignore[attr-defined]
        texts = [node.help or ""] + [p.help or "" for p in node.params
                                     if isinstance(p, click.Option)]
        wanted = {m for text in texts for m in re.findall(r"\[[a-z][a-z_ -]*\]", text)}
        if not wanted:
            continue
        with pytest.raises(SystemExit):
            cli.main([*path, "--help"])
        shown = " ".join(capsys.readouterr().out.split())
        for word in wanted:
            checked += 1
            assert word in shown, (path, word)
    assert checked   # the audit show mark, at least, is checked
