"""Structured logs: one JSON object per line, secrets masked wherever they appear."""

from __future__ import annotations

import json
import logging

from promoter.service.logs import JsonFormatter


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
