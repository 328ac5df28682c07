"""Whatever first touches a fresh state directory creates it owner-only (0700): the state
database, the audit trail, and the image cache of a build."""

from __future__ import annotations

import stat
from pathlib import Path

from promoter.service import composition
from promoter.service.audit import AuditTrail
from promoter.settings import load_settings
from tests.image.model import save_model


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_audit_trail_creates_the_state_directory_owner_only(tmp_path: Path) -> None:
    AuditTrail(tmp_path / "state").record("probe")
    assert mode(tmp_path / "state") == 0o700
    assert mode(tmp_path / "state" / "audit.jsonl") == 0o600


def test_an_image_build_creates_the_state_directory_owner_only(tmp_path: Path) -> None:
    model = save_model(tmp_path / "model", requirements="")   # no dependency layer to install
    settings = load_settings(None, {"PROMOTER_STATE_DIR": str(tmp_path / "state")})
    built = composition.build_image(settings, str(model), None, layout=tmp_path / "layout")
    assert built.digest.startswith("sha256:")
    assert mode(tmp_path / "state") == 0o700
