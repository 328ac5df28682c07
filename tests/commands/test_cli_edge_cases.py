"""CLI edge cases end as one-line user errors (exit 1) or usage errors (exit 2), never as
"unexpected error … report it" (exit 3). Real `python -m promoter` processes.

We run as root, so permissions cannot forbid a path; a path *under a regular file*
(/etc/passwd/x) or under /proc cannot be created by anyone and provokes the OSError a
read-only or forbidden directory would.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from tests.fixtures.stack import promoter_environ, run_promoter, write_config

ROOT = Path(__file__).resolve().parent.parent.parent
INTENT = str(ROOT / "examples" / "llm-chat.yaml")
UNWRITABLE = ["/etc/passwd/x", "/proc/promoter-test"]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return promoter_environ(PROMOTER_STATE_DIR=str(tmp_path / "state"), COSIGN_PASSWORD="pw")


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """The smallest directory the builder accepts as an MLflow model (an MLmodel file)."""
    path = tmp_path / "model"
    path.mkdir()
    (path / "MLmodel").write_text("flavors:\n  python_function:\n    loader_module: x\n")
    return path


def assert_user_error(result: object, code: int = 1) -> None:
    out, err = result.stdout, result.stderr  # type: ignore[attr-defined]
    assert result.returncode == code, out + err  # type: ignore[attr-defined]
    assert "unexpected error" not in err and "Traceback" not in err, err
    assert "report it" not in err


@pytest.mark.parametrize("target", UNWRITABLE)
def test_render_out_unwritable_is_a_user_error(target: str, env: dict[str, str]) -> None:
    result = run_promoter("render", "--intent", INTENT, "--env", "production", "--out", target,
                          env=env)
    assert_user_error(result)
    assert result.stderr.startswith(f"error: {target}") and result.stderr.count("\n") == 1


@pytest.mark.parametrize("target", UNWRITABLE)
def test_keys_generate_out_unwritable_is_a_user_error(target: str, env: dict[str, str]) -> None:
    result = run_promoter("keys", "generate", "--out", target, env=env)
    assert_user_error(result)
    assert result.stderr.startswith(f"error: {target}.key") and result.stderr.count("\n") == 1


@pytest.mark.parametrize("target", UNWRITABLE)
def test_image_build_oci_layout_unwritable_is_a_user_error(target: str, env: dict[str, str],
                                                           model_dir: Path) -> None:
    result = run_promoter("image", "build", str(model_dir), "--oci-layout", target, env=env)
    assert_user_error(result)
    assert result.stderr.startswith(f"error: {target}") and result.stderr.count("\n") == 1


def test_mr_list_unknown_state_is_a_usage_error(env: dict[str, str]) -> None:
    result = run_promoter("mr", "list", "--state", "bogus", env=env)
    assert_user_error(result, code=2)
    assert "opened, closed, merged, all" in result.stderr


def test_unknown_output_format_is_a_usage_error(env: dict[str, str]) -> None:
    result = run_promoter("jobs", "list", "--output", "yaml", env=env)
    assert_user_error(result, code=2)
    assert "text, json" in result.stderr


@pytest.mark.parametrize("version", ["abc", "0", "01", "-1", "1.5", "12345678901"])
def test_promote_bad_version_is_a_usage_error_and_makes_no_job(
        version: str, env: dict[str, str], tmp_path: Path) -> None:
    with socket.socket() as unused:  # MLflow is never reached: the version is refused first
        unused.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{unused.getsockname()[1]}"
    config = write_config(tmp_path / "promoter.yaml", state_dir=tmp_path / "state",
                          mlflow_url=url)
    result = run_promoter("promote", "fraud", "--version", version, "--env", "staging",
                          env=env, config=config)
    assert_user_error(result, code=2)
    assert "is not a model version" in result.stderr
    jobs = run_promoter("jobs", "list", "--output", "json", env=env, config=config)
    assert jobs.returncode == 0 and json.loads(jobs.stdout) == []


@pytest.mark.parametrize("args", [
    ("mr", "show", "99999999999999999999"),      # was: OverflowError from SQLite, exit 3
    ("mr", "approve", "2147483648"),
    ("mr", "merge", "0"),
    ("image", "modelcar", "m", "--max-batch-size", "99999999999999999999"),
    ("status", "--watch", "--for", "99999999999999999999"),
])
def test_a_number_out_of_range_is_a_usage_error(args: tuple[str, ...],
                                                env: dict[str, str]) -> None:
    result = run_promoter(*args, env=env)
    assert_user_error(result, code=2)
    assert "Invalid value for" in result.stderr


def test_the_largest_mr_number_is_still_asked_for(env: dict[str, str]) -> None:
    result = run_promoter("mr", "show", "2147483647", env=env)
    assert_user_error(result)
    assert "2147483647" in result.stderr
