"""Every check of a name, label, owner, URI or header refuses a value with a trailing newline.

Python's ``$`` also matches just before a final ``\\n``: with ``re.match(r"^…$")`` a check
passed "fraud-detector\\n", which then compared unequal to "fraud-detector" where names are
compared, and equal once something trimmed it (an image reference). The checks use
``fullmatch``; each is probed here, so a new ``.match`` with ``$`` shows up."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pydantic import ValidationError

from promoter.cluster_settings import PrometheusSettings
from promoter.core import codeowners, lineage, naming, rightsize
from promoter.errors import AuthError
from promoter.image.platform import platform_problem
from promoter.service.verify import (
    MLFLOW_ID,
    MLFLOW_TIMESTAMP,
    MissingHeader,
    SecretNotConfigured,
    verify_mlflow,
)
from promoter.settings import Settings

CHECKS: dict[str, tuple[Callable[[str], object], str]] = {
    # each: a check that passes a value (True, or what it parsed out of it) or refuses it
    # (False, None, or a ValueError-like error); and a value it passes, to add the newline to
    "deployment name": (lambda v: naming.name_problem(v) is None, "fraud-detector"),
    "label value": (lambda v: naming.label_value_problem(v) is None, "risk"),
    "CODEOWNERS owner": (lambda v: codeowners.owner_problem(v) is None, "@alice"),
    "runs: URI": (lineage.runs_uri_run_id, "runs:/abc123/model"),
    "logged model URI": (lineage.logged_model_id, "models:/m-abc123"),
    "registered version URI": (lineage.registered_version, "models:/fraud/3"),
    "MIG profile": (rightsize.profile_memory_mib, "1g.10gb"),
    "platform": (lambda v: platform_problem(v) is None, "linux/amd64"),
    "Prometheus URL": (lambda v: PrometheusSettings(url=v), "http://127.0.0.1:9090"),
    "cost label key": (lambda v: Settings.model_validate({"cost_labels": {"team": v}}),
                       "example.com/team"),
    "MLflow delivery id": (lambda v: verify_mlflow(
        {MLFLOW_ID: v, MLFLOW_TIMESTAMP: "1"}, b"", None, now=1,
        tolerance_seconds=300), "d-1"),
}


@pytest.mark.parametrize("what", sorted(CHECKS))
def test_a_trailing_newline_is_refused(what: str) -> None:
    check, good = CHECKS[what]
    accepted = _accepts(check, good)
    assert accepted, f"{what}: the plain value {good!r} must pass"
    assert not _accepts(check, good + "\n"), f"{what}: {good!r} + newline passed"


def _accepts(check: Callable[[str], object], value: str) -> bool:
    try:
        result = check(value)
    except (ValueError, ValidationError, MissingHeader):
        return False
    except (AuthError, SecretNotConfigured):   # past the format checks: the secret is next
        return True
    return result not in (None, False)
