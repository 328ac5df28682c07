"""The approval-settings note texts: which of them record that approvals may be stale.

core.approval_guard holds auto-merge back on that record, so it is a marker every such text
carries, and no other text does (a false record would only hold auto-merge back; a missing one
would let approvals for an older version merge the new one)."""

from __future__ import annotations

from promoter.core.proposal_notes import (
    STALE_APPROVALS_MARKER,
    may_carry_stale_approvals,
    settings_hold_text,
    stale_after_fix_text,
    weak_settings_text,
)
from promoter.ports.forge import NO_OVERRIDES_PER_MR, RESET_APPROVALS_ON_PUSH
from promoter.ports.git import Proposal

WEAK = (RESET_APPROVALS_ON_PUSH, NO_OVERRIDES_PER_MR)


def _proposal() -> Proposal:
    return Proposal(model="fraud", name="fraud", env="prod", version="2", files={},
                    managed_prefixes=("fraud/",), title="t", description="d",
                    approvals_required=2)


def test_every_text_saying_approvals_may_be_stale_carries_the_marker() -> None:
    p = _proposal()
    for text in (stale_after_fix_text(p),
                 weak_settings_text(p, WEAK, None, stale="1"),
                 weak_settings_text(p, WEAK, None, None, repushed=True)):
        assert STALE_APPROVALS_MARKER in text and may_carry_stale_approvals(text)


def test_texts_with_nothing_stale_carry_no_record() -> None:
    p = _proposal()
    for text in (settings_hold_text(p),
                 weak_settings_text(p, WEAK, None, None),
                 weak_settings_text(p, WEAK, pushed_over="1", stale=None)):
        assert not may_carry_stale_approvals(text)


def test_a_note_written_before_the_marker_is_still_read_as_the_record() -> None:
    older = ("<!-- promoter-note:promoter:-approval-settings -->\n**promoter: approval "
             "settings**\n\n… so they may still count: reviewers must approve again …\n")
    assert may_carry_stale_approvals(older)
