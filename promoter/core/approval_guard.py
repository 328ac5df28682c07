"""Approvals that outlived a push while the project let them, once its settings hold.

Turning on ``reset_approvals_on_push`` removes no approval already given: approvals of an
older version that survived promoter's push (core.proposal said so in its approval-settings
note) still count under the strict settings, and auto-merge would merge the new version on
them. That note is the lasting record that such approvals may be on the MR; the MR's approvals
tell whether they still are. Once the MR has none, the approvals given after are for what it
holds, and the note says so, so later runs no longer hold auto-merge back.
"""

from __future__ import annotations

from promoter.core.mr_text import note_body
from promoter.core.proposal_notes import (
    may_carry_stale_approvals,
    settings_hold_text,
    stale_after_fix_reason,
    stale_after_fix_text,
)
from promoter.ports.forge import Forge
from promoter.ports.git import MergeRequest, Proposal

APPROVAL_SETTINGS_NOTE = "promoter: approval settings"


def approvals_from_weak_times(forge: Forge, proposal: Proposal, mr: MergeRequest, *,
                              opened: bool, auto_merge_set: bool) -> tuple[str | None, bool]:
    """For an MR whose project's approval settings hold now: why auto-merge must not be set
    (approvals given while they did not may be for an older version), or None; and whether an
    auto-merge already set (``auto_merge_set``: when the run first looked) is left as it is.
    ``opened``: promoter opened the MR in this run, so nothing predates the settings."""
    if opened:
        return None, False
    note = forge.own_note(mr.iid, APPROVAL_SETTINGS_NOTE)
    if note is None or not may_carry_stale_approvals(note):
        return None, False
    if not forge.approved_by(mr.iid):
        # Nothing left of those approvals (reviewers revoked them, or a push reset them):
        # the record is cleared, and approvals given from now on are for what the MR holds.
        _say(forge, mr.iid, note, settings_hold_text(proposal))
        return None, False
    _say(forge, mr.iid, note, stale_after_fix_text(proposal))
    if auto_merge_set:
        # Not promoter's (it sets none while approvals may be stale): a reviewer's decision,
        # or the older head's, which GitLab merges only while that head is the MR's.
        return None, True
    return stale_after_fix_reason(proposal), False


def _say(forge: Forge, iid: int, note: str, text: str) -> None:
    """Rewrite the note only when it says something else: ``upsert_note`` would read the MR's
    comments again to find it, on every run that finds the MR unchanged."""
    if note.strip() != note_body(APPROVAL_SETTINGS_NOTE, text).strip():
        forge.upsert_note(iid, APPROVAL_SETTINGS_NOTE, text)
