"""Structured logs: one JSON object per line, secrets masked wherever they appear."""

from __future__ import annotations

import json
import logging

import pytest

from promoter.service.logs import JsonFormatter, OncePer


def record(msg: str, fields: dict[str, object] | None = None,
           exc: BaseException | None = None) -> logging.LogRecord:
    made = logging.LogRecord("promoter.test", logging.WARNING, __file__, 1, msg, (),
                             (type(exc), exc, None) if exc else None)
    if fields is not None:
        made.fields = fields
    return made


def test_lines_are_json_with_the_fields() -> None:
    line = JsonFormatter().format(record("delivery accepted", {"source": "mlflow", "jobs": [1]}))
    entry = json.loads(line)
    assert entry["msg"] == "delivery accepted" and entry["source"] == "mlflow"
    assert entry["level"] == "warning" and entry["ts"].endswith("Z")


def test_secret_values_and_secret_named_fields_are_masked() -> None:
    secret = 'hunter2-"quoted"-secret'
    formatter = JsonFormatter([secret])
    line = formatter.format(record(f"token was {secret}", {
        "detail": f"compare {secret}", "x_mlflow_signature": "v1,abc", "nested": {"password": 1}},
        exc=ValueError(f"bad {secret}")))
    assert "hunter2" not in line and "v1,abc" not in line
    entry = json.loads(line)
    assert entry["x_mlflow_signature"] == "***" and entry["nested"]["password"] == "***"
    assert "***" in entry["msg"] and "***" in entry["error"]


@pytest.mark.parametrize("secret", ['pässwörd"123', "abc\\def1", "tök\\en'x\"y"])
def test_a_secret_is_masked_as_a_log_line_and_a_repr_write_it(secret: str) -> None:
    """Log lines keep non-ASCII as it is, and a message quoting a value with !r doubles its
    backslashes: each form of the secret is masked, not only the plain and ASCII-JSON ones."""
    formatter = JsonFormatter([secret])
    for message in (f"with {secret} in it", f"with {secret!r} in it"):
        line = formatter.format(record("%s", {"detail": message}, exc=ValueError(message)))
        assert json.loads(line)["detail"].count("***") == 1, line
        assert "123" not in line and "def1" not in line and "en'x" not in line


def test_a_urls_userinfo_is_masked_whoever_quotes_the_url() -> None:
    """git.remote's token (``https://oauth2:TOKEN@host``) in an error message, or a password
    holding an unescaped "@" (split at the last "@", as HTTP clients do)."""
    line = JsonFormatter().format(record(
        "cannot fetch from https://oauth2:glpat-SECRET@127.0.0.1:9/g.git",
        exc=ValueError("https://alice:p@ss-word@mlflow.corp/api refused")))
    assert "glpat-SECRET" not in line and "ss-word" not in line and "alice" not in line
    assert "127.0.0.1:9/g.git" in line and "mlflow.corp/api" in line


def test_a_token_no_secret_names_is_masked_by_its_shape() -> None:
    """A token a server issued for one request, or a client library's own credential, is in
    no configured list: `serve` logged an error quoting `Authorization: Bearer …` as it was."""
    line = JsonFormatter([]).format(record("reconcile pass crashed", {
        "error": 'you sent {"Authorization": "Bearer CANARY-mltok-1"}'}))
    assert "CANARY" not in line
    assert json.loads(line)["error"] == 'you sent {"Authorization": "***"}'


def test_a_masked_header_leaves_the_line_valid_json() -> None:
    """Masking ran over the serialised line: an unquoted header value took the JSON string's
    closing quote with it, and the log shipper dropped the very lines that mattered; inside
    escaped quotes a JSON api_key or a `--password` flag was not masked at all."""
    line = JsonFormatter([]).format(record(
        "registry answered 401: Authorization: Bearer abcdefghijkl",
        {"job": 7, "error": "Cookie: session=abc; csrf=def", "args": "--password hunter2",
         "cfg": '{"api_key": "abcdefgh"}'}))
    entry = json.loads(line)
    assert entry["msg"] == "registry answered 401: Authorization: ***" and entry["job"] == 7
    assert (entry["error"], entry["args"]) == ("Cookie: ***", "--password ***")
    assert entry["cfg"] == '{"api_key": "***"}'
    assert not any(secret in line for secret in ("abcdefghijkl", "abc", "hunter2", "abcdefgh"))


def test_once_per_says_a_repeated_message_again_only_after_its_interval() -> None:
    now = [1000.0]
    once = OncePer(600, clock=lambda: now[0])
    assert [once.due("mlflow"), once.due("mlflow"), once.due("databricks")] == [True, False, True]
    now[0] += 599
    assert not once.due("mlflow")
    now[0] += 1
    assert once.due("mlflow") and not once.due("mlflow")
